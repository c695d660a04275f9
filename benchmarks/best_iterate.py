"""Best-iterate PGD (``pgd``, ``keep=best``) against last-iterate PGD (``pgd:keep=last``,
foolbox's loop) over a whole accuracy-eps curve, through ``robeval.evaluate``.

PGD-10, L-inf, step 0.25 x eps, random start, 8 eps from 0.025 to 0.3, on 500 seeded
mnist-mini test images, with the MNIST CNN trained as ``make demo`` trains it (8 epochs,
Adam 1e-3, batch 64, seed 0; cached under ``--out``). Both attacks run in the runner, which
walks the eps grid upwards and attacks only the points still robust at the previous eps;
keep=best also stops iterating a point at the first step whose forward pass shows it is
adversarial, keeping that iterate.

Per eps it prints the robust accuracy, the backward passes and the seconds spent *at that
eps* (the runner's cost columns are cumulative along the grid; their differences are
shown), then the totals and the ratios best / last. The two cells draw different random
starts (the runner's batch seed hashes the attack's parameters), and points fooled at a
small eps shape which points are attacked later, so the two accuracies can differ by a
point or two either way; with ``--no-random-start`` both walk the same deterministic
paths and keep=best's accuracy is never higher at any eps.

Run: ``python benchmarks/best_iterate.py [--n 500] [--device cpu] [--threads T] [--no-random-start]``.
Writes results/benchmarks/best_iterate.{csv,md}.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

import robeval
from robeval.results.tables import format_eps
from robeval.train import TrainSpec, train

GRID = [0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3]


def checkpoint(out: Path, device: str) -> Path:
    """The `make demo` model (robeval train --dataset mnist-mini --arch mnist-cnn --epochs 8
    --batch-size 64 --lr 1e-3 --seed 0), trained once and cached."""
    path = out / "best_iterate_mnist_cnn.pt"
    if not path.exists():
        train(TrainSpec(dataset="mnist-mini", arch="mnist-cnn", epochs=8, batch_size=64, lr=1e-3, seed=0,
                        device=device, out=str(path)))
    return path


def curve(ckpt: Path, attack: str, n: int, device: str) -> tuple[pd.DataFrame, float]:
    """One fresh `robeval.evaluate` of ``attack`` on the grid; its rows by eps and wall time."""
    with tempfile.TemporaryDirectory() as out:
        tic = time.perf_counter()
        df = robeval.evaluate(models=[str(ckpt)], attacks=[attack], eps=GRID, n=n, seed=0, device=device, out=out)
        wall = time.perf_counter() - tic
    df = df.sort_values("eps").set_index("eps")
    per_eps = df[["backward_passes", "seconds"]].diff().fillna(df[["backward_passes", "seconds"]])
    return pd.DataFrame({"robust_acc": df.robust_acc, "backward": per_eps.backward_passes.astype(int),
                         "seconds": per_eps.seconds, "clean_acc": df.clean_acc}), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-random-start", action="store_true", help="both attacks without random start")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint(out, args.device)
    suffix = ",random_start=false" if args.no_random_start else ""
    attacks = {"last": f"pgd:keep=last{suffix}", "best": f"pgd{':' + suffix[1:] if suffix else ''}"}

    robeval.load_dataset("mnist-mini", split="test", n=args.n, seed=0)  # load and cache before timing
    frames, walls = {}, {}
    for keep, spec in attacks.items():
        frames[keep], walls[keep] = curve(ckpt, spec, args.n, args.device)
        print(f"{spec}: {walls[keep]:.2f} s for the whole evaluate call", flush=True)
    last, best = frames["last"], frames["best"]

    rows = []
    for eps in GRID:
        rows.append({"eps": format_eps(eps), "acc_last": last.robust_acc[eps], "acc_best": best.robust_acc[eps],
                     "bwd_last": last.backward[eps], "bwd_best": best.backward[eps],
                     "s_last": last.seconds[eps], "s_best": best.seconds[eps]})
    table = pd.DataFrame(rows)
    totals = {"bwd_last": int(table.bwd_last.sum()), "bwd_best": int(table.bwd_best.sum()),
              "s_last": float(table.s_last.sum()), "s_best": float(table.s_best.sum())}
    clean = float(last.clean_acc.iloc[0])
    md = [(f"PGD-10 L-inf (step 0.25 eps{', no random start' if suffix else ', random start'}) on {args.n} "
           f"mnist-mini test images, `make demo`'s mnist-cnn (clean accuracy {100 * clean:.1f} %), "
           f"{args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
           f"`{attacks['last']}` vs `{attacks['best']}`. Backward passes and seconds at each eps "
           "(the runner attacks only points still robust at the previous eps).\n"),
          "| eps | robust acc last | robust acc best | backward last | backward best | s last | s best |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['eps']} | {100 * r['acc_last']:.1f} | {100 * r['acc_best']:.1f} | {r['bwd_last']} | "
                  f"{r['bwd_best']} | {r['s_last']:.2f} | {r['s_best']:.2f} |")
    md.append(f"| total | | | {totals['bwd_last']} | {totals['bwd_best']} | {totals['s_last']:.2f} | "
              f"{totals['s_best']:.2f} |")
    md.append("")
    md.append(f"best / last: backward passes {totals['bwd_best'] / totals['bwd_last']:.3f}, attack seconds "
              f"{totals['s_best'] / totals['s_last']:.3f}, whole evaluate call {walls['best'] / walls['last']:.3f} "
              f"({walls['best']:.2f} s vs {walls['last']:.2f} s); robust accuracy summed over the grid "
              f"{100 * table.acc_best.sum():.1f} vs {100 * table.acc_last.sum():.1f} points; eps where best > last: "
              f"{', '.join(r['eps'] for r in rows if r['acc_best'] > r['acc_last']) or 'none'}")
    name = "best_iterate_no_random_start" if suffix else "best_iterate"
    table.to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
