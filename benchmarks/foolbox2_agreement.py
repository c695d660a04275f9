"""Per-point agreement of robeval's ``preset=foolbox2`` attacks with Foolbox 2.4.0 itself.

The smooth-kernels paper (Table 1) ran "the default parameters in Foolbox" and counted
each failed search as robustness; robeval's ``NAME:preset=foolbox2`` re-implements
Foolbox 2.4.0's defaults and searches (:mod:`robeval.attacks.presets`). This script runs
both on the same small model and the same test digits and reports, per attack, how often
the two agree on success (a failed search counts as robust in both), the robust accuracy
each gives, and how close the perturbation sizes are where both succeed.

Foolbox 2.4 cannot share robeval's environment (robeval needs foolbox 3), so it runs in
its own virtual environment, in a subprocess of this script that imports only torch,
numpy and foolbox: the model travels as TorchScript, the points as a tensor file (under
``results/paper-runs/foolbox2-agreement/``). Set that environment up once with

    python3 -m venv /work/fb24
    /work/fb24/bin/pip install foolbox==2.4.0 torch==2.14.1 "numpy<2"

(numpy < 2 keeps the value-based casting Foolbox 2.4 was written for; on Python >= 3.10
the Foolbox side of this script restores the ``collections.Iterable`` alias it imports).

Run: ``python benchmarks/foolbox2_agreement.py [--n 128] [--foolbox-python
/work/fb24/bin/python] [--attacks fgsm,pgd,...]``. Writes
``results/benchmarks/foolbox2_agreement.{md,csv}``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "results" / "paper-runs" / "foolbox2-agreement"
# robeval spec -> (Foolbox 2.4 attack class, the norm its size is compared in)
ATTACKS: dict[str, tuple[str, str, str]] = {
    "fgsm": ("fgsm:preset=foolbox2", "FGSM", "linf"),
    "pgd": ("pgd:preset=foolbox2", "ProjectedGradientDescentAttack", "linf"),
    "deepfool-l2": ("deepfool:preset=foolbox2", "DeepFoolL2Attack", "l2"),
    "deepfool-linf": ("deepfool:preset=foolbox2,norm=linf", "DeepFoolLinfinityAttack", "linf"),
    "cw": ("cw:preset=foolbox2", "CarliniWagnerL2Attack", "l2"),
    "salt-and-pepper": ("salt-and-pepper:preset=foolbox2", "SaltAndPepperNoiseAttack", "l2"),
    "adef": ("adef:preset=foolbox2", "ADefAttack", "l2"),
}


# --- the Foolbox 2.4 side (runs under the other environment's python) -----------------


def foolbox_side(work: Path, names: list[str], seed: int, sequential: list[str], cw_n: int) -> None:
    """Run Foolbox 2.4's attacks at their defaults; save each one's adversarials (NaN
    where the search failed) and wall time; the attacks in ``sequential`` also one point
    at a time (``foolbox.batching.run_sequential``)."""
    import collections
    import collections.abc

    for alias in ("Iterable", "Mapping", "Sequence", "Callable"):  # removed in Python 3.10
        if not hasattr(collections, alias):
            setattr(collections, alias, getattr(collections.abc, alias))
    import foolbox

    assert foolbox.__version__.startswith("2.4"), foolbox.__version__
    torch.set_num_threads(1)
    model = torch.jit.load(str(work / "model.pt")).eval()
    data = torch.load(work / "points.pt")
    x, y = data["x"].numpy(), data["y"].numpy()
    fmodel = foolbox.models.PyTorchModel(model, bounds=(0, 1), num_classes=int(data["classes"]))
    out: dict[str, object] = {"version": foolbox.__version__, "numpy": np.__version__}
    for name in names:
        cls = getattr(foolbox.attacks, ATTACKS[name][1])
        m = cw_n if name == "cw" else len(x)
        foolbox.set_seeds(seed)
        start = time.perf_counter()
        adv = cls(fmodel)(x[:m], y[:m], unpack=True)  # batched: foolbox.batching.run_parallel
        out[name] = {"seconds": time.perf_counter() - start}
        np.save(work / f"foolbox-{name}.npy", adv)
        if name in sequential:  # one point per model call, another random stream: Foolbox's own noise floor
            foolbox.set_seeds(seed + 1)
            advs = foolbox.batching.run_sequential(cls, fmodel, foolbox.criteria.Misclassification(), x[:m], y[:m])
            np.save(work / f"foolbox-seq-{name}.npy",
                    np.stack([a.perturbed if a.perturbed is not None else np.full_like(u, np.nan)
                              for a, u in zip(advs, x[:m])]))
        print(f"foolbox {name}: {out[name]['seconds']:.1f} s", flush=True)
    (work / "foolbox.json").write_text(json.dumps(out))


# --- the robeval side -------------------------------------------------------------------


def prepare(work: Path, n: int, seed: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN trained on digits (the attack tests' model), saved as TorchScript, and
    ``n`` seeded test digits."""
    import robeval
    from robeval.train import TrainSpec, train

    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / "digits-small-cnn.pt"
    if not checkpoint.exists():
        train(TrainSpec(dataset="digits", arch="small-cnn", epochs=8, batch_size=32, lr=3e-3, seed=0,
                        device="cpu", out=str(checkpoint)))
    model = robeval.load_model(str(checkpoint)).eval()
    x, y = robeval.load_dataset("digits", split="test", n=n, seed=seed)
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    torch.jit.trace(model, x[:2]).save(str(work / "model.pt"))
    torch.save({"x": x, "y": y, "classes": classes}, work / "points.pt")
    return model, x, y


