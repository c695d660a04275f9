"""``robeval run --workers N`` / ``--ray-address``: the attack batches as Ray tasks.

Unit of work: one (model, attack, range of whole batches); for ``--worst-case`` the
attack is the model's whole cascade. A task walks every eps of its batches in order,
exactly as :func:`robeval.eval.runner.run_attack` does in-process (it *is* that call,
restricted to the range), with the same per-batch seeds, into a result store held in
memory; it returns the rows it wrote (:mod:`robeval.results.store_rows`). The driver
inserts them into the run's store as they arrive (it is the only writer), advances the
progress bar, and afterwards runs the usual in-process pass, which finds every batch
stored and computes nothing: the indicators, pictures and tables are made exactly as in
a single-process run, so every output file is the same (apart from timing columns).

Only batches missing from the store are sent: a driver killed and started again
resumes. A batch whose smaller eps are stored but larger ones are not (a nested walk cut
short) travels with its stored rows, so the walk resumes where it stopped. The data
subset and the clean predictions go into Ray's object store once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from robeval.cluster.models import ModelRef, worker_model
from robeval.cluster.options import ClusterOptions
from robeval.cluster.session import ray_session, run_tasks
from robeval.eval.cells import Cell
from robeval.results.store import ResultStore
from robeval.results.store_rows import StoreRows, export_rows, import_rows

log = logging.getLogger(__name__)

#: At most this many batches per task (bounds what a killed driver loses, keeps the bar moving).
MAX_BATCHES_PER_TASK = 16
#: Aim for at least this many tasks per slot, so slow and fast tasks even out.
TASKS_PER_SLOT = 4


@dataclass(frozen=True)
class Job:
    """One model's attack (or cascade) over the whole subset, before it is cut into tasks."""

    model_index: int  # position in the shared clean predictions
    model: ModelRef
    attack_specs: tuple[str, ...]  # one attack, or every stage of a cascade
    cascade: bool
    cells: tuple[Cell, ...]  # every cell the job fills (a cascade's in walk order)
    store_keys: tuple[str, ...]  # the cells' keys in the store (a minimal-norm attack: its search)
    label: str  # progress bar text


@dataclass(frozen=True)
class RunTask:
    """One task: a job restricted to ``batches``, with what the store already holds there."""

    job: Job
    batches: range
    seed_rows: StoreRows
    dataset: str
    eps_grid: tuple[float, ...]
    seed: int
    batch_size: int
    n_classes: int
    amp: str = "off"


def fill_store(
    store: ResultStore, jobs: Sequence[Job], *, x: Tensor, y: Tensor, clean_preds: Sequence[Tensor], dataset: str,
    eps_grid: tuple[float, ...], seed: int, batch_size: int, n_classes: int, options: ClusterOptions, bar: Any,
    amp: str = "off",
) -> int:
    """Compute every batch of ``jobs`` missing from ``store`` as Ray tasks and insert the
    rows; return the number of tasks run."""
    n_batches = -(-len(x) // batch_size)
    needed: list[tuple[Job, list[int], int]] = []
    for job in jobs:
        done = [store.done_batches(key) for key in job.store_keys]
        units = len(job.cells)
        todo = [b for b in range(n_batches) if any(b not in d for d in done)]
        bar_task = bar.add_task(job.label, total=n_batches * units, completed=(n_batches - len(todo)) * units)
        needed.append((job, todo, bar_task))
    total = sum(len(todo) for _, todo, _ in needed)
    if not total:
        return 0
    with ray_session(options) as session:
        per_task = min(MAX_BATCHES_PER_TASK, max(1, total // (TASKS_PER_SLOT * session.slots)))
        tasks: list[tuple[RunTask, int]] = []
        for job, todo, bar_task in needed:
            for batches in contiguous_ranges(todo, per_task):
                seed_rows = export_rows(store, job.store_keys, batches)
                tasks.append((RunTask(job, batches, seed_rows, dataset, eps_grid, seed, batch_size, n_classes, amp),
                              bar_task))

        def insert(i: int, rows: StoreRows) -> None:
            import_rows(store, rows)
            task, bar_task = tasks[i]
            bar.advance(bar_task, len(task.batches) * len(task.job.cells))

        log.info("%d Ray tasks of up to %d batches on %d slots", len(tasks), per_task, session.slots)

        run_tasks(session, run_range, [t for t, _ in tasks], shared=((x, y, list(clean_preds)),), on_result=insert)
    return len(tasks)


def contiguous_ranges(batches: Sequence[int], size: int) -> list[range]:
    """``batches`` (ascending) cut into ranges of at most ``size`` consecutive batches."""
    out: list[range] = []
    for b in batches:
        if out and out[-1].stop == b and len(out[-1]) < size:
            out[-1] = range(out[-1].start, b + 1)
        else:
            out.append(range(b, b + 1))
    return out


def run_range(task: RunTask, data: tuple[Tensor, Tensor, list[Tensor]]) -> StoreRows:
    """The Ray task: fill a store in memory for ``task.batches`` of one job and return
    its rows (runs in a worker; also callable in-process)."""
    from robeval.attacks import get as get_attack
    from robeval.eval.cascade import breakdown_store, run_cascade
    from robeval.eval.nonfinite import counting_store
    from robeval.eval.runner import eval_mode, run_attack

    x, y, clean_preds = data
    job = task.job
    device = torch.device(job.model.device)
    clean_pred = clean_preds[job.model_index]
    with ResultStore(":memory:") as store:
        import_rows(store, task.seed_rows)
        with eval_mode(worker_model(job.model)) as model, counting_store(store, model) as counted:
            if job.cascade:
                run_cascade(
                    counted, model, name=job.model.name, identity=job.model.identity, dataset=task.dataset,
                    attack_specs=job.attack_specs, eps_grid=task.eps_grid, x=x, y=y, clean_pred=clean_pred,
                    seed=task.seed, batch_size=task.batch_size, device=device, n_classes=task.n_classes,
                    batches=task.batches, amp=task.amp,
                )
            else:
                attack = get_attack(job.attack_specs[0])
                cells = list(job.cells)
                with breakdown_store(counted, attack, cells) as cell_store:
                    run_attack(cell_store, model, attack, cells, x, y, clean_pred, batch_size=task.batch_size,
                               device=device, n_classes=task.n_classes, batches=task.batches)
        with store.guarded():
            keys = [r[0] for r in store._conn.execute("SELECT cell_key FROM cells")]
        return export_rows(store, keys, task.batches)

