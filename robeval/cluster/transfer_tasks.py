"""``robeval transfer --workers N`` / ``--ray-address``: the transfer grid's batches as Ray tasks.

Unit of work: one (source, attack, range of whole batches): the task makes the source's
adversarials at every eps of its batches (seeded per batch exactly as in-process: it is
:func:`robeval.eval.transfer._fill` restricted to the range) and stores every target's
predictions on them into a store in memory, whose rows it returns. The driver inserts
them (it is the only writer), then runs the in-process pass, which finds every batch
stored. Workers load the source and every target once per process
(:mod:`robeval.cluster.models`); the subset and the clean predictions go into the object
store once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from robeval.cluster.models import ModelRef, worker_model
from robeval.cluster.options import ClusterOptions
from robeval.cluster.run_tasks import MAX_BATCHES_PER_TASK, TASKS_PER_SLOT, contiguous_ranges
from robeval.cluster.session import ray_session, run_tasks
from robeval.models.sources import SourceContext
from robeval.results.store import ResultStore
from robeval.results.store_rows import StoreRows, export_rows, import_rows


@dataclass(frozen=True)
class TransferTask:
    """One source x attack over ``batches``: its cells (rows of targets per eps) and
    what the store already holds there."""

    source: ModelRef
    targets: tuple[ModelRef, ...]
    attack_spec: str
    grid_cells: tuple[tuple[Any, ...], ...]  # TransferCell rows, one per eps
    batches: range
    seed_rows: StoreRows
    batch_size: int


def fill_transfer_store(
    store: ResultStore, jobs: Sequence[tuple[Any, str, Any, list[list[Any]]]], *, models: Sequence[Any],
    names: Sequence[str], portable: Any, clean: dict[str, Tensor], x: Tensor, y: Tensor, batch_size: int,
    device: str, options: ClusterOptions, bar: Any,
) -> int:
    """Compute every missing batch of the transfer ``jobs`` (source, name, attack, grid
    cells) as Ray tasks into ``store``; return the number of tasks run."""
    from robeval.attacks import canonical_name

    worker_device = options.worker_device(device)
    context = SourceContext(dataset=portable.dataset, threat_model=portable.threat_model,
                            model_dir=portable.model_dir)
    texts = list(dict.fromkeys(portable.sources + portable.targets))
    refs = {name: ModelRef(source=text, identity=item.identity, name=name, context=context, bpda=(),
                           device=worker_device) for item, name, text in zip(models, names, texts, strict=True)}
    n_batches = -(-len(x) // batch_size)
    needed = []
    for _source, source_name, attack, grid_cells in jobs:
        keys = [cell.key for row in grid_cells for cell in row]
        done = [store.done_batches(key) for key in keys]
        todo = [b for b in range(n_batches) if any(b not in d for d in done)]
        label = f"{source_name} · {canonical_name(attack)} → {len(names)} targets"
        bar_task = bar.add_task(label, total=n_batches * len(grid_cells),
                                completed=(n_batches - len(todo)) * len(grid_cells))
        needed.append((source_name, attack, grid_cells, keys, todo, bar_task))
    total = sum(len(item[4]) for item in needed)
    if not total:
        return 0
    with ray_session(options) as session:
        per_task = min(MAX_BATCHES_PER_TASK, max(1, total // (TASKS_PER_SLOT * session.slots)))
        tasks: list[tuple[TransferTask, int]] = []
        for source_name, attack, grid_cells, keys, todo, bar_task in needed:
            for batches in contiguous_ranges(todo, per_task):
                task = TransferTask(
                    source=refs[source_name], targets=tuple(refs[name] for name in names),
                    attack_spec=canonical_name(attack), grid_cells=tuple(tuple(row) for row in grid_cells),
                    batches=batches, seed_rows=export_rows(store, keys, batches), batch_size=batch_size,
                )
                tasks.append((task, bar_task))

        def insert(i: int, rows: StoreRows) -> None:
            import_rows(store, rows)
            task, bar_task = tasks[i]
            bar.advance(bar_task, len(task.batches) * len(task.grid_cells))

        run_tasks(session, transfer_range, [t for t, _ in tasks], shared=((x, y, clean),), on_result=insert)
    return len(tasks)


def transfer_range(task: TransferTask, data: tuple[Tensor, Tensor, dict[str, Tensor]]) -> StoreRows:
    """The Ray task: one source x attack over ``task.batches`` into a store in memory;
    returns its rows."""
    import contextlib

    from robeval.attacks import get as get_attack
    from robeval.eval.runner import eval_mode
    from robeval.eval.transfer import _fill

    x, y, clean = data
    device = torch.device(task.source.device)
    with ResultStore(":memory:") as store, contextlib.ExitStack() as stack:
        import_rows(store, task.seed_rows)
        source = stack.enter_context(eval_mode(worker_model(task.source)))
        targets = [stack.enter_context(eval_mode(worker_model(ref))) for ref in task.targets]
        grid_cells = [list(row) for row in task.grid_cells]
        _fill(store, source, get_attack(task.attack_spec), grid_cells, targets, x, y, clean, task.batch_size, device,
              advance=lambda: None, batches=task.batches)
        return export_rows(store, [cell.key for row in grid_cells for cell in row], task.batches)
