"""Attack-failure indicators: does each (model, attack) number of a run deserve trust?

``--checks fast`` (the default) runs every indicator that costs little next to the run:
the model probes on a seeded sample of clean-correct points (``--check-samples``, 64),
what the run stored (path traces, minimal-norm failures, gradient-free attacks of the
run) and one unbounded run of each budgeted attack on the sample. ``--checks full`` adds
a Square probe (gradient-free, 1000 queries) at each gradient attack's largest eps.
Findings go to ``checks.json``; a fired one flags its model and attack's rows of
results.csv (``unreliable``, ``indicators``). Findings are cached in the result store,
so a rerun recomputes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from robeval.atomic import atomic_write_text
from robeval.eval.cells import Cell
from robeval.eval.indicators.base import LEVELS, Finding, IndicatorInfo, indicators
from robeval.eval.indicators.consistency import consistency_findings
from robeval.eval.indicators.model_checks import model_findings
from robeval.eval.indicators.gradient_free import (
    autoattack_square_findings,
    gradient_free_findings,
    square_probe_findings,
)
from robeval.eval.indicators.result_checks import path_findings, unconstrained_findings
from robeval.results.store import BatchResult, ResultStore
from robeval.version import __version__

__all__ = [
    "LEVELS", "Finding", "IndicatorInfo", "apply_flags", "check_sample", "consistency_findings", "indicators",
    "run_model_checks", "summary_lines", "write_checks",
]
CHECKS_FILE = "checks.json"
log = logging.getLogger(__name__)


def check_sample(clean_pred: Tensor, y: Tensor, size: int, seed: int) -> Tensor:
    """Positions (in the run's subset) of a seeded sample of up to ``size`` clean-correct points."""
    correct = (clean_pred == y).nonzero().flatten()
    order = torch.randperm(len(correct), generator=torch.Generator().manual_seed(seed))
    return correct[order[:size]].sort().values


def run_model_checks(
    store: ResultStore, model: nn.Module, *, model_name: str, identity: str,
    attack_cells: Sequence[tuple[object, list[Cell]]], stored: dict[str, BatchResult], x: Tensor, y: Tensor,
    clean_pred: Tensor, level: str, samples: int, seed: int, device: torch.device,
) -> tuple[list[Finding], float]:
    """Every indicator of ``level`` for one model and its attacks; (findings, seconds spent).
    Cached in ``store`` under a hash of everything the findings depend on."""
    if level == "off" or not attack_cells:
        return [], 0.0
    tic = time.perf_counter()
    sample = check_sample(clean_pred, y, samples, seed)
    key = _check_key(level, identity, attack_cells, sample, seed)
    cached = store.read_checks(key)
    if cached is not None:
        return [_renamed(Finding.from_json(f), model_name) for f in cached], 0.0
    xs, ys = x[sample].to(device), y[sample].to(device)
    pairs = [(cells[0].attack, attack) for attack, cells in attack_cells]
    findings = model_findings(model, model_name, pairs, xs, ys, seed)
    findings += path_findings(store, stored, attack_cells, model=model, x=xs, y=ys, sample_idx=sample.numpy(),
                              seed=seed)
    findings += unconstrained_findings(model, attack_cells, stored, xs, ys, seed)
    findings += gradient_free_findings(attack_cells, stored)
    findings += autoattack_square_findings(store, attack_cells, stored)
    if level == "full":
        findings += square_probe_findings(model, attack_cells, stored, xs, ys, sample.numpy(), seed)
    store.write_checks(key, [f.to_json() for f in findings])
    return findings, time.perf_counter() - tic


def _renamed(finding: Finding, model: str) -> Finding:
    from dataclasses import replace

    return replace(finding, model=model)


def _check_key(level: str, identity: str, attack_cells: Sequence[tuple[object, list[Cell]]], sample: Tensor,
               seed: int) -> str:
    payload = {
        "level": level, "identity": identity, "seed": seed, "sample": sample.tolist(), "version": __version__,
        "cells": [[c.store_key for c in cells] for _, cells in attack_cells],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def apply_flags(results: pd.DataFrame, findings: Sequence[Finding], *, checked: bool = True) -> pd.DataFrame:
    """results.csv with ``unreliable`` (some indicator fired for the row's model and attack)
    and ``indicators`` (their names, ``;``-separated, in catalogue order). Unchecked runs
    (``--checks off``) leave ``unreliable`` empty: not known, rather than false."""
    order = {name: i for i, name in enumerate(indicators.names())}
    fired: dict[tuple[str, str], set[str]] = {}
    for f in findings:
        if f.fired:
            fired.setdefault((f.model, f.attack), set()).add(f.indicator)
    names = [";".join(sorted(fired.get((m, a), ()), key=lambda n: order.get(n, 99)))
             for m, a in zip(results["model"], results["attack"], strict=True)]
    out = results.copy()
    out["unreliable"] = pd.array([bool(n) if checked else pd.NA for n in names], dtype="boolean")
    out["indicators"] = names
    return out


def write_checks(out: Path, findings: Sequence[Finding]) -> Path:
    """``checks.json``: a JSON list of findings, fired ones first."""
    path = out / CHECKS_FILE
    ordered = sorted(findings, key=lambda f: (not f.fired, f.model, f.attack, f.indicator,
                                              -1.0 if f.eps is None else f.eps))
    atomic_write_text(path, json.dumps([f.to_json() for f in ordered], indent=2) + "\n")
    return path


def summary_lines(findings: Sequence[Finding], seconds: float | None = None, level: str = "fast") -> list[str]:
    """The short block the CLI prints under the table: one line per fired (model, attack,
    indicator), with its detail sentence once."""
    if level == "off":
        return ["attack-failure checks: off (--checks fast to run them)"]
    fired = [f for f in findings if f.fired]
    cost = f" in {seconds:.2f} s" if seconds else ""
    checked = len({(f.model, f.attack) for f in findings})
    if not fired:
        return [f"attack-failure checks ({level}{cost}): no indicator fired for {checked} model x attack pairs"]
    lines = [f"attack-failure checks ({level}{cost}): UNRELIABLE results, see checks.json"]
    seen: set[tuple[str, str, str]] = set()
    for f in fired:
        key = (f.model, f.attack, f.indicator)
        if key in seen:
            continue
        seen.add(key)
        eps = "" if f.eps is None else f" (eps {f.eps:g})"
        lines.append(f"  {f.model} · {f.attack} · {f.indicator}{eps}: {f.detail}")
    return lines


def nested_attacks(attack_cells: Sequence[tuple[object, list[Cell]]]) -> dict[str, bool]:
    """Whether each attack's curve must be monotone (nested budgeted or minimal-norm)."""
    return {cells[0].attack: bool(cells[0].nested or cells[0].minimal) for _, cells in attack_cells}

