"""``robeval run --worst-case``: the attacks as a cascade, and AutoAttack's breakdown.

The listed attacks run in the order given (cheap first, AutoAttack last), each only on
the points still robust at that eps after the attacks before it. The cascade is nested
over eps: walking the grid upwards, the first stage at an eps attacks the clean-correct
points that no stage broke at a smaller eps (an adversarial inside a smaller ball is
inside the larger one), stage ``k`` only what stages ``< k`` left robust at this eps. The
points left robust by the last stage give the ``worst-case`` row of that eps: a per-point
worst case over the attacks, computed with the least work.

Every (stage, eps) is a :class:`~robeval.eval.cells.Cell` whose key depends on the
stage, the whole list of stages and the smaller eps walked before; its batches go
through the runner's own :func:`~robeval.eval.runner._attack_points` (the contract
checks, per-batch seeds, pass counting) and the result store, so a killed run resumes
where it stopped and a rerun recomputes nothing. Minimal-norm stages are called with the
finite eps (they then return an adversarial only inside the ball). eps 0 gets no cell
(its row is the clean accuracy); ``unbounded`` is walked only when every stage is a
minimal-norm attack (budgeted attacks are not defined there).

All stages must share one ball norm (``linf``, ``l2`` or ``l0``); targeted mode is
refused.

AutoAttack cells, in a cascade or not, also record which sub-attack broke each point
(:func:`robeval.attacks.autoattack.recording`), stored next to the batch
(:mod:`robeval.results.cascade_tables`) for ``autoattack_breakdown.csv``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from robeval.attacks.presets import stable_params
from robeval.attacks import canonical_name
from robeval.attacks import get as get_attack
from robeval.attacks.autoattack import AutoAttackEnsemble, SubAttackRecord, recording
from robeval.attacks.base import BALL_NORMS, is_minimal
from robeval.errors import RobevalError
from robeval.eval.cells import Cell, batch_seed
from robeval.eval.runner import Points, _attack_points, _initial_state, batch_points
from robeval.results.cascade_tables import (
    WORST_CASE,
    BreakdownGroup,
    breakdown_frame,
    worst_case_frames,
    write_breakdown,
)
from robeval.results.store import BatchResult, ResultStore
from robeval.results.tables import batch_size_used, success

log = logging.getLogger(__name__)

STAGES_KEY = "worst_case_stages"  # in a cascade cell's attack_params: every stage (name, params)
STAGE_KEY = "worst_case_stage"  # and the position of this one (1-based)


@dataclass(frozen=True)
class Cascade:
    """One model's cascade: its cells per walked eps (one per stage, in order), and every
    point unattacked (``clean``, the eps-0 row)."""

    model: str
    dataset: str
    norm: str
    seed: int
    stages: tuple[str, ...]
    sub_attacks: tuple[tuple[str, ...] | None, ...]  # per stage: AutoAttack's sub-attack order, else None
    eps: tuple[float, ...]  # every eps of the grid that gets a worst-case row (ascending)
    walked: tuple[float, ...]  # the eps with cells (> 0; unbounded only when every stage is minimal-norm)
    cells: dict[float, tuple[Cell, ...]]
    clean: BatchResult
    key: str  # the cascade's own identity (cell_key of its eps-0 row)
    batch_size: int = 0  # the store batch (--batch-size)

    def breakdown_groups(self) -> list[BreakdownGroup]:
        """AutoAttack's breakdown of every AutoAttack stage, along the walked eps."""
        return [
            BreakdownGroup(cells=tuple(self.cells[eps][k] for eps in self.walked), sub_attacks=subs,
                           inherit=False, stage=k + 1)
            for k, subs in enumerate(self.sub_attacks) if subs is not None
        ]


def check_worst_case(attack_specs: tuple[str, ...], target: str | None) -> None:
    """Refuse a cascade that cannot be one: targeted mode, or attacks that do not share
    one ball norm."""
    if target is not None:
        raise RobevalError("--worst-case runs untargeted attacks (a point is broken by any misclassification); "
                           "drop --target or --worst-case")
    named = [(canonical_name(a), a.norm) for a in map(get_attack, attack_specs)]
    norms = {norm for _, norm in named}
    if len(norms) != 1 or not norms <= set(BALL_NORMS):
        listed = ", ".join(f"{name} ({norm})" for name, norm in named)
        raise RobevalError(
            f"--worst-case needs attacks that share one ball norm (linf, l2 or l0), got {listed}; "
            "run the other norms without --worst-case or in a separate run"
        )


def is_autoattack(attack: object) -> bool:
    return isinstance(attack, AutoAttackEnsemble)


