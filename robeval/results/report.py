"""A one-file report of a run directory (``robeval report``): accuracy-epsilon curves
per attack (one line per model), the accuracy-epsilon table, the attack-failure checks,
the attack-specific figures the run wrote (norm curves, SFA grids, targeted grids), the
spec, and example adversarials next to their clean images, re-created from the spec.

Rows of attacks an attack-failure indicator flagged are starred, and a section renders
``checks.json`` (:mod:`robeval.results.report_checks`).

Markdown (``.md``) or HTML (``.html``); the images go into ``report_files/`` beside
the report and are referenced by relative path. Every table shows accuracies in %.

Inputs are validated before anything is drawn (:mod:`robeval.results.read_results`): a
damaged results.csv (cut off, rows missing against spec.yaml, a cell that is not a
number), transfer.csv or sfa_summary.csv is refused with one sentence naming the line and
the fix; the output paths are checked before any work."""

from __future__ import annotations

import html
import math
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from robeval.atomic import atomic_write_text
from robeval.errors import RobevalError
from robeval.results.output_paths import check_output_dir, check_output_file
from robeval.results.plots import save_figure
from robeval.results.read_results import read_run, read_spec, read_table
from robeval.results.report_checks import (
    checks_blocks,
    flagged_pairs,
    mark_flagged,
    read_checks,
    results_checked,
)
from robeval.results.tables import (
    accuracy_eps_table,
    format_eps,
    frame_markdown,
    markdown_table,
)

FILES_DIR = "report_files"
SUFFIXES = (".md", ".html")
EXTRA_FIGURES = ("norm_curves.png", "sfa_*.png", "targeted_*.png")
TRANSFER_REQUIRED = {"source", "target", "dataset", "attack", "eps", "n", "robust_acc"}
TRANSFER_NUMERIC = {"eps": (True, "eps"), "n": (True, "count"), "robust_acc": (True, "acc"),
                    "clean_acc": (False, "acc"), "adv_acc": (False, "acc"), "transfer_rate": (False, "acc")}
SFA_NUMERIC = {"eps": (True, "eps"), "avg_acc": (True, "acc"), "min_acc": (True, "acc"), "max_acc": (False, "acc"),
               "min_l": (False, "int"), "min_m": (False, "int")}


def curve_series(results: pd.DataFrame) -> dict[tuple[str, str], dict[str, dict[str, list[tuple[float, float]]]]]:
    """The data the curve figures plot: ``{(dataset, norm): {attack: {model: [(eps,
    robust_acc), ...]}}}`` with eps ascending (``inf`` last) and accuracy in [0, 1].
    Untargeted rows only."""
    frame = results
    if "target" in frame.columns:
        frame = frame[frame["target"].isna() | (frame["target"].astype(str) == "")]
    out: dict = {}
    for (dataset, norm), group in frame.groupby(["dataset", "norm"], sort=False):
        panels: dict = {}
        for (attack, model), line in group.groupby(["attack", "model"], sort=False):
            line = line.sort_values("eps")
            points = [(float(e), float(a)) for e, a in zip(line["eps"], line["robust_acc"], strict=True)]
            panels.setdefault(str(attack), {})[str(model)] = points
        out[(str(dataset), str(norm))] = panels
    return out


def _x_positions(eps_values: list[float]) -> tuple[dict[float, float], float | None]:
    """Where each eps goes on the x axis: finite eps at its value, ``inf`` a step to the
    right of the largest finite one. Returns the map and the x of the break (or None)."""
    finite = sorted(e for e in set(eps_values) if math.isfinite(e))
    pos = {e: e for e in finite}
    if any(math.isinf(e) for e in eps_values):
        top = finite[-1] if finite else 0.0
        gap = 0.2 * top if top > 0 else 1.0
        pos[math.inf] = top + gap
        return pos, top + gap / 2
    return pos, None


