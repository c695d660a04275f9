"""Local response differences (local-response-differences paper, Sec. 4.3, Tables 1-3).

For chosen layers, the absolute difference between a layer's responses to a natural
image and to its (potentially) adversarial example, per image: its maximum ("Max") and
its sum ("Total"). The paper reads them for a ResNet-18 at the first convolution
("Conv 1"), the feature maps before ``layer1`` ("Layer 0") and the outputs of ``layer1``
to ``layer4``; it compares a standard with an adversarially trained model (Table 1),
successful with failed attacks among correctly classified images (Table 2), and the
model's own adversarials with adversarials transferred from another model (Table 3).

``layers="auto"`` picks those six for ResNets (robeval's and torchvision's share the
names ``conv1``, ``maxpool``, ``layer1``..``layer4``) and every ``Conv2d`` otherwise;
a comma-separated list names modules as in ``model.named_modules()`` (a leading
``model.`` of robeval's Normalize wrapper may be left out).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from robeval.errors import RobevalError
from robeval.results.plots import save_figure
from robeval.results.tables import format_eps

RESNET_LAYERS = {"conv1": "conv1", "layer0": "maxpool", "layer1": "layer1", "layer2": "layer2",
                 "layer3": "layer3", "layer4": "layer4"}
GROUPS = ("all", "success", "failure")


def resolve_layers(model: nn.Module, spec: str = "auto") -> dict[str, nn.Module]:
    """Display name -> module whose output is compared (see the module docstring)."""
    modules = dict(model.named_modules())
    prefix = "model." if "model" in modules and all(k == "" or k.startswith("model") for k in modules) else ""
    if spec.strip().lower() == "auto":
        if all(prefix + name in modules for name in RESNET_LAYERS.values()):
            return {label: modules[prefix + name] for label, name in RESNET_LAYERS.items()}
        convs = {name.removeprefix(prefix): m
                 for name, m in modules.items() if isinstance(m, nn.Conv2d)}
        if not convs:
            raise RobevalError("the model has no Conv2d layers; name the layers with --layers a,b,c")
        return convs
    chosen = {}
    for name in filter(None, (part.strip() for part in spec.split(","))):
        found = modules.get(name, modules.get(prefix + name))
        if found is None:
            known = ", ".join(n[len(prefix):] for n in modules if n.startswith(prefix) and n != prefix.rstrip("."))
            raise RobevalError(f"the model has no layer {name!r}; layers: {known}")
        chosen[name] = found
    if not chosen:
        raise RobevalError("--layers names no layer; write e.g. --layers conv1,layer1 or auto")
    return chosen


@contextmanager
def recorded(layers: dict[str, nn.Module]) -> Iterator[dict[str, Tensor]]:
    """Forward hooks that keep each layer's latest output under its display name."""
    outputs: dict[str, Tensor] = {}
    handles = [module.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out.detach()))
               for name, module in layers.items()]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def response_differences(
    model: nn.Module, layers: dict[str, nn.Module], x: Tensor, x_adv: Tensor
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per layer, per image: ``(max |r(x_adv) - r(x)|, sum |r(x_adv) - r(x)|)``."""
    with recorded(layers) as outputs:
        model(x)
        natural = dict(outputs)
        model(x_adv)
        adversarial = dict(outputs)
    result = {}
    for name in layers:
        diff = (adversarial[name] - natural[name]).abs().flatten(1).double()
        result[name] = (diff.amax(dim=1).cpu(), diff.sum(dim=1).cpu())
    return result


def response_samples(
    model: nn.Module, layers: dict[str, nn.Module], x: Tensor, y: Tensor, x_adv: Tensor, *, origin: str
) -> pd.DataFrame:
    """Long table: one row per image and layer, with the clean/adversarial predictions."""
    with torch.no_grad():
        clean, adv = model(x).argmax(1).cpu(), model(x_adv).argmax(1).cpu()
    diffs = response_differences(model, layers, x, x_adv)
    frames = [pd.DataFrame({
        "origin": origin, "layer": name, "label": y.cpu().numpy(), "clean_pred": clean.numpy(),
        "adv_pred": adv.numpy(), "max_abs": mx.numpy(), "total_abs": tot.numpy(),
    }) for name, (mx, tot) in diffs.items()]
    return pd.concat(frames, ignore_index=True)


def batched_response_samples(
    model: nn.Module, layers: dict[str, nn.Module], x: Tensor, y: Tensor, x_adv: Tensor, *, origin: str,
    batch_size: int = 128, device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """:func:`response_samples` over ``x`` (CPU) in batches on ``device``, with an
    ``index`` column (the image's position in ``x``); the model is put in eval mode for
    the call and left as it was (as ``robeval responses`` does per model and origin)."""
    from robeval.device import resolve_device
    from robeval.eval.runner import eval_mode

    if x.shape != x_adv.shape or len(y) != len(x):
        raise ValueError(f"x {tuple(x.shape)}, x_adv {tuple(x_adv.shape)} and {len(y)} labels do not match")
    device = resolve_device(device)
    frames = []
    with eval_mode(model) as frozen:
        for start in range(0, len(x), batch_size):
            part = response_samples(frozen, layers, x[start:start + batch_size].to(device), y[start:start + batch_size],
                                    x_adv[start:start + batch_size].to(device), origin=origin)
            part.insert(0, "index", start + part.groupby("layer").cumcount())
            frames.append(part)
    return pd.concat(frames, ignore_index=True)


def response_summary(samples: pd.DataFrame) -> pd.DataFrame:
    """Mean Max and Total per model, origin, layer and group: ``all`` images, and among
    the correctly classified ones attack ``success`` or ``failure`` (Table 2)."""
    rows = []
    for (model, origin, layer), part in samples.groupby(["model", "origin", "layer"], sort=False):
        correct = part["clean_pred"] == part["label"]
        fooled = part["adv_pred"] != part["label"]
        for group, mask in (("all", np.ones(len(part), bool)), ("success", correct & fooled),
                            ("failure", correct & ~fooled)):
            chosen = part[np.asarray(mask)]
            rows.append({"model": model, "origin": origin, "layer": layer, "group": group, "n": len(chosen),
                         "max_abs": chosen["max_abs"].mean() if len(chosen) else np.nan,
                         "total_abs": chosen["total_abs"].mean() if len(chosen) else np.nan})
    return pd.DataFrame(rows)


def summary_markdown(summary: pd.DataFrame, *, attack: str, eps: float) -> str:
    """Paper-style tables: per model, origin and group a Max and a Total row over layers."""
    lines = [f"Local response differences (mean per image), {attack} at eps {format_eps(eps)}.", ""]
    for (model, origin), part in summary.groupby(["model", "origin"], sort=False):
        layers = list(dict.fromkeys(part["layer"]))
        lines += [f"### {model}, {origin} adversarials", "",
                  "| group | n | statistic | " + " | ".join(layers) + " |", "|---|---|---|" + "---|" * len(layers)]
        for group in GROUPS:
            rows = part[part["group"] == group].set_index("layer")
            n = int(rows["n"].iloc[0]) if len(rows) else 0
            for stat, label in (("max_abs", "Max"), ("total_abs", "Total")):
                cells = [_fmt(rows.at[layer, stat]) for layer in layers]
                lines.append(f"| {group} | {n} | {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_responses(summary: pd.DataFrame, path: Path) -> Path:
    """Mean Max and Total difference per layer (log scale): one colour per model and
    origin of the adversarials, solid for all images, dashed for successful and dotted
    for failed attacks."""
    styles = {"all": "-", "success": "--", "failure": ":"}
    combos = list(dict.fromkeys(zip(summary["model"], summary["origin"], strict=True)))
    colours = {combo: plt.get_cmap("tab10")(i % 10) for i, combo in enumerate(combos)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), squeeze=False)
    for ax, (stat, label) in zip(axes[0], (("max_abs", "max |difference|"), ("total_abs", "total |difference|")),
                                 strict=True):
        for (model, origin, group), part in summary.groupby(["model", "origin", "group"], sort=False):
            if part[stat].notna().any():
                ax.plot(part["layer"], part[stat], marker="o", linestyle=styles[group], color=colours[(model, origin)],
                        label=f"{model} · {origin} · {group}")
        ax.set_yscale("log")
        ax.set_ylabel(f"{label} per image")
        ax.set_xlabel("layer")
        ax.tick_params(axis="x", rotation=30)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return save_figure(fig, Path(path), tight=True)


def write_response_outputs(out: Path, samples: pd.DataFrame, *, attack: str, eps: float) -> dict[str, Path]:
    """responses_samples.csv, responses.csv (summary), responses.md and responses.png."""
    from robeval.analysis.inputs import write_analysis_files

    summary = response_summary(samples)
    return write_analysis_files(out, "responses", samples, summary, summary_markdown(summary, attack=attack, eps=eps),
                                lambda path: plot_responses(summary, path))


def _fmt(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{float(value):.4g}"