def run_robeval(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str], seed: int, cw_n: int
                ) -> dict[str, tuple[torch.Tensor, float]]:
    import robeval

    out = {}
    for name in names:
        attack = robeval.attacks.get(ATTACKS[name][0])
        m = cw_n if name == "cw" else len(x)
        start = time.perf_counter()
        result = attack(model, x[:m], y[:m], eps=math.inf, generator=torch.Generator().manual_seed(seed))
        out[name] = (getattr(result, "x_adv", result).detach(), time.perf_counter() - start)
        print(f"robeval {name}: {out[name][1]:.1f} s", flush=True)
        torch.save(out[name][0], WORK / f"robeval-{name}.pt")
    return out


def sizes(x: torch.Tensor, x_adv: torch.Tensor, norm: str) -> np.ndarray:
    delta = (x_adv - x).flatten(1).double()
    if norm == "linf":
        return delta.abs().amax(dim=1).numpy()
    return delta.norm(dim=1).numpy()


def compare(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ours: torch.Tensor, theirs: np.ndarray,
            norm: str) -> dict[str, float]:
    """Success per point (a NaN row from Foolbox is a failed search), agreement, robust
    accuracies and the sizes where both succeed (Foolbox's adversarials re-checked here)."""
    failed = np.isnan(theirs.reshape(len(theirs), -1)).any(axis=1)
    fb = torch.as_tensor(np.where(np.isnan(theirs), x.numpy(), theirs), dtype=x.dtype)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        ours_ok = (model(ours).argmax(1) != y) & clean
        fb_ok = (model(fb).argmax(1) != y) & clean & torch.as_tensor(~failed)
    c = clean.numpy()
    a, b = ours_ok.numpy()[c], fb_ok.numpy()[c]
    both = a & b
    s_ours, s_fb = sizes(x, ours, norm)[c][both], sizes(x, fb, norm)[c][both]
    rel = np.abs(s_ours - s_fb) / np.maximum(s_fb, 1e-12)
    same = (ours - fb).flatten(1).abs().amax(dim=1).numpy()[c][both] <= 1e-5
    return {
        "points": int(c.sum()), "agree": float((a == b).mean()), "this_only": int((a & ~b).sum()),
        "foolbox_only": int((~a & b).sum()), "robust_this": float(1 - a.mean()), "robust_foolbox": float(1 - b.mean()),
        "robust_foolbox_own_verdict": float(failed[c].mean()),
        "median_size_this": float(np.median(s_ours)) if both.any() else math.nan,
        "median_size_foolbox": float(np.median(s_fb)) if both.any() else math.nan,
        "median_rel_diff": float(np.median(rel)) if both.any() else math.nan,
        "within_1pct": float((rel <= 0.01).mean()) if both.any() else math.nan,
        "identical": float(same.mean()) if both.any() else math.nan,
    }


