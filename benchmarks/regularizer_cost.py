"""Time per training step of each regulariser and objective, relative to plain `ce`.

Same model, same batch, same optimiser (SGD, momentum 0.9), one process. A step is what
`robeval train` does per batch: objective, penalties, backward, optimiser step and the
regularisers' ``after_step`` hooks (Absum's proximal operator, SNC's clipping). SNC clips
every ``every`` steps, so it is timed twice: clipping at every step (the cost of one
clip) and amortised over its default of 100. Absum (absum.txt, sec. 4.3) should cost
about what weight decay costs, and SNC about ten times more (more on larger inputs).

Run: ``python benchmarks/regularizer_cost.py [--arch mnist-cnn] [--dataset mnist-mini]
[--batch 64] [--steps 20]``; ``--arch resnet18:stem=cifar --dataset shapes:size=32,channels=3``
for the paper's ResNet setting. Writes results/benchmarks/regularizer_cost[_ARCH].{csv,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

import robeval
from robeval.data import dataset_info
from robeval.models import Normalize, build_model, resolve_arch
from robeval.train.objectives import get_objective
from robeval.train.regularisers import get_regulariser

CONFIGS: list[tuple[str, tuple[str, ...]]] = [
    ("ce", ()),
    ("ce", ("l2:lam=1e-4",)),
    ("ce", ("l1:lam=1e-4",)),
    ("ce", ("absum:lambda=1e-3",)),
    ("ce", ("absum:lambda=1e-3,solver=autograd",)),
    ("ce", ("smooth-kernel:lambda=100",)),
    ("ce", ("snc:sigma=1,every=100",)),
    ("ce", ("snc:sigma=1,every=1",)),
    ("ce", ("gradient-norm:lambda=1",)),
    ("ce", ("sgr:source=sign",)),
    ("ce", ("sgr:source=pgd,steps=10",)),
    ("ce", ("sgr:source=lrc",)),
    ("ce", ("edge-alignment:lambda=1",)),
    ("pgd-at:eps=0.3,steps=10,step_size=0.03", ()),
    ("trades:eps=0.3,steps=10,step_size=0.03", ()),
    ("logit-pairing:eps=0.3,steps=10,step_size=0.03", ()),
    ("fgsm-aug:eps=0.3", ()),
    ("pgd-aug:eps=0.3,steps=10,step_size=0.06", ()),
    ("lrc-aug:eps=0.3", ()),
]


def step_seconds(arch: str, dataset: str, objective: str, regs: tuple[str, ...], x: torch.Tensor,
                 y: torch.Tensor, steps: int) -> float:
    """Median wall time of one training step after three warm-up steps."""
    info = dataset_info(dataset)
    name, args = resolve_arch(arch)
    torch.manual_seed(0)
    net = build_model(name, in_channels=info.input_shape[0], num_classes=len(info.classes),
                      input_size=info.input_shape[1], **args)
    model = Normalize(net, (0.5,) * info.input_shape[0], (0.25,) * info.input_shape[0]).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = get_objective(objective)
    penalties = [get_regulariser(r) for r in regs]
    generator = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 3):
        tic = time.perf_counter()
        loss, logits = loss_fn(model, x, y, generator=generator)
        for reg in penalties:
            loss = loss + reg.penalty(model, x, y, logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for reg in penalties:
            reg.after_step(model, 0.01)
        if i >= 3:
            times.append(time.perf_counter() - tic)
    # The median of steps, except for a clip every K steps, whose cost only the mean shows.
    amortised = any(r.startswith("snc") and not r.endswith("every=1") for r in regs)
    return statistics.mean(times) if amortised else statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mnist-cnn")
    parser.add_argument("--dataset", default="mnist-mini")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--only-regularisers", action="store_true", help="skip the adversarial objectives")
    parser.add_argument("--match", default="", help="only configurations whose text contains this")
    args = parser.parse_args()
    x, y = robeval.load_dataset(args.dataset, split="train", n=args.batch, seed=0)
    rows = []
    for objective, regs in CONFIGS:
        if args.only_regularisers and objective != "ce":
            continue
        if args.match and args.match not in objective + " ".join(regs) and (objective, regs) != CONFIGS[0]:
            continue
        # SNC amortised over 100 steps: time enough steps to include its clip.
        steps = max(args.steps, 100) if any("every=100" in r for r in regs) else args.steps
        seconds = step_seconds(args.arch, args.dataset, objective, regs, x, y, steps)
        rows.append({"objective": objective, "regularisers": " + ".join(regs) or "-", "ms_per_step": 1000 * seconds})
        print(f"{objective:45s} {rows[-1]['regularisers']:40s} {1000 * seconds:8.2f} ms", flush=True)
    frame = pd.DataFrame(rows)
    frame["relative_to_ce"] = frame["ms_per_step"] / frame["ms_per_step"].iloc[0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "regularizer_cost" if args.arch == "mnist-cnn" else f"regularizer_cost_{args.arch.split(':')[0]}"
    frame.to_csv(out / f"{stem}.csv", index=False)
    md = [f"Training step cost on {args.arch}, {args.dataset}, batch {args.batch}, SGD, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n",
          "| objective | regularisers | ms / step | relative to ce |", "|---|---|---|---|"]
    md += [f"| {r.objective} | {r.regularisers} | {r.ms_per_step:.2f} | {r.relative_to_ce:.2f} |" for r in frame.itertuples()]
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
