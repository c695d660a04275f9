"""Whole accuracy-eps curves in robeval vs foolbox, torchattacks and ART, in one process.

Two curves on the same model (the paper's MNIST CNN, trained for a few seconds on the
bundled MNIST subset) and the same 1,000 test images:

* an 8-eps L-inf PGD-10 curve (step 0.25 * eps, random start). robeval's runner walks
  the grid upwards and attacks only the points still robust at the previous eps;
  foolbox takes the eps list in one call (and attacks every point at every eps);
  torchattacks and ART are called once per eps.
* a DeepFool L2 curve (100 steps, overshoot 0.02, 10 candidates) over 8 L2 bounds,
  including ``unbounded``. DeepFool is a minimal-norm search, so every library runs it
  once and the curve is read off the per-sample norms (foolbox does this itself for an
  eps list; for torchattacks and ART the script thresholds their adversarials).
  torchattacks' DeepFool takes minutes per 100 images on a CPU, so it runs on the first
  100 images and its time is scaled up (``--torchattacks-deepfool-n``).

Robust accuracy at a bound counts a point as robust when it is classified correctly
clean and its adversarial is either not adversarial or outside the bound. Reports
seconds, each peer's time as a ratio to robeval's (ratio > 1: robeval is faster) and
the robust accuracies side by side. Timings are single runs after a warm-up call.

Run: ``make bench`` (installs the `peers` extra) or
``python benchmarks/curve_vs_peers.py [--n 1000] [--device cpu] [--skip-slow]``.
Writes results/benchmarks/curve_vs_peers.{csv,md}.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import robeval
from robeval.attacks.base import perturbation_norms
from robeval.device import resolve_device
from robeval.results.tables import format_eps
from robeval.train import TrainSpec, train

PGD_GRID = [0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3]
PGD_STEPS, PGD_REL = 10, 0.25
DF_GRID = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, math.inf]
DF_STEPS, DF_OVERSHOOT, DF_CANDIDATES = 100, 0.02, 10

Curve = Callable[[], list[float]]


def budgeted_curve(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack_at: Callable[[float], torch.Tensor]) -> list[float]:
    """Robust accuracy per eps of PGD_GRID, one attack call per eps."""
    ok = predictions(model, x) == y
    accs = []
    for eps in PGD_GRID:
        x_adv = x if eps == 0 else attack_at(eps)
        accs.append(float((ok & (predictions(model, x_adv) == y)).float().mean()))
    return accs


def minimal_curve(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor) -> list[float]:
    """Robust accuracy per bound of DF_GRID, read off one set of minimal adversarials."""
    ok = predictions(model, x) == y
    fooled = predictions(model, x_adv) != y
    norms = perturbation_norms(x_adv - x, "l2").double()
    return [float((ok & ~(fooled & (norms <= eps))).float().mean()) for eps in DF_GRID]


@torch.no_grad()
def predictions(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(chunk).argmax(1) for chunk in x.split(500)])


def robeval_curves(checkpoint: Path, n: int, device: torch.device) -> dict[str, Curve]:
    """robeval's runner, as `robeval run` uses it (fresh output folder each call)."""

    def run(attack: str, grid: list[float]) -> list[float]:
        with tempfile.TemporaryDirectory() as out:
            df = robeval.evaluate(models=[str(checkpoint)], attacks=[attack], eps=grid, n=n, batch_size=n,
                                  device=str(device), out=out, seed=0)
        return df.sort_values("eps")["robust_acc"].tolist()

    return {
        "pgd": lambda: run(f"pgd:steps={PGD_STEPS},rel_stepsize={PGD_REL}", PGD_GRID),
        "deepfool": lambda: run(f"deepfool:steps={DF_STEPS},overshoot={DF_OVERSHOOT},candidates={DF_CANDIDATES}", DF_GRID),
    }


def foolbox_curves(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, Curve]:
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
    pgd = fb.attacks.LinfPGD(steps=PGD_STEPS, rel_stepsize=PGD_REL, random_start=True)
    deepfool = fb.attacks.L2DeepFoolAttack(steps=DF_STEPS, overshoot=DF_OVERSHOOT, candidates=DF_CANDIDATES)
    ok = predictions(model, x) == y

    def pgd_curve() -> list[float]:
        _, _, success = pgd(fmodel, x, y, epsilons=PGD_GRID)
        return [float((ok & ~s).float().mean()) for s in success]

    def deepfool_curve() -> list[float]:
        finite = [e for e in DF_GRID if math.isfinite(e)]
        raw, _, success = deepfool(fmodel, x, y, epsilons=finite + [None])
        return [float((ok & ~s).float().mean()) for s in success[:-1]] + minimal_curve(model, x, y, raw[-1])[-1:]

    return {"pgd": pgd_curve, "deepfool": deepfool_curve}