def plan_cascade(
    *, model: str, identity: str, dataset: str, attack_specs: tuple[str, ...], eps_grid: tuple[float, ...],
    n: int, seed: int, batch_size: int, amp: str = "off",
) -> tuple[list[Any], Cascade]:
    """The stages' attack objects and the cascade's cells (``clean`` still empty);
    ``amp``: the precision of the model's passes (:mod:`robeval.eval.precision`)."""
    attacks = [get_attack(text) for text in attack_specs]
    names = [canonical_name(a) for a in attacks]
    params = [tuple(sorted(stable_params(a).items())) for a in attacks]
    stages = tuple(zip(names, params, strict=True))
    norm = attacks[0].norm
    grid = sorted(set(eps_grid))
    budgeted = any(not is_minimal(a) for a in attacks)
    if budgeted and any(math.isinf(e) for e in grid):
        log.info("the worst case of budgeted attacks has no unbounded column")
        grid = [e for e in grid if not math.isinf(e)]
    walked = [e for e in grid if e > 0]
    cells = {
        eps: tuple(
            Cell(model=model, model_identity=identity, dataset=dataset, attack=names[k],
                 attack_params=tuple(sorted({**dict(params[k]), STAGES_KEY: stages, STAGE_KEY: k + 1}.items())),
                 norm=norm, eps=eps, n=n, seed=seed, batch_size=batch_size, minimal=False,
                 lower_eps=tuple(walked[:j]), target=None, nested=True, amp=amp)
            for k in range(len(attacks))
        )
        for j, eps in enumerate(walked)
    }
    zero = Cell(model=model, model_identity=identity, dataset=dataset, attack=WORST_CASE,
                attack_params=((STAGES_KEY, stages),), norm=norm, eps=0.0, n=n, seed=seed, batch_size=batch_size,
                amp=amp)
    empty = BatchResult(**{f.name: np.zeros(0) for f in fields(BatchResult)})
    cascade = Cascade(
        model=model, dataset=dataset, norm=norm, seed=seed, stages=tuple(names),
        sub_attacks=tuple(a.run_order() if is_autoattack(a) else None for a in attacks),
        eps=tuple(grid), walked=tuple(walked), cells=cells, clean=empty, key=zero.key, batch_size=batch_size,
    )
    return attacks, cascade


