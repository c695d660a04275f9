"""inconsistent-results: the tables must agree with the per-point results they are made
from, and a nested attack's accuracy must not rise with eps."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from robeval.eval.indicators.base import Finding
from robeval.eval.indicators.catalog import CURVE_ATOL


def consistency_findings(results: pd.DataFrame, samples: pd.DataFrame, nested: dict[str, bool]) -> list[Finding]:
    """One finding per (model, attack) of ``results``: the robust accuracy of every row
    recounted from ``samples`` (points whose adversarial prediction is their label), and,
    for nested attacks, accuracy non-increasing along the eps grid."""
    findings: list[Finding] = []
    if results.empty:
        return findings
    untargeted = results["target"].astype(str).isin(["", "nan"]) if "target" in results else np.ones(len(results), bool)
    recount = samples.assign(ok=samples["adv_pred"] == samples["label"]).groupby(
        ["model", "attack", "eps"], sort=False)["ok"].mean()
    for (model, attack), rows in results[untargeted].groupby(["model", "attack"], sort=False):
        rows = rows.sort_values("eps")
        problems: list[str] = []
        worst = 0.0
        for eps, reported in zip(rows["eps"], rows["robust_acc"], strict=True):
            counted = recount.get((model, attack, eps), np.nan)
            gap = abs(float(counted) - float(reported)) if not (np.isnan(counted) or np.isnan(reported)) else math.inf
            if gap > CURVE_ATOL:
                worst = max(worst, gap)
                problems.append(f"at eps {eps:g} the table says {reported:.4f} but the points give {counted:.4f}")
        if nested.get(attack, False):
            finite = rows[np.isfinite(rows["eps"].astype(float))]
            rises = np.diff(finite["robust_acc"].to_numpy(dtype=float))
            if (rises > CURVE_ATOL).any():
                worst = max(worst, float(rises.max()))
                problems.append(f"accuracy rises with eps by up to {rises.max():.4f} although the attack is nested")
        fired = bool(problems)
        detail = ("; ".join(problems) + ": the run's numbers cannot all be right; rerun into a fresh --out and report "
                  "the bug." if fired else "the table agrees with the per-point results, and nested curves never rise.")
        findings.append(Finding(str(model), str(attack), None, "inconsistent-results", fired, worst, CURVE_ATOL,
                                detail, int(rows["n"].max()) if "n" in rows else 0))
    return findings