def torchattacks_curves(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, deepfool_n: int) -> dict[str, Curve]:
    """torchattacks' DeepFool takes a per-sample Jacobian per step (minutes per 100
    images on a CPU), so it runs on the first ``deepfool_n`` images only; its time is
    scaled to the full set in :func:`main` and its accuracies are over those images."""
    import torchattacks

    def pgd_at(eps: float) -> torch.Tensor:
        return torchattacks.PGD(model, eps=eps, alpha=PGD_REL * eps, steps=PGD_STEPS, random_start=True)(x, y)

    deepfool = torchattacks.DeepFool(model, steps=DF_STEPS, overshoot=DF_OVERSHOOT)
    xs, ys = x[:deepfool_n], y[:deepfool_n]
    return {
        "pgd": lambda: budgeted_curve(model, x, y, pgd_at),
        "deepfool": lambda: minimal_curve(model, xs, ys, deepfool(xs, ys)),
    }


def art_curves(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, Curve]:
    from art.attacks.evasion import DeepFool, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(
        model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
        clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu",
    )
    x_np, y_np = x.cpu().numpy(), y.cpu().numpy()

    def pgd_at(eps: float) -> torch.Tensor:
        attack = ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=PGD_REL * eps, max_iter=PGD_STEPS,
                                          batch_size=len(x), num_random_init=1, verbose=False)
        return torch.from_numpy(attack.generate(x_np, y=y_np)).to(device)

    deepfool = DeepFool(classifier, max_iter=DF_STEPS, epsilon=DF_OVERSHOOT, nb_grads=DF_CANDIDATES,
                        batch_size=len(x), verbose=False)
    return {
        "pgd": lambda: budgeted_curve(model, x, y, pgd_at),
        "deepfool": lambda: minimal_curve(model, x, y, torch.from_numpy(deepfool.generate(x_np)).to(device)),
    }


def timed(curve: Curve, device: torch.device) -> tuple[float, list[float]]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    accs = curve()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - tic, accs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--skip-slow", action="store_true", help="leave out torchattacks' DeepFool (per-sample Jacobians)")
    parser.add_argument("--torchattacks-deepfool-n", type=int, default=100,
                        help="images torchattacks' DeepFool runs on (its time is scaled to --n)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    checkpoint = out / "bench_mnist_cnn.pt"
    if not checkpoint.exists():
        train(TrainSpec(dataset="mnist-mini", arch="mnist-cnn", epochs=2, seed=0, device=str(device), out=str(checkpoint)))
    model = robeval.load_model(str(checkpoint), device=str(device))
    x, y = robeval.load_dataset("mnist-mini", split="test", n=args.n, seed=0)
    x, y = x.to(device), y.to(device)

    libraries: dict[str, Callable[[], dict[str, Curve]]] = {
        "robeval": lambda: robeval_curves(checkpoint, args.n, device),
        "foolbox": lambda: foolbox_curves(model, x, y, device),
        "torchattacks": lambda: torchattacks_curves(model, x, y, min(args.torchattacks_deepfool_n, args.n)),
        "ART": lambda: art_curves(model, x, y, device),
    }
    rows = []
    for library, make in libraries.items():
        try:
            curves = make()
        except ImportError:
            logging.warning("%s not installed (pip install -e '.[peers]'); skipped", library)
            continue
        for attack, curve in curves.items():
            if args.skip_slow and library == "torchattacks" and attack == "deepfool":
                continue
            if attack == "pgd":
                curve()  # warm-up (the runner's first call also loads and caches the data)
            seconds, accs = timed(curve, device)
            label = library
            if library == "torchattacks" and attack == "deepfool":
                subset = min(args.torchattacks_deepfool_n, args.n)
                seconds *= args.n / subset
                label = f"torchattacks (first {subset} images, time x{args.n / subset:g})"
            rows.append({"attack": attack, "library": label, "seconds": seconds, "robust_acc": accs})
            print(f"{attack:9s} {label:13s} {seconds:8.2f} s  " + " ".join(f"{a:.3f}" for a in accs), flush=True)

    frame = pd.DataFrame(rows)
    base = frame[frame.library == "robeval"].set_index("attack")["seconds"]
    frame["ratio_to_robeval"] = frame.apply(lambda r: r.seconds / base[r.attack], axis=1)
    md = [f"Accuracy-eps curves on {args.n} mnist-mini test images, mnist-cnn, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n"]
    for attack, grid, title in (("pgd", PGD_GRID, f"L-inf PGD-{PGD_STEPS}, step {PGD_REL} x eps, random start"),
                                ("deepfool", DF_GRID, f"DeepFool L2, {DF_STEPS} steps, overshoot {DF_OVERSHOOT}")):
        part = frame[frame.attack == attack]
        md += [f"### {title}", "", "| library | seconds | time / robeval | " + " | ".join(map(format_eps, grid)) + " |",
               "|---|---|---|" + "---|" * len(grid)]
        for _, r in part.iterrows():
            md.append(f"| {r.library} | {r.seconds:.2f} | {r.ratio_to_robeval:.2f} | "
                      + " | ".join(f"{100 * a:.1f}" for a in r.robust_acc) + " |")
        md.append("")
    frame["robust_acc"] = frame["robust_acc"].map(lambda accs: ";".join(f"{a:.4f}" for a in accs))
    frame.to_csv(out / "curve_vs_peers.csv", index=False)
    (out / "curve_vs_peers.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