def plot_curves(series: dict, path: Path, dataset: str, norm: str) -> Path:
    """One panel per attack, one line per model: robust accuracy (%) against eps."""
    attacks = list(series)
    cols = min(3, len(attacks))
    rows = math.ceil(len(attacks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows), squeeze=False)
    all_eps = [e for lines in series.values() for pts in lines.values() for e, _ in pts]
    pos, brk = _x_positions(all_eps)
    ticks = sorted(pos)
    labels = [format_eps(e) for e in ticks]
    for ax, attack in zip(axes.flat, attacks, strict=False):
        for model, pts in series[attack].items():
            xs = [pos[e] for e, _ in pts]
            ys = [100 * a for _, a in pts]
            ax.plot(xs, ys, marker="o", markersize=4, label=model)
        if brk is not None:
            ax.axvline(brk, color="0.6", linestyle=":", linewidth=1)
        ax.set_xticks([pos[e] for e in ticks])
        ax.set_xticklabels(labels, rotation=45 if len(ticks) > 6 else 0, fontsize=8)
        ax.set_title(attack, fontsize=10)
        ax.set_xlabel(f"eps ({norm})")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    for ax in list(axes.flat)[len(attacks):]:
        ax.set_visible(False)
    fig.suptitle(f"accuracy-epsilon curves, {dataset}, {norm}", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def example_grid(spec: dict, path: Path, examples: int) -> tuple[Path | None, str]:
    """Clean images (row 1) and each attack's adversarials at the largest finite eps of
    the grid, with predicted labels (red when the prediction differs from the label).
    Returns ``(path, note)``; ``path`` is None where nothing could be made."""
    import torch

    import robeval

    models = spec.get("models") or []
    if not models:
        return None, "the spec names no model."
    source = str(models[0])
    try:
        model = robeval.load_model(source)
    except Exception as exc:  # noqa: BLE001  (a moved checkpoint must not fail the report)
        return None, f"model `{source}` could not be loaded ({type(exc).__name__}: {exc}); examples skipped."
    model.eval()
    seed = int(spec.get("seed") or 0)
    try:
        x, y = robeval.load_dataset(spec["dataset"], split="test", n=spec.get("n"), seed=seed,
                                    root=spec.get("data_root"))
    except Exception as exc:  # noqa: BLE001
        return None, f"data set `{spec.get('dataset')}` could not be loaded ({exc}); examples skipped."
    x, y = x[:examples], y[:examples]
    finite = [float(e) for e in spec.get("eps") or [] if math.isfinite(float(e)) and float(e) > 0]
    if not finite:
        return None, "the eps grid has no finite eps > 0; examples skipped."
    eps = max(finite)
    rows: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        rows.append(("clean", x, model(x).argmax(1)))
    notes = []
    for name in spec.get("attacks") or []:
        try:
            attack = robeval.attacks.get(str(name))
            adv = attack(model, x, y, eps=eps, generator=torch.Generator().manual_seed(seed))
            adv = getattr(adv, "x_adv", adv).detach()
            with torch.no_grad():
                rows.append((f"{name}\neps={format_eps(eps)}", adv, model(adv).argmax(1)))
        except Exception as exc:  # noqa: BLE001
            notes.append(f"`{name}` failed ({type(exc).__name__}: {exc})")
    k = len(x)
    fig, axes = plt.subplots(len(rows), k, figsize=(1.2 * k + 1.4, 1.35 * len(rows) + 0.3), squeeze=False)
    for r, (title, images, pred) in enumerate(rows):
        for c in range(k):
            ax = axes[r][c]
            image = images[c].float().cpu()
            if image.shape[0] == 1:
                ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            fooled = int(pred[c]) != int(y[c])
            label = f"label {int(y[c])}\npred {int(pred[c])}" if r == 0 else f"pred {int(pred[c])}"
            ax.set_title(label, fontsize=7, color="red" if fooled else "black")
            if c == 0:
                ax.set_ylabel(title, fontsize=7)
    fig.suptitle(f"{Path(source).stem}: clean images and adversarials; red = misclassified",
                 fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    note = f"First {k} test images of the seeded subset, labels {', '.join(str(int(v)) for v in y)}; eps = {format_eps(eps)}."
    if notes:
        note += " " + "; ".join(notes) + "."
    return path, note


def write_report(run_dir: Path, out: Path, *, examples: int = 8) -> Path:
    """Write the report of ``run_dir`` to ``out`` (``.md`` or ``.html``) and its images to
    ``report_files/`` beside it. Returns ``out``."""
    run_dir, out = Path(run_dir), Path(out)
    if out.is_dir():
        raise RobevalError(f"--out {out} is a folder; pass a file path such as {out / 'report.html'}")
    if out.suffix.lower() not in SUFFIXES:
        raise RobevalError(f"unsupported report format {out.suffix or '(none)'!r}: use .md or .html")
    files = out.parent / FILES_DIR
    check_output_file(out, "--out", example="report.html")
    if files.exists() and not files.is_dir():
        raise RobevalError(f"{files} is a file, but the report keeps its images in a folder of that name beside "
                           "--out; move that file away or pass --out in another folder")
    check_output_dir(files, "--out")
    if not run_dir.is_dir():
        raise RobevalError(f"run directory {run_dir} does not exist")
    results_path = run_dir / "results.csv"
    is_transfer = not results_path.is_file() and (run_dir / "transfer.csv").is_file()
    if not results_path.is_file() and not is_transfer:
        raise RobevalError(f"{run_dir} holds no results.csv or transfer.csv: not a run directory")
    is_html = out.suffix.lower() == ".html"
    if is_transfer:
        spec_text = read_spec(run_dir)[1]
        transfer = read_table(run_dir / "transfer.csv", required=TRANSFER_REQUIRED, numeric=TRANSFER_NUMERIC,
                              what="transfer file", run_dir=run_dir)
        files.mkdir(parents=True, exist_ok=True)
        blocks = [*_transfer_blocks(run_dir, files, transfer), ("h2", "Spec"), ("code", spec_text or "(no spec.yaml)")]
        atomic_write_text(out, _render_html(blocks, out) if is_html else _render_md(blocks, out))
        return out
    tables = read_run(run_dir, samples=False)
    results, spec, spec_text = tables.results, tables.spec, tables.spec_text
    sfa_summary = _sfa_summary(run_dir)
    files.mkdir(parents=True, exist_ok=True)

    blocks: list[tuple[str, object]] = []  # (kind, payload): h2/text/img/table/code
    blocks.append(("h1", f"robeval report: {run_dir.name}"))
    datasets = ", ".join(sorted(results["dataset"].astype(str).unique()))
    blocks.append(("text", f"Run directory `{run_dir}`; data set {datasets}; n = {int(results['n'].max())}."))

    blocks.append(("h2", "Accuracy-epsilon curves"))
    for (dataset, norm), series in curve_series(results).items():
        png = plot_curves(series, files / f"curves_{_slug(dataset)}_{_slug(norm)}.png", dataset, norm)
        blocks.append(("img", (png, f"accuracy-epsilon curves, {dataset}, {norm}")))

    blocks.append(("h2", "Robust accuracy (%)"))
    try:
        checks = read_checks(run_dir)
    except RobevalError:
        checks = None  # said in the checks section
    flagged = flagged_pairs(results, checks)
    table = mark_flagged(accuracy_eps_table(results), flagged)
    blocks.append(("table", table))
    if flagged:
        blocks.append(("text", "Rows marked * are unreliable: an attack-failure indicator fired for that model and "
                               "attack, so its robust accuracy is likely too high (see Attack-failure checks)."))
    elif checks is None and not results_checked(results):
        blocks.append(("text", "Attack-failure checks: not checked (see below)."))
    blocks += checks_blocks(run_dir, results)

    figures = [p for pattern in EXTRA_FIGURES for p in sorted(run_dir.glob(pattern))]
    if figures or sfa_summary is not None:
        blocks.append(("h2", "Attack-specific figures"))
        if sfa_summary is not None:
            blocks.append(("text", "SFA summary (accuracy in % over the Fourier grid: average, minimum and where "
                                   "it is, maximum):"))
            blocks.append(("frame", sfa_summary))
        for fig in figures:
            target = files / fig.name
            shutil.copyfile(fig, target)
            blocks.append(("img", (target, fig.stem)))

    blocks.append(("h2", "Example adversarials"))
    if examples > 0 and spec:
        png, note = example_grid(spec, files / "examples.png", examples)
        blocks.append(("text", note))
        if png is not None:
            blocks.append(("img", (png, "clean and adversarial examples")))
    else:
        blocks.append(("text", "No examples requested." if examples <= 0 else "No spec.yaml; examples skipped."))

    blocks.append(("h2", "Spec"))
    blocks.append(("code", spec_text or "(no spec.yaml)"))

    text = _render_html(blocks, out) if is_html else _render_md(blocks, out)
    atomic_write_text(out, text)
    return out


def _sfa_summary(run_dir: Path) -> pd.DataFrame | None:
    """``sfa_summary.csv`` as shown: eps as ``8/255``, every accuracy in % (1 decimal),
    the minimum's ``(l, m)`` as one cell; None when the run has none."""
    path = run_dir / "sfa_summary.csv"
    if not path.is_file():
        return None
    frame = read_table(path, required={"model", "eps", "avg_acc", "min_acc"}, numeric=SFA_NUMERIC,
                       what="SFA summary", run_dir=run_dir)
    shown = pd.DataFrame({"model": frame["model"].astype(str), "eps": [format_eps(float(e)) for e in frame["eps"]]})
    for column, title in (("avg_acc", "avg (%)"), ("min_acc", "min (%)"), ("max_acc", "max (%)")):
        if column in frame.columns:
            shown[title] = [f"{100 * v:.1f}" if pd.notna(v) else "" for v in frame[column]]
        if column == "min_acc" and {"min_l", "min_m"} <= set(frame.columns):
            shown["min at (l, m)"] = [f"({int(a)}, {int(b)})" if pd.notna(a) and pd.notna(b) else ""
                                      for a, b in zip(frame["min_l"], frame["min_m"], strict=True)]
    return shown


def _transfer_blocks(run_dir: Path, files: Path, frame: pd.DataFrame) -> list[tuple[str, object]]:
    """A ``robeval transfer`` directory: the heat maps and one grid per attack and eps."""
    from robeval.results.transfer_tables import transfer_grids

    blocks: list[tuple[str, object]] = [
        ("h1", f"robeval transfer report: {run_dir.name}"),
        ("text", (f"Run directory `{run_dir}`; data set {', '.join(sorted(frame['dataset'].astype(str).unique()))}; "
                  f"n = {int(frame['n'].max())}. Robust accuracy (%) of each target (row) on the adversarials of "
                  "each source (column); the diagonal is the white-box attack.")),
    ]
    for fig in sorted(run_dir.glob("transfer_*.png")):
        target = files / fig.name
        shutil.copyfile(fig, target)
        blocks.append(("img", (target, fig.stem)))
    for (attack, eps), grid in transfer_grids(frame).items():
        blocks.append(("h2", f"{attack}, eps {format_eps(float(eps))}"))
        blocks.append(("frame", (100 * grid).round(1).reset_index()))
    return blocks


def _rel(path: Path, out: Path) -> str:
    return f"{FILES_DIR}/{path.name}"


def _render_md(blocks: list, out: Path) -> str:
    parts = []
    for kind, payload in blocks:
        if kind == "h1":
            parts.append(f"# {payload}\n")
        elif kind == "h2":
            parts.append(f"## {payload}\n")
        elif kind == "text":
            parts.append(f"{payload}\n")
        elif kind == "list":
            parts.append("".join(f"- {item}\n" for item in payload))
        elif kind == "img":
            path, alt = payload
            parts.append(f"![{alt}]({_rel(path, out)})\n")
        elif kind == "table":
            parts.append(markdown_table(payload))
        elif kind == "frame":
            parts.append(frame_markdown(payload))
        elif kind == "code":
            parts.append(f"```yaml\n{payload.rstrip()}\n```\n")
    return "\n".join(parts)


def _render_html(blocks: list, out: Path) -> str:
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
        f"<title>{html.escape(str(blocks[0][1]))}</title>",
        ("<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
         "img{max-width:100%}pre{background:#f4f4f4;padding:1em}</style>"),
        "</head><body>",
    ]
    for kind, payload in blocks:
        if kind == "h1":
            parts.append(f"<h1>{html.escape(payload)}</h1>")
        elif kind == "h2":
            parts.append(f"<h2>{html.escape(payload)}</h2>")
        elif kind == "text":
            parts.append(f"<p>{html.escape(payload)}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in payload) + "</ul>")
        elif kind == "img":
            path, alt = payload
            parts.append(f"<p><img src='{html.escape(_rel(path, out))}' alt='{html.escape(alt)}'></p>")
        elif kind == "table":
            shown = (100 * payload).round(1)
            parts.append(shown.to_html(na_rep="", float_format=lambda v: f"{v:.1f}", classes="accuracy-eps"))
        elif kind == "frame":
            parts.append(payload.to_html(index=False, na_rep=""))
        elif kind == "code":
            parts.append(f"<pre><code>{html.escape(payload)}</code></pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
