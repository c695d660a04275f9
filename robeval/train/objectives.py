"""Base training objectives, one registry. Each is a frozen dataclass called as
``objective(model, x, y, *, generator) -> (loss, logits)``; ``logits`` are those of the
clean batch, for regularisers and running accuracy.

The objectives of the papers:

* ``ce`` -- plain cross-entropy, the "V" (vanilla) loss of the smooth-kernels paper.
* ``pgd-at`` -- Madry et al.'s PGD adversarial training, the "A" loss.
* ``trades`` -- TRADES (Zhang et al. 2019), the "T" loss.
* ``logit-pairing`` -- the smooth-kernels paper's KL variant of adversarial logit pairing,
  the "L" loss (Sec. 3).
* ``fgsm-aug``, ``pgd-aug``, ``lrc-aug`` -- the adversarially (or noise-) augmented
  baselines of the SGR paper (Roth et al. 2018, Sec. 4.2/4.3): a mixture of clean and
  perturbed cross-entropy (:mod:`robeval.train.augmented_objectives`).

Conventions shared by the adversarial objectives:

* Adversarials are generated with the model in **eval mode** (as the TRADES reference
  code does): BatchNorm uses its running statistics and is not updated by the attack's
  forward passes, dropout is off, so the attack sees the deterministic model. Every
  module's train/eval flag is restored afterwards (module by module, so a partly frozen
  model keeps its mixed modes), and the loss's forward passes run in the caller's mode.
* Attacks take input gradients only (``torch.autograd.grad`` w.r.t. ``x``), so the
  parameters' ``.grad`` is left untouched; parameter gradients come from the returned
  loss alone.
* Randomness (random starts, noise) is drawn from ``generator``.
* ``eps`` is an L-inf bound on the [0, 1] pixel scale (``lrc-aug``: the noise's std).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robeval.attacks.base import project
from robeval.attacks.pgd import PGD
from robeval.configs import build_config
from robeval.params import parse_named
from robeval.registry import Registry

objectives: Registry[type] = Registry("objective")


class Objective(Protocol):
    """``objective(model, x, y, *, generator) -> (loss, clean logits)``."""

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]: ...


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode inside the block and restore every module's own
    train/eval flag afterwards (also when the block raises)."""
    modules = list(model.modules())
    flags = [m.training for m in modules]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in zip(modules, flags, strict=True):
            module.training = flag


def kl_batchmean(log_p_ref: Tensor, logits: Tensor) -> Tensor:
    """``KL(softmax(logits) || softmax(reference)) = sum_k p_k (log p_k - log q_k)`` averaged
    over the batch, given ``log q = log_p_ref`` (``F.kl_div(log q, p, "batchmean")``)."""
    return F.kl_div(log_p_ref, F.softmax(logits, dim=1), reduction="batchmean")


def _check_common(eps: float, steps: int | None = None, step_size: float | None = None) -> None:
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be finite and >= 0; got {eps}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"step_size must be > 0; got {step_size}")


