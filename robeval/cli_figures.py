"""The figure commands of the CLI: ``robeval kernels``, ``robeval classes`` and
``robeval deceptive`` (registered on :data:`robeval.cli.app`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robeval.cli import app, out_console, user_errors
from robeval.errors import RobevalError


@app.command()
def kernels(
    models: Annotated[list[str], typer.Argument(help="Checkpoints (or other model sources) to compare.")],
    layer: Annotated[str | None, typer.Option(help="Conv layer to draw (default: the first with kernels > 1x1).")] = None,
    count: Annotated[int, typer.Option(help="Kernels to draw per model.")] = 4,
    dataset: Annotated[str | None, typer.Option(help="Data set of the image in the third row (default: recorded).")] = None,
    data_root: Annotated[str | None, typer.Option(help="Folder holding local data sets.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/kernels"),
) -> None:
    """Kernel smoothness per conv layer, and the kernels with their spectra (smooth-kernels Fig. 1)."""
    with user_errors():
        from robeval.analysis.kernels import (
            compare_kernels,
            model_summary,
            plot_kernels,
        )
        from robeval.atomic import atomic_write_text
        from robeval.data import load_dataset
        from robeval.eval.setup import display_names
        from robeval.models import load_model
        from robeval.results.tables import frame_markdown

        if count < 1:
            raise RobevalError("--count must be >= 1")
        loaded = [load_model(m) for m in models]
        names = display_names(loaded)
        table = compare_kernels([(name, item.model) for item, name in zip(loaded, names, strict=True)])
        if table.empty:
            raise RobevalError("none of the models has a conv layer with kernels larger than 1x1")
        summary = model_summary(table)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "kernels.csv", table.to_csv(index=False))
        atomic_write_text(out / "kernels_summary.csv", summary.to_csv(index=False))
        atomic_write_text(out / "kernels.md", "Kernel smoothness (mean over 2-D kernels; summary = mean over layers)\n\n"
                          + frame_markdown(summary) + "\n" + frame_markdown(table))
        pngs = []
        for item, name in zip(loaded, names, strict=True):
            source = dataset or (item.meta.dataset if item.meta is not None else None)
            image = load_dataset(source, split="test", n=1, seed=0, root=data_root)[0][0] if source else None
            try:
                pngs.append(plot_kernels(item.model, out / f"kernels_{_slug(name)}.png", layer=layer, count=count,
                                         image=image))
            except ValueError as exc:
                raise RobevalError(f"model {name!r}: {exc}") from None
        out_console.print(summary.to_string(index=False), highlight=False)
        out_console.print(f"wrote {out / 'kernels.csv'}, {out / 'kernels.md'}, " + ", ".join(map(str, pngs)),
                          highlight=False)


@app.command()
def classes(
    models: Annotated[list[str], typer.Argument(help="Checkpoints (or other model sources) to compare.")],
    dataset: Annotated[str | None, typer.Option(help="Data set (input shape, class names); default: recorded.")] = None,
    steps: Annotated[int, typer.Option(help="Gradient-ascent steps (paper: 10000).")] = 10_000,
    lr: Annotated[float, typer.Option(help="Step size per pixel, RMS (paper: 0.001).")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of the Gaussian-noise input.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    data_root: Annotated[str | None, typer.Option(help="Folder holding local data sets.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/classes"),
) -> None:
    """What each model considers each class to be: activation maximisation from noise (smooth-kernels Figs. 3-6)."""
    with user_errors():
        import numpy as np
        import pandas as pd
        import torch

        from robeval.analysis.classes import maximise_classes, plot_class_images
        from robeval.atomic import atomic_write_text
        from robeval.data import dataset_info
        from robeval.device import resolve_device
        from robeval.eval.setup import check_input_shape, display_names, resolve_dataset
        from robeval.models import load_model

        if steps < 0 or lr <= 0:
            raise RobevalError("--steps must be >= 0 and --lr > 0")
        resolved = resolve_device(device)
        loaded = [load_model(m, device=resolved) for m in models]
        names = display_names(loaded)
        info = dataset_info(resolve_dataset(dataset, loaded), root=data_root)
        rows, records, arrays = [], [], {}
        for item, name in zip(loaded, names, strict=True):
            check_input_shape(item, name, info.input_shape)
            if item.black_box:
                raise RobevalError(f"model {name!r} is a black box (no gradients); activation maximisation needs them")
            start, images = maximise_classes(item.model, info.input_shape, range(len(info.classes)), steps=steps,
                                             lr=lr, seed=seed, device=resolved)
            with torch.no_grad():
                probs = torch.softmax(item.model(images.to(resolved)), dim=1).cpu()
            for k, label in enumerate(info.classes):
                records.append({"model": name, "class": str(label), "prob": float(probs[k, k]),
                                "predicted": str(info.classes[int(probs[k].argmax())])})
            rows.append((name, start, images))
            arrays[_slug(name)] = images.numpy()
        out.mkdir(parents=True, exist_ok=True)
        png = plot_class_images(rows, [str(c) for c in info.classes], out / "classes.png",
                                title=f"activation maximisation, {steps} steps of {lr:g}")
        with open(out / "classes.npz", "wb") as handle:
            np.savez_compressed(handle, **arrays)
        table = pd.DataFrame(records)
        atomic_write_text(out / "classes.csv", table.to_csv(index=False))
        hits = table.assign(hit=table["class"] == table["predicted"]).groupby("model", sort=False)["hit"].mean()
        for name, share in hits.items():
            out_console.print(f"{name}: the model predicts the intended class on {100 * share:.0f}% of its images",
                              highlight=False)
        out_console.print(f"wrote {png}, {out / 'classes.csv'}, {out / 'classes.npz'}", highlight=False)

def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


@app.command()
def deceptive(
    models: Annotated[list[str], typer.Argument(help="Checkpoints (or other model sources) to compare.")],
    eps: Annotated[str, typer.Option(help="One budget, e.g. 0.3 (FGSM, as in Fig. 2).")],
    attack: Annotated[str, typer.Option(help="Attack NAME or NAME:key=value (paper: fgsm; adef in appendix D).")] = "fgsm",
    dataset: Annotated[str | None, typer.Option(help="Data set; default: the one recorded in the checkpoints.")] = None,
    n: Annotated[int, typer.Option(help="Seeded test subset size to search.")] = 500,
    seed: Annotated[int, typer.Option()] = 0,
    batch_size: Annotated[int, typer.Option()] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    data_root: Annotated[str | None, typer.Option(help="Folder holding local data sets.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/deceptive"),
) -> None:
    """The on-average most deceptive adversarial example of each class (smooth-kernels Fig. 2)."""
    with user_errors():
        import pandas as pd

        from robeval.analysis.deceptive import deception, most_deceptive, plot_deceptive
        from robeval.analysis.inputs import (
            make_adversarials,
            models_and_subset,
            single_eps,
        )
        from robeval.atomic import atomic_write_text
        from robeval.attacks import canonical_name
        from robeval.attacks import get as get_attack
        from robeval.attacks.base import is_gradient_free
        from robeval.data import dataset_info
        from robeval.device import resolve_device
        from robeval.eval.runner import eval_mode, predict
        from robeval.eval.setup import resolve_dataset
        from robeval.results.tables import format_eps

        budget = single_eps(eps)
        attack_obj = get_attack(attack)
        resolved = resolve_device(device)
        loaded, names, x, y = models_and_subset(models, dataset=dataset, n=n, seed=seed, data_root=data_root,
                                                device=resolved, needs_gradients=not is_gradient_free(attack_obj))
        classes = [str(c) for c in dataset_info(resolve_dataset(dataset, loaded), root=data_root).classes]
        rows = []
        for item, name in zip(loaded, names, strict=True):
            x_adv = make_adversarials(item.model, attack_obj, x, y, eps=budget, batch_size=batch_size,
                                      device=resolved, seed=seed, key=f"deceptive:{item.identity}")
            with eval_mode(item.model) as model:
                clean = predict(model, x, batch_size, resolved)
                rows.append((name, deception(model, x_adv.to(resolved), y, batch_size, clean_pred=clean)))
        chosen = most_deceptive(y, [d for _, d in rows], len(classes))
        out.mkdir(parents=True, exist_ok=True)
        label = f"{canonical_name(attack_obj)} at eps {format_eps(budget)}"
        try:
            png = plot_deceptive(x, chosen, rows, classes, out / "deceptive.png",
                                 title=f"on-average most deceptive adversarials, {label}")
        except ValueError as exc:
            raise RobevalError(f"{exc} ({label}); try a larger --eps or another attack") from None
        records = [{"class": classes[k], "index": i, "model": name, "predicted": classes[int(d.predicted[i])],
                    "confidence": float(d.confidence[i])}
                   for k, i in enumerate(chosen) if i is not None for name, d in rows]
        atomic_write_text(out / "deceptive.csv", pd.DataFrame(records).to_csv(index=False))
        out_console.print(f"wrote {png} and {out / 'deceptive.csv'}", highlight=False)
