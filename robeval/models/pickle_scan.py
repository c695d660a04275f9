"""Which Python objects a pickle-based file (``torch.save`` in the zip or the legacy
format, or a plain pickle) would import, found by reading its opcodes without running any.

``torch.load(weights_only=True)`` refuses a file that asks for code, but for some files
(pickle protocol 4 and 5 framing, protocol-0 opcodes) it stops at an opcode it does not
support before it meets the import, and its error then looks like a corrupt file. This
scan tells the two apart, so that such a file is reported as refused, not as corrupt.
Nothing here unpickles anything: :func:`pickletools.genops` only decodes opcodes.
"""

from __future__ import annotations

import io
import pickletools
import re
import zipfile
from pathlib import Path
from typing import IO, Any

from robeval.errors import RobevalError

#: The most bytes read from one file or archive member: the pickles come first (a legacy
#: file's tensor bytes follow them; a zip keeps them in other members). Reading into
#: memory also keeps a forged length field from asking the file system for gigabytes.
MAX_BYTES = 64 << 20
#: The most pickles read from one stream: the legacy ``torch.save`` format is five
#: pickles (magic number, protocol, system info, the object, storage keys) then raw bytes.
MAX_PICKLES = 5

_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}
_MARK = object()
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def referenced_globals(path: Path) -> list[str]:
    """``module.name`` of every global the file's pickles import, in order of appearance,
    without repeats (a ``STACK_GLOBAL`` whose names cannot be followed is left out)."""
    found: dict[str, None] = {}
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    if name.endswith(".pkl"):
                        with archive.open(name) as member:
                            _scan_stream(io.BytesIO(member.read(MAX_BYTES)), found)
        else:
            with open(path, "rb") as handle:
                _scan_stream(io.BytesIO(handle.read(MAX_BYTES)), found)
    except (OSError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError):
        pass  # what could be read is kept
    return list(found)


def code_globals(path: Path) -> list[str]:
    """The globals of :func:`referenced_globals` that ``torch.load(weights_only=True)``
    would refuse: anything but tensors, storages, dtypes and plain containers, i.e. an
    import that could run code when unpickled."""
    allowed = _allowed_globals()
    return [name for name in referenced_globals(path) if name not in allowed]


def refused_pickle(path: Path, forbidden: list[str], *, what: str, fix: str) -> RobevalError:
    """The one message for a file that would import code when unpickled: ``what`` it is
    not (``"a robeval checkpoint"``) and the ``fix``."""
    more = " ..." if len(forbidden) > 3 else ""
    asks = f" (it imports {', '.join(forbidden[:3])}{more})" if forbidden else ""
    return RobevalError(
        f"refusing to load {str(path)!r}{asks}: it contains objects other than tensors and plain "
        f"data (weights_only=True), so it is not {what} and may run code; {fix}"
    )


def _allowed_globals() -> set[str]:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    except (ImportError, AttributeError):  # pragma: no cover - a torch without the private list
        return {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter"}


def _scan_stream(stream: io.BytesIO, found: dict[str, None]) -> None:
    for _ in range(MAX_PICKLES):
        start = stream.tell()
        if not stream.read(1):
            return
        stream.seek(start)
        try:
            _scan_pickle(stream, found)
        except Exception:  # noqa: BLE001 - not (or no longer) a pickle: raw storage bytes, or damage
            return


def _scan_pickle(stream: IO[bytes], found: dict[str, None]) -> None:
    """Follow one pickle's stack symbolically (strings only) to name its imports."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            _note(module, attr, found)
        elif name == "STACK_GLOBAL" and len(stack) >= 2:
            _note(stack[-2], stack[-1], found)
        if name in _PUTS or name == "MEMOIZE":
            memo[arg if name in _PUTS else len(memo)] = stack[-1] if stack else None
            continue
        _pop(stack, op)
        for item in op.stack_after:
            if item is pickletools.markobject:
                stack.append(_MARK)
            elif name in _STRINGS:
                stack.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
            elif name in _GETS:
                stack.append(memo.get(arg))
            else:
                stack.append(None)


def _note(module: Any, attr: Any, found: dict[str, None]) -> None:
    """Record ``module.attr`` when both are Python names (random bytes that happen to
    decode as an import opcode are damage, not code)."""
    if isinstance(module, str) and isinstance(attr, str) and _NAME.match(module) and _NAME.match(attr):
        found.setdefault(f"{module}.{attr}", None)


def _pop(stack: list[Any], op: pickletools.OpcodeInfo) -> None:
    before = op.stack_before
    if pickletools.markobject in before:
        while stack and stack.pop() is not _MARK:
            pass
        del stack[max(len(stack) - before.index(pickletools.markobject), 0):]
    else:
        del stack[max(len(stack) - len(before), 0):]