def _check_weight(name: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and >= 0; got {value}")


class _PGDAdversary:
    """Adversarials from robeval's L-inf PGD with the true labels, generated in eval mode
    (``pgd-at`` and ``logit-pairing``)."""

    eps: float
    steps: int
    step_size: float
    random_start: bool

    @property
    def attack(self) -> PGD:
        return PGD(steps=self.steps, abs_stepsize=self.step_size, random_start=self.random_start,
                   keep="last")  # Madry et al. train on the last iterate, not the first adversarial

    def adversarial(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """The PGD adversarials of ``x`` (labels ``y``), generated in eval mode."""
        with eval_mode(model):
            return self.attack(model, x, y, eps=self.eps, generator=generator).detach()


class _PairedLoss:
    """``loss_from(clean logits, adversarial logits, y)`` on a batch and its adversarials
    (``trades`` and ``logit-pairing``); returns the clean logits with the loss."""

    def adversarial(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        raise NotImplementedError

    def loss_from(self, logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        x_adv = self.adversarial(model, x, y, generator)
        logits = model(x)
        return self.loss_from(logits, model(x_adv), y), logits


@objectives.register("ce")
@dataclass(frozen=True, kw_only=True)
class CrossEntropy:
    """Plain cross-entropy on clean inputs (the "V" models of the smooth-kernels paper)."""

    name: ClassVar[str] = "ce"
    label_smoothing: float = 0.0

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits


@objectives.register("pgd-at")
@dataclass(frozen=True, kw_only=True)
class PGDAdversarialTraining(_PGDAdversary):
    """PGD adversarial training (Madry et al., ICLR 2018, Eq. 2.1; the "A" loss of the
    smooth-kernels paper): ``min E[ max_{||x'-x||_inf <= eps} CE(f(x'), y) ]``, the inner
    max approximated by robeval's :class:`~robeval.attacks.pgd.PGD` with the true labels,
    ``steps`` steps of ``step_size`` (``abs_stepsize``) from a uniform random start.
    ``loss = CE(f(x_adv), y)``; the clean batch does not enter the loss.

    Defaults: Madry et al.'s MNIST recipe (also smooth-kernels' MNIST bound), eps 0.3, 40
    steps of 0.01, random start. (CIFAR: ``eps=8/255,steps=7,step_size=2/255``;
    FashionMNIST in smooth-kernels: ``eps=0.1``.)

    Returned logits: those of the **clean** batch, from one extra forward pass in eval mode
    (with autograd on, so regularisers may differentiate through them). Eval mode keeps the
    clean batch out of BatchNorm's running statistics, which see only the adversarial
    batches as in Madry et al.; the running train accuracy is thus the clean accuracy of
    the model as it is evaluated.
    """

    name: ClassVar[str] = "pgd-at"
    eps: float = 0.3
    steps: int = 40
    step_size: float = 0.01
    random_start: bool = True

    def __post_init__(self) -> None:
        _check_common(self.eps, self.steps, self.step_size)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        x_adv = self.adversarial(model, x, y, generator)
        loss = F.cross_entropy(model(x_adv), y)
        with eval_mode(model):
            logits = model(x)
        return loss, logits


@objectives.register("trades")
@dataclass(frozen=True, kw_only=True)
class Trades(_PairedLoss):
    """TRADES (Zhang et al., ICML 2019, Eq. 5 and their reference ``trades_loss``; the "T"
    loss of the smooth-kernels paper)::

        loss = CE(f(x), y) + beta * KL(softmax(f(x)) || softmax(f(x')))   (batch mean)
        x'   = argmax_{||x'-x||_inf <= eps} KL(softmax(f(x)) || softmax(f(x')))

    KL direction: the reference code's ``KLDivLoss(log_softmax(f(x')), softmax(f(x)))``,
    i.e. ``sum_k p_clean,k log(p_clean,k / p_adv,k)``, the clean distribution first. (The
    smooth-kernels paper and SPEC describe it loosely as KL between the softmax of the
    adversarial and the clean example; the order follows TRADES' code.) Both terms carry
    gradients through the clean and the adversarial logits, as in the reference.

    Inner maximisation (TRADES' code): start at ``x + 0.001 * N(0, 1)`` (from
    ``generator``), then ``steps`` times ``x' <- Proj(x' + step_size * sign(grad_x' KL))``
    onto the eps-ball (:func:`robeval.attacks.base.project`) and [0, 1], with the clean
    distribution fixed and the model in eval mode. It maximises the KL, not the
    cross-entropy, and needs no label, hence its own small loop instead of PGD.

    Defaults: ``beta=6.0`` (TRADES' default, its CIFAR10 setting; its MNIST script uses
    1.0), eps 0.3, 40 steps of 0.01 (the MNIST attack of TRADES and of Madry et al.).
    """

    name: ClassVar[str] = "trades"
    beta: float = 6.0
    eps: float = 0.3
    steps: int = 40
    step_size: float = 0.01
    init_std: float = 0.001

    def __post_init__(self) -> None:
        _check_common(self.eps, self.steps, self.step_size)
        _check_weight("beta", self.beta)
        _check_weight("init_std", self.init_std)

    def adversarial(
        self, model: nn.Module, x: Tensor, y: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """TRADES' adversarials of ``x`` (the labels are not used), in eval mode."""
        x0 = x.detach()
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        x_adv = x0 + self.init_std * noise
        with eval_mode(model), torch.enable_grad():
            with torch.no_grad():
                log_p_clean = F.log_softmax(model(x0), dim=1)
            for _ in range(self.steps):
                x_adv = x_adv.detach().requires_grad_(True)
                kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), log_p_clean, reduction="sum",
                              log_target=True)
                (grad,) = torch.autograd.grad(kl, x_adv)
                x_adv = x_adv.detach() + self.step_size * grad.sign()
                x_adv = (x0 + project(x_adv - x0, self.eps, "linf")).clamp(0.0, 1.0)
        return x_adv.detach()

    def loss_from(self, logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
        """``CE(logits_clean, y) + beta * KL(softmax(clean) || softmax(adv))`` (batch mean)."""
        robust = kl_batchmean(F.log_softmax(logits_adv, dim=1), logits_clean)
        return F.cross_entropy(logits_clean, y) + self.beta * robust



@objectives.register("logit-pairing")
@dataclass(frozen=True, kw_only=True)
class LogitPairing(_PGDAdversary, _PairedLoss):
    """The smooth-kernels paper's variant of adversarial logit pairing (Sec. 3, after
    Kannan et al. 2018; the "L" loss), with the KL of the softmax outputs in place of the
    squared distance of the logits::

        loss = CE(f(x'), y) + gamma * k(f_l(x'), f_l(x)),  k = KL,  x' = PGD_CE(x, y)

    KL direction: ``k(a, b) = KL(a || b)`` as written, so ``KL(softmax(f(x')) ||
    softmax(f(x))) = sum_k p_adv,k log(p_adv,k / p_clean,k)``, the adversarial distribution
    first: the mirror image of TRADES, which fits clean examples and pulls the adversarial
    softmax towards the clean one (``KL(p_clean || p_adv)``); here the model fits the
    adversarials and the clean softmax is pulled towards the adversarial one (the paper's
    motivation). Batch mean; gradients flow through both.

    ``x'`` maximises the cross-entropy with the true labels (the paper's argmax of ``l``),
    found by robeval's PGD exactly as in ``pgd-at``. Defaults: the paper uses the PGD
    setting of its adversarial training for L (MNIST eps 0.3; 40 steps of 0.01 as Madry et
    al.) and tunes ``gamma`` in {0.1, 1, 10}; default ``gamma=1.0``.
    """

    name: ClassVar[str] = "logit-pairing"
    gamma: float = 1.0
    eps: float = 0.3
    steps: int = 40
    step_size: float = 0.01
    random_start: bool = True

    def __post_init__(self) -> None:
        _check_common(self.eps, self.steps, self.step_size)
        _check_weight("gamma", self.gamma)

    def loss_from(self, logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
        """``CE(logits_adv, y) + gamma * KL(softmax(adv) || softmax(clean))`` (batch mean)."""
        pairing = kl_batchmean(F.log_softmax(logits_clean, dim=1), logits_adv)
        return F.cross_entropy(logits_adv, y) + self.gamma * pairing



def get_objective(spec: str) -> Objective:
    """An objective from ``name`` or ``name:key=value,...``."""
    name, params = parse_named(spec, kind="objective")
    return build_config(objectives.get(name), params, what=f"objective {name!r}")


# The SGR baselines (clean/adversarial mixtures) register themselves from their own module.
from robeval.train import augmented_objectives  # noqa: F401
