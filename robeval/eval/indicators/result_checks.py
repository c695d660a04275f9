"""Indicators read off what the run stored (free) or confirmed by running the attack once
more on the sample: silent-success, incomplete-optimization and unconstrained-failure."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from robeval.attacks.base import BALL_NORMS, is_gradient_free
from robeval.eval.cells import Cell
from robeval.eval.checks import attack_norms
from robeval.eval.indicators.base import Finding
from robeval.eval.indicators.catalog import (
    LONGER_RUN_GAIN,
    LONGER_RUN_STEPS,
    RISING_SHARE,
    RISING_TREND,
    SILENT_SHARE,
    UNCONSTRAINED_FAILURES,
    UNCONSTRAINED_SAMPLE_FAILURES,
)
from robeval.results.store import BatchResult, PointTraces, ResultStore
from robeval.results.tables import cell_samples, success

AttackCells = tuple[object, list[Cell]]


def _aligned(traces: PointTraces, s: BatchResult) -> np.ndarray:
    """Positions in ``s`` of the traced points (``-1`` where a point is not stored)."""
    index = {(int(i), int(t)): k for k, (i, t) in enumerate(zip(s.idx, s.target, strict=True))}
    return np.array([index.get((int(i), int(t)), -1) for i, t in zip(traces.idx, traces.target, strict=True)],
                    dtype=np.int64)


def path_findings(
    store: ResultStore, stored: dict[str, BatchResult], attack_cells: Sequence[AttackCells], *,
    model: nn.Module, x: Tensor, y: Tensor, sample_idx: np.ndarray, seed: int,
) -> list[Finding]:
    """silent-success and incomplete-optimization per cell, from the stored path traces;
    an incomplete optimisation the path suggests is confirmed by a longer run on the
    sample points (``x, y``; their positions ``sample_idx`` in the run's subset)."""
    findings: list[Finding] = []
    for attack, cells in attack_cells:
        keys = [cells[0].search()] if cells[0].minimal else cells
        for cell in keys:
            traces = store.read_traces(cell.store_key)
            if len(traces.idx) == 0:
                continue
            s = stored[cell.store_key] if cell.minimal else cell_samples(cell, stored)
            pos = _aligned(traces, s)
            keep = pos >= 0
            final = success(s)[pos[keep]]
            eps = None if cell.minimal else float(cell.eps)
            findings.append(_silent(cell, eps, traces.iterate_adv[keep], final))
            finding = _incomplete(cell, eps, traces.loss_trend[keep], final)
            if finding.fired and eps is not None and cell.target is None:
                finding = _confirm_longer(finding, attack, cell, s, model, x, y, sample_idx, seed)
            findings.append(finding)
    return findings


def _confirm_longer(
    finding: Finding, attack: object, cell: Cell, s: BatchResult, model: nn.Module, x: Tensor, y: Tensor,
    sample_idx: np.ndarray, seed: int,
) -> Finding:
    """Run the attack with ``LONGER_RUN_STEPS`` times its steps on the sample points it
    failed on at this eps: the path's rising loss counts only if that fools more of them."""
    steps = getattr(attack, "steps", None)
    if not isinstance(steps, int) or not dataclasses.is_dataclass(attack):
        return finding
    where = {int(i): k for k, i in enumerate(s.idx)}
    rows = np.array([where.get(int(i), -1) for i in sample_idx])
    ok = rows >= 0
    failed = np.zeros(len(sample_idx), dtype=bool)
    failed[ok] = ~success(s)[rows[ok]]
    if not failed.any():
        return dataclasses.replace(finding, fired=False, detail=finding.detail + " (no sample point to confirm on)")
    longer = dataclasses.replace(attack, steps=steps * LONGER_RUN_STEPS)  # type: ignore[type-var]
    pick = torch.from_numpy(failed).to(x.device)
    xs, ys = x[pick], y[pick]
    fooled = int(fooled_on_sample(longer, model, xs, ys, eps=cell.eps, norm=cell.norm, name=cell.attack,
                                  seed=seed).sum())
    n = len(ys)
    if fooled >= 2 and fooled > LONGER_RUN_GAIN * len(sample_idx):  # accuracy on the sample moves by > 5 points
        return dataclasses.replace(finding, detail=finding.detail.replace(
            ": more steps", f"; with {LONGER_RUN_STEPS}x the steps it fooled {fooled} of the {n} sample points it "
            "had failed on: more steps"))
    return dataclasses.replace(finding, fired=False, detail=(
        f"the loss was still rising for {finding.value:.0%} of the failed points, but {LONGER_RUN_STEPS}x the steps "
        f"fooled only {fooled} of the {n} sample points it had failed on: converged enough."))


def _silent(cell: Cell, eps: float | None, seen: np.ndarray, final: np.ndarray) -> Finding:
    silent = seen & ~final
    share = float(silent.mean()) if len(silent) else 0.0
    fired = share > SILENT_SHARE
    detail = (f"{int(silent.sum())} of {len(silent)} attacked points had an adversarial iterate on the attack's path "
              "that it did not return, so the number overstates robustness; run the attack with keep=best "
              "(pgd's default: it keeps the first adversarial found)." if fired else
              "no adversarial iterate was lost along the attack's path.")
    return Finding(cell.model, cell.attack, eps, "silent-success", fired, share, SILENT_SHARE, detail, len(silent))


def _incomplete(cell: Cell, eps: float | None, trend: np.ndarray, final: np.ndarray) -> Finding:
    failed = ~final & np.isfinite(trend)
    rising = failed & (trend > RISING_TREND)
    share = float(rising.sum() / failed.sum()) if failed.any() else 0.0
    fired = share > RISING_SHARE
    name = cell.attack.split(":", 1)[0]
    more = "pgd:steps=100 (or autoattack, whose APGD adapts its step size)" if name == "pgd" else \
        f"{name} with more steps, or autoattack"
    detail = (f"the loss of {share:.0%} of the {int(failed.sum())} points the attack failed on was still rising over "
              f"its last steps: more steps would likely fool more; run {more}." if fired else
              f"the loss had levelled off for {1 - share:.0%} of the {int(failed.sum())} points the attack failed on.")
    return Finding(cell.model, cell.attack, eps, "incomplete-optimization", fired, share, RISING_SHARE, detail,
                   int(failed.sum()))


def fooled_on_sample(
    attack: object, model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str, name: str, seed: int,
) -> Tensor:
    """Run ``attack`` once on sample points (seeded), check its answer as the runner does
    (:func:`robeval.eval.checks.attack_norms`) and return, per point, whether it fooled the
    model (on the CPU)."""
    result = attack(model, x, y, eps=eps, generator=torch.Generator().manual_seed(seed))  # type: ignore[operator]
    x_adv, _ = attack_norms(x, result, eps=eps, norm=norm, attack=name)
    with torch.no_grad():
        return (model(x_adv.detach()).argmax(1) != y).cpu()


def box_eps(norm: str, x: Tensor) -> float | None:
    """The budget that bounds nothing on [0, 1] images: L-inf 1, L2 the box diagonal, L1 and L0 the number of entries."""
    d = x[0].numel()
    return {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d), "l0": float(d)}.get(norm)


