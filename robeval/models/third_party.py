"""Model sources beyond robeval checkpoints: torchvision, TorchScript, Python factories
and entry-point plug-ins, plus a clean-accuracy sanity check for wrong normalisation.

Every loaded model takes images in [0,1] (robeval's convention, attack budgets are in
[0,1] pixel units). Options follow the source after a colon as ``key=value,key=value``
(as in ``pgd:steps=40``); per-channel values are separated by ``;`` because ``,``
separates options: ``torchvision:resnet18:weights=w.pt,mean=0.5;0.5;0.5,std=0.5;0.5;0.5``
(quote it in a shell). ``mean=none`` switches the Normalize wrapper off.

Sources registered here:

* ``torchvision:NAME[:weights=PATH,num_classes=N,mean=..,std=..]``
* ``torchscript:PATH[:mean=..,std=..]``
* ``file:PATH.py:FACTORY[:key=value,...]`` (and the same without ``file:``)
* ``plugin:NAME[:key=value,...]`` for entry points in the group ``robeval.models``
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robeval.errors import RobevalError
from robeval.models.bpda import declared_bpda
from robeval.models.factory import exception_text, import_python_file, model_from_factory
from robeval.models.normalize import ResizeInput
from robeval.models.source_utils import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    existing_file,
    file_sha256,
    load_weights,
    parse_options,
    options_tag,
    parse_stats,
    resize_option,
    split_options,
    wrap_normalize,
)
from robeval.models.sources import NO_CONTEXT, LoadedModel, SourceContext, model_sources
from robeval.params import parse_named

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "clean_accuracy_check", "model_from_factory"]

#: Entry-point group whose entries become ``plugin:NAME`` model sources.
PLUGIN_GROUP = "robeval.models"


# --------------------------------------------------------------------------- torchvision


@model_sources.register("torchvision")
def load_torchvision(rest: str, source: str, context: SourceContext = NO_CONTEXT) -> LoadedModel:
    """torchvision:NAME[:weights=PATH,num_classes=N,input_size=S,mean=a;b;c,std=a;b;c] - a
    torchvision architecture with a local state_dict; takes [0,1] images, normalised with
    ImageNet mean/std unless overridden (never downloads; no weights = random init, warned).

    The state_dict is read with ``torch.load(weights_only=True)``, so it cannot run code.
    ``input_size=S`` resizes inputs to S x S inside the model (ViTs made for 224 evaluated
    on smaller images; differentiable). The identity is the SHA-256 of the weights file
    (of the spec without weights) plus a tag of the other options.
    """
    import torchvision

    name, _, opts = rest.strip().partition(":")
    options = parse_options(opts, source=source, allowed=("weights", "num_classes", "input_size", "mean", "std"))
    if not name:
        raise RobevalError(f"model source {source!r} names no architecture; write e.g. torchvision:resnet18")
    known = torchvision.models.list_models()
    if name.lower() not in known:
        from robeval.registry import unknown_name_message

        raise RobevalError(unknown_name_message("torchvision model", name, known, see_also=False))
    kwargs: dict[str, Any] = {}
    if "num_classes" in options:
        try:
            kwargs["num_classes"] = int(options["num_classes"])
        except ValueError:
            raise RobevalError(f"num_classes must be an integer in {source!r}") from None
    net = torchvision.models.get_model(name.lower(), weights=None, **kwargs)
    if "weights" in options:
        weights = existing_file(options["weights"], "weights file")
        load_weights(net, weights, what="weights file", hint=f"torchvision {name} (check num_classes)")
        identity = f"torchvision:{name.lower()}:sha256:{file_sha256(weights)}" + options_tag(options, skip=("weights",))
    else:
        warnings.warn(
            f"{source!r} has no weights=PATH; the model is randomly initialised", stacklevel=2
        )
        identity = f"torchvision:{name.lower()}:spec-sha256:{hashlib.sha256(source.encode()).hexdigest()}"
    mean = parse_stats(options.get("mean"), IMAGENET_MEAN, "mean")
    std = parse_stats(options.get("std"), IMAGENET_STD, "std")
    size = resize_option(options.get("input_size"), source)
    model = wrap_normalize(ResizeInput(net, size) if size else net, mean, std).eval()
    return LoadedModel(model=model, name=name.lower(), source=source, identity=identity, meta=None)


# --------------------------------------------------------------------------- TorchScript


@model_sources.register("torchscript")
def load_torchscript(rest: str, source: str, context: SourceContext = NO_CONTEXT) -> LoadedModel:
    """torchscript:PATH[:mean=a;b;c,std=a;b;c] - a TorchScript archive; assumed to take
    [0,1] images unless mean/std are given (then wrapped in Normalize).

    A TorchScript archive is code plus weights: ``torch.jit.load`` runs the archived
    TorchScript graph (not arbitrary pickled Python), and loading it is the user's
    explicit choice. The identity is the SHA-256 of the file.
    """
    text = rest.strip()
    path_text, opts = (text, "") if Path(text).expanduser().is_file() else split_options(text)
    options = parse_options(opts, source=source, allowed=("mean", "std"))
    path = existing_file(path_text, "TorchScript file")
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise RobevalError(
            f"cannot load TorchScript file {str(path)!r} ({exception_text(exc)}); "
            "give a file written by torch.jit.save"
        ) from exc
    model = wrap_normalize(net, parse_stats(options.get("mean"), None, "mean"), parse_stats(options.get("std"), None, "std"))
    return LoadedModel(
        model=model.eval(), name=path.stem, source=source, identity=f"sha256:{file_sha256(path)}" + options_tag(options),
        meta=None,
    )


# --------------------------------------------------------------------------- Python factories

_PY_SPEC = re.compile(r"^(?P<path>.*?\.py):(?P<rest>.+)$", re.IGNORECASE | re.DOTALL)


@model_sources.register("file")
def load_python_file(rest: str, source: str, context: SourceContext = NO_CONTEXT) -> LoadedModel:
    """file:PATH.py:FACTORY[:key=value,...] (or just PATH.py:FACTORY) - calls FACTORY(**kwargs)
    from the user's own Python file; [0,1] images, normalised only if the factory returns
    (module, {"mean": .., "std": ..}).

    This executes the file's code by design (it is the user's code), unlike robeval
    checkpoints, which never run code. The identity hashes the file, factory and kwargs.
    """
    match = _PY_SPEC.match(rest.strip())
    if match is None:
        raise RobevalError(
            f"cannot read model source {source!r}; write PATH.py:FACTORY[:key=value,...]"
        )
    path = existing_file(match["path"], "Python model file")
    factory_name, kwargs = parse_named(match["rest"], kind="model factory")
    module = import_python_file(path)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise RobevalError(
            f"{str(path)!r} has no function {factory_name!r}; name one of its functions"
            + (f" ({', '.join(names[:8])})" if names else "")
        )
    what = f"{path.name}:{factory_name}"
    model, meta = model_from_factory(factory, kwargs, what=what)
    spec_text = f"{factory_name}:{sorted(kwargs.items())!r}"
    identity = f"file:sha256:{file_sha256(path)}:{hashlib.sha256(spec_text.encode()).hexdigest()[:16]}"
    return LoadedModel(
        model=model, name=path.stem, source=source, identity=identity, meta=meta, bpda=declared_bpda(model)
    )


# --------------------------------------------------------------------------- plug-ins


def plugin_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Entry points of the group ``robeval.models`` by (lower-case) name."""
    return {ep.name.lower(): ep for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)}


