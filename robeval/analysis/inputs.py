"""What the analysis commands share: one budget, a model and its seeded test subset."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from robeval.data import dataset_info, load_dataset
from robeval.errors import RobevalError
from robeval.models import LoadedModel, load_model
from robeval.params import parse_eps_list


def single_eps(text: str) -> float:
    """``--eps`` of an analysis: exactly one finite budget."""
    budgets = parse_eps_list(text)
    if len(budgets) != 1 or math.isinf(budgets[0]):
        raise RobevalError(f"--eps takes one finite budget, not {text!r}")
    return budgets[0]


def model_and_subset(
    source: str, *, dataset: str | None, n: int, seed: int, data_root: str | None, device: torch.device,
    needs_gradients: bool = True,
) -> tuple[LoadedModel, Tensor, Tensor]:
    """The model (on ``device``) and the seeded test subset it is analysed on; the data
    set defaults to the one the checkpoint records and must match its input shape."""
    loaded = load_model(source, device=device)
    if loaded.black_box and needs_gradients:
        raise RobevalError(f"model {loaded.name!r} is a black box (no gradients); use a gradient-free --attack")
    if dataset is None:
        if loaded.meta is None:
            raise RobevalError("cannot tell which data set to use; pass --dataset NAME (see `robeval ls datasets`)")
        dataset = loaded.meta.dataset
    info = dataset_info(dataset, root=data_root)
    if loaded.meta is not None and tuple(loaded.meta.input_shape) != tuple(info.input_shape):
        raise RobevalError(
            f"model {loaded.name!r} was trained on inputs of shape {tuple(loaded.meta.input_shape)} but "
            f"{dataset} gives {tuple(info.input_shape)}; pass the matching --dataset"
        )
    x, y = load_dataset(dataset, split="test", n=n, seed=seed, root=data_root)
    return loaded, x, y


def models_and_subset(
    sources: list[str], *, dataset: str | None, n: int, seed: int, data_root: str | None, device: torch.device,
    needs_gradients: bool = True,
) -> tuple[list[LoadedModel], list[str], Tensor, Tensor]:
    """Several models (on ``device``) with display names, and the seeded test subset they
    are compared on; each must take the data set's images (one clear error otherwise)."""
    from robeval.eval.setup import (
        check_forward,
        check_input_shape,
        display_names,
        resolve_dataset,
    )

    loaded = [load_model(source, device=device) for source in sources]
    names = display_names(loaded)
    for item, label in zip(loaded, names, strict=True):
        if needs_gradients and item.black_box:
            raise RobevalError(f"model {label!r} is a black box (no gradients); this analysis needs gradients")
    name = resolve_dataset(dataset, loaded)
    info = dataset_info(name, root=data_root)
    x, y = load_dataset(name, split="test", n=n, seed=seed, root=data_root)
    for item, label in zip(loaded, names, strict=True):
        check_input_shape(item, label, info.input_shape)
        check_forward(item, label, x, len(info.classes), device)
    return loaded, names, x, y


def write_analysis_files(
    out: Path, stem: str, samples: pd.DataFrame, summary: pd.DataFrame, markdown: str,
    plot: Callable[[Path], Path],
) -> dict[str, Path]:
    """``STEM_samples.csv``, ``STEM.csv`` (the summary), ``STEM.md`` and ``STEM.png``, each
    written atomically under ``out``."""
    from robeval.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    files = {"samples": out / f"{stem}_samples.csv", "summary": out / f"{stem}.csv", "markdown": out / f"{stem}.md"}
    atomic_write_text(files["samples"], samples.to_csv(index=False))
    atomic_write_text(files["summary"], summary.to_csv(index=False))
    atomic_write_text(files["markdown"], markdown)
    files["plot"] = plot(out / f"{stem}.png")
    return files


def make_adversarials(
    model: nn.Module, attack: object, x: Tensor, y: Tensor, *, eps: float, batch_size: int,
    device: torch.device, seed: int, key: str,
) -> Tensor:
    """The attack's answers for every point (clean-misclassified ones too), batch by batch
    with per-batch seeds from ``seed`` and ``key``; a deformation's images for ADef."""
    from robeval.eval.cells import batch_seed
    from robeval.eval.runner import eval_mode

    parts = []
    with eval_mode(model) as frozen:
        for batch, start in enumerate(range(0, len(x), batch_size)):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            generator = torch.Generator().manual_seed(batch_seed(seed, key, batch))
            result = attack(frozen, xb, yb, eps=eps, generator=generator)  # type: ignore[operator]
            parts.append(getattr(result, "x_adv", result).detach().cpu())
    return torch.cat(parts)
