"""Writing a run's files under its output directory, each atomically."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from robeval.atomic import atomic_write_text

from robeval.results.tables import accuracy_eps_table, markdown_table


def write_outputs(
    out: Path, spec: dict, results: pd.DataFrame, samples: pd.DataFrame
) -> dict[str, Path]:
    """Write spec.yaml, results.csv, accuracy_eps.csv/.md and samples.csv; return their paths."""
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
    title = f"Robust accuracy (%) on {', '.join(sorted(results['dataset'].unique()))}\n\n"
    atomic_write_text(files["accuracy_eps_md"], title + markdown_table(table))
    atomic_write_text(files["samples"], samples.to_csv(index=False))
    return files
