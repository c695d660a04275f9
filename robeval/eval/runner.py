"""The evaluation runner: models x attacks x eps grid over one seeded data subset.

Points misclassified clean are never attacked. For a *budgeted* attack the eps grid is
walked upwards per batch and an adversarial found at eps_k is reused for every larger
eps (it lies inside the larger ball), so only points still robust are attacked at the
next eps: the curve cannot rise and the work shrinks as eps grows. A *minimal-norm*
attack runs once, unbounded, per batch; every eps of the grid is read off the norms of
the adversarials it found (:func:`robeval.results.tables.cell_samples`).

In targeted mode every clean-correct sample is attacked towards each other class, one
*point* per (sample, target). Every adversarial batch is checked
(:mod:`robeval.eval.checks`) before the runner counts it; success (``model(x_adv) != y``,
or ``== target``) is decided here, never by the attack. The forward and backward passes
each attack makes are counted (:mod:`robeval.eval.counting`) and stored with its time.

Each store batch goes to the device once; its points are attacked in device batches
that start at ``--batch-size`` and halve on out-of-memory
(:mod:`robeval.eval.device_batch`), and every point draws from its own random stream
(:class:`~robeval.eval.cells.BatchSeeds`), so the numbers do not depend on the batch
size. ``amp`` (:mod:`robeval.eval.precision`) sets the precision of the model's passes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from robeval.attacks.presets import stable_params
from robeval.attacks import Attack, canonical_name
from robeval.attacks import get as get_attack
from robeval.attacks.base import (
    BALL_NORMS,
    all_norms,
    is_minimal,
    is_nested,
    perturbation_norms,
)
from robeval.attacks.trace import PathTrace, loss_trend, tracing
from robeval.errors import RobevalError
from robeval.eval.cells import BatchSeeds, Cell
from robeval.eval.checks import attack_norms
from robeval.eval.counting import PassCounter
from robeval.eval.device_batch import in_device_batches, undone_on_error
from robeval.eval.precision import device_model, to_layout, use_channels_last
from robeval.results.store import BatchResult, Cost, PointTraces, ResultStore

log = logging.getLogger(__name__)

NORM_COLUMNS = ("l0", "l2", "linf", "attack_norm")


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int, device: torch.device, amp: str = "off") -> Tensor:
    """Arg-max predictions of ``model`` on ``x`` (CPU tensor), in device batches of at
    most ``batch_size`` (halved on out-of-memory, :mod:`robeval.eval.device_batch`)."""
    net = device_model(model, amp, device)
    channels_last = use_channels_last(model, x[:1].to(device)) if len(x) else False

    def one(rows: Tensor) -> Tensor:
        chunk = to_layout(x[int(rows[0]):int(rows[-1]) + 1].to(device), channels_last)
        return net(chunk).float().argmax(1).cpu()

    preds, _ = in_device_batches(model, torch.arange(len(x)), batch_size, one)
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def attack_cells(
    *, model: str, identity: str, dataset: str, attack_spec: str, eps_grid: tuple[float, ...],
    n: int, seed: int, batch_size: int, target: str | None = None, amp: str = "off",
) -> tuple[Attack, list[Cell]]:
    """The attack object and one :class:`Cell` per eps (ascending); ``amp``: the
    precision of the model's passes (:mod:`robeval.eval.precision`).

    Budgeted attacks get no ``unbounded`` cell: with no bound they are not defined.
    """
    attack = get_attack(attack_spec)
    params = tuple(sorted(stable_params(attack).items()))
    name = canonical_name(attack)
    minimal, nested = is_minimal(attack), is_nested(attack)
    grid = sorted(eps_grid)
    if not minimal and any(math.isinf(e) for e in grid):
        log.info("%s is a budgeted attack; it has no unbounded column", name)
        grid = [e for e in grid if not math.isinf(e)]
    cells = [
        Cell(model=model, model_identity=identity, dataset=dataset, attack=name, attack_params=params,
             norm=attack.norm, eps=eps, n=n, seed=seed, batch_size=batch_size, minimal=minimal,
             lower_eps=tuple(grid[:i]) if nested and not minimal else (), target=target, nested=nested, amp=amp)
        for i, eps in enumerate(grid)
    ]
    return attack, cells


@dataclass(frozen=True)
class Points:
    """The points of one batch: the sample each belongs to (``local``: position in the
    batch, ``idx``: in the subset), its target (-1 untargeted), label and clean prediction."""

    local: Tensor
    idx: Tensor
    target: Tensor
    label: Tensor
    clean_pred: Tensor

    def success(self, adv_pred: Tensor) -> Tensor:
        """Where ``adv_pred`` is a success: misclassified, or the target when targeted."""
        return torch.where(self.target >= 0, adv_pred == self.target, adv_pred != self.label)


def batch_points(start: int, y: Tensor, clean_pred: Tensor, n_classes: int, targeted: bool) -> Points:
    """One point per sample, or per (sample, other class) in targeted mode."""
    local = torch.arange(len(y))
    target = torch.full_like(local, -1)
    if targeted:
        classes = torch.arange(n_classes)
        local = local.repeat_interleave(n_classes)
        target = classes.repeat(len(y))
        keep = target != y[local]
        local, target = local[keep], target[keep]
    return Points(local=local, idx=local + start, target=target, label=y[local], clean_pred=clean_pred[local])


def run_attack(
    store: ResultStore, model: nn.Module, attack: Attack, cells: list[Cell], x: Tensor, y: Tensor,
    clean_pred: Tensor, *, batch_size: int, device: torch.device, n_classes: int,
    advance: Callable[[], None] = lambda: None, batches: range | None = None,
) -> None:
    """Fill the store for every (batch, eps) of one model and attack that is not done yet
    (of the batches in ``batches`` only, when given: one Ray task's share). Each batch
    goes to the device once; its points are attacked in device batches
    (:mod:`robeval.eval.device_batch`), whose size is stored with it."""
    if not cells:
        return
    minimal = cells[0].minimal
    keys = [cells[0].search()] if minimal else cells
    for cell in keys:
        store.register_cell(cell.key, cell.description())
    done = {cell.key: store.done_batches(cell.key) for cell in keys}
    targeted = cells[0].target is not None
    for batch, start in enumerate(range(0, len(x), batch_size)):
        if batches is not None and batch not in batches:
            continue
        stop = min(start + batch_size, len(x))
        xb = x[start:stop]
        on_device = None  # moved once, when the first cell of the batch is attacked
        points = batch_points(start, y[start:stop], clean_pred[start:stop], n_classes, targeted)
        initial = state = _initial_state(points, xb, cells[0].norm)
        for cell in keys:
            if batch in done[cell.key]:
                state = store.read_batch(cell.key, batch)
            else:
                on_device = xb.to(device) if on_device is None else on_device
                start_from = state if cell.nested else initial  # reuse earlier successes only when nested
                out = _attack_points(model, attack, cell, on_device, points, start_from, batch, batch_size, device)
                state = out.state
                store.write_batch(cell.key, batch, out.cost, state, out.traces, **out.extra())
            if not minimal:
                advance()
        if minimal:
            for _ in cells:
                advance()


def _initial_state(points: Points, xb: Tensor, norm: str) -> BatchResult:
    """No point perturbed yet: predictions are the clean ones, norms zero."""
    zeros = np.zeros(len(points.idx))
    x_norm = perturbation_norms(xb[points.local.to(xb.device)], norm if norm in BALL_NORMS else "l2")
    return BatchResult(
        idx=points.idx.numpy(), target=points.target.numpy(), label=points.label.numpy(),
        clean_pred=points.clean_pred.numpy(), adv_pred=points.clean_pred.numpy().copy(),
        l0=zeros, l2=zeros.copy(), linf=zeros.copy(), attack_norm=zeros.copy(), x_norm=x_norm.double().cpu().numpy(),
    )


@dataclass(frozen=True)
class Attacked:
    """One cell's batch after :func:`_attack_points`: the new state, its cost, what the
    attack's path showed, and the device batch used (``None``: nothing was attacked)."""

    state: BatchResult
    cost: Cost
    traces: PointTraces
    device_batch: int | None = None

    def extra(self) -> dict[str, int]:
        """The keywords of :meth:`ResultStore.write_batch` beyond the points."""
        return {} if self.device_batch is None else {"device_batch": self.device_batch}


def _attack_points(
    model: nn.Module, attack: Attack, cell: Cell, xb: Tensor, points: Points, state: BatchResult,
    batch: int, batch_size: int, device: torch.device,
) -> Attacked:
    """Attack the points of one batch that are clean-correct and not yet a success
    (at the previous eps), in device batches of at most ``batch_size`` points (halved on
    out-of-memory), each drawing from its own random stream
    (:class:`~robeval.eval.cells.BatchSeeds`); return the new state, the cost, what the
    attack's path showed for each attacked point (free: recorded from the passes the
    attack makes anyway, :mod:`robeval.attacks.trace`) and the device batch used."""
    tic = time.perf_counter()
    prev = torch.from_numpy(state.adv_pred)
    todo = ((points.clean_pred == points.label) & ~points.success(prev)).nonzero().flatten()
    adv_pred = prev.clone()
    norms = {name: torch.from_numpy(state.norm(name)).clone() for name in NORM_COLUMNS}
    counter = PassCounter(model)
    traced: list[tuple[Tensor, np.ndarray, np.ndarray, np.ndarray]] = []
    used = None
    if cell.eps > 0 and len(todo):
        channels_last = use_channels_last(model, xb.to(device))
        xd, local = to_layout(xb.to(device), channels_last), points.local.to(device)
        labels, targets = points.label.to(device), points.target.to(device)
        seeds = BatchSeeds.of(cell, batch, points.idx, points.target)
        net, final = device_model(counter, cell.amp, device), device_model(model, cell.amp, device)

        def attempt(chunk: Tensor) -> None:
            rows = chunk.to(device)
            x_in, y_in, generator = xd[local[rows]], labels[rows], seeds.generator(chunk)
            extra = {"target": targets[rows]} if cell.target is not None else {}
            with undone_on_error(counter), tracing(len(chunk)) as trace:
                try:
                    result = attack(net, x_in, y_in, eps=cell.eps, generator=generator, **extra)
                except RuntimeError as exc:
                    raise _graph_error(exc, model, cell, x_in, y_in) from None
                x_adv, own = attack_norms(x_in, result, eps=cell.eps, norm=cell.norm, attack=cell.attack)
                with torch.no_grad():
                    adv_pred[chunk] = final(x_adv.detach()).argmax(1).cpu()
            seeds.advance(generator)
            found = {**all_norms(x_adv - x_in), "attack_norm": own}
            for name, values in norms.items():
                values[chunk] = found[name].double().cpu()
            if trace.steps:
                traced.append(_traced(chunk, trace))

        _, used = in_device_batches(model, todo, batch_size, attempt)
        if cell.minimal:  # a failed search has no adversarial: its norm is infinite
            failed = todo[~points.success(adv_pred)[todo]]
            for values in norms.values():
                values[failed] = math.inf
    cost = Cost(time.perf_counter() - tic, counter.counts.forward, counter.counts.backward)
    new = state.replace(adv_pred=adv_pred.numpy(), **{k: v.numpy() for k, v in norms.items()})
    return Attacked(new, cost, _point_traces(points, traced), used)


def _graph_error(exc: RuntimeError, model: nn.Module, cell: Cell, x: Tensor, y: Tensor) -> Exception:
    """An attack that needs the input gradient of a model whose forward pass cuts the
    autograd graph: one error naming the module (BPDA's fix) instead of autograd's."""
    text = str(exc)
    if "does not require grad" not in text and "grad_fn" not in text:
        return exc
    from robeval.eval.indicators.probes import gradient_probe

    blocking = gradient_probe(model, x[:8], y[:8]).blocking
    where = f" in {', '.join(repr(b) for b in blocking)}" if blocking else ""
    fix = f"--bpda {blocking[0]}" if blocking else "--bpda MODULE"
    return RobevalError(
        f"attack {cell.attack!r} needs input gradients, but model {cell.model!r} cuts the autograd graph{where} "
        f"(a detach, no_grad or numpy round trip); run it with {fix} (BPDA: that module's backward becomes the "
        "identity), or use gradient-free attacks"
    )


def _traced(chunk: Tensor, trace: PathTrace) -> tuple[Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """One chunk's path trace: whether each point saw an adversarial iterate, its loss trend, its steps."""
    curves = trace.loss_curves()
    return (chunk, trace.seen_adversarial(), np.array([loss_trend(c) for c in curves]),
            np.array([len(c) for c in curves], dtype=np.int64))


def _point_traces(points: Points, traced: list[tuple[Tensor, np.ndarray, np.ndarray, np.ndarray]]) -> PointTraces:
    """The traced chunks of one batch as :class:`PointTraces` rows (points, not chunks)."""
    if not traced:
        return PointTraces.empty()
    chunks = torch.cat([c for c, *_ in traced])
    return PointTraces(
        idx=points.idx[chunks].numpy(), target=points.target[chunks].numpy(),
        iterate_adv=np.concatenate([t[1] for t in traced]), loss_trend=np.concatenate([t[2] for t in traced]),
        steps=np.concatenate([t[3] for t in traced]),
    )


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode with frozen parameters (attacks need input gradients
    only, and no attack can then leave parameter gradients behind); restore both after."""
    was_training = model.training
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for param in trainable:
        param.requires_grad_(False)
    try:
        yield model
    finally:
        for param in trainable:
            param.requires_grad_(True)
        model.train(was_training)
