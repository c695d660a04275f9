"""Local paths inside model sources, made absolute so that a written spec.yaml names
the same files from any working directory.

A model source may name a file itself (``runs/m.pt``, ``nets.py:make``,
``file:nets.py:make``, ``torchscript:m.pt``, ``onnx:m.onnx:backend=torch``) or in an
option (``torchvision:resnet18:weights=w.pth``, ``timm:NAME:checkpoint=PATH``,
``robustbench:NAME:model_dir=DIR``). Only names of existing files or folders change, so
a model's display name (its file's stem) and identity (content hashes) stay the same.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Options of model sources whose value is a local file or folder.
PATH_OPTIONS = ("weights", "checkpoint", "model_dir")
_PY_SOURCE = re.compile(r"^(?P<path>.*?\.py):(?P<rest>.+)$", re.IGNORECASE | re.DOTALL)


def absolute_source(source: str, cwd: str | Path | None = None) -> str:
    """``source`` with the local file it names as an absolute path, resolved against
    ``cwd``: a checkpoint, ``PATH.py:factory`` (or ``file:PATH.py:...``), the file of
    ``torchscript:`` / ``onnx:``, and ``weights=`` / ``checkpoint=`` / ``model_dir=``
    options. The model's name (the file's stem) and its identity (content hashes) do not
    change; names that are no existing path are left as typed."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    text = source.strip()
    if _is_file(base, text):
        return absolute_path(text, base)
    prefix, colon, rest = text.partition(":")
    if not colon:
        return source
    if prefix.lower().endswith(".py"):
        return f"{_absolute_if_exists(prefix, base)}:{rest}"
    kind = prefix.lower()
    python = _PY_SOURCE.match(rest) if kind == "file" else None
    if python is not None:
        return f"{prefix}:{_absolute_if_exists(python['path'], base)}:{python['rest']}"
    if kind in ("torchscript", "onnx"):
        head, options = (rest, "") if _exists(rest.strip(), base) else _split_options(rest)
        tail = f":{_absolute_options(options, base)}" if options else ""
        return f"{prefix}:{_absolute_if_exists(head.strip(), base)}{tail}"
    name, colon, options = rest.partition(":")
    if colon and options:
        return f"{prefix}:{name}:{_absolute_options(options, base)}"
    return source


def _split_options(text: str) -> tuple[str, str]:
    """``"PATH:k=v,k2=v2"`` -> ``("PATH", "k=v,k2=v2")`` (as the model sources read it)."""
    head, colon, tail = text.rpartition(":")
    return (head, tail) if colon and "=" in tail else (text, "")


def _absolute_options(options: str, base: Path) -> str:
    """``key=value`` options with the values of :data:`PATH_OPTIONS` made absolute."""
    parts = []
    for part in options.split(","):
        key, eq, value = part.partition("=")
        if eq and key.strip().lower().replace("-", "_") in PATH_OPTIONS:
            part = f"{key}={_absolute_if_exists(value.strip(), base)}"
        parts.append(part)
    return ",".join(parts)


def _is_file(base: Path, path: str) -> bool:
    try:
        return bool(path) and (base / path).is_file()
    except OSError:  # a name too long for a path, say
        return False


def _exists(path: str, base: Path) -> bool:
    try:
        return bool(path) and (base / os.path.expanduser(path)).exists()
    except OSError:
        return False


def _absolute_if_exists(path: str, base: Path) -> str:
    return absolute_path(path, base) if _exists(path, base) else path


def absolute_path(path: str, base: Path) -> str:
    """``path`` (``~`` expanded) made absolute against ``base`` and normalised."""
    return os.path.normpath(base / os.path.expanduser(path))
