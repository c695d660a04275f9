"""Model zoos: ``timm:NAME`` and ``robustbench:NAME``, both from local files only.

Both need the optional extra ``pip install 'robeval[zoo]'`` (robustbench 1.1.1, timm
1.0.9, setuptools<81). Neither ever downloads unless asked (``robustbench:...,download=true``).

robustbench 1.1.1 does not import as shipped on a current stack: ``robustbench.loaders``
imports ``pkg_resources`` (gone from setuptools >= 81) and ``robustbench.eval`` imports
``autoattack`` while its own dependency ships the code as ``pyautoattack``.
:func:`import_robustbench` fixes both before importing it (an alias module, and a
``pkg_resources`` stand-in with the one function robustbench calls). robustbench's own
``benchmark()`` still calls the GitHub AutoAttack API (``log_path=``, ``bs=``) and is not
used: robeval evaluates the loaded model with its own battery (``--attack autoattack``).
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from robeval.errors import RobevalError
from robeval.models.checkpoint import CheckpointMeta
from robeval.models.factory import exception_text
from robeval.models.normalize import ResizeInput
from robeval.models.pickle_scan import code_globals, refused_pickle
from robeval.models.source_utils import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ZOO_EXTRA,
    file_sha256,
    import_optional,
    load_weights,
    options_tag,
    parse_options,
    parse_stats,
    resize_option,
    wrap_normalize,
)
from robeval.models.sources import NO_CONTEXT, LoadedModel, SourceContext, model_sources
from robeval.registry import unknown_name_message

#: RobustBench data sets: number of classes and the input shape its models take.
ROBUSTBENCH_DATASETS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "cifar10": (10, (3, 32, 32)),
    "cifar100": (100, (3, 32, 32)),
    "imagenet": (1000, (3, 224, 224)),
}
ROBUSTBENCH_THREATS = ("Linf", "L2", "corruptions")


# --------------------------------------------------------------------------- timm


@model_sources.register("timm")
def load_timm(rest: str, source: str, context: SourceContext = NO_CONTEXT) -> LoadedModel:
    """timm:NAME[:checkpoint=PATH,num_classes=N,img_size=S,input_size=S,mean=..,std=..] - a
    timm architecture with local weights (never downloaded; none = random init, warned);
    takes [0,1] images, normalised with the model's own pretrained-config mean/std.

    The checkpoint is read with ``torch.load(weights_only=True)``; ``{"state_dict": ..}``
    and ``module.`` prefixes are unwrapped. ``img_size`` is passed to ``create_model``
    (ViTs built for another size). Models with a fixed input size (the config's
    ``fixed_input_size``) get images resized to the config's ``input_size`` inside the
    model (:class:`ResizeInput`, differentiable); ``input_size=S`` asks for that resize
    for any model, ``input_size=none`` switches it off. The identity hashes the checkpoint.
    """
    timm = import_optional("timm")
    name, _, opts = rest.strip().partition(":")
    options = parse_options(
        opts, source=source, allowed=("checkpoint", "num_classes", "img_size", "input_size", "mean", "std")
    )
    if not name:
        raise RobevalError(f"model source {source!r} names no architecture; write e.g. timm:resnet18")
    if not timm.is_model(name):
        raise RobevalError(unknown_name_message("timm model", name, timm.list_models(), see_also=False))
    kwargs: dict[str, Any] = {}
    for key in ("num_classes", "img_size"):
        if key in options:
            kwargs[key] = _int_option(options[key], key, source)
    try:
        net = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        raise RobevalError(f"timm model {name!r} does not take {sorted(kwargs)}: {exc}") from exc
    if "checkpoint" in options:
        path = Path(options["checkpoint"]).expanduser()
        if not path.is_file():
            raise RobevalError(f"checkpoint file {str(path)!r} does not exist; check the path")
        load_weights(net, path, what="checkpoint file", hint=f"timm {name} (check num_classes)")
        identity = f"timm:{name}:sha256:{file_sha256(path)}" + options_tag(options, skip=("checkpoint",))
    else:
        warnings.warn(f"{source!r} has no checkpoint=PATH; the model is randomly initialised", stacklevel=2)
        identity = f"timm:{name}:random" + options_tag(options)
    config = dict(timm.data.resolve_data_config({}, model=net))
    config["fixed_input_size"] = bool(getattr(net, "pretrained_cfg", {}).get("fixed_input_size", False))
    mean = parse_stats(options.get("mean"), config.get("mean", IMAGENET_MEAN), "mean")
    std = parse_stats(options.get("std"), config.get("std", IMAGENET_STD), "std")
    size = _resize_to(options.get("input_size"), config, source)
    model = wrap_normalize(ResizeInput(net, size) if size else net, mean, std).eval()
    return LoadedModel(model=model, name=name, source=source, identity=identity, meta=None)


def _resize_to(text: str | None, config: dict[str, Any], source: str) -> tuple[int, int] | None:
    """The (H, W) a timm model's inputs are resized to, or None for no resize."""
    if text is not None:
        return resize_option(text, source)
    if config.get("fixed_input_size"):
        _, height, width = config["input_size"]
        return int(height), int(width)
    return None


