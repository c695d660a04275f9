"""CPU-sized checks of the papers' qualitative claims on the bundled MNIST subset.

Trains the Absum/smooth-kernels MNIST CNN (mnist-cnn) with plain cross-entropy ("V") and
with each of the papers' regularisers or objectives, same seed and schedule, then
evaluates every model with the same battery and a PGD transfer grid:

* smooth-kernels: ``smooth-kernel`` ("VR-lambda") should beat V under attack and have
  smoother kernels (lower relative roughness, `robeval kernels`);
* SGR: ``sgr`` and ``gradient-norm`` (GN) should beat V under PGD, and PGD adversarials
  *from* V should transfer less well to them than V's white-box attack (Table 1);
* PGD adversarial training ("A") is the strong baseline of every paper.

These are small models trained for seconds, so the numbers are indications, not the
papers' results; the script reports them as they come out. Run:
``python benchmarks/paper_checks.py [--epochs 6] [--n 500]``; writes
results/benchmarks/paper_checks.{csv,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

import robeval
from robeval.analysis.kernels import kernel_statistics, model_summary
from robeval.train import TrainSpec, train

MODELS = {  # the papers tune the strengths (smooth-kernels: lambda in 0.01..100); a small sweep here
    "V": ("ce", ()),
    "VR-0.1": ("ce", ("smooth-kernel:lambda=0.1",)),
    "VR-1": ("ce", ("smooth-kernel:lambda=1",)),
    "VR-100": ("ce", ("smooth-kernel:lambda=100",)),
    "GN-0.1": ("ce", ("gradient-norm:lambda=0.1,eps=0.3",)),
    "GN-1": ("ce", ("gradient-norm:lambda=1,eps=0.3",)),
    "SGR-1": ("ce", ("sgr:source=sign,lambda=1",)),
    "SGR-5": ("ce", ("sgr:source=sign,lambda=5",)),
    "A": ("pgd-at:eps=0.3,steps=5,step_size=0.1", ()),
}
ATTACKS = ["fgsm", "pgd:steps=20", "deepfool:norm=linf"]
EPS = "0,0.1,0.2,0.3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths, seconds = {}, {}
    for name, (objective, regs) in MODELS.items():
        path = out / f"paper_{name}.pt"
        tic = time.perf_counter()
        train(TrainSpec(dataset="mnist-mini", arch="mnist-cnn", epochs=args.epochs, batch_size=64, lr=1e-3,
                        objective=objective, regularisers=regs, seed=0, device="cpu", out=str(path)))
        seconds[name], paths[name] = time.perf_counter() - tic, path
        print(f"trained {name} in {seconds[name]:.1f} s", flush=True)
    results = robeval.evaluate(models=[str(p) for p in paths.values()], attacks=ATTACKS, eps=EPS, n=args.n,
                               device="cpu", out=str(out / "paper_run"))
    table = results.pivot_table(index="model", columns=["attack", "eps"], values="robust_acc")
    grid = robeval.transfer(sources=[str(paths["V"])], targets=[str(p) for p in paths.values()],
                            attacks=["pgd:steps=20"], eps="0.2", n=args.n, device="cpu", out=str(out / "paper_transfer"))
    kernels = model_summary(pd.concat([kernel_statistics(robeval.load_model(str(p))).assign(model=n)
                                       for n, p in paths.items()]))
    rows = []
    for name, path in paths.items():
        stem = path.stem
        row = {"model": name, "train_seconds": round(seconds[name], 1),
               "clean": table.loc[stem, ("fgsm", 0.0)]}
        for attack in ATTACKS:
            for eps in (0.1, 0.2, 0.3):
                row[f"{attack}@{eps}"] = table.loc[stem, (attack, eps)]
        row["pgd@0.2 from V"] = grid.set_index("target").loc[stem, "robust_acc"]
        row["relative_roughness"] = kernels.set_index("model").loc[name, "relative_roughness"]
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "paper_checks.csv", index=False)
    lines = [f"mnist-cnn on mnist-mini, {args.epochs} epochs each, n={args.n}; accuracies in %\n",
             "| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.to_dict("records"):
        cells = [str(row["model"]), f"{row['train_seconds']:.1f}"]
        cells += [f"{100 * row[c]:.1f}" for c in frame.columns[2:-1]]
        cells.append(f"{row['relative_roughness']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    (out / "paper_checks.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
