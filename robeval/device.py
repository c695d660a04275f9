"""Device selection: ``auto`` picks CUDA when present, else the CPU."""

from __future__ import annotations

import torch

from robeval.errors import RobevalError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Map ``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` to a usable :class:`torch.device`."""
    if isinstance(name, torch.device):
        return name
    text = name.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise RobevalError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RobevalError(f"device {name!r} asked for but CUDA is not available; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise RobevalError(
            f"device {name!r} does not exist ({torch.cuda.device_count()} GPU(s)); pick a lower index"
        )
    return device
