"""ADef (Alaifari, Alberti and Gauksson, ICLR 2019): adversarial deformations."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robeval.attacks.base import Deformation, field_norms, perturbation_norms
from robeval.attacks.presets import FOOLBOX2, Preset, with_presets
from robeval.attacks.registry import attacks

FIELD_NORMS: tuple[str, ...] = ("field", "linf", "l2")
#: Foolbox 2.4.0's ``ADefAttack.as_generator(a, max_iter=100, smooth=1.0, subsample=10)``
#: (``foolbox/attacks/adef_attack.py`` line 185): the candidates are the top ``subsample``
#: classes but the first (line 244: ``np.arange(1, subsample)``, so 10 counting the clean
#: class), and there is no overshoot (``overshoot=1`` turns robeval's off).
FOOLBOX2_DEFAULTS = {"max_iter": 100, "sigma": 1.0, "candidates": 10, "overshoot": 1.0}


def deform(x: Tensor, field: Tensor) -> Tensor:
    """``x`` resampled by the vector ``field``: ``x_adv[n, c, i, j] = x[n, c, i + tau_0,
    j + tau_1]`` with ``tau = field[n, :, i, j]``, clipped to [0, 1].

    ``x`` is ``(N, C, H, W)``; ``field`` is ``(N, 2, H, W)`` in pixels, channel 0 the
    vertical (row, downwards) displacement and channel 1 the horizontal (column,
    rightwards) one. Values between pixels are bilinear interpolations; points displaced
    past the border take the border value (the sampling coordinates are clamped to the
    image, as foolbox 2's ``ADefAttack`` clips them). A zero field returns ``x``.
    """
    if x.dim() != 4 or field.shape != (x.shape[0], 2, *x.shape[2:]):
        raise ValueError(
            f"deform needs x (N, C, H, W) and field (N, 2, H, W); got {tuple(x.shape)} and "
            f"{tuple(field.shape)}"
        )
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device, dtype=field.dtype).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=field.dtype).view(1, 1, w)
    # pixel -> normalised coordinates for align_corners=True: 0 -> -1, size - 1 -> +1
    gy = (rows + field[:, 0]) * (2.0 / max(h - 1, 1)) - 1.0
    gx = (cols + field[:, 1]) * (2.0 / max(w - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1).to(x.dtype)  # grid_sample wants (x=col, y=row)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.clamp(0.0, 1.0)


def spatial_gradient(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(d/drow, d/dcol)`` of ``x`` (N, C, H, W): central differences inside, one-sided
    differences on the border (foolbox 2's ``_difference_map``)."""
    d_row = torch.zeros_like(x)
    d_col = torch.zeros_like(x)
    if x.shape[-2] > 1:
        d_row[..., 0, :] = x[..., 1, :] - x[..., 0, :]
        d_row[..., -1, :] = x[..., -1, :] - x[..., -2, :]
        d_row[..., 1:-1, :] = 0.5 * (x[..., 2:, :] - x[..., :-2, :])
    if x.shape[-1] > 1:
        d_col[..., :, 0] = x[..., :, 1] - x[..., :, 0]
        d_col[..., :, -1] = x[..., :, -1] - x[..., :, -2]
        d_col[..., :, 1:-1] = 0.5 * (x[..., :, 2:] - x[..., :, :-2])
    return d_row, d_col


def gaussian_smooth(a: Tensor, sigma: float) -> Tensor:
    """``scipy.ndimage.gaussian_filter(a, sigma)`` over the last two dimensions: a
    separable Gaussian of std ``sigma`` pixels truncated at ``4 sigma``, mirrored at the
    border (scipy's ``mode="reflect"``: ``d c b a | a b c d``). ``sigma = 0`` is the
    identity."""
    if sigma <= 0:
        return a
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, device=a.device, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(a.dtype)
    for dim in (-2, -1):
        n = a.shape[dim]
        idx = torch.arange(-radius, n + radius, device=a.device) % (2 * n)
        idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)  # half-sample symmetric mirror
        padded = a.index_select(dim, idx)
        windows = padded.unfold(dim % a.dim(), 2 * radius + 1, 1)  # (..., n, ..., taps)
        a = windows @ kernel
    return a


