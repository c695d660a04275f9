"""The robeval checkpoint format: save, load (safely) and hash.

A checkpoint is one ``torch.save`` file holding a plain dict::

    {"format": "robeval.checkpoint", "format_version": 1,
     "state_dict": <inner net's state_dict>, "meta": <CheckpointMeta as plain values>}

Checkpoints are untrusted input: they are read with ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain data, so loading never runs code.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robeval.atomic import atomic_open
from robeval.errors import RobevalError
from robeval.models.build import build_model
from robeval.models.normalize import Normalize
from robeval.models.pickle_scan import code_globals, refused_pickle

CHECKPOINT_FORMAT = "robeval.checkpoint"
#: The newest format version this robeval writes and reads.
CHECKPOINT_FORMAT_VERSION = 1

#: Substrings of the errors torch's weights-only unpickler raises for forbidden objects
#: (globals such as ``os.system``, ``__reduce__`` calls, object construction).
_FORBIDDEN_MARKERS = (
    "GLOBAL",
    "Trying to call reduce",
    "Can only create new object",
    "Can only build",
)


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about its model; all values are plain (JSON-like) data."""

    arch: str  # canonical registry name
    arch_args: dict[str, Any]  # full resolved args incl. activation
    dataset: str  # dataset spec string, e.g. "mnist-mini"
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_spec: dict[str, Any]  # the full training spec (plain values)
    metrics: dict[str, float]  # e.g. {"test_acc": 0.97}
    robeval_version: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples become lists); raises ``TypeError`` for non-plain values."""
        return {key: _plain(value, key) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckpointMeta:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, missing ones raise."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"meta lacks {', '.join(missing)}")
        return cls(
            arch=str(data["arch"]),
            arch_args=dict(data["arch_args"]),
            dataset=str(data["dataset"]),
            classes=tuple(str(c) for c in data["classes"]),
            input_shape=_shape(data["input_shape"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            train_spec=dict(data["train_spec"]),
            metrics={str(k): float(v) for k, v in dict(data["metrics"]).items()},
            robeval_version=str(data["robeval_version"]),
        )


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare net inside ``Normalize``, ``torch.compile`` and ``DataParallel`` wrappers."""
    while True:
        if isinstance(model, Normalize):
            model = model.model
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write ``model`` (bare net or :class:`Normalize` wrapper) and ``meta`` to ``path``.

    The inner net's state_dict is saved on the CPU. The file is written to a temporary
    file in the same directory and moved into place with ``os.replace``, so a crash never
    leaves a half-written checkpoint. Parent directories are created. Returns the path.
    """
    path = Path(path)
    if isinstance(model, Normalize):
        _check_stats(model, meta)
    state = OrderedDict(
        (key, value.detach().cpu()) for key, value in unwrap_model(model).state_dict().items()
    )
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "state_dict": state,
        "meta": meta.to_dict(),
    }
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)
    return path


def read_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Read and validate a checkpoint without building the model: (state_dict, meta)."""
    path = Path(path)
    if not path.exists():
        raise RobevalError(f"checkpoint {str(path)!r} does not exist; check the path")
    if not path.is_file():
        raise RobevalError(f"checkpoint {str(path)!r} is not a file; give the path of a .pt file")
    try:
        with warnings.catch_warnings():
            # Plain pickles (protocol > 2) make torch warn before refusing them.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, BadZipFile, KeyError ...: bad bytes
        raise _load_error(path, exc) from exc

    if not isinstance(payload, dict) or "format" not in payload:
        raise RobevalError(
            f"{str(path)!r} is not a robeval checkpoint (no 'format' key); for third-party "
            "weights load them through a model source such as torchvision:NAME:weights=PATH, "
            "timm:NAME:checkpoint=PATH, robustbench:NAME or PATH.py:FACTORY (see `robeval ls models`)"
        )
    if payload["format"] != CHECKPOINT_FORMAT:
        raise RobevalError(
            f"{str(path)!r} is not a robeval checkpoint (format {payload['format']!r}, expected "
            f"{CHECKPOINT_FORMAT!r}); give a checkpoint written by robeval"
        )
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RobevalError(
            f"checkpoint {str(path)!r} has an invalid format_version {version!r} "
            "(corrupt?); re-save it with robeval"
        )
    if version > CHECKPOINT_FORMAT_VERSION:
        raise RobevalError(
            f"checkpoint {str(path)!r} has format_version {version}, newer than the "
            f"{CHECKPOINT_FORMAT_VERSION} this robeval reads; upgrade robeval"
        )
    state = payload.get("state_dict")
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise RobevalError(
            f"checkpoint {str(path)!r} has no valid state_dict (corrupt?); re-save it with robeval"
        )
    try:
        meta = CheckpointMeta.from_dict(payload.get("meta") or {})
    except (TypeError, ValueError, KeyError) as exc:
        raise _bad_meta(path, str(exc)) from exc
    channels, height, width = meta.input_shape
    if min(meta.input_shape) < 1 or height != width:
        raise _bad_meta(path, f"input_shape {meta.input_shape} is not a positive (C, S, S)")
    for what, stat in (("mean", meta.mean), ("std", meta.std)):
        if len(stat) not in (1, channels):
            raise _bad_meta(path, f"{what} has {len(stat)} values for {channels} channels")
    return dict(state), meta


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[Normalize, CheckpointMeta]:
    """Load a checkpoint as ``Normalize(net, meta.mean, meta.std)`` in eval mode.

    The net is rebuilt from ``meta.arch``/``meta.arch_args``/``meta.input_shape`` and the
    weights are loaded strictly. ``requires_grad`` is left as built (True); the caller
    decides. Every problem raises a :class:`RobevalError` naming the fix.
    """
    state, meta = read_checkpoint(path, map_location)
    channels, height, _ = meta.input_shape
    try:
        net = build_model(
            meta.arch,
            in_channels=channels,
            num_classes=len(meta.classes),
            input_size=height,
            **meta.arch_args,
        )
    except RobevalError as exc:
        raise RobevalError(f"cannot rebuild the net of checkpoint {str(path)!r}: {exc}") from exc
    _check_keys(path, net, state, meta)
    net.load_state_dict(state, strict=True)
    model = Normalize(net, meta.mean, meta.std)
    if isinstance(map_location, str | torch.device):
        model.to(map_location)
    return model.eval(), meta


