"""Pieces shared by the model sources: ``key=value`` options after the source, per-channel
mean/std, the Normalize wrapper, file checks and hashes, and reading a state_dict safely.

Options follow the source after a colon as ``key=value,key=value`` (as in
``pgd:steps=40``); per-channel values are separated by ``;`` because ``,`` separates
options: ``mean=0.5;0.5;0.5``. ``mean=none`` switches the Normalize wrapper off.
"""

from __future__ import annotations

import hashlib
import importlib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robeval.errors import RobevalError
from robeval.models.normalize import Normalize
from robeval.models.pickle_scan import code_globals, refused_pickle
from robeval.params import parse_number

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Keys under which checkpoints of other code bases nest their state_dict.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "net")


def split_options(text: str) -> tuple[str, str]:
    """``"PATH:k=v,k2=v2"`` -> ``("PATH", "k=v,k2=v2")``; a tail without ``=`` stays in PATH."""
    head, colon, tail = text.rpartition(":")
    if colon and "=" in tail:
        return head, tail
    return text, ""


def parse_options(text: str, *, source: str, allowed: Sequence[str]) -> dict[str, str]:
    """``"k=v,k2=v2"`` -> ``{"k": "v", "k2": "v2"}`` (values kept as typed)."""
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not eq or not key:
            raise RobevalError(f"cannot read option {part!r} in model source {source!r}; write key=value")
        if key not in allowed:
            raise RobevalError(
                f"unknown option {key!r} in model source {source!r}; known: {', '.join(allowed)}"
            )
        if key in options:
            raise RobevalError(f"model source {source!r} gives {key} twice; keep one {key}=VALUE")
        options[key] = value.strip()
    return options


def parse_stats(text: str | None, default: Sequence[float] | None, what: str) -> tuple[float, ...] | None:
    """``"0.5;0.5;0.5"`` -> ``(0.5, 0.5, 0.5)``; ``"none"`` -> None; missing -> default."""
    if text is None:
        return tuple(default) if default is not None else None
    if text.strip().lower() in ("none", "null", ""):
        return None
    return tuple(parse_number(v, what=what) for v in text.split(";") if v.strip())


def wrap_normalize(net: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None) -> nn.Module:
    """``net`` behind robeval's [0,1] :class:`Normalize` wrapper, or ``net`` itself when
    neither mean nor std is given (the model normalises inside, or takes [0,1] as is)."""
    if mean is None and std is None:
        return net
    return Normalize(net, mean if mean is not None else 0.0, std if std is not None else 1.0)


def existing_file(path: str, what: str) -> Path:
    """``path`` as a Path, or one error naming the path when there is no such file."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise RobevalError(f"{what} {str(file)!r} does not exist; check the path")
    return file


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def options_tag(options: Mapping[str, str], *, skip: Sequence[str] = ()) -> str:
    """A short, order-independent tag of the options that change what a model computes
    (mean, std, sizes, ...), appended to a source's identity so that the same weights under
    another normalisation never share cached results; ``""`` when there are none."""
    kept = sorted((k, v) for k, v in options.items() if k not in skip)
    if not kept:
        return ""
    return ":opts-" + hashlib.sha256(repr(kept).encode()).hexdigest()[:16]


def resize_option(text: str | None, source: str) -> tuple[int, int] | None:
    """``input_size=S`` (a square side) -> ``(S, S)``; ``none``/missing -> None."""
    if text is None or text.strip().lower() in ("none", "no", "false", ""):
        return None
    try:
        side = int(text)
    except ValueError:
        raise RobevalError(f"input_size must be an integer (the side in pixels) in {source!r}") from None
    if side < 1:
        raise RobevalError(f"input_size must be >= 1 in {source!r}")
    return side, side


def read_state_dict(path: Path, *, what: str) -> dict[str, torch.Tensor]:
    """The state_dict in ``path`` (``torch.load(weights_only=True)``: no code runs), unnested
    from ``{"state_dict": ...}``-style wrappers, with ``module.`` (DataParallel) and
    ``model.`` prefixes stripped when every key has them."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # torch's note before refusing
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        forbidden = code_globals(path)
        if forbidden or "GLOBAL" in str(exc):
            raise refused_pickle(path, forbidden, what=f"a {what} of plain weights",
                                 fix="save the weights with torch.save(model.state_dict(), PATH)") from exc
        lines = str(exc).strip().splitlines()
        raise RobevalError(
            f"cannot read {what} {str(path)!r} as a state_dict ({type(exc).__name__}: "
            f"{lines[0] if lines else 'unreadable'}); give a file saved with torch.save(model.state_dict(), PATH)"
        ) from exc
    for key in STATE_DICT_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RobevalError(f"{what} {str(path)!r} does not hold a state_dict (a mapping of names to tensors)")
    state = dict(state)
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(net: nn.Module, path: Path, *, what: str, hint: str) -> None:
    """Load the state_dict in ``path`` into ``net``, one clear error when it does not fit."""
    state = read_state_dict(path, what=what)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise RobevalError(f"{what} {str(path)!r} does not fit {hint}: {first}") from exc


#: How to install the libraries of the ``timm:``, ``robustbench:`` and ``onnx:`` sources.
ZOO_EXTRA = "pip install 'robeval[zoo]'"


def import_optional(module: str) -> Any:
    """Import an optional library of the ``zoo`` extra, its import-time deprecation
    notices silenced; one error naming the install command when it is missing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except ImportError as exc:
        raise RobevalError(f"{module} is not installed ({exc}); {ZOO_EXTRA}") from exc
