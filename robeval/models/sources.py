"""Where models come from: ``load_model(source)`` and the registry of source prefixes.

A source is either a checkpoint path (``runs/mnist.pt``) or ``PREFIX:REST`` where PREFIX
is registered in :data:`model_sources` with ``@model_sources.register(prefix)``:
``checkpoint:`` here; ``torchvision:``, ``torchscript:``, ``file.py:factory`` and
``plugin:`` in :mod:`robeval.models.third_party`; ``timm:`` and ``robustbench:`` in
:mod:`robeval.models.zoo`; ``onnx:`` in :mod:`robeval.models.onnx_source`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robeval.errors import RobevalError
from robeval.models.checkpoint import CheckpointMeta, load_checkpoint, weights_sha256
from robeval.registry import Registry, unknown_name_message

#: File suffixes always treated as robeval checkpoints.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to evaluate, with what is needed to display and cache its results."""

    model: nn.Module  # eval mode, takes [0,1] images
    name: str  # short display name (checkpoint file stem)
    source: str  # what the user typed
    identity: str  # stable id for caching results, e.g. "sha256:<hex>" of the checkpoint
    meta: CheckpointMeta | None
    #: No gradients (e.g. an ONNX model run by onnxruntime): only gradient-free attacks.
    black_box: bool = False
    #: Submodules (dotted names) the model declares for BPDA, whose backward pass attacks
    #: replace by the identity (:mod:`robeval.models.bpda`); from a ``file.py:factory``'s
    #: info ``"bpda"`` (or plug-in's), empty for other sources.
    bpda: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceContext:
    """What the run knows that a source may need beyond its own text: the data set being
    evaluated and the RobustBench ``--threat-model`` / ``--model-dir``. Options written in
    the source itself take precedence."""

    dataset: str | None = None
    threat_model: str | None = None
    model_dir: str | None = None


NO_CONTEXT = SourceContext()


#: A source loader gets the part after ``PREFIX:``, the full source string and the run's
#: :class:`SourceContext`; it returns a CPU model in eval mode (``load_model`` moves it to
#: the device).
SourceLoader = Callable[[str, str, SourceContext], LoadedModel]

#: Model sources by prefix (``robeval ls model sources``).
model_sources: Registry[SourceLoader] = Registry("model source")


@model_sources.register("checkpoint")
def load_checkpoint_source(path: str, source: str, context: SourceContext = NO_CONTEXT) -> LoadedModel:
    """A robeval checkpoint file; its identity is the SHA-256 of its weights (not of the
    file, whose metadata records e.g. the training time)."""
    model, meta = load_checkpoint(path, map_location="cpu")
    return LoadedModel(
        model=model,
        name=Path(path).stem,
        source=source,
        identity=f"weights-sha256:{weights_sha256(model)}",
        meta=meta,
    )


def load_model(
    source: str, device: str | torch.device = "cpu", *, context: SourceContext = NO_CONTEXT
) -> LoadedModel:
    """Load the model named by ``source`` onto ``device``, in eval mode.

    ``source`` is a path to a checkpoint (``.pt``/``.pth``/``.ckpt`` or any existing
    file) or ``PREFIX:REST`` with a registered prefix. Unknown prefixes and missing files
    raise a :class:`RobevalError`.
    """
    target = _device(device)
    text = source.strip()
    prefix, colon, rest = text.partition(":")
    if Path(text).is_file():
        loaded = load_checkpoint_source(text, source)
    elif colon and prefix.lower().endswith(".py") and "file" in model_sources:
        loaded = model_sources.get("file")(text, source, context)  # PATH.py:factory, as file:PATH.py:factory
    elif colon and prefix.lower() in model_sources:
        loaded = model_sources.get(prefix)(rest, source, context)
    elif colon:
        raise RobevalError(
            unknown_name_message("model source", prefix, model_sources.names())
            + f"; if {text!r} is meant as a file path, that file does not exist"
        )
    elif text.lower().endswith(CHECKPOINT_SUFFIXES):
        raise RobevalError(f"model file {text!r} does not exist; check the path")
    else:
        raise RobevalError(
            f"model {text!r} is neither an existing file nor PREFIX:NAME; give a checkpoint "
            f"path (.pt) or one of the prefixes {', '.join(model_sources.names())}"
        )
    loaded.model.to(target).eval()
    return loaded


def _device(device: str | torch.device) -> torch.device:
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise RobevalError(f"unknown device {device!r}; use e.g. cpu, cuda or cuda:0") from exc
    if target.type == "cuda" and not torch.cuda.is_available():
        raise RobevalError(f"device {device!r} is not available (no CUDA GPU); use --device cpu")
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise RobevalError(f"device {device!r} is not available (no MPS); use --device cpu")
    return target
