"""The precision and memory layout of the model's passes: ``--amp bf16`` and channels_last.

``--amp bf16`` runs every model pass of an attack, and the runner's prediction on its
adversarials, under CUDA autocast to bfloat16 (Kalamkar et al., "A Study of BFLOAT16 for
Deep Learning Training", 2019; PyTorch's ``torch.autocast``): convolutions and matrix
products in bfloat16 (8-bit mantissa, float32's range), reductions and losses in
float32. The logits leave the model as float32 (:class:`Autocast`), so arg-max and
losses are float32 functions of bfloat16-rounded logits. Gradients are coarser and
predictions near the decision boundary can flip, so robust accuracy can differ from
float32 by a fraction of a percent: a cell records its ``amp`` and is keyed apart. On a
device other than CUDA the mode is inactive: one warning, and float32 numbers (still
keyed as ``bf16``).

channels_last: on CUDA a convolutional model is converted once
(``model.to(memory_format=torch.channels_last)``) and its 4-D batches too, so cuDNN
picks its NHWC kernels (the layout tensor cores want; NVIDIA's "Tensor Core
requirements" in the cuDNN and PyTorch channels_last guides). A model whose forward
refuses that layout (e.g. a ``.view`` that needs contiguous activations) is put back
and keeps the default layout. Elsewhere nothing changes.
"""

from __future__ import annotations

import logging
import warnings
import weakref
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

#: ``--amp`` modes and the dtype each autocasts to (``off``: none).
AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16}


def amp_active(amp: str, device: torch.device) -> bool:
    """Whether ``amp`` changes the passes on ``device`` (CUDA only); warns when it is
    asked for elsewhere."""
    if amp == "off":
        return False
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be 'off' or one of {', '.join(AMP_DTYPES)}; got {amp!r}")
    if torch.device(device).type != "cuda":
        warnings.warn(f"--amp {amp} needs a CUDA device; on {torch.device(device).type} the model runs in float32",
                      stacklevel=2)
        return False
    return True


def model_autocast(amp: str, device: torch.device) -> AbstractContextManager[object]:
    """``torch.autocast`` to ``amp``'s dtype on CUDA; a ``nullcontext`` when ``amp`` is
    ``off`` or the device is not CUDA."""
    if amp == "off" or torch.device(device).type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=AMP_DTYPES[amp])


class Autocast(nn.Module):
    """``model`` whose passes run under :func:`model_autocast`, its logits returned as float32."""

    def __init__(self, model: nn.Module, amp: str, device: torch.device) -> None:
        super().__init__()
        self.model = model
        self.amp = amp
        self.device = torch.device(device)

    def forward(self, x: Tensor) -> Tensor:
        with model_autocast(self.amp, self.device):
            out = self.model(x)
        return out.float()


def device_model(model: nn.Module, amp: str, device: torch.device) -> nn.Module:
    """``model`` as the runner calls it: under autocast when ``amp`` is active on
    ``device``, else ``model`` itself."""
    return Autocast(model, amp, device) if amp_active(amp, device) else model


_LAYOUT: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def use_channels_last(model: nn.Module, x: Tensor) -> bool:
    """Whether ``model`` takes batches like ``x`` (on its device) as channels_last:
    decided once per model (CUDA, 4-D inputs, a model with 2-D convolutions that
    accepts the layout), converting it on the way."""
    if x.device.type != "cuda" or x.dim() != 4 or not isinstance(model, nn.Module):
        return False
    decided = _LAYOUT.get(model)
    if decided is not None:
        return decided
    ok = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if ok:
        model.to(memory_format=torch.channels_last)
        try:
            with torch.no_grad():
                model(x[:1].contiguous(memory_format=torch.channels_last))
        except RuntimeError as exc:
            log.info("%s refuses channels_last inputs (%s); it keeps the default layout", type(model).__name__, exc)
            model.to(memory_format=torch.contiguous_format)
            ok = False
    _LAYOUT[model] = ok
    return ok


def to_layout(x: Tensor, channels_last: bool) -> Tensor:
    """``x`` in the layout :func:`use_channels_last` chose (a no-op when it chose none)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


__all__ = ["AMP_DTYPES", "Autocast", "amp_active", "device_model", "model_autocast", "to_layout", "use_channels_last"]
