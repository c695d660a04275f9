"""The training loop behind ``robeval train``: data -> model -> objective + regularisers
-> checkpoint that ``robeval run`` reads back with no other flags."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from robeval.data import dataset_info, load_dataset
from robeval.device import resolve_device
from robeval.eval.progress import progress_bar
from robeval.eval.runner import predict
from robeval.models import CheckpointMeta, Normalize, build_model, resolve_arch, save_checkpoint
from robeval.train.objectives import Objective, get_objective
from robeval.train.regularisers import Regulariser, get_regulariser
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
    """Train ``spec.arch`` on ``spec.dataset`` and write the checkpoint to ``spec.out``."""
    torch.manual_seed(spec.seed)
    device = resolve_device(spec.device)
    arch, arch_args = resolve_arch(spec.arch)  # validate names before loading any data
    objective = get_objective(spec.objective)
    regs = [get_regulariser(r) for r in spec.regularisers]
    info = dataset_info(spec.dataset, root=spec.data_root)
    x_train, y_train = load_dataset(spec.dataset, split="train", n=spec.n_train, seed=spec.seed, root=spec.data_root)
    x_test, y_test = load_dataset(spec.dataset, split="test", root=spec.data_root)
    channels, height, _ = info.input_shape
    net = build_model(arch, in_channels=channels, num_classes=len(info.classes), input_size=height, **arch_args)
    mean, std = channel_stats(x_train)
    model = Normalize(net, mean, std).to(device)
    optimizer = make_optimizer(spec, list(model.parameters()))
    generator = torch.Generator().manual_seed(spec.seed)

    n_batches = -(-len(x_train) // spec.batch_size)
    tic = time.perf_counter()
    with progress_bar(enabled=spec.progress) as bar:
        task = bar.add_task(f"train {arch} on {info.name}", total=spec.epochs * n_batches)
        for epoch in range(spec.epochs):
            loss_sum, correct = _train_epoch(
                model, objective, regs, optimizer, x_train, y_train, spec, generator, device,
                lambda: bar.advance(task),
            )
            log.info("epoch %d: loss %.4f, train acc %.4f", epoch + 1, loss_sum / len(x_train),
                     correct / len(x_train))
    seconds = time.perf_counter() - tic
    model.eval()
    test_acc = float((predict(model, x_test, 512, device) == y_test).float().mean())
    metrics = {"test_acc": test_acc, "train_loss": loss_sum / len(x_train),
               "train_acc": correct / len(x_train), "train_seconds": round(seconds, 2)}
    meta = CheckpointMeta(
        arch=arch, arch_args=arch_args, dataset=info.name, classes=tuple(info.classes),
        input_shape=tuple(info.input_shape), mean=mean, std=std, train_spec=spec.to_dict(),
        metrics=metrics, robeval_version=__version__,
    )
    path = save_checkpoint(spec.out, model, meta)
    return TrainResult(checkpoint=Path(path), metrics=metrics)


def _train_epoch(
    model: nn.Module, objective: Objective, regs: list[Regulariser], optimizer: torch.optim.Optimizer,
    x: Tensor, y: Tensor, spec: TrainSpec, generator: torch.Generator, device: torch.device,
    advance: Callable[[], None],
) -> tuple[float, int]:
    """One pass over the shuffled training set; returns (summed loss, correct count)."""
    model.train()
    order = torch.randperm(len(x), generator=generator)
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), spec.batch_size):
        idx = order[start : start + spec.batch_size]
        xb, yb = x[idx].to(device), y[idx].to(device)
        loss, logits = objective(model, xb, yb, generator=generator)
        for reg in regs:
            loss = loss + reg.penalty(model, xb, yb, logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        for reg in regs:
            reg.after_step(model, lr)
        loss_sum += float(loss.detach()) * len(idx)
        correct += int((logits.detach().argmax(1) == yb).sum())
        advance()
    return loss_sum, correct
