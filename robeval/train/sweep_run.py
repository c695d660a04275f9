"""``robeval train --seeds ... --sweep ...``: one checkpoint per combination, in a folder.

Each combination (:mod:`robeval.train.sweep`) is an ordinary training run writing
``OUT/NAME.pt`` (with its own ``.log.csv`` and ``.resume`` file, so a killed sweep
resumes each combination where it stopped), and ``OUT/sweep.csv`` lists them all: name,
checkpoint, seed, swept values, status (``trained``, ``existing``: trained by an earlier
run with the same settings and not trained again, ``pending``, ``failed``) and the final
metrics. The driver rewrites it (atomically) after every combination.

Combinations run one after another in this process, or with ``--workers N`` /
``--ray-address`` as one Ray task each (:mod:`robeval.cluster.train_tasks`). CPU
training gives different weights on different torch thread counts, so every combination
trains on the same fixed count, one thread (``--threads N`` or ``ROBEVAL_THREADS``
choose another; Ray tasks then ask for N CPUs): the checkpoints are bitwise the same
however the sweep is run.

Every combination's settings, the names and the output folder are checked before the
first one trains; a combination failing with a user error stops the sweep with that one
error line, naming it (finished checkpoints stay and are kept on the next run).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from robeval.atomic import atomic_write_text
from robeval.cluster.options import ClusterOptions
from robeval.errors import RobevalError
from robeval.train.outputs import check_outputs, train_outputs
from robeval.train.spec import TrainSpec
from robeval.train.sweep import Combination, SweepAxis, check_flags, combinations, parse_axis, parse_seeds

log = logging.getLogger(__name__)

DEFAULT_OUT = "results/sweep"
CSV_NAME = "sweep.csv"
#: Recorded settings that do not change what is trained (where it ran, where files are).
PLACE_FIELDS = ("device", "out", "data_root")
METRICS = ("test_acc", "train_acc", "train_loss", "train_seconds")


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: the settings shared by all combinations (``base``), the seeds and the
    swept settings, the output folder and how it runs (none of the last change a weight)."""

    base: TrainSpec
    seeds: tuple[int, ...]
    axes: tuple[SweepAxis, ...] = ()
    out: str = DEFAULT_OUT
    threads: int | None = field(default=None, compare=False)  # None: ROBEVAL_THREADS, else 1
    progress: bool = field(default=False, compare=False)
    workers: int | None = field(default=None, compare=False)
    ray_address: str | None = field(default=None, compare=False)
    gpus_per_task: float | None = field(default=None, compare=False)
    cpus_per_task: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise RobevalError("a sweep needs at least one seed")
        if Path(self.out).suffix == ".pt":
            raise RobevalError(f"with --seeds or --sweep, --out is a folder that gets one checkpoint per "
                               f"combination, not a .pt file ({self.out}); give e.g. --out results/absum-sweep")
        ClusterOptions.from_spec(self)  # raises on bad cluster flags

    @property
    def folder(self) -> Path:
        return Path(self.out).expanduser().absolute()


@dataclass(frozen=True)
class SweepRow:
    """One combination's line of sweep.csv."""

    name: str
    checkpoint: str
    seed: int
    values: tuple[tuple[str, str], ...]
    status: str  # trained, existing, pending or failed
    metrics: tuple[tuple[str, float], ...] = ()
    error: str = ""

    def record(self) -> dict[str, Any]:
        metrics = dict(self.metrics)
        return {"name": self.name, "checkpoint": self.checkpoint, "seed": self.seed, **dict(self.values),
                "status": self.status, **{k: metrics.get(k) for k in METRICS}, "error": self.error}

    def describe(self) -> str:
        """One line for the user: what happened to this combination."""
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in self.metrics if k in METRICS)
        verb = "kept (trained before)" if self.status == "existing" else "wrote"
        return f"{verb} {self.checkpoint} ({numbers})"


def sweep_from_flags(
    base: TrainSpec, *, seeds: str | None, sweeps: Sequence[str] | None, given: Iterable[str], out: str | None,
    threads: int | None = None, progress: bool = False, workers: int | None = None, ray_address: str | None = None,
    gpus_per_task: float | None = None, cpus_per_task: float | None = None,
) -> SweepSpec | None:
    """The sweep of ``robeval train``'s flags, or None without ``--seeds``/``--sweep``
    (then the cluster flags are refused: they spread a sweep's combinations). ``given``
    names the settings given as flags, which a sweep may not vary as well."""
    cluster = {"workers": workers, "ray_address": ray_address, "gpus_per_task": gpus_per_task,
               "cpus_per_task": cpus_per_task}
    if seeds is None and not sweeps:
        if any(value is not None for value in cluster.values()):
            raise RobevalError("--workers, --ray-address, --gpus-per-task and --cpus-per-task spread a sweep's "
                               "combinations; add --seeds or --sweep (a single training runs in this process)")
        return None
    axes = tuple(parse_axis(text) for text in sweeps or ())
    check_flags(given, axes, seeds=seeds is not None)
    seed_list = parse_seeds(seeds) if seeds is not None else (base.seed,)
    return SweepSpec(base=base, seeds=seed_list, axes=axes, out=out or DEFAULT_OUT, threads=threads,
                     progress=progress, **cluster)


