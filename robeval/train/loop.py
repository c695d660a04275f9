"""The training loop behind ``robeval train``: data -> model -> objective + regularisers
-> checkpoint that ``robeval run`` reads back with no other flags."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from robeval.atomic import atomic_write_text
from robeval.data import dataset_info, load_dataset
from robeval.device import resolve_device
from robeval.errors import RobevalError
from robeval.eval.progress import progress_bar
from robeval.eval.runner import predict
from robeval.models import (
    CheckpointMeta,
    Normalize,
    build_model,
    resolve_arch,
    save_checkpoint,
)
from robeval.train.augment import crop_flip
from robeval.train.objectives import Objective, get_objective
from robeval.train.regularisers import Regulariser, get_regulariser
from robeval.train.outputs import check_outputs, train_outputs, write_failed
from robeval.train.resume import ResumeState, load_resume, save_resume
from robeval.train.schedule import lr_at
from robeval.train.spec import TrainSpec
from robeval.version import __version__

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """Where the checkpoint went and what the run measured."""

    checkpoint: Path
    metrics: dict[str, float]


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a (N, C, H, W) training set, for the Normalize wrapper."""
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def make_optimizer(spec: TrainSpec, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def train(spec: TrainSpec) -> TrainResult:
    """Train ``spec.arch`` on ``spec.dataset`` and write the checkpoint to ``spec.out``.

    Every setting and the output folder are checked before any data is loaded. After each
    epoch the run is saved to ``OUT.resume``; a run started again with the same spec
    continues from there (and says so with a warning). A file that cannot be written
    raises a :class:`RobevalError` naming the epoch kept.
    """
    torch.manual_seed(spec.seed)
    device = resolve_device(spec.device)
    arch, arch_args = resolve_arch(spec.arch)  # validate names before loading any data
    objective = get_objective(spec.objective)
    regs = [get_regulariser(r) for r in spec.regularisers]
    info = dataset_info(spec.dataset, root=spec.data_root)
    outputs = train_outputs(spec.out)
    check_outputs(outputs)  # before any data is loaded: no epoch is spent on a run that cannot be saved
    x_train, y_train = load_dataset(spec.dataset, split="train", n=spec.n_train, seed=spec.seed, root=spec.data_root)
    x_test, y_test = load_dataset(spec.dataset, split="test", root=spec.data_root)
    for reg in regs:  # sgr:source=data takes its covariance from the split it trains on
        if hasattr(reg, "bind_data"):
            reg.bind_data(x_train)
    channels, height, _ = info.input_shape
    net = build_model(arch, in_channels=channels, num_classes=len(info.classes), input_size=height, **arch_args)
    mean, std = channel_stats(x_train)
    model = Normalize(net, mean, std).to(device)
    optimizer = make_optimizer(spec, list(model.parameters()))
    generator = torch.Generator().manual_seed(spec.seed)

    n_batches = -(-len(x_train) // spec.batch_size)
    rpath, log_path = outputs.resume, outputs.log
    state = load_resume(rpath, spec.to_dict())
    rows: list[dict[str, float]] = []
    start, seconds = 0, 0.0
    if state is not None:
        _restore(state, model, optimizer, generator, regs, rpath)
        start, rows, seconds = state.epoch, list(state.log), state.seconds
    kept = start  # the last epoch saved in the resume file
    with progress_bar(enabled=spec.progress) as bar:
        task = bar.add_task(f"train {arch} on {info.name}", total=spec.epochs * n_batches, completed=start * n_batches)
        for epoch in range(start, spec.epochs):
            tic = time.perf_counter()
            stats = _train_epoch(
                model, objective, regs, optimizer, x_train, y_train, spec, generator, device,
                epoch * n_batches, n_batches, lambda: bar.advance(task),
            )
            seconds += time.perf_counter() - tic
            model.eval()
            test_acc = float((predict(model, x_test, 512, device) == y_test).float().mean())
            rows.append({"epoch": epoch + 1, **stats, "test_acc": test_acc, "seconds": round(seconds, 3)})
            bar.update(task, description=_describe(arch, info.name, rows[-1], spec.epochs))
            log.info("epoch %d: %s", epoch + 1, rows[-1])
            target = log_path
            try:
                atomic_write_text(log_path, pd.DataFrame(rows).to_csv(index=False))
                target = rpath
                save_resume(rpath, spec.to_dict(), ResumeState(
                    epoch=epoch + 1, model=model.state_dict(), optimizer=optimizer.state_dict(),
                    generator=generator.get_state(), torch_rng=torch.get_rng_state(), log=rows, seconds=seconds,
                    regularisers=[reg.state_dict() if hasattr(reg, "state_dict") else {} for reg in regs],
                ))
            except (OSError, RobevalError) as exc:
                raise write_failed(exc, target, epoch=epoch + 1, epochs=spec.epochs, resume=rpath, kept=kept) from exc
            kept = epoch + 1
    model.eval()
    last = rows[-1]
    metrics = {"test_acc": last["test_acc"], "train_loss": last["loss"], "train_acc": last["train_acc"],
               "train_seconds": round(seconds, 2)}
    meta = CheckpointMeta(
        arch=arch, arch_args=arch_args, dataset=info.name, classes=tuple(info.classes),
        input_shape=tuple(info.input_shape), mean=mean, std=std, train_spec=spec.to_dict(),
        metrics=metrics, robeval_version=__version__,
    )
    try:
        path = save_checkpoint(outputs.checkpoint, model, meta)
    except (OSError, RobevalError) as exc:
        raise write_failed(exc, outputs.checkpoint, epoch=spec.epochs, epochs=spec.epochs, resume=rpath,
                           kept=kept) from exc
    rpath.unlink(missing_ok=True)
    return TrainResult(checkpoint=Path(path), metrics=metrics)


def _restore(
    state: ResumeState, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
    regs: list[Regulariser], path: Path,
) -> None:
    """Put a resume file's weights, optimiser, RNG and regulariser states back in place."""
    try:
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        generator.set_state(state.generator)
        torch.set_rng_state(state.torch_rng)
        for reg, reg_state in zip(regs, state.regularisers, strict=True):
            if hasattr(reg, "load_state_dict"):
                reg.load_state_dict(reg_state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RobevalError(
            f"the resume file {path} does not fit this run ({first}); delete it to start afresh"
        ) from exc


def _describe(arch: str, dataset: str, row: dict[str, float], epochs: int) -> str:
    regs = " ".join(f"{k[4:]} {v:.3g}" for k, v in row.items() if k.startswith("reg:"))
    return (f"train {arch} on {dataset} · epoch {row['epoch']}/{epochs} · loss {row['loss']:.4f} "
            f"{regs} · acc {row['train_acc']:.3f} / test {row['test_acc']:.3f}").replace("  ", " ")


def _train_epoch(
    model: nn.Module, objective: Objective, regs: list[Regulariser], optimizer: torch.optim.Optimizer,
    x: Tensor, y: Tensor, spec: TrainSpec, generator: torch.Generator, device: torch.device,
    first_step: int, steps_per_epoch: int, advance: Callable[[], None],
) -> dict[str, float]:
    """One pass over the shuffled training set. Returns the epoch's mean loss (objective
    plus penalties), mean value of each regulariser's penalty (``reg:NAME``), training
    accuracy on the clean logits and the last learning rate."""
    model.train()
    order = torch.randperm(len(x), generator=generator)
    loss_sum, correct, lr = 0.0, 0, spec.lr
    reg_sums = [0.0] * len(regs)
    for step, start in enumerate(range(0, len(x), spec.batch_size)):
        lr = lr_at(spec, first_step + step, steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = order[start : start + spec.batch_size]
        xb, yb = x[idx].to(device), y[idx].to(device)
        if spec.augment == "crop-flip":
            xb = crop_flip(xb, spec.crop_padding, generator)
        loss, logits = objective(model, xb, yb, generator=generator)
        for i, reg in enumerate(regs):
            penalty = reg.penalty(model, xb, yb, logits)
            reg_sums[i] += float(penalty.detach()) * len(idx)
            loss = loss + penalty
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for reg in regs:
            reg.after_step(model, lr)
        loss_sum += float(loss.detach()) * len(idx)
        correct += int((logits.detach().argmax(1) == yb).sum())
        advance()
    names = [spec.regularisers[i].split(":")[0] for i in range(len(regs))]
    return {"lr": lr, "loss": loss_sum / len(x), **{f"reg:{n}": v / len(x) for n, v in zip(names, reg_sums, strict=True)},
            "train_acc": correct / len(x)}
