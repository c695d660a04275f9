"""Writing a run's files under its output directory, each atomically."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from robeval.atomic import atomic_write_text
from robeval.results.plots import plot_norm_curves
from robeval.results.tables import accuracy_eps_table, markdown_table


def write_outputs(
    out: Path, spec: dict, results: pd.DataFrame, samples: pd.DataFrame,
    curves: pd.DataFrame | None = None, grid: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write spec.yaml, results.csv, accuracy_eps.csv/.md and samples.csv; with
    minimal-norm attacks also norm_curves.csv/.png, in targeted mode targeted_grid.csv.
    Return the paths written."""
    table = accuracy_eps_table(results)
    files = {
        "spec": out / "spec.yaml",
        "results": out / "results.csv",
        "accuracy_eps": out / "accuracy_eps.csv",
        "accuracy_eps_md": out / "accuracy_eps.md",
        "samples": out / "samples.csv",
    }
    atomic_write_text(files["spec"], yaml.safe_dump(spec, sort_keys=False))
    atomic_write_text(files["results"], results.to_csv(index=False))
    atomic_write_text(files["accuracy_eps"], table.to_csv())
    kind = "targeted attacks, " if spec.get("target") else ""
    title = f"Robust accuracy (%) on {', '.join(sorted(results['dataset'].unique()))} ({kind}n={int(results['n'].max())})\n\n"
    atomic_write_text(files["accuracy_eps_md"], title + markdown_table(table))
    atomic_write_text(files["samples"], samples.to_csv(index=False))
    if curves is not None and len(curves):
        files["norm_curves"] = out / "norm_curves.csv"
        atomic_write_text(files["norm_curves"], curves.to_csv(index=False))
        files["norm_curves_png"] = plot_norm_curves(curves, out / "norm_curves.png")
    if grid is not None and len(grid):
        files["targeted_grid"] = out / "targeted_grid.csv"
        atomic_write_text(files["targeted_grid"], grid.to_csv(index=False))
    return files