@attacks.register("adef")
@with_presets({FOOLBOX2: FOOLBOX2_DEFAULTS})
@dataclass(frozen=True, kw_only=True)
class ADef:
    """Minimal-norm attack that moves pixels instead of adding noise: an iterated
    DeepFool in the space of (smooth) vector fields.

    Alaifari, Alberti and Gauksson, "ADef: an Iterative Algorithm to Construct
    Adversarial Deformations", ICLR 2019 (arXiv:1804.07729), Algorithm 1 and its Sec. 3
    smoothing, the algorithm of foolbox 2's ``ADefAttack`` (whose defaults, the "default
    parameters in Foolbox" the smooth-kernels paper ran, are ``preset=foolbox2``). A
    deformation by a field ``tau`` is
    ``x_tau = x o (id + tau)`` (:func:`deform`). With ``c_0`` the class predicted for the
    clean ``x`` and candidates ``c_k`` the next ``candidates - 1`` classes of the clean
    logits, at the iterate ``y = deform(x, tau)`` let ``f_k = z_{c_k}(y) - z_{c_0}(y)``
    (logit differences) and ``g_k = grad_y f_k``. The linearisation of ``f_k`` in the
    field is ``f_k(y o (id + t)) ~ f_k + <alpha_k, t>`` with (paper, Eq. 8)

        ``alpha_k[d] = sum_c g_k[c] * d_d y[c]``  (``d`` = row, col; ``d_d y`` the
        image's central differences, :func:`spatial_gradient`)

    and, restricted to smooth fields ``t = S u`` (``S`` a Gaussian filter of std
    ``sigma``), the smallest step onto the linearised boundary is

        ``t_k = -f_k * S(S alpha_k) / ||S alpha_k||_2^2``

    (foolbox applies the filter twice too: then ``<alpha_k, t_k> = -f_k`` exactly; with
    ``sigma = 0`` it is the paper's unsmoothed ``-f_k alpha_k / ||alpha_k||^2``). Of the
    candidate fields ``tau + t_k`` the one of smallest L2 norm is kept (as foolbox; with
    the default two candidates there is one), and the next iterate is
    ``deform(x, tau)`` -- the summed field is always applied to the clean image. A
    sample stops as soon as the model misclassifies it (prediction != ``y``); samples
    still correctly classified after ``max_iter`` iterations try the field scaled by
    ``overshoot`` once and count as failures if that does not fool the model either
    (Foolbox 2.4 has no such rule: ``overshoot=1`` turns it off).

    Defaults: ``max_iter=100`` and ``sigma=1.0`` are Foolbox 2.4.0's ``ADefAttack``
    defaults (``as_generator(a, max_iter=100, smooth=1.0, subsample=10)``,
    ``foolbox/attacks/adef_attack.py`` line 185); ``overshoot=1.1`` and ``candidates=2``
    (only the runner-up class targeted) are not: Foolbox 2.4 targets the top
    ``subsample=10`` classes but the first (line 244, ``candidates=10`` here) and has no
    overshoot. ``preset`` -- ``robeval`` (default: these) or ``foolbox2``: Foolbox 2.4's
    values, ``max_iter=100, sigma=1.0, candidates=10, overshoot=1`` (its loop is the one
    above: no other switch is needed). The ADef paper's own experiments use other
    settings (more candidate labels, per-dataset sigma). Differences from foolbox: a batched active set;
    bilinear resampling by ``grid_sample`` with border clamping (foolbox: scipy's
    first-order spline on clipped coordinates -- the same interpolant); the Gaussian
    filter is scipy's ``gaussian_filter`` (truncate 4, mirror border) in torch.

    ``norm`` is what eps bounds: ``"field"`` (default) the field's
    :func:`~robeval.attacks.base.field_norms` (max over pixels of the displacement's
    length, in pixels); ``"linf"`` / ``"l2"`` the pixel change ``x_adv - x`` it induces.

    A minimal-norm attack returning a :class:`~robeval.attacks.base.Deformation`: with
    ``eps=inf`` the deformation found for every sample where the search succeeded, and
    ``x`` with a zero field where it failed; with a finite ``eps`` the deformation only
    where its ``norm`` is at most ``eps`` (compared in float64) and ``x`` with a zero
    field elsewhere. In every case ``x_adv == deform(x, field)``. Samples the model
    already misclassifies are returned unchanged. Untargeted only.
    """

    name: ClassVar[str] = "adef"
    minimal: ClassVar[bool] = True
    targeted: ClassVar[bool] = False
    nested: ClassVar[bool] = True  # minimal-norm: a deformation within eps is within every larger eps
    norm: Literal["field", "linf", "l2"] = "field"
    sigma: float = 1.0
    overshoot: float = 1.1
    max_iter: int = 100
    candidates: int | None = 2
    preset: Preset = "robeval"

    def __post_init__(self) -> None:
        if self.norm not in FIELD_NORMS:
            raise ValueError(f"norm must be one of {', '.join(FIELD_NORMS)}; got {self.norm!r}")
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma must be a finite number >= 0; got {self.sigma}")
        if not (math.isfinite(self.overshoot) and self.overshoot >= 1):
            raise ValueError(f"overshoot must be a finite number >= 1; got {self.overshoot}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1; got {self.max_iter!r}")
        if self.candidates is not None and (
            isinstance(self.candidates, bool) or not isinstance(self.candidates, int) or self.candidates < 2
        ):
            raise ValueError(
                f"candidates must be an integer >= 2 (the clean class and at least one other) "
                f"or None for all classes; got {self.candidates!r}"
            )

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float = math.inf,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Deformation:
        if target is not None:
            raise ValueError("adef has no targeted mode")
        if x.dim() != 4:
            raise ValueError(f"adef needs images (N, C, H, W); got shape {tuple(x.shape)}")
        x0 = x.detach()
        zero = x0.new_zeros((x0.shape[0], 2, *x0.shape[2:]))
        if eps == 0 or len(x0) == 0:
            return Deformation(x0.clone(), zero)
        x_adv, field = self.search(model, x0, y.detach())
        if math.isinf(eps):
            return Deformation(x_adv, field)
        if self.norm == "field":
            norms = field_norms(field)
        else:
            norms = perturbation_norms(x_adv - x0, self.norm)
        inside = norms.double() <= eps
        keep = inside.view(-1, 1, 1, 1)
        return Deformation(torch.where(keep, x_adv, x0), torch.where(keep, field, zero))

    def search(self, model: nn.Module, x0: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The unbounded search: per sample the deformed image and its field, or ``x0``
        and a zero field where the search fails."""
        with torch.no_grad():
            logits = model(x0)
        num_classes = logits.shape[-1]
        k = num_classes if self.candidates is None else min(self.candidates, num_classes)
        if k < 2:
            raise ValueError(f"adef needs a model with at least 2 classes; got {num_classes}")
        classes = logits.argsort(dim=-1, descending=True, stable=True)[:, :k]

        x_out = x0.clone()
        field_out = x0.new_zeros((x0.shape[0], 2, *x0.shape[2:]))
        idx = torch.arange(len(x0), device=x0.device)
        xa, x0a, ya, ca = x0, x0, y, classes
        tau = field_out.clone()  # the summed field of the active samples

        def record(mask: Tensor, images: Tensor, fields: Tensor) -> None:
            x_out[idx[mask]] = images[mask]
            field_out[idx[mask]] = fields[mask]

        for _ in range(self.max_iter):
            xr = xa.detach().requires_grad_(True)
            with torch.enable_grad():
                out = model(xr)
            z = out.detach()
            keep = None
            is_adv = z.argmax(dim=-1) != ya
            if is_adv.any():
                record(is_adv, xa, tau)
                keep = ~is_adv
                if not keep.any():
                    break
                idx, x0a, ya, tau, z = (t[keep] for t in (idx, x0a, ya, tau, z))
            graph_ca = ca
            if keep is not None:
                ca = ca[keep]
            rows = torch.arange(len(idx), device=x0.device)
            f = z.gather(1, ca) - z[rows, ca[:, 0]].unsqueeze(1)  # f_k; column 0 unused
            yd = xr.detach() if keep is None else xr.detach()[keep]
            d_row, d_col = spatial_gradient(yd)

            best_norm, best_field = None, None
            for j in range(1, k):
                seed = F.one_hot(graph_ca[:, j], num_classes) - F.one_hot(graph_ca[:, 0], num_classes)
                (g,) = torch.autograd.grad(out, xr, grad_outputs=seed.to(out.dtype), retain_graph=j < k - 1)
                if keep is not None:
                    g = g[keep]
                alpha = torch.stack(((g * d_row).sum(1), (g * d_col).sum(1)), dim=1)  # (n, 2, H, W)
                s_alpha = gaussian_smooth(alpha, self.sigma)
                norm_sq = s_alpha.square().flatten(1).sum(1)
                scale = torch.where(norm_sq > 0, -f[:, j] / norm_sq.clamp_min(1e-30), torch.zeros_like(norm_sq))
                step = scale.view(-1, 1, 1, 1) * gaussian_smooth(s_alpha, self.sigma)
                candidate = tau + step
                cand_norm = candidate.flatten(1).norm(dim=1)
                if best_norm is None:
                    best_norm, best_field = cand_norm, candidate
                else:
                    better = cand_norm < best_norm  # first of equal norms wins, as foolbox
                    best_norm = torch.where(better, cand_norm, best_norm)
                    best_field = torch.where(better.view(-1, 1, 1, 1), candidate, best_field)
            tau = best_field
            xa = deform(x0a, tau)
        else:
            with torch.no_grad():
                is_adv = model(xa).argmax(dim=-1) != ya
            record(is_adv, xa, tau)
            rest = ~is_adv
            if rest.any() and self.overshoot > 1:
                idx, x0a, ya, tau = (t[rest] for t in (idx, x0a, ya, tau))
                tau = self.overshoot * tau
                xa = deform(x0a, tau)
                with torch.no_grad():
                    is_adv = model(xa).argmax(dim=-1) != ya
                record(is_adv, xa, tau)
        return x_out, field_out
