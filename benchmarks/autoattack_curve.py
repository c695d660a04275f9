"""An AutoAttack accuracy-eps curve: robeval's runner vs pyautoattack called once per eps.

The model is an adversarially trained MNIST CNN (``recipes/cpu/mnist_cnn_pgd_at.yaml``:
PGD-AT at eps 0.3, about a minute on 2 cores; cached), so a useful share of points
survives and AutoAttack has real work. Both sides run the same AutoAttack settings
(``--aa``, by default ``version=custom,attacks=apgd-ce+apgd-t,n_iter=20``, a CPU-sized
cut of the standard version) through the same code, :class:`robeval.attacks.autoattack.AutoAttackEnsemble`,
a thin wrapper around ``pyautoattack.AutoAttack.run_standard_evaluation``:

* ``pyautoattack per eps``: the library as its users call it, once per eps on all the
  test points (it skips clean-misclassified points itself);
* ``robeval run``: the runner walks the grid upwards and attacks only the points still
  robust at the previous eps, keeping earlier adversarials for larger eps.

Reports seconds, the time ratio (> 1: robeval is faster) and the robust accuracies side
by side. The two use different seeds (robeval draws one per batch from ``--seed``, the
library side uses seed 0 at every eps), so a point or two may differ; and in robeval a
point fooled at 0.1 stays fooled at 0.2 even if a later random restart would have missed
it. One timed run each (the data set is loaded and cached before either).

Run: ``python benchmarks/autoattack_curve.py [--n 200] [--device cpu] [--aa SPEC]``.
Writes results/benchmarks/autoattack_curve.{csv,md}.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

import robeval
from robeval.device import resolve_device
from robeval.results.tables import format_eps
from robeval.train import TrainSpec, train

GRID = [0.0, 0.1, 0.2, 0.3, 0.4]
DEFAULT_AA = "version=custom,attacks=apgd-ce+apgd-t,n_iter=20"
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "cpu" / "mnist_cnn_pgd_at.yaml"


@torch.no_grad()
def predictions(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(chunk).argmax(1) for chunk in x.split(500)])


def library_curve(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, spec: str) -> list[float]:
    """pyautoattack once per eps on every point (seed 0 at each eps)."""
    ok = predictions(model, x) == y
    accs = []
    for eps in GRID:
        attack = robeval.attacks.get(f"autoattack:{spec}")
        x_adv = x if eps == 0 else attack(model, x, y, eps=eps, generator=torch.Generator().manual_seed(0))
        accs.append(float((ok & (predictions(model, x_adv) == y)).float().mean()))
    return accs


def robeval_curve(checkpoint: Path, n: int, spec: str, device: torch.device) -> list[float]:
    """`robeval run` on the same points (a fresh output folder, so nothing is cached)."""
    with tempfile.TemporaryDirectory() as out:
        df = robeval.evaluate(models=[str(checkpoint)], attacks=[f"autoattack:{spec}"], eps=GRID, n=n,
                              batch_size=n, device=str(device), out=out, seed=0)
    return df.sort_values("eps")["robust_acc"].tolist()


def timed(fn, device: torch.device) -> tuple[float, list[float]]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    accs = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - tic, accs


def pgd_at_checkpoint(out: Path, device: torch.device) -> Path:
    """The PGD-AT MNIST CNN of ``recipes/cpu/mnist_cnn_pgd_at.yaml`` (seed 0), trained once
    and cached under ``out`` (shared with ``worst_case.py``)."""
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "bench_mnist_cnn_pgd_at.pt"
    if not checkpoint.exists():
        train(TrainSpec.from_yaml(RECIPE, device=str(device), seed=0, out=str(checkpoint)))
    return checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--aa", default=DEFAULT_AA, help="autoattack parameters (after `autoattack:`)")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    device = resolve_device(args.device)
    out = Path(args.out)
    checkpoint = pgd_at_checkpoint(out, device)
    model = robeval.load_model(str(checkpoint), device=str(device))
    x, y = robeval.load_dataset("mnist-mini", split="test", n=args.n, seed=0)
    x, y = x.to(device), y.to(device)

    sides = {
        "robeval run": lambda: robeval_curve(checkpoint, args.n, args.aa, device),
        "pyautoattack per eps": lambda: library_curve(model, x, y, args.aa),
    }
    rows = []
    for label, fn in sides.items():
        seconds, accs = timed(fn, device)
        rows.append({"library": label, "seconds": seconds, "robust_acc": accs})
        print(f"{label:22s} {seconds:8.2f} s  " + " ".join(f"{a:.3f}" for a in accs), flush=True)
    frame = pd.DataFrame(rows)
    base = float(frame.loc[frame.library == "robeval run", "seconds"].iloc[0])
    frame["ratio_to_robeval"] = frame["seconds"] / base
    md = [(f"AutoAttack (`autoattack:{args.aa}`, L-inf) curve on {args.n} mnist-mini test images, "
           f"PGD-AT mnist-cnn, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads\n"),
          "| side | seconds | time / robeval | " + " | ".join(map(format_eps, GRID)) + " |",
          "|---|---|---|" + "---|" * len(GRID)]
    for _, r in frame.iterrows():
        md.append(f"| {r.library} | {r.seconds:.2f} | {r.ratio_to_robeval:.2f} | "
                  + " | ".join(f"{100 * a:.1f}" for a in r.robust_acc) + " |")
    frame["robust_acc"] = frame["robust_acc"].map(lambda accs: ";".join(f"{a:.4f}" for a in accs))
    frame.to_csv(out / "autoattack_curve.csv", index=False)
    (out / "autoattack_curve.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
