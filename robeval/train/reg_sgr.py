"""Structured Gradient Regularization (Roth, Lucchi, Nowozin, Hofmann: "Adversarially
Robust Training through Structured Gradient Regularization", 2018;
``papers/structured-gradient-regularization.txt``), Algorithm 1 and Sec. 3.3."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from robeval.attacks.lrc_sampling import dense_covariance, estimate_covariance
from robeval.errors import RobevalError
from robeval.train.objectives import eval_mode
from robeval.train.reg_gradient import ce_input_gradient
from robeval.train.regularisers import regularisers
from robeval.train.sgr_covfun import covfun_matvec, dense_covfun_matrix, estimate_covfun

# The EMA sources keep Sigma as a full D x D matrix; above this many input entries
# (64 x 64 grey, 36 x 36 RGB) that is refused.
MAX_DENSE_DIM = 4096
#: Sources whose covariance is the EMA of perturbation second moments (Eqs. 14-15).
EMA_SOURCES: tuple[str, ...] = ("grad", "sign", "fgsm", "pgd", "deepfool")
#: Sources with a fixed covariance: the LRC function, the identity (GN), the training data's.
FIXED_SOURCES: tuple[str, ...] = ("lrc", "identity", "data")


def _second_moments(xi: Tensor) -> Tensor:
    """``(1/m) sum_i xi_i xi_i^T`` of flattened perturbations (Eq. 15)."""
    flat = xi.detach().flatten(1)
    return flat.T @ flat / flat.shape[0]


def _torus_distances(m: int, n: int, device: torch.device) -> Tensor:
    i = torch.arange(m, dtype=torch.float64, device=device)
    j = torch.arange(n, dtype=torch.float64, device=device)
    di, dj = torch.minimum(i, m - i), torch.minimum(j, n - j)
    return torch.sqrt(di[:, None] ** 2 + dj[None, :] ** 2)


def lrc_matvec(g: Tensor, zeta: float) -> Tensor:
    """``K g`` for each ``g`` of ``(N, C, H, W)``, ``K`` the LRC covariance (``exp(-r/zeta)``
    within a channel, ``0.5 exp(-r/zeta)`` across channels, ``r`` the exact Euclidean pixel
    distance; :func:`robeval.attacks.lrc_sampling.dense_covariance`), without building
    ``K``: the channel matrix ``0.5 (1 + I)`` mixes channels, then the spatial kernel is a
    linear convolution done exactly as a circular one on a ``2H x 2W`` torus (every
    displacement inside the image, at most ``H - 1`` / ``W - 1``, is represented once).
    Differentiable; memory ``O(N C H W)``."""
    _, _, h, w = g.shape
    mixed = 0.5 * g + 0.5 * g.sum(1, keepdim=True)
    kernel = torch.exp(-_torus_distances(2 * h, 2 * w, g.device) / zeta).to(g.dtype)
    spectrum = torch.fft.rfft2(kernel)
    out = torch.fft.irfft2(torch.fft.rfft2(mixed, s=(2 * h, 2 * w)) * spectrum, s=(2 * h, 2 * w))
    return out[..., :h, :w]


@regularisers.register("sgr")
@dataclass(frozen=True, kw_only=True)
class SGR:
    """Structured gradient regularisation, ``g^T Sigma g`` of input gradients (Algorithm 1).

    ``penalty = lam * Omega``, ``Omega = sigma_t / (2m) * sum_i g_i^T Sigma_t g_i``,
    ``g_i = grad_x log softmax(f(x_i))_{y_i}`` (training labels, Algorithm 1), with

    * ``Sigma_t = (1 - beta) Sigma_{t-1} + beta (1/m) sum_i xi_i xi_i^T`` (Eqs. 14-15: raw
      second moments of this batch's perturbations, footnote 4), updated *before* Omega as
      in Algorithm 1, ``beta = 0.1`` (footnote 2: "in all our experiments"), ``Sigma_0 = 0``
      (not stated; irrelevant after the first step since ``sigma_t`` rescales);
    * ``sigma_t = c / mean(diag Sigma_t)`` (Algorithm 1 "c / Avg[Sigma_t]", read with
      Sec. 3.3: the average *diagonal* entry is standardised to that of the data
      covariance), so ``lam`` is a noise-to-signal ratio;
    * ``c`` the average diagonal entry of the data covariance. Default ``None``: estimated
      once, from the first batch ``penalty`` sees, as the mean per-pixel variance of that
      batch (unbiased), and kept in the resume state. Give ``c`` for the exact data-set value.

    ``source`` of the perturbations ``xi_i``, generated with the model in eval mode (as
    robeval's adversarial objectives do) and the model's own predictions as labels
    ("to avoid label leaking", App. 7.2):

    * ``grad`` (SGR_GRAD): ``xi = grad_x CE(f(x), y_pred)``;
    * ``sign`` (SGR_SIGN, default: the variant of the paper's Tables 1 and 3/4): its sign;
    * ``fgsm`` (FGSM_SGR): ``clip(x + eps sign(grad), 0, 1) - x`` ("clipped to lie within
      the original rgb range", App. 7.2), ``eps = 8/255`` by default (CIFAR10 ``eps = 8``;
      the unclipped perturbation would give the same Sigma as ``sign``);
    * ``pgd`` (PGD_SGR): robeval's L-inf PGD perturbation ``x_adv - x`` at ``eps`` with
      ``steps`` steps of ``eps/5`` (the SGR paper's PGD: "step eps/5, 10 steps"), no random
      start, so the estimate is a deterministic function of model and batch;
    * ``deepfool`` (the DeepFool covariance of Fig. 1): robeval's L2 DeepFool perturbation
      (overshoot 0.02, ``steps`` iterations at most; zero where the search fails);
    * ``lrc``: the fixed long-range-correlated covariance of Sec. 4.3 (``exp(-r/zeta)``
      within, ``0.5 exp(-r/zeta)`` across channels, exact ``r`` like robeval's LRC attack;
      the paper rounds ``r`` for its *estimated* covariance functions, Sec. 3.3),
      ``zeta = 8`` (Fig. 4), no EMA; applied by FFT (:func:`lrc_matvec`), any image size;
    * ``identity``: ``Sigma = I``, the paper's GN baseline ("SGR with identity
      covariance", Sec. 4.1): ``Omega = c / (2m) sum_i ||g_i||^2``;
    * ``data``: the covariance of the training data (Sec. 4.3, last paragraph: "the same
      experiments with the covariance matrix computed from the CIFAR10 training set"),
      fixed, no EMA. ``robeval train`` binds it to the training split it trains on
      (:meth:`bind_data`; from Python call ``bind_data(x_train)`` first): Sigma is that
      covariance scaled to a mean diagonal entry of 1, and ``c`` (unless given) its exact
      mean diagonal entry, so ``sigma_t * Sigma`` is the data covariance itself. Dense:
      inputs of up to 4096 entries.

    The EMA sources keep Sigma as a dense ``D x D`` matrix (Eq. 15) for inputs of up to 4096
    entries and, above that (``representation=auto``; always with ``representation=function``),
    as the covariance *function* of Sec. 3.3 / Eq. 16: one number per rounded pixel
    distance within and across channels, estimated by FFT autocorrelation and applied by
    FFT convolution (:mod:`robeval.train.sgr_covfun`), ``O(C H W)`` memory. ``lam`` (also ``lambda``) default 1.0: the
    paper's SGR_SIGN on MNIST (Table 3; CIFAR10 0.2-0.5; SGR_GRAD 0.1, LRC experiment 5.0).
    """

    name: ClassVar[str] = "sgr"
    aliases: ClassVar[dict[str, str]] = {"lambda": "lam", "lambda_": "lam"}
    lam: float = 1.0
    source: Literal["grad", "sign", "fgsm", "pgd", "deepfool", "lrc", "identity", "data"] = "sign"
    beta: float = 0.1
    c: float | None = None
    eps: float = 8 / 255
    zeta: float = 8.0
    steps: int = 10
    representation: Literal["auto", "matrix", "function"] = "auto"
    _state: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.source not in EMA_SOURCES + FIXED_SOURCES:
            raise ValueError(f"source must be one of {', '.join(EMA_SOURCES + FIXED_SOURCES)}")
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.representation not in ("auto", "matrix", "function"):
            raise ValueError("representation must be auto, matrix or function")
        if not 0 < self.beta <= 1:
            raise ValueError("beta must be in (0, 1]")
        if self.c is not None and self.c <= 0:
            raise ValueError("c must be > 0")
        if self.eps <= 0 or self.zeta <= 0:
            raise ValueError("eps and zeta must be > 0")

    # -- state -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state: dict = {"c": self._state.get("c")}
        for key in ("sigma", "covfun"):
            if key in self._state:
                state[key] = self._state[key].detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        bound = {k: self._state[k] for k in ("data", "data_c") if k in self._state}  # from the data, not the state
        self._state.clear()
        self._state.update(bound)
        if state.get("c") is not None:
            self._state["c"] = float(state["c"])
        for key in ("sigma", "covfun"):
            if state.get(key) is not None:
                self._state[key] = state[key].clone()

    def after_step(self, model: nn.Module, lr: float) -> None:
        return None

    def bind_data(self, x_train: Tensor) -> None:
        """``source=data``: take Sigma from the training images ``x_train`` (scaled to a mean
        diagonal entry of 1) and their exact mean per-pixel variance as the default ``c``.
        Other sources ignore it. ``robeval train`` calls it with the split it trains on."""
        if self.source != "data":
            return
        dim = x_train[0].numel()
        if dim > MAX_DENSE_DIM:
            raise RobevalError(f"sgr:source=data keeps the dense {dim} x {dim} covariance of the training data; "
                               f"inputs over {MAX_DENSE_DIM} entries need source=lrc (any size) or an EMA source")
        try:
            sigma = estimate_covariance(x_train)  # scaled to a unit mean diagonal
        except ValueError as exc:
            raise RobevalError(f"sgr:source=data: {exc}") from exc
        self._state["data"] = sigma.float()
        self._state["data_c"] = float(x_train.flatten(1).double().var(0).mean())  # the unscaled mean diagonal

    def _data_covariance(self) -> Tensor:
        if "data" not in self._state:
            raise ValueError("sgr:source=data needs the training data: robeval train binds it; from Python call "
                             "bind_data(x_train) before the first penalty")
        return self._state["data"]

    # -- pieces --------------------------------------------------------------------------
    def data_scale(self, x: Tensor) -> float:
        """``c``: the field, else (``source=data``) the training data's mean per-pixel
        variance, else the first batch's mean per-pixel variance (then kept)."""
        if self.c is not None:
            return self.c
        if self.source == "data":
            self._data_covariance()
            return self._state["data_c"]
        if "c" not in self._state:
            if x.shape[0] < 2:
                raise ValueError("sgr needs a batch of at least 2 to estimate c; give sgr:c=VALUE")
            c = float(x.detach().flatten(1).double().var(0).mean())
            if c <= 0:
                raise ValueError("sgr: the first batch does not vary, cannot estimate c; give sgr:c=VALUE")
            self._state["c"] = c
        return self._state["c"]

    def perturbations(self, model: nn.Module, x: Tensor, logits: Tensor) -> Tensor:
        """``xi_i`` of the EMA sources, labels = the model's predictions (``logits.argmax``)."""
        y_pred = logits.detach().argmax(1)
        if self.source in ("pgd", "deepfool"):
            return self._attack_perturbations(model, x.detach(), y_pred)
        with eval_mode(model):
            grad = ce_input_gradient(model, x, y_pred, create_graph=False).detach()
        if self.source == "grad":
            return grad
        if self.source == "sign":
            return grad.sign()
        return (x.detach() + self.eps * grad.sign()).clamp(0, 1) - x.detach()

    def _attack_perturbations(self, model: nn.Module, x: Tensor, y_pred: Tensor) -> Tensor:
        """``x_adv - x`` of robeval's PGD or DeepFool against the predicted labels."""
        from robeval.attacks import get as get_attack

        if self.source == "pgd":
            attack, eps = get_attack("pgd", steps=self.steps, rel_stepsize=0.2, random_start=False, keep="last"), self.eps
        else:
            attack, eps = get_attack("deepfool", steps=self.steps), math.inf
        with eval_mode(model):
            x_adv = attack(model, x, y_pred, eps=eps)
        return (x_adv - x).detach()

    def uses_function(self, x: Tensor) -> bool:
        """Whether the EMA keeps the covariance *function* (Eq. 16) rather than the matrix."""
        if self.representation == "auto":
            return x[0].numel() > MAX_DENSE_DIM
        return self.representation == "function"

    def update(self, xi: Tensor) -> Tensor:
        """One EMA step (Eqs. 14-15) with perturbations ``xi`` ``(m, ...)``; returns Sigma_t
        (the matrix, or the ``(2, d_max + 1)`` covariance function)."""
        key, batch = ("covfun", estimate_covfun(xi.detach())) if self.uses_function(xi) else \
            ("sigma", _second_moments(xi))
        previous = self._state.get(key)
        previous = torch.zeros_like(batch) if previous is None else previous.to(batch)
        self._state[key] = (1 - self.beta) * previous + self.beta * batch
        return self._state[key]

    def covariance(self, shape: tuple[int, ...]) -> Tensor:
        """The current ``D x D`` Sigma for inputs of ``shape`` ``(C, H, W)`` (``lrc`` and the
        covariance function: the dense matrix they stand for, for tests and small images)."""
        if self.source == "identity":
            return torch.eye(int(torch.tensor(shape).prod()), dtype=torch.float64)
        if self.source == "lrc":
            return dense_covariance(tuple(shape), self.zeta)
        if self.source == "data":
            return self._data_covariance().double()
        if "covfun" in self._state:
            return dense_covfun_matrix(tuple(shape), self._state["covfun"])  # type: ignore[arg-type]
        if "sigma" not in self._state:
            raise ValueError("no covariance estimate yet: call penalty() on a batch first")
        return self._state["sigma"]

    def scaling(self, x: Tensor) -> float:
        """``sigma_t = c / mean(diag Sigma_t)`` (1 for the unit-diagonal lrc and identity;
        the function's value at distance 0 within a channel is its diagonal; the data's,
        scaled to a unit mean diagonal)."""
        if self.source in FIXED_SOURCES:
            return self.data_scale(x)
        if "covfun" in self._state:
            mean_diag = float(self._state["covfun"][0, 0])
        else:
            mean_diag = float(self._state["sigma"].diagonal().mean())
        return self.data_scale(x) / mean_diag if mean_diag > 0 else 0.0

    def quadratic_forms(self, g: Tensor) -> Tensor:
        """``g_i^T Sigma_t g_i`` per sample."""
        if self.source == "identity":
            return g.flatten(1).pow(2).sum(1)
        if self.source == "lrc":
            return (g * lrc_matvec(g, self.zeta)).flatten(1).sum(1)
        if self.source == "data":
            flat = g.flatten(1)
            return ((flat @ self._data_covariance().to(flat)) * flat).sum(1)
        if "covfun" in self._state:
            return (g * covfun_matvec(g, self._state["covfun"])).flatten(1).sum(1)
        flat = g.flatten(1)
        return ((flat @ self._state["sigma"].to(flat)) * flat).sum(1)

    def penalty(self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        dim = x[0].numel()
        if self.source in EMA_SOURCES:
            if self.representation == "matrix" and dim > MAX_DENSE_DIM:
                raise ValueError(f"sgr:representation=matrix keeps a dense {dim} x {dim} covariance; inputs "
                                 f"over {MAX_DENSE_DIM} entries need sgr:representation=function (the default, "
                                 "auto, switches by itself)")
            if self.uses_function(x) and x.dim() != 4:
                raise ValueError("sgr:representation=function needs image batches (N, C, H, W)")
            self.update(self.perturbations(model, x, logits))
        g = -ce_input_gradient(model, x, y)  # grad_x log softmax_y = -grad_x CE
        omega = self.scaling(x) / (2 * x.shape[0]) * self.quadratic_forms(g).sum()
        return self.lam * omega

