"""Spectral norm constraint (SNC) of conv layers: exact singular values via the 2-D FFT
(Sedghi, Gupta, Long: "The Singular Values of Convolutional Layers", ICLR 2019,
Theorem 6 and section 2.2), the Absum paper's baseline (clipped once every 100
iterations)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from robeval.errors import RobevalError
from robeval.train.regularisers import conv_layers, regularisers


def _size(n: int | tuple[int, int], weight: Tensor) -> tuple[int, int]:
    nh, nw = (n, n) if isinstance(n, int) else n
    kh, kw = weight.shape[-2:]
    if nh < kh or nw < kw:
        raise ValueError(f"input size {(nh, nw)} is smaller than the kernel {(kh, kw)}")
    return nh, nw


def _spectrum(weight: Tensor, n: int | tuple[int, int]) -> Tensor:
    """Per-frequency ``(nh, nw, c_out, c_in)`` complex matrices of the conv (float64)."""
    transform = torch.fft.fft2(weight.detach().double(), s=_size(n, weight))  # (O, I, nh, nw)
    return transform.permute(2, 3, 0, 1)


def conv_singular_values(weight: Tensor, n: int | tuple[int, int]) -> Tensor:
    """All singular values of the conv with ``weight`` ``(c_out, c_in, k, k)`` on ``n x n``
    inputs, stride 1, circular padding (Sedghi et al., Theorem 6).

    Returns ``(n, n, min(c_out, c_in))``: for frequency ``(u, v)`` the singular values of
    the ``c_out x c_in`` matrix ``FFT2(w padded to n x n)[:, :, u, v]``. Holds for torch's
    cross-correlation too: it differs from convolution by a kernel flip, which conjugates
    each frequency matrix and multiplies it by a unit phase; neither changes singular
    values. Float64.
    """
    return torch.linalg.svdvals(_spectrum(weight, n))


def clip_conv_spectrum(weight: Tensor, n: int | tuple[int, int], sigma: float, *, crop: bool = True) -> Tensor:
    """Clip the conv's singular values to ``sigma`` (Sedghi et al., section 2.2).

    FFT of the kernel padded to ``n x n``; per frequency ``U S V^H -> U min(S, sigma) V^H``;
    inverse FFT (real part; the clipped spectrum keeps the conjugate symmetry of a real
    kernel). With ``crop`` (default) the result is projected back onto the original
    ``k x k`` support (``[:k, :k]``), as Sedghi et al. do; the projection can raise the
    largest singular value slightly above ``sigma`` again, which their method accepts
    (repeated clip-and-project steps, one per call, alternate between the two sets).
    ``crop=False`` returns the ``n x n`` kernel whose operator norm is exactly
    ``<= sigma``. Same dtype as ``weight``.
    """
    if sigma <= 0:
        raise ValueError("sigma must be > 0")
    u, s, vh = torch.linalg.svd(_spectrum(weight, n), full_matrices=False)
    clipped = (u * s.clamp(max=sigma).unsqueeze(-2).to(u.dtype)) @ vh
    kernel = torch.fft.ifft2(clipped.permute(2, 3, 0, 1)).real
    if crop:
        kernel = kernel[..., : weight.shape[-2], : weight.shape[-1]]
    return kernel.to(weight.dtype)


def _clip_grouped(conv: nn.Conv2d, n: tuple[int, int], sigma: float) -> Tensor:
    """Clip each group's block of a grouped conv (the operator is block diagonal)."""
    w = conv.weight.detach()
    per_group = w.shape[0] // conv.groups
    return torch.cat([clip_conv_spectrum(w[g * per_group:(g + 1) * per_group], n, sigma)
                      for g in range(conv.groups)])


@regularisers.register("snc")
@dataclass(frozen=True, kw_only=True)
class SNC:
    """Spectral norm constraint: every ``every`` optimiser steps, clip the singular values
    of each conv layer to ``sigma`` (:func:`clip_conv_spectrum`, exact via FFT + per
    frequency SVD, projected back onto the kernel support).

    Each layer's ``n x n`` is the spatial size of *its own* input (after earlier pooling),
    found with forward hooks: from the first training batch ``penalty`` sees (default),
    or, when ``input_size`` is given, from a forward pass of a zero image of that side
    (use it to constrain without a penalty call, e.g. outside the training loop).
    Stride, zero padding and dilation are ignored (circular, stride-1 model of Sedghi et
    al.; subsampling a stride-1 output cannot raise the norm); grouped convs are
    clipped block by block. ``penalty`` is always 0.

    Defaults: ``sigma=1.0`` (paper's runtime setting; grid 0.01, 0.1, 0.5, 1, 10),
    ``every=100`` (the Absum paper clips "once in 100 iterations").
    """

    name: ClassVar[str] = "snc"
    sigma: float = 1.0
    every: int = 100
    input_size: int | None = None
    _state: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def state_dict(self) -> dict[str, int]:
        """The step counter, saved with a training run's resume state (the layer sizes are
        measured again on the first batch)."""
        return {"calls": int(self._state.get("calls", 0))}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._state["calls"] = int(state.get("calls", 0))

    def __post_init__(self) -> None:
        if self.sigma <= 0:
            raise ValueError("sigma must be > 0")
        if self.every < 1:
            raise ValueError("every must be >= 1")
        if self.input_size is not None and self.input_size < 1:
            raise ValueError("input_size must be >= 1")

    def penalty(self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        if "sizes" not in self._state:
            self._state["sizes"] = self._record_sizes(model, x[:1].detach())
        return logits.new_zeros(())

    def after_step(self, model: nn.Module, lr: float) -> None:
        self._state["calls"] = self._state.get("calls", 0) + 1
        if self._state["calls"] % self.every:
            return
        self.apply(model)

    def apply(self, model: nn.Module) -> None:
        """Clip every conv layer of ``model`` now."""
        sizes = self._sizes(model)
        with torch.no_grad():
            for name, conv in conv_layers(model):
                h, w = sizes[name]
                n = (max(h, conv.weight.shape[-2]), max(w, conv.weight.shape[-1]))
                conv.weight.copy_(_clip_grouped(conv, n, self.sigma))

    def _sizes(self, model: nn.Module) -> dict[str, tuple[int, int]]:
        if "sizes" not in self._state:
            if self.input_size is None:
                raise RobevalError("snc does not know the layers' input sizes yet; give snc:input_size=N "
                                   "(the image side) or call penalty() on a batch first")
            convs = conv_layers(model)
            if not convs:
                return {}
            channels = convs[0][1].in_channels
            param = next(model.parameters())
            probe = torch.zeros(1, channels, self.input_size, self.input_size, device=param.device, dtype=param.dtype)
            self._state["sizes"] = self._record_sizes(model, probe)
        return self._state["sizes"]

    @staticmethod
    def _record_sizes(model: nn.Module, x: Tensor) -> dict[str, tuple[int, int]]:
        sizes: dict[str, tuple[int, int]] = {}
        handles = [
            conv.register_forward_pre_hook(
                lambda _m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:])))
            for name, conv in conv_layers(model)
        ]
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(x)
        finally:
            model.train(was_training)
            for handle in handles:
                handle.remove()
        return sizes
