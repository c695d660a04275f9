"""The worst-case cascade against AutoAttack alone: time and accuracy at eps 0.3 on MNIST.

The model is an adversarially trained MNIST CNN (``recipes/cpu/mnist_cnn_pgd_at.yaml``:
``robeval train --dataset mnist-mini --arch mnist-cnn --objective
pgd-at:eps=0.3,steps=5,step_size=0.1 --epochs 15 --seed 0``; about 20 s on 2 cores,
cached under ``--out`` and shared with ``autoattack_curve.py``), so a useful share of
points survives PGD and AutoAttack has real work. Two runs of ``robeval.evaluate`` on the
same seeded test points, each into a fresh output folder (nothing cached):

* ``worst-case``: ``--worst-case`` with ``pgd`` (``--pgd``) then AutoAttack: AutoAttack
  only attacks the points PGD left robust;
* ``autoattack``: AutoAttack alone on every clean-correct point.

Both use AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square); ``--quick`` cuts
it to a custom CPU-sized version on 64 points (a smoke test, minutes). The indicators of
attack failure are off on both sides (``checks="off"``): only the attacks are timed.
Prints both times, their ratio (> 1: the cascade is faster), both robust accuracies at
``--eps``, the cascade's stages (``worst_case.csv``) and AutoAttack's breakdown per
sub-attack on both sides (``autoattack_breakdown.csv``).

Run: ``python benchmarks/worst_case.py [--n 500] [--quick] [--device cpu]``.
Writes results/benchmarks/worst_case.{csv,md} (``worst_case_quick.*`` with ``--quick``).
The full version (500 points, standard AutoAttack) takes about half an hour on 2 CPU
cores.
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

from autoattack_curve import pgd_at_checkpoint  # a sibling script: benchmarks/ is on sys.path

STANDARD_AA = "autoattack"
QUICK_AA = "autoattack:version=custom,attacks=apgd-ce+apgd-t+fab-t+square,n_iter=10,n_queries=100,n_target_classes=3"
QUICK_N = 64


def evaluate(checkpoint: Path, attacks: list[str], *, worst_case: bool, eps: float, n: int,
             device: torch.device, seed: int = 0) -> tuple[float, pd.DataFrame, dict[str, pd.DataFrame]]:
    """One timed ``robeval.evaluate`` call in a fresh folder: seconds, results.csv and the
    extra tables it wrote."""
    with tempfile.TemporaryDirectory() as out:
        if device.type == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        df = robeval.evaluate(models=[str(checkpoint)], attacks=attacks, eps=[0.0, eps], n=n, batch_size=n,
                              device=str(device), seed=seed, worst_case=worst_case, checks="off", out=out)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - tic
        tables = {name: pd.read_csv(Path(out) / f"{name}.csv")
                  for name in ("worst_case", "autoattack_breakdown") if (Path(out) / f"{name}.csv").exists()}
    return seconds, df, tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help=f"test points (default 500; {QUICK_N} with --quick)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_N} points and a reduced custom AutoAttack")
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--pgd", default="pgd", help="the cheap first stage (default: PGD-10, random start)")
    parser.add_argument("--aa", default=None, help="the AutoAttack spec (default: standard; reduced with --quick)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="the test subset and the attacks' seeds")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    n = args.n if args.n is not None else (QUICK_N if args.quick else 500)
    aa = args.aa or (QUICK_AA if args.quick else STANDARD_AA)
    device = resolve_device(args.device)
    out = Path(args.out)
    checkpoint = pgd_at_checkpoint(out, device)
    robeval.load_dataset("mnist-mini", split="test", n=n, seed=args.seed)  # parse and cache before timing

    sides = {"worst-case": ([args.pgd, aa], True), "autoattack": ([aa], False)}
    rows, tables = [], {}
    for label, (attacks, worst_case) in sides.items():
        seconds, df, tables[label] = evaluate(checkpoint, attacks, worst_case=worst_case, eps=args.eps, n=n,
                                              device=device, seed=args.seed)
        at_eps = df[df["eps"] == args.eps].iloc[0]
        rows.append({"side": label, "attacks": " -> ".join(attacks), "n": int(at_eps["n"]),
                     "clean_acc": float(at_eps["clean_acc"]), "robust_acc": float(at_eps["robust_acc"]),
                     "forward_passes": int(at_eps["forward_passes"]), "backward_passes": int(at_eps["backward_passes"]),
                     "seconds": seconds})
        print(f"{label:11s} {seconds:9.2f} s  robust accuracy {at_eps['robust_acc']:.4f} at eps "
              f"{format_eps(args.eps)}  ({' -> '.join(attacks)})", flush=True)
    frame = pd.DataFrame(rows)
    ratio = float(frame.loc[frame.side == "autoattack", "seconds"].iloc[0]
                  / frame.loc[frame.side == "worst-case", "seconds"].iloc[0])
    frame["time_autoattack_over_this"] = frame.loc[frame.side == "autoattack", "seconds"].iloc[0] / frame["seconds"]
    print(f"time ratio autoattack alone / worst-case cascade: {ratio:.2f}")

    md = [(f"Worst-case cascade vs AutoAttack alone, L-inf eps {format_eps(args.eps)}, {n} mnist-mini test "
           f"images, PGD-AT mnist-cnn, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads\n"),
          "| side | attacks | robust acc (%) | clean acc (%) | forward | backward | seconds | AA-alone time / this |",
          "|---|---|---|---|---|---|---|---|"]
    for r in frame.itertuples():
        md.append(f"| {r.side} | `{r.attacks}` | {100 * r.robust_acc:.1f} | {100 * r.clean_acc:.1f} | "
                  f"{r.forward_passes} | {r.backward_passes} | {r.seconds:.1f} | {r.time_autoattack_over_this:.2f} |")
    stages = tables["worst-case"].get("worst_case")
    if stages is not None:
        md += ["", "Cascade stages at each eps:", "", "| eps | stage | attack | attacked | broken | robust acc (%) | "
               "forward | seconds |", "|---|---|---|---|---|---|---|---|"]
        md += [f"| {format_eps(s.eps)} | {s.stage} | `{s.attack}` | {s.attacked} | {s.broken} | "
               f"{100 * s.robust_acc:.1f} | {s.forward_passes} | {s.seconds:.1f} |" for s in stages.itertuples()]
    for label in sides:
        breakdown = tables[label].get("autoattack_breakdown")
        if breakdown is not None:
            breakdown = breakdown[breakdown["eps"] == args.eps]
            md += ["", f"AutoAttack breakdown ({label}): robust accuracy (%) after each sub-attack", "",
                   "| " + " | ".join(breakdown["sub_attack"]) + " |", "|" + "---|" * len(breakdown),
                   "| " + " | ".join(f"{100 * a:.1f}" for a in breakdown["robust_acc_after"]) + " |"]
    name = ("worst_case_quick" if args.quick else "worst_case") + (f"_seed{args.seed}" if args.seed else "")
    frame.to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