class _PluginSource:
    """plugin:NAME[:key=value,...] - a factory from an installed package's entry point
    (group ``robeval.models``); handled like ``file.py:factory``."""

    @property
    def summary(self) -> str:
        names = sorted(plugin_entry_points())
        found = ", ".join(names) if names else "none installed"
        return (
            f"plugin:NAME[:key=value,...] - a model factory from an entry point of group "
            f"{PLUGIN_GROUP!r} ({found}); [0,1] images, normalised as the factory's info says; "
            "runs the plug-in's code"
        )

    def __call__(self, rest: str, source: str, context: SourceContext = NO_CONTEXT) -> LoadedModel:
        name, kwargs = parse_named(rest, kind="model plug-in")
        plugins = plugin_entry_points()
        if name.lower() not in plugins:
            from robeval.registry import unknown_name_message

            raise RobevalError(
                unknown_name_message("model plug-in", name, sorted(plugins), see_also=False)
                + f" (entry points of group {PLUGIN_GROUP!r}; see `robeval ls models`)"
            )
        entry = plugins[name.lower()]
        try:
            factory = entry.load()
        except (Exception, SystemExit) as exc:
            raise RobevalError(
                f"cannot load model plug-in {name!r} ({entry.value}): {exception_text(exc)}; "
                "fix or reinstall its package"
            ) from exc
        model, meta = model_from_factory(factory, kwargs, what=f"plugin:{name}")
        dist = getattr(entry, "dist", None)
        version = f"{dist.name}=={dist.version}" if dist is not None else entry.value
        spec_text = f"{entry.value}:{sorted(kwargs.items())!r}"
        identity = f"plugin:{name.lower()}:{version}:{hashlib.sha256(spec_text.encode()).hexdigest()[:16]}"
        return LoadedModel(
            model=model, name=name.lower(), source=source, identity=identity, meta=meta,
            bpda=declared_bpda(model),
        )


model_sources.register("plugin")(_PluginSource())


# --------------------------------------------------------------------------- sanity check


def clean_accuracy_check(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chance: float, factor: float = 2.0
) -> float:
    """Clean accuracy of ``model`` on ``x`` ([0,1] images), raising a RobevalError when it
    is below ``factor`` x ``chance`` - the usual sign of a wrong mean/std or input range."""
    with torch.no_grad():
        was_training = model.training
        model.eval()
        try:
            pred = model(x).argmax(dim=1)
        finally:
            model.train(was_training)
    acc = float((pred == y).float().mean()) if len(y) else math.nan
    if not acc >= factor * chance:
        raise RobevalError(
            f"clean accuracy {acc:.1%} is near chance ({chance:.1%}); check the model's mean/std "
            "or input range (robeval gives models [0,1] images)"
        )
    return acc