# --------------------------------------------------------------------------- RobustBench


@model_sources.register("robustbench")
def load_robustbench(rest: str, source: str, context: SourceContext = NO_CONTEXT) -> LoadedModel:
    """robustbench:NAME[:dataset=cifar10,threat_model=Linf,model_dir=DIR,download=false] - a
    RobustBench model-zoo entry, loaded by robustbench from ``DIR/<dataset>/<threat>/NAME.pt``
    (its own layout; defaults: ``--dataset``, ``--threat-model``, ``--model-dir``, else
    cifar10, Linf, ./models). Takes [0,1] images (the zoo's models normalise inside).

    A missing file is one error naming the exact path expected; nothing is downloaded
    unless ``download=true``. Checkpoints are read with ``torch.load``, whose default in
    torch >= 2.6 is ``weights_only=True`` (robeval refuses to run with that default
    switched off by ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``).
    """
    name, _, opts = rest.strip().partition(":")
    options = parse_options(opts, source=source, allowed=("dataset", "threat_model", "model_dir", "download"))
    if not name:
        raise RobevalError(f"model source {source!r} names no model; write e.g. robustbench:Standard")
    dataset = _rb_dataset(options.get("dataset") or context.dataset or "cifar10", source)
    threat = _rb_threat(options.get("threat_model") or context.threat_model or "Linf", source)
    model_dir = Path(options.get("model_dir") or context.model_dir or "models").expanduser()
    download = options.get("download", "false").lower() in ("1", "true", "yes")
    if os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "0") not in ("", "0"):
        raise RobevalError(
            "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set, so robustbench's torch.load could run code from "
            "the checkpoint; unset it"
        )
    rb_utils, zoo, enums = import_robustbench()
    entries = zoo[enums.BenchmarkDataset(dataset)][enums.ThreatModel(threat)]
    if name not in entries:
        raise RobevalError(
            unknown_name_message(f"RobustBench {dataset}/{threat} model", name, list(entries), see_also=False)
        )
    files = _rb_files(name, entries[name], model_dir / dataset / threat)
    missing = [f for f in files if not f.is_file()]
    if missing and not download:
        raise RobevalError(
            f"RobustBench checkpoint {str(missing[0])!r} does not exist; put the model's .pt file there "
            f"(layout MODEL_DIR/<dataset>/<threat>/<NAME>.pt, --model-dir sets MODEL_DIR) or add "
            f"download=true to fetch it"
        )
    timm_name = f"{name.lower().replace('-', '_')}_{dataset}_{threat.lower()}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if _is_timm_model(timm_name) and not download:
                net = _timm_zoo_model(timm_name, files[0], ROBUSTBENCH_DATASETS[dataset][0])
            else:
                net = rb_utils.load_model(name, model_dir=str(model_dir), dataset=dataset, threat_model=threat)
    except RobevalError:
        raise
    except Exception as exc:  # download failures, layout mismatches inside robustbench
        forbidden = [g for f in files if f.is_file() for g in code_globals(f)]
        if forbidden:
            raise refused_pickle(files[0], forbidden, what="a RobustBench checkpoint of plain weights",
                                 fix="replace it with the model's original .pt file") from exc
        raise RobevalError(
            f"robustbench could not load {name!r} ({exception_text(exc)}); check its checkpoint "
            f"{str(files[0]) if files else str(model_dir)!r} or the model name"
        ) from exc
    n_classes, shape = ROBUSTBENCH_DATASETS[dataset]
    from robeval import __version__

    meta = CheckpointMeta(
        arch=f"robustbench:{name}", arch_args={}, dataset=dataset,
        classes=tuple(str(i) for i in range(n_classes)), input_shape=shape, mean=(0.0,), std=(1.0,),
        train_spec={"objective": f"robustbench:{dataset}/{threat}"}, metrics={}, robeval_version=__version__,
    )
    digest = ":".join(file_sha256(f)[:32] for f in files if f.is_file())
    identity = f"robustbench:{dataset}/{threat}/{name}:sha256:{digest}"
    return LoadedModel(model=net.eval(), name=name, source=source, identity=identity, meta=meta)