def _stronger(attack: str) -> str:
    name = attack.split(":", 1)[0]
    return {
        "cw": "cw with its full search (steps=1000 or more, binary_search_steps=9) or deepfool",
        "deepfool": "deepfool with more steps, or cw with its full search",
        "pgd": "pgd:steps=100,restarts=5 or autoattack",
        "fgsm": "pgd (iterative) or autoattack",
        "fgm": "pgd:norm=l2 or autoattack:norm=l2",
        "adef": "adef with more max_iter",
        "salt-and-pepper": "salt-and-pepper with more steps",
    }.get(name, "autoattack")


def unconstrained_findings(
    model: nn.Module, attack_cells: Sequence[AttackCells], stored: dict[str, BatchResult],
    x: Tensor, y: Tensor, seed: int,
) -> list[Finding]:
    """unconstrained-failure per attack: a minimal-norm search's failures over the whole run
    (free), or a budgeted attack run on the sample at eps = the whole box. Budgeted
    gradient-free attacks (uniform noise, the Fourier modes of ``sfa``) are not checked:
    they draw from a fixed family rather than search for the worst case, so failing at
    eps = the whole box says nothing about a broken search (SGR's RAND baseline is meant
    to be weak)."""
    findings: list[Finding] = []
    for attack, cells in attack_cells:
        first = cells[0]
        if first.norm not in BALL_NORMS and not first.minimal:
            continue  # noise scales and filters: no "whole box" to run at
        if not first.minimal and is_gradient_free(attack):
            continue  # a fixed noise family, not a search: its failures at the whole box are expected
        if first.minimal:
            s = stored[first.store_key]
            clean_ok = s.clean_pred == s.label
            failed = clean_ok & np.isinf(s.norm(first.norm))
            n = int(clean_ok.sum())
            share = float(failed.sum() / n) if n else 0.0
            what = f"its unbounded search failed on {int(failed.sum())} of {n} clean-correct points"
        else:
            if len(x) == 0:
                continue  # no clean-correct point to try
            eps = box_eps(first.norm, x)
            if eps is None:
                continue
            robust = ~fooled_on_sample(attack, model, x, y, eps=eps, norm=first.norm, name=first.attack, seed=seed)
            n = len(y)
            share = float(robust.float().mean())
            what = f"run with no bound (eps = the whole box) it failed on {int(robust.sum())} of {n} sample points"
        limit = UNCONSTRAINED_FAILURES if first.minimal else UNCONSTRAINED_SAMPLE_FAILURES
        fired = share > limit
        detail = (f"{what}, which any input can fool: the search is too short or the gradients are obfuscated, so "
                  f"every eps overstates robustness; run {_stronger(first.attack)}." if fired else
                  f"{what}.")
        findings.append(Finding(first.model, first.attack, None, "unconstrained-failure", fired, share,
                                limit, detail, n))
    return findings
