"""The evaluation runner: models x attacks x eps grid over one seeded data subset.

For each model, attack and batch, the eps grid is walked upwards. A point that is
misclassified clean, or already fooled at a smaller eps, is not attacked again: an
adversarial inside a smaller ball is inside every larger one, so it stays fooled (the
worst case over the grid, as in AutoAttack's cascade). Robust accuracy therefore never
rises with eps, and the work shrinks as eps grows. Every adversarial batch is checked
(:mod:`robeval.eval.checks`) before the runner counts it; success means
``model(x_adv) != y``, decided here, never by the attack.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict

import numpy as np
import torch
from torch import Tensor, nn

from robeval.attacks import Attack, canonical_name
from robeval.attacks import get as get_attack
from robeval.eval.cells import Cell, batch_seed
from robeval.eval.checks import check_adversarials
from robeval.results.store import BatchResult, ResultStore

log = logging.getLogger(__name__)

KILL_AFTER_ENV = "ROBEVAL_TEST_KILL_AFTER_BATCHES"  # test hook: SIGKILL self after N stored batches


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """Arg-max predictions of ``model`` on ``x`` (CPU tensor), batched."""
    preds = [model(x[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(preds)


def attack_cells(
    *, model: str, identity: str, dataset: str, attack_spec: str, eps_grid: tuple[float, ...],
    n: int, seed: int, batch_size: int,
) -> tuple[Attack, list[Cell]]:
    """The attack object and one :class:`Cell` per eps (ascending)."""
    attack = get_attack(attack_spec)
    params = tuple(sorted(asdict(attack).items()))
    name = canonical_name(attack)
    cells = [
        Cell(model=model, model_identity=identity, dataset=dataset, attack=name,
             attack_params=params, norm=attack.norm, eps=eps, n=n, seed=seed, batch_size=batch_size)
        for eps in sorted(eps_grid)
    ]
    return attack, cells


def run_attack(
    store: ResultStore, model: nn.Module, attack: Attack, cells: list[Cell], x: Tensor, y: Tensor,
    clean_pred: Tensor, *, batch_size: int, device: torch.device, advance: Callable[[], None] = lambda: None,
) -> None:
    """Fill the store for every (batch, eps) of one model and attack that is not done yet."""
    done = {cell.key: store.done_batches(cell.key) for cell in cells}
    for cell in cells:
        store.register_cell(cell.key, cell.description())
    for batch, start in enumerate(range(0, len(x), batch_size)):
        stop = min(start + batch_size, len(x))
        xb, yb, cb = x[start:stop], y[start:stop], clean_pred[start:stop]
        adv_pred, norms = cb.clone(), torch.zeros(stop - start, dtype=torch.float64)
        for cell in cells:
            if batch in done[cell.key]:
                stored = store.read_batch(cell.key, batch)
                adv_pred = torch.from_numpy(stored.adv_pred)
                norms = torch.from_numpy(stored.perturbation_norm)
            else:
                tic = time.perf_counter()
                adv_pred, norms = _attack_batch(
                    model, attack, cell, xb, yb, adv_pred, norms, batch, device
                )
                result = BatchResult(
                    idx=np.arange(start, stop), label=yb.numpy(), clean_pred=cb.numpy(),
                    adv_pred=adv_pred.numpy(), perturbation_norm=norms.numpy(),
                )
                store.write_batch(cell.key, batch, time.perf_counter() - tic, result)
                _maybe_kill_for_test()
            advance()


def _attack_batch(
    model: nn.Module, attack: Attack, cell: Cell, xb: Tensor, yb: Tensor,
    prev_pred: Tensor, prev_norms: Tensor, batch: int, device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Attack the points of one batch still robust at the previous eps."""
    adv_pred, norms = prev_pred.clone(), prev_norms.clone()
    todo = (prev_pred == yb).nonzero().flatten()
    if cell.eps == 0 or len(todo) == 0:
        return adv_pred, norms
    generator = torch.Generator().manual_seed(batch_seed(cell.seed, cell.key, batch))
    x_in, y_in = xb[todo].to(device), yb[todo].to(device)
    x_adv = attack(model, x_in, y_in, eps=cell.eps, generator=generator)
    found = check_adversarials(x_in, x_adv, eps=cell.eps, norm=cell.norm, attack=cell.attack)
    with torch.no_grad():
        adv_pred[todo] = model(x_adv.detach()).argmax(1).cpu()
    norms[todo] = found.double().cpu()
    return adv_pred, norms


_stored_batches = 0


def _maybe_kill_for_test() -> None:
    """Fault injection for the resume tests: ``kill -9`` ourselves after N stored batches."""
    global _stored_batches
    limit = os.environ.get(KILL_AFTER_ENV)
    if limit is None:
        return
    _stored_batches += 1
    if _stored_batches >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


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