def run_cascade(
    store: ResultStore, model: nn.Module, *, name: str, identity: str, dataset: str, attack_specs: tuple[str, ...],
    eps_grid: tuple[float, ...], x: Tensor, y: Tensor, clean_pred: Tensor, seed: int, batch_size: int,
    device: torch.device, n_classes: int, bar: Any = None, batches: range | None = None, amp: str = "off",
) -> Cascade:
    """Fill the store for every (batch, eps, stage) of one model's cascade that is not
    done yet; return the cascade (its cells and clean points) for the tables. ``bar``: a
    progress bar (:func:`robeval.eval.progress.progress_bar`) advanced per (batch, cell).
    ``batches``: only these batches (one Ray task's share; ``clean`` then holds theirs).
    ``amp``: the precision of the model's passes (:mod:`robeval.eval.precision`)."""
    attacks, cascade = plan_cascade(
        model=name, identity=identity, dataset=dataset, attack_specs=attack_specs, eps_grid=eps_grid, n=len(x),
        seed=seed, batch_size=batch_size, amp=amp,
    )
    order = [(k, cell) for eps in cascade.walked for k, cell in enumerate(cascade.cells[eps])]
    for _, cell in order:
        store.register_cell(cell.key, cell.description())
    done = {cell.key: store.done_batches(cell.key) for _, cell in order}
    task = bar.add_task(f"{name} · {WORST_CASE}", total=-(-len(x) // batch_size) * len(order)) if bar else None
    clean = []
    for batch, start in enumerate(range(0, len(x), batch_size)):
        if batches is not None and batch not in batches:
            continue
        stop = min(start + batch_size, len(x))
        xb = x[start:stop]
        points = batch_points(start, y[start:stop], clean_pred[start:stop], n_classes, targeted=False)
        state = _initial_state(points, xb, cascade.norm)
        clean.append(state)
        on_device = None  # moved once, when the first stage of the batch is attacked
        for k, cell in order:
            if batch in done[cell.key]:
                state = store.read_batch(cell.key, batch)
            else:
                on_device = xb.to(device) if on_device is None else on_device
                state = _run_stage(store, model, attacks[k], cell, on_device, points, state, batch, batch_size, device)
            if bar:
                bar.advance(task)
    return _with_clean(cascade, clean)


def _with_clean(cascade: Cascade, states: list[BatchResult]) -> Cascade:
    if not states:
        return cascade
    merged = BatchResult(**{f.name: np.concatenate([getattr(s, f.name) for s in states]) for f in fields(BatchResult)})
    return replace(cascade, clean=merged)


def _run_stage(
    store: ResultStore, model: nn.Module, attack: Any, cell: Cell, xb: Tensor, points: Points, state: BatchResult,
    batch: int, batch_size: int, device: torch.device,
) -> BatchResult:
    """One stage on one batch: the runner's attack of the points still robust, stored
    (AutoAttack's breakdown first, then the batch)."""
    with recording() as records:
        out = _attack_points(model, attack, cell, xb, points, state, batch, batch_size, device)
    if is_autoattack(attack):
        names = attribute(records, state, out.state, cell, batch)
        if names is not None:
            write_breakdown(store, cell.key, batch, out.state.idx, out.state.target, names)
    store.write_batch(cell.key, batch, out.cost, out.state, out.traces, **out.extra())
    return out.state


def attribute(
    records: list[SubAttackRecord], before: BatchResult, after: BatchResult, cell: Cell, batch: int,
) -> np.ndarray | None:
    """Per point of one batch, the AutoAttack sub-attack that broke it in this cell
    (``""``: none, or broken before it). The runner attacks the clean-correct points not
    yet broken in ``before``, in order and in chunks, with a generator seeded from the
    (cell, batch); the records of those calls are matched to them in that order. A point
    counts only where the runner, too, found it broken. ``None`` (with a warning) where
    the calls do not match the points."""
    names = np.full(len(after.idx), "", dtype=object)
    attacked = (before.clean_pred == before.label) & ~success(before)
    if cell.eps == 0 or not attacked.any():
        return names
    seed = batch_seed(cell.seed, cell.key, batch)
    mine = [r for r in records if r.seed == seed]
    rows = np.concatenate([r.names() for r in mine]) if mine else np.zeros(0, dtype=object)
    if len(rows) != int(attacked.sum()):
        log.warning("AutoAttack's breakdown for %s at eps=%g, batch %d: %d points attacked but %d recorded; "
                    "not stored", cell.attack, cell.eps, batch, int(attacked.sum()), len(rows))
        return None
    names[attacked] = rows
    names[~success(after)] = ""
    return names


class _BreakdownStore:
    """The result store as :func:`robeval.eval.runner.run_attack` sees it for an
    AutoAttack walking its eps grid: before each batch is written, which sub-attack broke
    each of its points is stored. The points it attacked are the clean-correct ones not
    broken at the previous eps of the walk (stored just before; none for the first)."""

    def __init__(self, store: ResultStore, cells: list[Cell], records: list[SubAttackRecord]) -> None:
        self._store = store
        self._cells = cells
        self._position = {cell.key: i for i, cell in enumerate(cells)}
        self._records = records

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def write_batch(self, cell_key: str, batch: int, cost: Any, result: BatchResult, *args: Any, **kwargs: Any) -> None:
        i = self._position[cell_key]
        before = (self._store.read_batch(self._cells[i - 1].key, batch) if i > 0
                  else result.replace(adv_pred=result.clean_pred))
        names = attribute(self._records, before, result, self._cells[i], batch)
        self._records.clear()
        if names is not None:
            write_breakdown(self._store, cell_key, batch, result.idx, result.target, names)
        self._store.write_batch(cell_key, batch, cost, result, *args, **kwargs)


@contextmanager
def breakdown_store(store: ResultStore, attack: Any, cells: list[Cell]) -> Iterator[Any]:
    """``store`` itself, or for an AutoAttack (budgeted, nested) the store that also keeps
    its breakdown while :func:`~robeval.eval.runner.run_attack` fills it."""
    if not is_autoattack(attack) or not cells or cells[0].minimal or not cells[0].nested:
        yield store
        return
    with recording() as records:
        yield _BreakdownStore(store, cells, records)


def standalone_breakdown_groups(cells: list[Cell]) -> list[BreakdownGroup]:
    """The breakdown of every AutoAttack in a run's (non-cascade) cells, per model and
    attack, along its eps grid."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        if cell.attack.split(":")[0] == AutoAttackEnsemble.name and cell.target is None:
            groups.setdefault((cell.model, cell.attack), []).append(cell)
    return [
        BreakdownGroup(cells=tuple(sorted(group, key=lambda c: c.eps)), sub_attacks=get_attack(attack).run_order())
        for (_, attack), group in groups.items()
    ]


def _batch_size_used(store: ResultStore, cascade: Cascade, eps: float) -> int:
    """A worst-case row's device batch: the smallest over the stages walked up to ``eps``."""
    cells = [cell for walked in cascade.walked if walked <= eps for cell in cascade.cells[walked]]
    return batch_size_used(store, cells) if cells else cascade.batch_size


def with_worst_case(
    store: ResultStore, cascades: list[Cascade], cells: list[Cell], results: pd.DataFrame, samples: pd.DataFrame,
    training: dict[str, str], split_index: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame | None]]:
    """``results`` and ``samples`` with the cascades' ``worst-case`` rows added, and the
    extra tables to write (:func:`robeval.results.cascade_tables.write_tables`): the
    cascades' stages and the breakdown of every AutoAttack cell, standalone or staged."""
    rows, points, stages = worst_case_frames(store, cascades, training, split_index)
    if len(rows):
        by_model = {c.model: c for c in cascades}
        rows["batch_size_used"] = [_batch_size_used(store, by_model[m], e) for m, e in zip(rows.model, rows.eps)]
        results = rows if results.empty else pd.concat([results, rows], ignore_index=True)
        samples = points if samples.empty else pd.concat([samples, points], ignore_index=True)
    groups = standalone_breakdown_groups(cells) + [g for c in cascades for g in c.breakdown_groups()]
    return results, samples, {"worst_case": stages if cascades else None,
                              "autoattack_breakdown": breakdown_frame(store, groups) if groups else None}


__all__ = [
    "Cascade", "breakdown_store", "check_worst_case", "plan_cascade", "run_cascade", "standalone_breakdown_groups",
    "with_worst_case",
]
