"""Models: architectures, the [0,1] ``Normalize`` wrapper, checkpoints and model sources.

Importing this package registers every architecture in :data:`architectures`.
"""

from robeval.models.build import (
    architectures,
    arch_defaults,
    build_model,
    resolve_arch,
)
from robeval.models.layers import ACTIVATIONS, check_activation, make_activation
from robeval.models.normalize import Normalize

# Architecture modules register themselves on import (after ``build``).
from robeval.models import mnist, resnet, sgr, small, wideresnet  # noqa: E402,F401  isort: skip

from robeval.models.checkpoint import (  # noqa: E402
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    CheckpointMeta,
    checkpoint_sha256,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    unwrap_model,
)
from robeval.models.sources import LoadedModel, load_model, model_sources  # noqa: E402

# More model sources (torchvision, TorchScript, file.py:factory, plug-ins, timm,
# RobustBench, ONNX) register on import; their libraries are imported only when used.
from robeval.models import onnx_source, third_party, zoo  # noqa: F401  isort: skip

__all__ = [
    "ACTIVATIONS",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointMeta",
    "LoadedModel",
    "Normalize",
    "arch_defaults",
    "architectures",
    "build_model",
    "check_activation",
    "checkpoint_sha256",
    "load_checkpoint",
    "load_model",
    "make_activation",
    "model_sources",
    "read_checkpoint",
    "resolve_arch",
    "save_checkpoint",
    "unwrap_model",
]
