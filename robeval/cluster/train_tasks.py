"""``robeval train --seeds/--sweep ... --workers N`` / ``--ray-address``: one Ray task per
combination.

A task trains one combination exactly as the in-process sweep does (it *is* that call,
:func:`robeval.train.sweep_run.train_combination`, on the same fixed torch thread count)
and writes the combination's checkpoint, epoch log and resume file itself: the workers
must see ``--out`` at the same absolute path (one machine, or a shared file system). It
returns the combination's sweep.csv row and the warnings it raised (resuming from an
epoch, ignoring a stale resume file), which the driver shows as its own, naming the
combination; the driver alone writes sweep.csv.

A task asks Ray for ``--cpus-per-task`` CPUs (default: the sweep's torch thread count)
and ``--gpus-per-task`` GPUs; with a GPU it trains on ``cuda``, else on the CPU.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

from robeval.cluster.options import ClusterOptions
from robeval.cluster.session import ray_session, run_tasks
from robeval.eval.progress import progress_bar
from robeval.train.sweep import Combination
from robeval.train.sweep_run import SweepRow, train_combination


@dataclass(frozen=True)
class TrainTask:
    """One combination to train in a worker, on ``threads`` torch threads."""

    combo: Combination
    threads: int


@dataclass(frozen=True)
class TrainOutcome:
    """What a task sends back: the row and the warnings met on the way, in order, as
    (kind, text): ``warning`` for ``warnings.warn``, ``log`` for a logged warning."""

    row: SweepRow
    messages: tuple[tuple[str, str], ...]


def train_on_ray(
    combos: Sequence[Combination], options: ClusterOptions, *, threads: int, progress: bool,
    on_row: Callable[[SweepRow], None],
) -> None:
    """Train ``combos`` as Ray tasks and hand each row to ``on_row`` as it finishes."""
    if options.cpus_per_task is None and threads > 1:
        options = replace(options, cpus_per_task=float(threads))  # room for the task's torch threads
    tasks = [TrainTask(replace(c, spec=c.spec.replace(device=options.worker_device(c.spec.device))), threads)
             for c in combos]
    with ray_session(options) as session, progress_bar(enabled=progress) as bar:
        bar_task = bar.add_task(f"train {len(tasks)} combinations on {session.slots} Ray slots", total=len(tasks))

        def received(i: int, outcome: TrainOutcome) -> None:
            name = tasks[i].combo.name
            for kind, text in outcome.messages:
                if kind == "warning":
                    warnings.warn(f"{name}: {text}", stacklevel=2)
                else:
                    logging.getLogger(__name__).warning("%s: %s", name, text)
            bar.advance(bar_task)
            on_row(outcome.row)

        run_tasks(session, train_task, tasks, on_result=received)


def train_task(task: TrainTask) -> TrainOutcome:
    """The Ray task: train one combination, keeping the warnings it raises."""
    with collected_warnings() as messages:
        row = train_combination(task.combo, task.threads)
    return TrainOutcome(row, tuple(messages))


@contextmanager
def collected_warnings() -> Iterator[list[tuple[str, str]]]:
    """Collect ``warnings.warn`` calls (not deprecation notices) and robeval's logged
    warnings, in order (a worker's own output never reaches the user)."""
    messages: list[tuple[str, str]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(("log", record.getMessage()))

    def show(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
        if not issubclass(category, DeprecationWarning | FutureWarning):
            messages.append(("warning", str(message)))

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("robeval")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            yield messages
    finally:
        logger.removeHandler(handler)
