"""A ``file.py:factory`` source for the zoo of broken defences (tests/broken_defences.py),
so the indicator tests evaluate them end to end like any user model:
``tests/zoo_factory.py:make:kind=quantized,ckpt=PATH``. Built models are cached per
(kind, checkpoint) and handed out as copies (BPDA changes a model in place)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import broken_defences  # noqa: E402

_BUILT: dict[tuple[str, str], nn.Module] = broken_defences.__dict__.setdefault("_FACTORY_CACHE", {})


def make(kind: str, ckpt: str) -> tuple[nn.Module, dict]:
    """The zoo model ``kind`` around the checkpoint ``ckpt`` (``kind=base``: the model itself)."""
    import robeval

    key = (kind, ckpt)
    if key not in _BUILT:
        base = robeval.load_model(ckpt)
        builders = {
            "base": lambda b: b.eval(), "quantized": broken_defences.quantized, "jpeg_like": broken_defences.jpeg_like,
            "random_resize_pad": broken_defences.random_resize_pad,
            "saturated_softmax": broken_defences.saturated_softmax, "detached": broken_defences.detached,
            "kwta": broken_defences.kwta,
        }
        _BUILT[key] = builders[kind](base)
    return copy.deepcopy(_BUILT[key]), {"dataset": "digits", "input_shape": (1, 8, 8)}
