"""``onnx:PATH`` - ONNX models, white-box through onnx2torch or black-box through onnxruntime.

``onnx:PATH`` (``backend=auto``) converts the graph to PyTorch with onnx2torch and checks
the conversion against onnxruntime on a probe batch; if they agree (max |diff| <= 1e-4 x
the logits' scale) the converted model is used and every attack runs. If onnx2torch
cannot convert the graph, or disagrees with onnxruntime, robeval warns and falls back to
onnxruntime: the model is then *black-box* (no gradients) and ``robeval run`` accepts
only gradient-free attacks (noise, salt-and-pepper, Fourier/filter attacks), saying so.
``backend=runtime`` asks for the black-box model directly; ``backend=torch`` requires the
conversion. Both need the optional extra ``pip install 'robeval[zoo]'``.

Like TorchScript, an ONNX file is a graph plus weights, not pickled Python: loading it
runs no user code. The model is assumed to take [0,1] images unless mean/std are given.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from robeval.errors import RobevalError
from robeval.models.source_utils import (
    existing_file,
    file_sha256,
    import_optional,
    options_tag,
    parse_options,
    parse_stats,
    split_options,
    wrap_normalize,
)
from robeval.models.sources import NO_CONTEXT, LoadedModel, SourceContext, model_sources

BACKENDS = ("auto", "torch", "runtime")
#: Converted and onnxruntime logits must agree to this fraction of the logits' scale.
AGREEMENT_RTOL = 1e-4


class OnnxRuntimeModel(nn.Module):
    """An onnxruntime session as a module: ``forward`` runs the graph on the batch (on the
    CPU) and returns logits on the input's device. No gradients flow through it."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        ort = import_optional("onnxruntime")
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: Tensor) -> Tensor:
        array = x.detach().to("cpu", torch.float32).numpy()
        (logits, *_) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(np.asarray(logits)).to(x.device)


@model_sources.register("onnx")
def load_onnx(rest: str, source: str, context: SourceContext = NO_CONTEXT) -> LoadedModel:
    """onnx:PATH[:backend=auto|torch|runtime,mean=..,std=..] - an ONNX graph; converted to
    PyTorch by onnx2torch (gradients) when it matches onnxruntime, else run by onnxruntime
    as a black box (gradient-free attacks only); [0,1] images unless mean/std are given."""
    text = rest.strip()
    path_text, opts = (text, "") if Path(text).expanduser().is_file() else split_options(text)
    options = parse_options(opts, source=source, allowed=("backend", "mean", "std"))
    backend = options.get("backend", "auto").lower()
    if backend not in BACKENDS:
        raise RobevalError(f"backend must be one of {', '.join(BACKENDS)} in {source!r}, got {backend!r}")
    path = existing_file(path_text, "ONNX file")
    runtime = OnnxRuntimeModel(path)
    net: nn.Module = runtime
    black_box = True
    if backend != "runtime":
        converted, problem = _convert(path, runtime)
        if converted is not None:
            net, black_box = converted, False
        elif backend == "torch":
            raise RobevalError(f"cannot use ONNX file {str(path)!r} with backend=torch: {problem}")
        else:
            warnings.warn(
                f"{source!r}: {problem}; running it with onnxruntime as a black box (no gradients): "
                "only gradient-free attacks apply", stacklevel=2,
            )
    mean = parse_stats(options.get("mean"), None, "mean")
    std = parse_stats(options.get("std"), None, "std")
    model = wrap_normalize(net, mean, std).eval()
    identity = f"onnx:sha256:{file_sha256(path)}" + options_tag(options, skip=("backend",))
    return LoadedModel(
        model=model, name=path.stem, source=source, identity=identity, meta=None, black_box=black_box
    )


def _convert(path: Path, runtime: OnnxRuntimeModel) -> tuple[nn.Module | None, str]:
    """onnx2torch's conversion of ``path`` if it reproduces onnxruntime on a probe batch,
    else ``(None, why not)``."""
    try:
        onnx2torch = import_optional("onnx2torch")
        net = onnx2torch.convert(str(path)).eval()
    except RobevalError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001  (onnx2torch raises many types for unsupported graphs)
        return None, f"onnx2torch cannot convert it ({type(exc).__name__}: {exc})"
    probe = _probe_batch(runtime)
    try:
        with torch.no_grad():
            got, expected = net(probe), runtime(probe)
    except Exception as exc:  # noqa: BLE001  (any failure means: fall back to onnxruntime)
        return None, f"the converted model fails on a probe batch ({type(exc).__name__}: {exc})"
    scale = float(expected.abs().max().clamp_min(1.0))
    diff = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
    if diff > AGREEMENT_RTOL * scale:
        return None, f"onnx2torch's conversion disagrees with onnxruntime (max |diff| {diff:.3g})"
    return net, ""


def _probe_batch(runtime: OnnxRuntimeModel) -> Tensor:
    """Two seeded [0,1] images of the graph's input shape (symbolic sizes: batch 2, else
    32; a fixed shape is used as is)."""
    dims = runtime.session.get_inputs()[0].shape
    shape = [d if isinstance(d, int) and d > 0 else (2 if i == 0 else 32) for i, d in enumerate(dims)]
    generator = torch.Generator().manual_seed(0)
    return torch.rand(*shape, generator=generator)
