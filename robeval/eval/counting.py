"""Counting the work an attack does: forward and backward passes, per image.

:class:`PassCounter` wraps a model; every forward call adds its batch size to
``forward``, and every gradient that flows back through the model's output (whether by
``backward`` or ``torch.autograd.grad``) adds the batch size to ``backward``. A
gradient step on 100 images is therefore 100 forward and 100 backward passes, so the
counts measure work whatever batches an attack chooses.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class PassCounts:
    forward: int = 0
    backward: int = 0


class PassCounter(nn.Module):
    """``model`` with pass counting; the wrapped model is used as is (same parameters)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.counts = PassCounts()

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        n = int(x.shape[0])
        self.counts.forward += n
        if out.requires_grad:
            out.register_hook(lambda grad: self._count_backward(n))
        return out

    def _count_backward(self, n: int) -> None:
        self.counts.backward += n
