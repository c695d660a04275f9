"""``file.py:factory`` models for the bad-input tests: a linear digits classifier whose
logits are NaN or inf on chosen inputs (``tests/bad_inputs/nonfinite_factory.py:make:mode=...``).

* ``ok``: finite everywhere (a plain model, for the tests that need a factory source).
* ``clean-nan`` / ``clean-inf``: NaN / +inf logits on every input.
* ``some-nan``: NaN logits on the images whose mean pixel is above 0.33 (some test images).
* ``perturbed-nan``: NaN logits on inputs off the digits' 1/16 pixel grid, i.e. on every
  perturbed image and on none of the clean ones (the data set's pixels are k/16).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MODES = ("ok", "clean-nan", "clean-inf", "some-nan", "perturbed-nan")


class NonFiniteNet(nn.Module):
    """Linear logits over the 64 pixels, made non-finite where ``mode`` says."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.linear = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.linear(x.flatten(1))
        if self.mode == "ok":
            return logits
        if self.mode == "clean-inf":
            return logits + float("inf")
        if self.mode == "clean-nan":
            bad = torch.ones(len(x), dtype=torch.bool, device=x.device)
        elif self.mode == "some-nan":
            bad = x.flatten(1).mean(1) > 0.33
        else:
            grid = x.flatten(1) * 16
            bad = (grid - grid.round()).abs().amax(1) > 1e-3
        return torch.where(bad[:, None], torch.full_like(logits, float("nan")), logits)


def make(mode: str = "ok") -> tuple[nn.Module, dict]:
    """The model of ``mode``, seeded, for the digits data set (8x8 grey images)."""
    torch.manual_seed(0)
    return NonFiniteNet(mode).eval(), {"dataset": "digits", "input_shape": (1, 8, 8)}
