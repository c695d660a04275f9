"""Running the user's own model code (``file.py:factory`` and ``plugin:NAME``): import the
file, call the factory, check what it returns. Whatever that code raises becomes one
:class:`RobevalError` naming the factory and the fix, never a traceback through robeval.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from robeval.errors import RobevalError
from robeval.models.bpda import as_module_names, declared_bpda, resolve_module_name
from robeval.models.checkpoint import CheckpointMeta
from robeval.models.source_utils import wrap_normalize

#: What a factory's info dict may say.
INFO_KEYS = ("mean", "std", "classes", "input_shape", "dataset", "bpda")
#: The longest piece of a user exception's message quoted in an error.
QUOTE_LIMIT = 300


def exception_text(exc: BaseException) -> str:
    """``TypeName: message`` on one line (newlines folded, long messages cut)."""
    message = " ".join(str(exc).split())
    if len(message) > QUOTE_LIMIT:
        message = message[: QUOTE_LIMIT - 3] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def import_python_file(path: Path) -> Any:
    """Import the user's file ``path`` as a module; an error in it becomes one line."""
    name = "robeval_user_model_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RobevalError(f"cannot import Python file {str(path)!r}; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise RobevalError(
            f"importing {str(path)!r} failed: {exception_text(exc)}; fix the file "
            "(run it with python to see the traceback)"
        ) from exc
    return module


def model_from_factory(
    factory: Callable[..., Any], kwargs: Mapping[str, Any], *, what: str
) -> tuple[nn.Module, CheckpointMeta | None]:
    """Call ``factory(**kwargs)``; it returns an ``nn.Module`` or ``(module, info)`` where
    ``info`` may give mean, std, classes, input_shape, dataset and bpda. The module is
    wrapped in Normalize when mean/std are given; a meta is made when dataset and
    input_shape are. ``"bpda": ["quantize", ...]`` names submodules (dotted names in the
    factory's module) whose backward pass is to be the identity (BPDA, see
    :mod:`robeval.models.bpda`); they are checked to exist and stored on the returned
    model as ``bpda_modules``, which :func:`robeval.models.bpda.declared_bpda` reads.

    Arguments the factory's signature does not take, an exception inside the factory and
    a result that is not a model each raise one :class:`RobevalError`."""
    _check_arguments(factory, kwargs, what)
    try:
        result = factory(**kwargs)
    except (Exception, SystemExit) as exc:
        raise RobevalError(
            f"model factory {what!r} raised {exception_text(exc)}; fix the factory "
            "(run it in Python to see the traceback)"
        ) from exc
    info: Mapping[str, Any] = {}
    if isinstance(result, tuple):
        if len(result) != 2 or not isinstance(result[1], Mapping):
            raise RobevalError(f"{what} must return an nn.Module or (nn.Module, info dict); fix its return value")
        result, info = result
    if not isinstance(result, nn.Module):
        raise RobevalError(
            f"{what} returned {type(result).__name__}, not an nn.Module; return the model "
            "(or (model, info dict))"
        )
    unknown = sorted(set(info) - set(INFO_KEYS))
    if unknown:
        raise RobevalError(f"{what} returned unknown info keys {unknown}; known: {', '.join(INFO_KEYS)}")
    mean = _stats(info, "mean", what)
    std = _stats(info, "std", what)
    model = wrap_normalize(result, mean, std).eval()
    if info.get("bpda") is not None:
        names = as_module_names(info["bpda"], what=f"{what}'s info 'bpda'")
        for name in names:
            try:
                resolve_module_name(model, name)
            except RobevalError as exc:
                raise RobevalError(f"{what}'s info 'bpda': {exc}") from None
        model.bpda_modules = tuple(dict.fromkeys((*declared_bpda(model), *names)))
    return model, _meta(info, kwargs, mean, std, what)


def _check_arguments(factory: Callable[..., Any], kwargs: Mapping[str, Any], what: str) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable: let the call decide
        return
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        raise RobevalError(
            f"{what} rejected its arguments {dict(kwargs)}: {exc}; give the key=value "
            f"options its signature {signature} takes"
        ) from None


def _stats(info: Mapping[str, Any], key: str, what: str) -> tuple[float, ...] | None:
    value = info.get(key)
    if value is None:
        return None
    try:
        stats = tuple(float(v) for v in ([value] if isinstance(value, int | float) else list(value)))
    except (TypeError, ValueError):
        raise RobevalError(
            f"{what}'s info {key!r} is {value!r}; give a number or one number per channel"
        ) from None
    if not stats:
        raise RobevalError(f"{what}'s info {key!r} is empty; give a number or one number per channel")
    return stats


def _meta(
    info: Mapping[str, Any], kwargs: Mapping[str, Any], mean: Sequence[float] | None,
    std: Sequence[float] | None, what: str,
) -> CheckpointMeta | None:
    """The checkpoint-like metadata a factory's info gives (dataset and input_shape)."""
    if info.get("dataset") is None:
        return None
    shape = info.get("input_shape")
    if shape is None:
        raise RobevalError(f"{what} gives a dataset but no input_shape (C, H, W); give both")
    try:
        input_shape = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        input_shape = ()
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise RobevalError(f"{what}'s info 'input_shape' is {shape!r}; give (C, H, W) as three positive integers")
    classes = info.get("classes") or ()
    if isinstance(classes, str | bytes) or not isinstance(classes, Iterable):
        raise RobevalError(f"{what}'s info 'classes' is {classes!r}; give a list of class names")
    from robeval import __version__

    return CheckpointMeta(
        arch=what,
        arch_args=dict(kwargs),
        dataset=str(info["dataset"]),
        classes=tuple(str(c) for c in classes),
        input_shape=input_shape,  # type: ignore[arg-type]
        mean=tuple(mean or (0.0,)),
        std=tuple(std or (1.0,)),
        train_spec={},
        metrics={},
        robeval_version=__version__,
    )
