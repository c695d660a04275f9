"""PGD-10 (L-inf) in robeval vs foolbox, torchattacks and ART, in one process.

Same model (the paper's MNIST CNN, trained for a few seconds on the bundled MNIST
subset), same batch, same settings (eps 0.3, step 0.01, 10 steps, random start), same
threads. Reports the median wall time of several interleaved repeats and each peer's time
as a ratio to robeval's (ratio > 1: robeval is faster), plus the robust accuracy each
reaches as a sanity check. A second part times a whole accuracy-eps curve: robeval's
runner (which skips points already misclassified at a smaller eps) against foolbox's
multi-epsilon call, which attacks every point at every eps.

Run: ``make bench`` (installs the `peers` extra), or
``python benchmarks/pgd_vs_peers.py [--batch 256] [--repeats 5] [--device cpu]``.
Writes results/benchmarks/pgd_vs_peers.{csv,md}.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import robeval
from robeval.device import resolve_device
from robeval.train import TrainSpec, train

EPS, STEP, STEPS = 0.3, 0.01, 10


def make_runners(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, Callable[[], torch.Tensor]]:
    """Zero-argument callables, each running PGD-10 on (x, y) and returning x_adv."""
    ours = robeval.attacks.get("pgd", steps=STEPS, abs_stepsize=STEP, random_start=True)
    runners: dict[str, Callable[[], torch.Tensor]] = {
        "robeval": lambda: ours(model, x, y, eps=EPS, generator=torch.Generator().manual_seed(0)),
    }
    try:
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
        fb_pgd = fb.attacks.LinfPGD(steps=STEPS, abs_stepsize=STEP, random_start=True)
        runners["foolbox"] = lambda: fb_pgd(fmodel, x, y, epsilons=EPS)[1]
    except ImportError:
        logging.warning("foolbox not installed; skipped")
    try:
        import torchattacks

        ta_pgd = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=STEPS, random_start=True)
        runners["torchattacks"] = lambda: ta_pgd(x, y)
    except ImportError:
        logging.warning("torchattacks not installed (pip install -e '.[peers]'); skipped")
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        classifier = PyTorchClassifier(
            model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
            nb_classes=10, clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu",
        )
        art_pgd = ProjectedGradientDescent(classifier, norm="inf", eps=EPS, eps_step=STEP, max_iter=STEPS,
                                           batch_size=len(x), num_random_init=1, verbose=False)
        x_np = x.cpu().numpy()
        y_np = y.cpu().numpy()
        runners["ART"] = lambda: torch.from_numpy(art_pgd.generate(x_np, y=y_np)).to(device)
    except ImportError:
        logging.warning("adversarial-robustness-toolbox not installed (pip install -e '.[peers]'); skipped")
    return runners


def time_interleaved(runners: dict[str, Callable[[], torch.Tensor]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Run each callable once to warm up, then ``repeats`` rounds in rotating order."""
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        runners[name]()
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            if device.type == "cuda":
                torch.cuda.synchronize()
            tic = time.perf_counter()
            runners[name]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - tic)
    return times


def fwd_bwd_ms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    """Median time of one forward+backward to the input (the unit cost of a PGD step)."""
    samples = []
    for _ in range(repeats + 1):
        tic = time.perf_counter()
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
        samples.append(time.perf_counter() - tic)
    return 1000 * statistics.median(samples[1:])


def curve_benchmark(checkpoint: Path, model: torch.nn.Module, device: torch.device, n: int) -> list[dict]:
    """Whole accuracy-eps curve, 6 eps: robeval's runner vs foolbox's multi-epsilon call."""
    grid = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]
    rows = []
    with tempfile.TemporaryDirectory() as out:
        tic = time.perf_counter()
        df = robeval.evaluate(models=[str(checkpoint)], attacks=[f"pgd:steps={STEPS},abs_stepsize={STEP}"],
                              eps=grid, n=n, batch_size=n, device=str(device), out=out)
        ours = time.perf_counter() - tic
    rows.append({"library": "robeval (runner)", "seconds": ours,
                 "robust_acc": ";".join(f"{a:.3f}" for a in df.sort_values("eps")["robust_acc"])})
    try:
        import foolbox as fb
    except ImportError:
        return rows
    x, y = robeval.load_dataset("mnist-mini", split="test", n=n, seed=0)
    x, y = x.to(device), y.to(device)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
    attack = fb.attacks.LinfPGD(steps=STEPS, abs_stepsize=STEP, random_start=True)
    tic = time.perf_counter()
    _, _, success = attack(fmodel, x, y, epsilons=grid)
    theirs = time.perf_counter() - tic
    rows.append({"library": "foolbox (epsilons list)", "seconds": theirs,
                 "robust_acc": ";".join(f"{1 - float(s.float().mean()):.3f}" for s in success)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    checkpoint = out / "bench_mnist_cnn.pt"
    if not checkpoint.exists():
        train(TrainSpec(dataset="mnist-mini", arch="mnist-cnn", epochs=2, seed=0, device=str(device), out=str(checkpoint)))
    model = robeval.load_model(str(checkpoint), device=str(device))
    x, y = robeval.load_dataset("mnist-mini", split="test", n=args.batch, seed=0)
    x, y = x.to(device), y.to(device)

    runners = make_runners(model, x, y, device)
    times = time_interleaved(runners, args.repeats, device)
    unit = fwd_bwd_ms(model, x, y, 2 * args.repeats)
    base = statistics.median(times["robeval"])
    lines = ["library,median_s,ratio_to_robeval,steps_per_fwd_bwd,robust_acc"]
    md = [f"PGD-10 L-inf (eps {EPS}, step {STEP}, random start), batch {args.batch}, {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; fwd+bwd {unit:.1f} ms\n",
          "| library | median s | time / robeval | time / (10 x fwd+bwd) | robust acc |", "|---|---|---|---|---|"]
    for name, samples in times.items():
        med = statistics.median(samples)
        x_adv = runners[name]()
        with torch.no_grad():
            acc = float((model(x_adv).argmax(1) == y).float().mean())
        lines.append(f"{name},{med:.4f},{med / base:.3f},{1000 * med / (STEPS * unit):.3f},{acc:.4f}")
        md.append(f"| {name} | {med:.3f} | {med / base:.2f} | {1000 * med / (STEPS * unit):.2f} | {acc:.3f} |")

    curve = curve_benchmark(checkpoint, model, device, n=500)
    md += ["", "Accuracy-eps curve, 6 eps x 500 points, PGD-10:", "",
           "| library | seconds | robust acc per eps |", "|---|---|---|"]
    md += [f"| {r['library']} | {r['seconds']:.2f} | {r['robust_acc']} |" for r in curve]
    (out / "pgd_vs_peers.csv").write_text("\n".join(lines) + "\n")
    (out / "pgd_vs_peers.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