def checkpoint_sha256(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of the file at ``path``, read in chunks (for result-cache keys)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(model: nn.Module) -> str:
    """Hex SHA-256 of a model's state (every tensor's name, dtype, shape and bytes, in name
    order): the same weights give the same hash however the file around them differs
    (e.g. a checkpoint's recorded training time), so results keyed by it are reproducible
    across retraining with the same seed."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _bad_meta(path: str | os.PathLike[str], why: str) -> RobevalError:
    return RobevalError(
        f"checkpoint {str(path)!r} has invalid metadata ({why}); re-save it with robeval"
    )


def _unreadable(path: Path) -> RobevalError:
    return RobevalError(
        f"{str(path)!r} is not a readable robeval checkpoint (truncated or corrupt?); "
        "copy it again or re-save it with robeval"
    )


def _load_error(path: Path, exc: Exception) -> RobevalError:
    """Why ``torch.load(weights_only=True)`` failed, as the user's fix: a file that asks
    for code is refused (also when torch stopped at an opcode before reaching the import,
    as for protocol-4/5 and legacy pickles), a file robeval may not read names its permissions,
    anything else is corrupt."""
    forbidden = code_globals(path)
    if forbidden or (isinstance(exc, pickle.UnpicklingError) and any(m in str(exc) for m in _FORBIDDEN_MARKERS)):
        return refused_pickle(path, forbidden, what="a robeval checkpoint",
                              fix="use a checkpoint written by robeval from a source you trust")
    if isinstance(exc, PermissionError):
        return RobevalError(f"cannot read checkpoint {str(path)!r} ({exc.strerror}); check its permissions")
    return _unreadable(path)


def _check_keys(
    path: str | os.PathLike[str],
    net: nn.Module,
    state: Mapping[str, torch.Tensor],
    meta: CheckpointMeta,
) -> None:
    """Raise a :class:`RobevalError` naming missing/unexpected/mis-shaped weights."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches (checkpoint vs net)", shapes),
    ):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label} {', '.join(items[:3])}{more}")
    if problems:
        raise RobevalError(
            f"the weights in {str(path)!r} do not match architecture {meta.arch!r} with "
            f"{meta.arch_args} and input shape {meta.input_shape}: {'; '.join(problems)}; "
            "fix the checkpoint's arch/arch_args or re-save it"
        )


def _check_stats(model: Normalize, meta: CheckpointMeta) -> None:
    """A Normalize wrapper's mean/std must be the ones the metadata records."""
    for what, buffer, recorded in (("mean", model.mean, meta.mean), ("std", model.std, meta.std)):
        values = buffer.flatten().tolist()
        if len(values) != len(recorded) or not all(
            math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)
            for a, b in zip(values, recorded, strict=True)
        ):
            raise ValueError(
                f"the Normalize wrapper's {what} {values} differs from meta.{what} {list(recorded)}"
            )


def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON-like data (tuples -> lists); ``TypeError`` for anything else."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"checkpoint meta {where} has a non-string key {key!r}")
            out[key] = _plain(item, f"{where}.{key}")
        return out
    raise TypeError(
        f"checkpoint meta {where} is a {type(value).__name__}; only str, int, float, bool, "
        "None, lists and dicts can be stored"
    )


def _shape(value: Any) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in value)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {value!r}")
    return shape  # type: ignore[return-value]