def write_report(rows: list[dict[str, object]], meta: dict[str, object], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0])
    with (out / "foolbox2_agreement.csv").open("w") as f:
        f.write(",".join(keys) + "\n")
        for row in rows:
            f.write(",".join(str(row[k]) for k in keys) + "\n")
    header = ("| attack | versus Foolbox 2.4 batched | norm | points | agree | this only | foolbox only | robust this "
              "| robust foolbox | robust foolbox, its own verdict | median size this | median size foolbox "
              "| median rel. diff | within 1 % | identical | s robeval | s foolbox |")
    lines = [f"# robeval preset=foolbox2 vs Foolbox {meta['foolbox']}", "",
             f"{meta['n']} digits test points (C&W: the first {meta['cw_n']}; seed {meta['seed']}), small-cnn trained 8 epochs on digits; "
             f"torch {meta['torch']}, Foolbox side numpy {meta['numpy']}, 1 thread each. Success = misclassified "
             "(a failed search counts as robust in both); sizes (L-inf or L2 of x_adv - x) over the points both fooled.",
             "Rows `foolbox sequential`: Foolbox 2.4 run one point per model call (`run_sequential`, another "
             "random stream) against its own batched run, the floor set by float rounding (and, for salt and "
             "pepper, by the random draws). Success is re-checked here with one forward pass of all points; "
             "`robust foolbox, its own verdict` counts the points Foolbox returned no adversarial for. The two differ "
             "where an adversarial lies within float rounding of the decision boundary (Foolbox 2.4's DeepFool "
             "overshoots each step by 5 % of that step only, so its last step, and its margin, are tiny).",
             "", header, "|" + "---|" * 17]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[k]) for k in keys) + " |")
    (out / "foolbox2_agreement.md").write_text("\n".join(lines) + "\n")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="test digits (100-200 is the intended size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated subset of {', '.join(ATTACKS)}")
    parser.add_argument("--foolbox-python", default="/work/fb24/bin/python",
                        help="python of an environment with foolbox==2.4.0 (see the module docstring)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    parser.add_argument("--noise-floor", default=",".join(a for a in ATTACKS if a != "cw"),
                        help="attacks Foolbox also runs one point at a time, to measure its agreement with itself "
                             "(C&W's sequential run is left out by default: its per-point loop takes the longest)")
    parser.add_argument("--cw-n", type=int, default=32,
                        help="C&W runs on the first CW_N points only (5 x 1,000 Adam steps per point)")
    parser.add_argument("--foolbox-side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = [a for a in args.attacks.split(",") if a]
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        sys.exit(f"unknown attacks {unknown}; choose from {', '.join(ATTACKS)}")
    if args.foolbox_side:
        foolbox_side(WORK, names, args.seed, args.noise_floor.split(","), min(args.cw_n, args.n))
        return
    sys.path.insert(0, str(ROOT))
    from robeval.threads import configure_threads

    configure_threads(1)
    model, x, y = prepare(WORK, args.n, args.seed)
    cmd = [args.foolbox_python, __file__, "--foolbox-side", "--attacks", ",".join(names), "--seed", str(args.seed)]
    cmd += ["--noise-floor", args.noise_floor, "--cw-n", str(args.cw_n), "--n", str(args.n)]
    subprocess.run(cmd, check=True)
    theirs = json.loads((WORK / "foolbox.json").read_text())
    cw_n = min(args.cw_n, args.n)
    ours = run_robeval(model, x, y, names, args.seed, cw_n)
    rows = []
    for name in names:
        norm, batched = ATTACKS[name][2], np.load(WORK / f"foolbox-{name}.npy")
        m = len(batched)
        stats = compare(model, x[:m], y[:m], ours[name][0], batched, norm)
        rows.append({"attack": ATTACKS[name][0], "versus": "robeval", "norm": norm, **stats,
                     "seconds_robeval": round(ours[name][1], 1), "seconds_foolbox": round(theirs[name]["seconds"], 1)})
        floor = WORK / f"foolbox-seq-{name}.npy"
        if name in args.noise_floor.split(",") and floor.exists():
            sequential = torch.as_tensor(np.nan_to_num(np.load(floor), nan=0.0)).to(x.dtype)
            failed = torch.as_tensor(np.isnan(np.load(floor).reshape(m, -1)).any(axis=1))
            sequential[failed] = x[:m][failed]
            stats = compare(model, x[:m], y[:m], sequential, batched, norm)
            rows.append({"attack": ATTACKS[name][1], "versus": "foolbox sequential", "norm": norm, **stats,
                         "seconds_robeval": math.nan, "seconds_foolbox": math.nan})
    meta = {"foolbox": theirs["version"], "numpy": theirs["numpy"], "torch": torch.__version__, "n": args.n,
            "cw_n": cw_n, "seed": args.seed}
    write_report(rows, meta, args.out)
    print((args.out / "foolbox2_agreement.md").read_text())


if __name__ == "__main__":
    main()
