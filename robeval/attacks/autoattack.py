"""AutoAttack (Croce & Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020), wrapping PyPI's ``pyautoattack``
(fra31/auto-attack repackaged)."""

from __future__ import annotations

import logging
import math
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from robeval.attacks.base import Norm
from robeval.attacks.registry import attacks

VERSIONS: tuple[str, ...] = ("standard", "plus", "rand", "custom")
SUB_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
# The order in which the library runs the sub-attacks of each fixed version
# (pyautoattack's ``AutoAttack._set_version``; tests/test_autoattack.py checks it).
VERSION_ORDER: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
_LIB_NORM = {"linf": "Linf", "l2": "L2"}
log = logging.getLogger(__name__)


class _DebugAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """pyautoattack's progress and warnings, all sent to our logger at DEBUG."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, f"pyautoattack [{logging.getLevelName(level)}] {msg}", *args, **kwargs)


@dataclass(frozen=True)
class SubAttackRecord:
    """Which sub-attack broke each point of one AutoAttack call.

    ``sub_attacks`` are the sub-attacks in the order the library ran them; ``broken_by``
    holds, per row of the call's ``x``, the position in ``sub_attacks`` of the one whose
    adversarial the library kept (the first that fooled the model), or -1 where none did
    (the point stayed robust, or was misclassified to begin with and never attacked).
    ``seed`` is the ``initial_seed()`` of the generator the call was given (``None``
    without one), so a caller making several calls can tell them apart.
    """

    sub_attacks: tuple[str, ...]
    broken_by: np.ndarray
    seed: int | None

    def names(self) -> np.ndarray:
        """``broken_by`` as sub-attack names (``""`` where none broke the point)."""
        table = np.asarray([*self.sub_attacks, ""], dtype=object)
        return table[self.broken_by]


_RECORDS: ContextVar[list[SubAttackRecord] | None] = ContextVar("robeval_autoattack_records", default=None)
_PATCH_LOCK = threading.Lock()


@contextmanager
def recording() -> Iterator[list[SubAttackRecord]]:
    """Collect a :class:`SubAttackRecord` for every AutoAttack call made inside the block,
    in call order. Outside such a block the attack records nothing and runs the library
    untouched; inside, its adversarials are the same (the library's own run, read as it
    goes; no extra model passes)."""
    records: list[SubAttackRecord] = []
    token = _RECORDS.set(records)
    try:
        yield records
    finally:
        _RECORDS.reset(token)


def _evaluate_recording(aa: Any, x: Tensor, y: Tensor) -> tuple[Tensor, np.ndarray]:
    """``aa.run_standard_evaluation(x, y)`` (one batch) and, per point, the position in
    ``aa.attacks_to_run`` of the sub-attack that broke it (-1: none).

    The library keeps its per-point robust flags in an ``EvaluationState``: set once from
    the clean predictions, updated in place after every sub-attack, which it then reports
    with ``add_run_attack``. While the evaluation runs, the module's ``EvaluationState``
    is a subclass that snapshots those flags at both moments (under a lock, restored
    afterwards); nothing else of the run changes. Sub-attacks skipped because no robust
    point was left break nothing."""
    import pyautoattack.autoattack as library_module

    base = library_module.EvaluationState
    snapshots: list[tuple[str, Tensor]] = []

    class _Snapshots(base):  # type: ignore[misc, valid-type]
        @property
        def robust_flags(self) -> Tensor | None:
            return self._robust_flags

        @robust_flags.setter
        def robust_flags(self, flags: Tensor) -> None:
            if not snapshots:
                snapshots.append(("", flags.detach().clone().cpu()))
            base.robust_flags.fset(self, flags)

        def add_run_attack(self, attack: str) -> None:
            snapshots.append((attack, self.robust_flags.detach().clone().cpu()))
            super().add_run_attack(attack)

    with _PATCH_LOCK:
        library_module.EvaluationState = _Snapshots
        try:
            x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
        finally:
            library_module.EvaluationState = base
    broken_by = np.full(len(x), -1, dtype=np.int64)
    order = list(aa.attacks_to_run)
    for position, ((_, before), (name, after)) in enumerate(zip(snapshots, snapshots[1:], strict=False)):
        if name != order[position]:
            raise RuntimeError(f"pyautoattack ran {name!r} where {order[position]!r} was expected")
        broken_by[(before & ~after).numpy()] = position
    return x_adv, broken_by


@attacks.register("autoattack")
@dataclass(frozen=True, kw_only=True)
class AutoAttackEnsemble:
    """AutoAttack, the ensemble RobustBench evaluates with (Croce & Hein, ICML 2020).

    ``version=standard`` (the RobustBench evaluation) runs, each on the points still
    robust after the previous ones: APGD on the cross-entropy (``apgd-ce``, 100
    iterations), targeted APGD on the DLR loss (``apgd-t``, 9 target classes x 100
    iterations), targeted FAB (``fab-t``, 9 targets x 100 iterations) and the black-box
    Square attack (``square``, 5000 queries). A point counts as robust only if all four
    fail. ``plus`` adds apgd-dlr and untargeted FAB with 5 restarts each; ``rand`` (for
    randomized defenses) runs apgd-ce and apgd-dlr with 20 EOT samples per gradient.

    Cost: the standard version spends about 1000+ gradient steps (plus 5000 queries) on
    every point that stays robust, so it is meant for a final evaluation, on a GPU. For a
    cheap run pick the sub-attacks and iterations, e.g.
    ``autoattack:version=custom,attacks=apgd-ce,n_iter=20`` (sub-attacks joined by ``+``
    or ``;``: ``apgd-ce+apgd-t``; the library's defaults for custom are 5 restarts for
    apgd-ce/apgd-dlr/fab, 9 targets for apgd-t/fab-t, 5000 queries for square).

    ``n_iter`` overrides the iterations of APGD and FAB (APGD's step-size checkpoints are
    rescaled as its constructor does), ``n_queries`` Square's queries, and
    ``n_target_classes`` the targets of apgd-t/fab-t (capped at classes - 1). The seed of
    every sub-attack is drawn from ``generator``, one per call; the caller's global RNG
    state is restored afterwards, parameters are frozen during the run, and the
    library's log goes to ``robeval.attacks.autoattack`` at DEBUG level. Untargeted only.

    Device batches: the library draws from the global RNGs, seeded once per call, for
    the whole batch it is given, so unlike robeval's own attacks (per-point streams,
    :mod:`robeval.attacks.rng`) its numbers can depend on the device batch, e.g. when
    the runner halves a batch after a CUDA out-of-memory error. A
    :class:`~robeval.attacks.rng.PointGenerator` is used as the plain generator it also
    is (seeded per cell and batch), and ``initial_seed()`` names the batch in the records.

    Inside a :func:`recording` block every call also reports which sub-attack broke each
    point (:class:`SubAttackRecord`), read off the library's own robust flags as it runs:
    ``robeval run`` turns it into ``autoattack_breakdown.csv`` (robust accuracy after each
    sub-attack). The adversarials are the same with or without recording.
    """

    name: ClassVar[str] = "autoattack"
    minimal: ClassVar[bool] = False
    targeted: ClassVar[bool] = False
    nested: ClassVar[bool] = True
    norm: Norm = "linf"
    version: str = "standard"
    attacks: str | None = None
    n_iter: int | None = None
    n_queries: int | None = None
    n_target_classes: int | None = None

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"unknown version {self.version!r}; use one of {', '.join(VERSIONS)}")
        if self.version == "custom" and not self.attacks:
            raise ValueError("version=custom needs attacks, e.g. attacks=apgd-ce+apgd-t")
        if self.version != "custom" and self.attacks is not None:
            raise ValueError(f"attacks only applies to version=custom (version={self.version} "
                             "fixes its own); add version=custom or drop attacks")
        if self.version == "custom":
            unknown = [a for a in self.sub_attacks() if a not in SUB_ATTACKS]
            if unknown:
                raise ValueError(f"unknown AutoAttack sub-attack(s) {', '.join(map(repr, unknown))}; "
                                 f"use {', '.join(SUB_ATTACKS)} joined by '+' or ';'")
        for key in ("n_iter", "n_queries", "n_target_classes"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be >= 1 (or none for the library's default)")

    def sub_attacks(self) -> list[str]:
        """The custom version's sub-attacks, in the order given."""
        return [a.strip().lower() for a in re.split(r"[+;]", self.attacks or "") if a.strip()]

    def run_order(self) -> tuple[str, ...]:
        """The sub-attacks in the order the library runs them (each on the points the
        ones before left robust)."""
        return tuple(self.sub_attacks()) if self.version == "custom" else VERSION_ORDER[self.version]

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        if target is not None:
            raise ValueError("autoattack is untargeted (its apgd-t/fab-t pick their own targets); "
                             "drop the target")
        x0 = x.detach()
        records = _RECORDS.get()
        generator_seed = None if generator is None else int(generator.initial_seed())
        if eps == 0 or len(x0) == 0:
            if records is not None:
                records.append(SubAttackRecord(self.run_order(), np.full(len(x0), -1, dtype=np.int64),
                                               generator_seed))
            return x0.clone()
        if not math.isfinite(eps):
            raise ValueError("autoattack is a budgeted attack; give a finite eps")
        seed = 0 if generator is None else int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        frozen = [p for p in model.parameters() if p.requires_grad]
        cuda = [x0.device.index if x0.device.index is not None else torch.cuda.current_device()] if x0.is_cuda else []
        tracer = sys.gettrace()  # pyautoattack's check_dynamic resets sys.settrace (debuggers, coverage)
        try:
            for p in frozen:  # FAB backpropagates through the model: no parameter gradients
                p.requires_grad_(False)
            with torch.random.fork_rng(devices=cuda):  # it seeds the global RNGs
                x_adv, order, broken_by = self._run(model, x0, y.to(x0.device), float(eps), seed,
                                                    record=records is not None)
        finally:
            sys.settrace(tracer)
            for p in frozen:
                p.requires_grad_(True)
        if records is not None and broken_by is not None:
            records.append(SubAttackRecord(order, broken_by, generator_seed))
        return x_adv.detach().to(dtype=x.dtype, device=x.device)

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int, *, record: bool = False,
    ) -> tuple[Tensor, tuple[str, ...], np.ndarray | None]:
        """The library's evaluation of ``x``; with ``record`` also which sub-attack broke
        each point (:func:`_evaluate_recording`)."""
        from pyautoattack import AutoAttack as Library

        custom = self.version == "custom"
        aa = Library(model, attacks=self.sub_attacks() if custom else None, device=x.device, eps=eps,
                     norm=_LIB_NORM[self.norm], seed=seed, version=self.version)  # type: ignore[arg-type]
        aa.logger = aa.apgd.logger = aa.apgd_targeted.logger = _DebugAdapter(log, {})
        if self.n_iter is not None:
            for apgd in (aa.apgd, aa.apgd_targeted):
                apgd.n_iter = apgd.n_iter_orig = self.n_iter
                apgd.n_iter_2 = max(int(0.22 * self.n_iter), 1)
                apgd.n_iter_min = max(int(0.06 * self.n_iter), 1)
                apgd.size_decr = max(int(0.03 * self.n_iter), 1)
            aa.fab.n_iter = self.n_iter
        if self.n_queries is not None:
            aa.square.n_queries = self.n_queries
        with torch.no_grad():
            n_classes = int(model(x[:2]).shape[-1])
        targets = self.n_target_classes if self.n_target_classes is not None else aa.apgd_targeted.n_target_classes
        aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = max(1, min(targets, n_classes - 1))
        order = tuple(aa.attacks_to_run)
        if record:
            x_adv, broken_by = _evaluate_recording(aa, x, y)
            return x_adv, order, broken_by
        x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
        return x_adv, order, None
