"""Fourier-domain perturbations: the single Fourier attack (SFA; Tsuzuku & Sato, CVPR
2019, as written in Absum, Eq. 6) and the radial low-/high-pass filters of the
High-Frequency attack (Wang et al., CVPR 2020; Absum appendix, Eqs. 18-19) and of the
frequency analysis of local-response-differences Sec. 3.1 (Fig. 1: filtered and
frequency-swapped images).

None of these attacks look at the model's gradients. They are not nested (an SFA at a
smaller eps is not one at a larger eps; a filter ignores eps), so the runner attacks every
clean-correct point at every eps (``nested = False``).

Conventions: ``x`` is ``(N, C, H, W)`` (any leading dimensions) in [0, 1]; the DFT is
``torch.fft.fft2`` over the last two dimensions, unnormalised, with index ``(k1, k2)``
meaning the frequencies ``k1 / H`` and ``k2 / W`` cycles per pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from robeval.attacks.registry import attacks

#: How an SFA mode is sized by eps (:func:`sfa_perturbation`).
SfaScale = Literal["peak", "eq6"]
SFA_SCALES: tuple[str, ...] = ("peak", "eq6")
#: What the zero-mean high-pass image is shifted by before it is clipped to [0, 1]
#: (:func:`highpass_image`).
HighpassShift = Literal["mean", "grey", "zero"]
HIGHPASS_SHIFTS: tuple[str, ...] = ("mean", "grey", "zero")


def sfa_perturbation(
    l: int, m: int, shape_hw: tuple[int, int], eps: float,
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
    *, scale: str = "peak",
) -> Tensor:
    """The real ``(H, W)`` single-Fourier perturbation of Absum Eq. (6).

    ``P = (1+j) F_l ⊗ F_m + (1-j) F_{n-l} ⊗ F_{n-m}`` with ``(F)_l`` the ``l``-th column of
    the DFT matrix, ``(F)_{l,k} = exp(-j 2 pi l k / n)``. The second term is the complex
    conjugate of the first, so with ``theta[a, b] = 2 pi (l a / H + m b / W)``::

        P[a, b] = 2 Re((1 + j) exp(-j theta)) = 2 (cos theta + sin theta)

    is real. For a non-square image ``n`` is ``H`` for ``l`` and ``W`` for ``m``; ``l`` and
    ``m`` are taken modulo ``H`` and ``W``. ``l`` runs along the rows (``H``) and ``m``
    along the columns (``W``): the Kronecker product reshaped row-major. Under Eq. (4)'s
    ``vec`` (columns stacked) the paper's ``(l, m)`` is this ``(m, l)``; the grid's Avg
    and Min (Table 1) are the same either way, only a heat map is transposed.

    ``scale`` -- how eps sizes the mode:

    * ``peak`` (default): ``P`` is divided by its own maximum absolute value and
      multiplied by ``eps``, so ``max |P| = eps`` exactly (before the image is clipped to
      [0, 1]): eps is an L-inf bound. Absum calls eps "the magnitude of the attack" and
      states the SFA budgets on the pixel scale of PGD's L-inf budgets (MNIST/FMNIST
      80/255, CIFAR/SVHN/ImageNet 10/255), which this reading makes exact.
    * ``eq6``: Eq. (6) read literally, ``eps * P``. Its peak is ``2 sqrt 2 cos(delta)``
      times eps with ``delta`` the distance (in phase) from the nearest pixel phase to a
      crest of ``cos + sin``: between 2 (the DC mode, Nyquist modes and every mode whose
      phases step by a quarter period) and ``2 sqrt 2`` (phases that hit pi/4); on a
      28 x 28 image it is 2 for ``l, m`` in {0, 7, 14, 21} and
      ``2 sqrt 2 cos(pi/28) = 2.811`` otherwise. Tsuzuku & Sato's own text (CVPR 2019)
      was not available to check which normalisation they used; the literal form is
      kept as this option.

    The unnormalised maximum is at least 2 (``P[0, 0] = 2``), so ``peak``'s division
    is always defined.

    Edge cases: ``(l, m) = (0, 0)`` is the DC mode, ``P = eps`` everywhere (a brightness
    shift; ``2 eps`` with ``eq6``); when ``l`` is 0 or ``H/2`` and ``m`` is 0 or ``W/2`` the
    mode is its own conjugate (``(n-l, n-m) = (l, m)`` mod n), ``theta`` is a multiple of
    pi and ``P`` is ``±eps`` (a checkerboard or stripes at the Nyquist frequency). In
    every case the DFT of ``P`` is non-zero only at ``(l, m)`` and ``(-l, -m)`` mod
    ``(H, W)``.
    """
    if scale not in SFA_SCALES:
        raise ValueError(f"scale must be one of {', '.join(SFA_SCALES)}, not {scale!r}")
    height, width = (int(v) for v in shape_hw)
    l_mod, m_mod = int(l) % height, int(m) % width
    rows = torch.arange(height, dtype=torch.float64, device=device).view(-1, 1)
    cols = torch.arange(width, dtype=torch.float64, device=device).view(1, -1)
    # Reduce the phase products modulo n in exact integer arithmetic first (accuracy).
    theta = 2 * math.pi * (((l_mod * rows) % height) / height + ((m_mod * cols) % width) / width)
    wave = torch.cos(theta) + torch.sin(theta)  # = P / 2 of Eq. (6)
    unit = wave / wave.abs().max() if scale == "peak" else 2 * wave  # peak: max |unit| == 1 exactly
    return (float(eps) * unit.to(dtype)).to(dtype)


def _as_image_perturbation(p: Tensor, x: Tensor) -> Tensor:
    return p.to(dtype=x.dtype, device=x.device).expand_as(x)


def _radial_mask(height: int, width: int, radius: float, device: torch.device | None) -> Tensor:
    """``True`` where the (fftshift-ed) frequency lies within Euclidean distance
    ``radius`` of the centre ``(H // 2, W // 2)`` (where fftshift puts the DC term), as
    Absum Eq. (18) (``d <= r``)."""
    rows = torch.arange(height, dtype=torch.float64, device=device).view(-1, 1) - height // 2
    cols = torch.arange(width, dtype=torch.float64, device=device).view(1, -1) - width // 2
    return (rows**2 + cols**2).sqrt() <= float(radius)


def _filter(x: Tensor, radius: float, keep_low: bool) -> Tensor:
    if radius < 0 or math.isnan(radius):
        raise ValueError(f"radius must be >= 0, not {radius}")
    height, width = x.shape[-2:]
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    mask = _radial_mask(height, width, radius, x.device)
    if not keep_low:
        mask = ~mask
    kept = spectrum * mask.to(spectrum.real.dtype)
    return torch.fft.ifft2(torch.fft.ifftshift(kept, dim=(-2, -1))).real.to(x.dtype)


def lowpass(x: Tensor, radius: float) -> Tensor:
    """Keep the frequencies within ``radius`` of the centre of the shifted spectrum,
    per channel (Absum Eq. 18; Wang et al.'s High-Frequency attack); not clipped.

    ``radius >= sqrt((H//2)^2 + (W//2)^2)`` (e.g. the half-diagonal) keeps everything
    (the identity up to float error); ``radius = 0`` keeps only the DC term, i.e. every
    pixel becomes its channel's mean.
    """
    return _filter(x, radius, keep_low=True)


def highpass(x: Tensor, radius: float) -> Tensor:
    """The complement of :func:`lowpass` (Absum Eq. 19): the frequencies farther than
    ``radius`` from the centre; ``lowpass(x, r) + highpass(x, r) == x`` up to float
    error. Not clipped (it has zero mean for any ``radius >= 0``)."""
    return _filter(x, radius, keep_low=False)


def highpass_image(x: Tensor, radius: float, shift: str = "mean") -> Tensor:
    """What the ``highpass`` attack shows the model: ``clip(highpass(x, r) + s, 0, 1)``.

    The high-pass part of Eq. (19) has zero mean, so about half of its entries are
    negative. The papers test models on it and mention no clip or shift (Absum, under
    Table 3: "high-pass filtering"; local-response-differences Fig. 6: "images through
    high-pass filter"), but an image in [0, 1] cannot hold it. ``shift`` says what it is
    added to before the clip:

    * ``mean`` (default): the image's own per-channel mean, i.e. the DC term is kept
      and only the frequencies ``0 < d <= r`` are removed: Eq. (19) but for that one
      coefficient, at the image's own brightness. At the default radius (half the
      width) 0.1 % of MNIST pixels and none of 32 x 32 shapes need the clip; at
      ``r = W/8`` 19 % of MNIST pixels do (the black background rings below 0).
    * ``grey``: 0.5, the zero-mean image on a mid-grey background (how high-pass
      images are usually shown; fewest clipped pixels, 3 % of MNIST at ``r = W/8``, but
      a brightness far from MNIST's black background).
    * ``zero``: nothing is added; the clip then zeroes every negative entry, about half
      of the high-pass image (robeval's behaviour before the option existed).

    No shift is the papers' input exactly: theirs is not in [0, 1]. A shift is a
    constant image, which the model's normalisation does not remove.
    """
    if shift not in HIGHPASS_SHIFTS:
        raise ValueError(f"shift must be one of {', '.join(HIGHPASS_SHIFTS)}, not {shift!r}")
    high = highpass(x, radius)
    if shift == "mean":
        high = high + x.mean(dim=(-2, -1), keepdim=True)
    elif shift == "grey":
        high = high + 0.5
    return high.clamp(0.0, 1.0)


def frequency_swap(x_low_source: Tensor, x_high_source: Tensor, radius: float) -> Tensor:
    """The low frequencies (within ``radius``) of ``x_low_source`` plus the high
    frequencies of ``x_high_source``: the "merged" images of local-response-differences
    Fig. 1(c, d) (natural images with adversarial high frequencies and vice versa). Not
    clipped; equal inputs give the input back."""
    if x_low_source.shape != x_high_source.shape:
        raise ValueError(f"shapes differ: {tuple(x_low_source.shape)} vs {tuple(x_high_source.shape)}")
    return lowpass(x_low_source, radius) + highpass(x_high_source, radius)


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor) -> Tensor:
    return model(x).argmax(dim=1)


@attacks.register("sfa")
@dataclass(frozen=True, kw_only=True)
class SFA:
    """Single Fourier attack (Tsuzuku & Sato 2019; Absum Eq. 6): ``clip(x + P_{l,m}, 0, 1)``
    with ``P`` from :func:`sfa_perturbation`, the same on every channel.

    ``scale`` -- how eps sizes ``P`` (see :func:`sfa_perturbation`): ``peak`` (default,
    ``max |P| = eps``, an L-inf bound, ``norm=linf``) or ``eq6`` (Eq. 6 read literally,
    ``eps * P``, whose peak is 2 to 2.83 times eps; eps is then no L-inf bound, so give
    ``norm=scale`` with it: ``sfa:scale=eq6,norm=scale``, and the runner checks only
    the [0, 1] box).

    It is black-box and input-agnostic; only ``+P`` is used, as in the paper (``-P`` is
    ``P`` of the same mode shifted by half a period, not a separate hyperparameter).

    ``l`` and ``m`` given: that single frequency (a universal perturbation). Both left
    out: a per-sample search over the whole ``H x W`` grid, returning for each sample the
    first ``(l, m)`` in row-major order that the model misclassifies (else the last
    mode's image). This per-sample worst case is *stronger* than Absum Table 1's "Min",
    which is the minimum over ``(l, m)`` of the accuracy (one mode for all images); use
    :func:`robeval.analysis.sfa_grid.sfa_grid` for the paper's Avg/Min. Paper budgets:
    eps = 80/255 on MNIST/FMNIST, 10/255 on CIFAR, SVHN and ImageNet.
    """

    name: ClassVar[str] = "sfa"
    minimal: ClassVar[bool] = False
    targeted: ClassVar[bool] = False
    nested: ClassVar[bool] = False
    gradient_free: ClassVar[bool] = True  # model queries only: runs on black-box models
    norm: str = "linf"
    l: int | None = None
    m: int | None = None
    scale: SfaScale = "peak"

    def __post_init__(self) -> None:
        if (self.l is None) != (self.m is None):
            raise ValueError("give both l and m (one frequency) or neither (search the grid)")
        if self.scale not in SFA_SCALES:
            raise ValueError(f"scale must be one of {', '.join(SFA_SCALES)}")
        if self.scale == "peak" and self.norm != "linf":
            raise ValueError("sfa's eps is an L-inf bound with scale=peak; leave norm out (norm=linf), "
                             "or write sfa:scale=eq6,norm=scale for Eq. 6's literal size")
        if self.scale == "eq6" and self.norm != "scale":
            raise ValueError("sfa:scale=eq6 peaks at 2 to 2.83 x eps, outside the L-inf ball of eps; "
                             "write sfa:scale=eq6,norm=scale (eps is then Eq. 6's factor, not a bound)")

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        x = x.detach()
        if eps == 0:
            return x.clone()
        height, width = x.shape[-2:]
        if self.l is not None and self.m is not None:
            p = sfa_perturbation(self.l, self.m, (height, width), eps, dtype=x.dtype, device=x.device,
                                 scale=self.scale)
            return (x + _as_image_perturbation(p, x)).clamp(0.0, 1.0)
        best = x.clone()
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        y = y.to(x.device)
        for l_ in range(height):
            for m_ in range(width):
                p = sfa_perturbation(l_, m_, (height, width), eps, dtype=x.dtype, device=x.device,
                                     scale=self.scale)
                x_adv = (x + _as_image_perturbation(p, x)).clamp(0.0, 1.0)
                last = l_ == height - 1 and m_ == width - 1
                take = ~done if last else ~done & (_predict(model, x_adv) != y)
                best[take] = x_adv[take]
                done |= take
                if bool(done.all()):
                    return best
        return best


@dataclass(frozen=True, kw_only=True)
class _Filter:
    """Shared call of the low-/high-pass filter attacks."""

    name: ClassVar[str] = ""
    minimal: ClassVar[bool] = False
    targeted: ClassVar[bool] = False
    nested: ClassVar[bool] = False
    gradient_free: ClassVar[bool] = True  # model queries only: runs on black-box models
    keep_low: ClassVar[bool] = True
    norm: str = "scale"
    radius: float | None = None

    def __post_init__(self) -> None:
        if self.radius is not None and not self.radius >= 0:
            raise ValueError("radius must be >= 0")
        if self.norm != "scale":
            raise ValueError("a filter has no budget; norm must be scale")

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        x = x.detach()
        if eps == 0:
            return x.clone()
        radius = x.shape[-1] / 2 if self.radius is None else float(self.radius)
        return self._image(x, radius)

    def _image(self, x: Tensor, radius: float) -> Tensor:
        return _filter(x, radius, keep_low=self.keep_low).clamp(0.0, 1.0)


@attacks.register("lowpass")
@dataclass(frozen=True, kw_only=True)
class LowPass(_Filter):
    """High-Frequency attack (Wang et al. 2020; Absum Eq. 18, Table 3): remove the
    frequencies farther than ``radius`` from the centre of the shifted spectrum, per
    channel, and clip to [0, 1]. Default radius: half the image width (Absum).

    A filter, not a budget: eps is ignored except that ``eps = 0`` returns the clean
    images; run it at one non-zero eps and sweep the cut-off with several
    ``--attack lowpass:radius=R`` (local-response-differences Fig. 1(a, b)).
    """

    name: ClassVar[str] = "lowpass"
    keep_low: ClassVar[bool] = True


@attacks.register("highpass")
@dataclass(frozen=True, kw_only=True)
class HighPass(_Filter):
    """The complementary filter (Absum Eq. 19; local-response-differences Fig. 6): keep
    only the frequencies farther than ``radius`` from the centre of the shifted spectrum,
    per channel, add ``shift`` and clip to [0, 1] (:func:`highpass_image`). Default
    radius: half the image width.

    The high-pass part alone has zero mean, and an image in [0, 1] cannot hold its
    negative half, so ``shift`` says what it is added to: ``mean`` (default; the
    image's own per-channel mean, i.e. the DC term is kept and only ``0 < d <= r`` is
    removed), ``grey`` (0.5) or ``zero`` (clip it as it is: every negative entry, about
    half of the image, becomes 0; robeval's only behaviour before the option).

    eps is ignored except ``eps = 0`` returns the clean images; sweep radii with several
    ``--attack highpass:radius=R``."""

    name: ClassVar[str] = "highpass"
    keep_low: ClassVar[bool] = False
    shift: HighpassShift = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shift not in HIGHPASS_SHIFTS:
            raise ValueError(f"shift must be one of {', '.join(HIGHPASS_SHIFTS)}")

    def _image(self, x: Tensor, radius: float) -> Tensor:
        return highpass_image(x, radius, self.shift)