def import_robustbench() -> tuple[Any, Any, Any]:
    """``(robustbench.utils, model_dicts, enums)``, importable on this stack: aliases
    ``autoattack`` to ``pyautoattack`` and stands in for ``pkg_resources`` when missing."""
    import_optional("pyautoattack")
    try:
        import autoattack  # noqa: F401  (fra31's GitHub package, if the user has it)
    except ImportError:
        import pyautoattack
        import pyautoattack.state

        sys.modules["autoattack"] = pyautoattack
        sys.modules["autoattack.state"] = pyautoattack.state
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources' and timm's deprecation notices
            try:
                import pkg_resources  # noqa: F401
            except ImportError:  # setuptools >= 81
                sys.modules["pkg_resources"] = _pkg_resources_standin()
            utils = importlib.import_module("robustbench.utils")
            from robustbench.model_zoo import enums, model_dicts
    except ModuleNotFoundError as exc:
        raise RobevalError(f"robustbench is not installed or incomplete ({exc}); {ZOO_EXTRA}") from exc
    return utils, model_dicts, enums


def _pkg_resources_standin() -> types.ModuleType:
    """The one ``pkg_resources`` function robustbench uses (``resource_filename``)."""
    module = types.ModuleType("pkg_resources")

    def resource_filename(package: str, resource: str) -> str:
        return str(importlib.resources.files(package.rpartition(".")[0] or package) / resource)

    module.resource_filename = resource_filename  # type: ignore[attr-defined]
    return module


def _rb_files(name: str, entry: dict[str, Any], folder: Path) -> list[Path]:
    """The files robustbench reads for ``name``: ``NAME.pt``, or ``NAME.pt_m<i>.pt`` for
    each member of an ensemble."""
    ids = entry.get("gdrive_id")
    if isinstance(ids, list):
        return [folder / f"{name}.pt_m{i}.pt" for i in range(len(ids))]
    return [folder / f"{name}.pt"]


def _is_timm_model(name: str) -> bool:
    try:
        import timm
    except ImportError:
        return False
    return bool(timm.is_model(name))


def _timm_zoo_model(timm_name: str, path: Path, n_classes: int) -> nn.Module:
    """A zoo entry that robustbench hands to timm (``pretrained=True`` would download):
    built without weights and loaded from the local file instead."""
    import timm

    net = timm.create_model(timm_name, pretrained=False, num_classes=n_classes)
    load_weights(net, path, what="RobustBench checkpoint", hint=timm_name)
    return net


def _rb_dataset(text: str, source: str) -> str:
    key = text.strip().lower().replace("-", "")
    if key not in ROBUSTBENCH_DATASETS:
        raise RobevalError(
            f"RobustBench has no data set {text!r} (in {source!r}); add dataset=NAME to the source with "
            f"NAME one of {', '.join(ROBUSTBENCH_DATASETS)}"
        )
    return key


def _rb_threat(text: str, source: str) -> str:
    for threat in ROBUSTBENCH_THREATS:
        if text.strip().lower() == threat.lower():
            return threat
    raise RobevalError(
        f"RobustBench has no threat model {text!r} (in {source!r}); use one of {', '.join(ROBUSTBENCH_THREATS)}"
    )


def _int_option(text: str, key: str, source: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RobevalError(f"{key} must be an integer in {source!r}") from None
