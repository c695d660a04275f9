"""gradient-free-beats-gradient: a gradient-free attack (noise, salt and pepper, Square)
fools points that none of the run's white-box gradient attacks of the same norm fooled at
the same eps: the gradients are masked (Carlini et al. 2019, Sec. 5.2; Athalye et al.
2018, Sec. 3). The gradient attacks are taken together (per point, fooled by any), so a
weak single-step attack next to a strong iterative one is no alarm."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from robeval.attacks.base import BALL_NORMS, is_gradient_free
from robeval.eval.cells import Cell
from robeval.eval.indicators.base import Finding
from robeval.eval.indicators.catalog import GRADIENT_FREE_SHARE
from robeval.eval.indicators.result_checks import fooled_on_sample
from robeval.results.store import BatchResult, ResultStore
from robeval.results.tables import cell_samples, success

AttackCells = tuple[object, list[Cell]]
SQUARE_QUERIES = 1000


def _gradient_groups(attack_cells: Sequence[AttackCells]) -> dict[tuple[str, float], list[Cell]]:
    """The untargeted gradient attacks' cells by (norm, finite eps > 0)."""
    groups: dict[tuple[str, float], list[Cell]] = {}
    for attack, cells in attack_cells:
        if is_gradient_free(attack):
            continue
        for cell in cells:
            if cell.norm in BALL_NORMS and cell.target is None and 0 < cell.eps < math.inf:
                groups.setdefault((cell.norm, float(cell.eps)), []).append(cell)
    return groups


def _union(cells: list[Cell], stored: dict[str, BatchResult]) -> tuple[BatchResult, np.ndarray] | None:
    """The first cell's points and, per point, whether any of ``cells`` fooled it (None when
    the cells do not cover the same points)."""
    first = cell_samples(cells[0], stored)
    fooled = success(first).copy()
    for cell in cells[1:]:
        s = cell_samples(cell, stored)
        if not np.array_equal(s.idx, first.idx):
            return None
        fooled |= success(s)
    return first, fooled


def _findings(cells: list[Cell], eps: float, share: float, missed: int, n: int, by: str,
              min_points: int = 1) -> list[Finding]:
    names = ", ".join(dict.fromkeys(c.attack for c in cells))
    fired = share > GRADIENT_FREE_SHARE and missed >= min_points
    detail = (f"{by} fooled {missed} of {n} points that no gradient attack of the run ({names}) fooled at eps "
              f"{eps:g}: gradient masking; run BPDA (--bpda MODULE) or EOT (pgd:eot=10) on the masking step, or "
              "autoattack (its Square attack needs no gradients)." if fired else
              f"{by} fooled no more than {GRADIENT_FREE_SHARE:.0%} of the points the gradient attacks ({names}) "
              f"missed at eps {eps:g}.")
    return [Finding(c.model, c.attack, eps, "gradient-free-beats-gradient", fired, share, GRADIENT_FREE_SHARE,
                    detail, n) for c in cells]


def gradient_free_findings(attack_cells: Sequence[AttackCells], stored: dict[str, BatchResult]) -> list[Finding]:
    """From the run's own points (free): each gradient-free attack of the run against the
    gradient attacks of the same norm and eps taken together."""
    findings: list[Finding] = []
    free = [cells for attack, cells in attack_cells if is_gradient_free(attack)]
    for (norm, eps), cells in _gradient_groups(attack_cells).items():
        joined = _union(cells, stored)
        if joined is None:
            continue
        points, fooled = joined
        clean_ok = points.clean_pred == points.label
        for other_cells in free:
            other = next((c for c in other_cells if c.norm == norm and c.eps == eps and c.target is None), None)
            if other is None:
                continue
            theirs = cell_samples(other, stored)
            if not np.array_equal(theirs.idx, points.idx):
                continue
            missed = clean_ok & success(theirs) & ~fooled
            n = int(clean_ok.sum())
            share = float(missed.sum() / n) if n else 0.0
            findings += _findings(cells, eps, share, int(missed.sum()), n, f"the gradient-free {other.attack}")
    return findings


def square_probe_findings(
    model: nn.Module, attack_cells: Sequence[AttackCells], stored: dict[str, BatchResult],
    x: Tensor, y: Tensor, sample_idx: np.ndarray, seed: int,
) -> list[Finding]:
    """``--checks full``: the Square attack (Andriushchenko et al. 2020; AutoAttack's
    black-box member, 1000 queries) on the sample at the largest eps of each L-inf/L2
    group of gradient attacks, against the points those attacks left robust."""
    from robeval.attacks import get as get_attack

    findings: list[Finding] = []
    groups = _gradient_groups(attack_cells)
    for norm in ("linf", "l2"):
        eps_values = sorted(e for n, e in groups if n == norm)
        if not eps_values or len(x) == 0:
            continue
        eps = eps_values[-1]
        joined = _union(groups[(norm, eps)], stored)
        if joined is None:
            continue
        points, fooled = joined
        where = {int(i): k for k, i in enumerate(points.idx)}
        rows = [where.get(int(i), -1) for i in sample_idx]
        if min(rows) < 0:
            continue
        robust = torch.from_numpy(~fooled[rows])
        square = get_attack(f"autoattack:version=custom,attacks=square,n_queries={SQUARE_QUERIES},norm={norm}")
        missed = fooled_on_sample(square, model, x, y, eps=eps, norm=norm, name="square (check)", seed=seed) & robust
        share = float(missed.float().mean())
        findings += _findings(groups[(norm, eps)], eps, share, int(missed.sum()), len(y),
                              f"Square ({SQUARE_QUERIES} queries, no gradients)", min_points=2)  # one is sampling luck
    return findings


def autoattack_square_findings(
    store: ResultStore, attack_cells: Sequence[AttackCells], stored: dict[str, BatchResult],
) -> list[Finding]:
    """Inside AutoAttack (free, from its stored breakdown): the points its black-box Square
    broke after its gradient attacks (APGD, FAB) had all failed on them."""
    from robeval.results.cascade_tables import read_breakdown

    findings: list[Finding] = []
    for attack, cells in attack_cells:
        order = getattr(attack, "run_order", None)
        if getattr(attack, "name", None) != "autoattack" or order is None or "square" not in order():
            continue
        for cell in cells:
            if cell.target is not None or not 0 < cell.eps < math.inf:
                continue
            s = cell_samples(cell, stored)
            broken_by = read_breakdown(store, cell.store_key, s)
            if broken_by is None:
                continue
            clean_ok = s.clean_pred == s.label
            missed = clean_ok & (broken_by == "square")
            n = int(clean_ok.sum())
            share = float(missed.sum() / n) if n else 0.0
            fired = share > GRADIENT_FREE_SHARE
            gradient = ", ".join(a for a in order() if a != "square")
            detail = (f"AutoAttack's gradient-free Square broke {int(missed.sum())} of {n} points that its gradient "
                      f"attacks ({gradient}) had failed on at eps {cell.eps:g}: gradient masking; run BPDA "
                      "(--bpda MODULE) or EOT (pgd:eot=10) on the masking step." if fired else
                      f"AutoAttack's Square broke {int(missed.sum())} of {n} points after its gradient attacks.")
            findings.append(Finding(cell.model, cell.attack, float(cell.eps), "gradient-free-beats-gradient", fired,
                                    share, GRADIENT_FREE_SHARE, detail, n))
    return findings