def plan(spec: SweepSpec) -> list[Combination]:
    """The combinations, every setting and output checked (nothing trained yet)."""
    folder = spec.folder
    if folder.is_file():
        raise RobevalError(f"--out {spec.out} is a file; with --seeds or --sweep it is the folder that gets "
                           "one checkpoint per combination")
    base = spec.base
    if base.data_root is not None:
        base = base.replace(data_root=str(Path(base.data_root).expanduser().absolute()))
    combos = combinations(base, spec.seeds, spec.axes, folder)
    for combo in combos:
        try:
            _check_names(combo.spec)
        except RobevalError as exc:
            raise RobevalError(f"sweep combination {combo.name}: {exc}") from None
        check_outputs(train_outputs(combo.spec.out))
    return combos


def run_sweep(spec: SweepSpec, *, on_row: Callable[[SweepRow], None] | None = None) -> pd.DataFrame:
    """Train every combination of ``spec`` not trained before and return sweep.csv's
    table; ``on_row`` sees each combination once it is trained or found trained."""
    from robeval.threads import explicit_threads

    combos = plan(spec)
    rows = {combo.name: existing_row(combo) or _row(combo, "pending") for combo in combos}
    csv_path = spec.folder / CSV_NAME

    def record(row: SweepRow) -> None:
        rows[row.name] = row
        atomic_write_text(csv_path, _frame(rows.values()).to_csv(index=False))
        if row.status == "failed":
            raise RobevalError(row.error)
        if on_row is not None:
            on_row(row)

    atomic_write_text(csv_path, _frame(rows.values()).to_csv(index=False))
    for row in rows.values():
        if row.status == "existing" and on_row is not None:
            on_row(row)
    todo = [combo for combo in combos if rows[combo.name].status == "pending"]
    threads = explicit_threads(spec.threads) or 1
    options = ClusterOptions.from_spec(spec)
    if todo and options.enabled:
        from robeval.cluster.train_tasks import train_on_ray

        train_on_ray(todo, options, threads=threads, progress=spec.progress, on_row=record)
    else:
        for combo in todo:
            log.info("training %s (%d of %d)", combo.name, combos.index(combo) + 1, len(combos))
            record(train_combination(replace(combo, spec=combo.spec.replace(progress=spec.progress)), threads))
    return _frame(rows.values())


def train_combination(combo: Combination, threads: int) -> SweepRow:
    """Train one combination on ``threads`` torch threads; a user error comes back as a
    ``failed`` row naming the combination."""
    from robeval.train.loop import train

    with pinned_threads(threads):
        try:
            result = train(combo.spec)
        except RobevalError as exc:
            return _row(combo, "failed", error=f"sweep combination {combo.name}: {exc}")
    return _row(combo, "trained", metrics=result.metrics)


def existing_row(combo: Combination) -> SweepRow | None:
    """The row of a combination whose checkpoint an earlier run wrote with the same
    settings, None when there is none; a checkpoint of other settings is refused."""
    from robeval.models import read_checkpoint

    path = Path(combo.spec.out)
    if not path.exists():
        return None
    try:
        _, meta = read_checkpoint(path)
    except RobevalError as exc:
        raise RobevalError(f"{path} is in the way of the sweep's checkpoint ({exc}); move it or choose another "
                           "--out") from None
    there, here = _comparable(meta.train_spec), _comparable(combo.spec.to_dict())
    if there != here:
        changed = sorted(k for k in {*there, *here} if there.get(k) != here.get(k))
        detail = "; ".join(f"{k} {there.get(k)!r} there, {here.get(k)!r} here" for k in changed[:3])
        raise RobevalError(f"{path} was trained with other settings ({detail}); delete it or choose another --out")
    return _row(combo, "existing", metrics=meta.metrics)


@contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Torch on exactly ``threads`` CPU threads (no sharing with other processes) while
    a combination trains; the count before is restored afterwards."""
    import torch

    from robeval.threads import stop_sharing

    stop_sharing()  # the sharing hook would change the count mid-run, and with it the weights
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_names(spec: TrainSpec) -> None:
    """Raise for an unknown architecture, objective, regulariser or data set (what
    :func:`robeval.train.train` checks first), so no sweep stops half-way for a typo."""
    from robeval.data import dataset_info
    from robeval.models import resolve_arch
    from robeval.train.objectives import get_objective
    from robeval.train.regularisers import get_regulariser

    resolve_arch(spec.arch)
    get_objective(spec.objective)
    for reg in spec.regularisers:
        get_regulariser(reg)
    dataset_info(spec.dataset, root=spec.data_root)


def _comparable(train_spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in train_spec.items() if k not in PLACE_FIELDS}


def _row(combo: Combination, status: str, *, metrics: dict[str, float] | None = None, error: str = "") -> SweepRow:
    return SweepRow(name=combo.name, checkpoint=combo.spec.out, seed=combo.seed, values=combo.values, status=status,
                    metrics=tuple((metrics or {}).items()), error=error)


def _frame(rows: Iterable[SweepRow]) -> pd.DataFrame:
    return pd.DataFrame([row.record() for row in rows])
