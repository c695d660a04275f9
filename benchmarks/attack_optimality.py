"""Minimal-norm attacks at the frontier (issue 15): robeval's against adv-lib, foolbox,
torchattacks and ART, AttackBench-style, side by side in one process.

Every attack runs unbounded on the same clean-correct test points of one model. A point's
distance is the norm of its adversarial, or ``inf`` where the attack found none. The
*envelope* is the per-point smallest distance over every attack of the table (the best
curve), ``eps_0`` its largest finite value. Two scores against it:

* ``optimality``: AttackBench's local optimality (Cinà, Rony, Pintor et al., AAAI 2025,
  Eq. 5), ``(rho eps_0 - AUREC_attack) / (rho eps_0 - AUREC_best)``, the area *above*
  the attack's robust-accuracy curve over [0, eps_0] relative to the envelope's (here
  over the clean-correct points, ``rho = 1``): 1 = the envelope on every point, 0 = no
  point broken. Computed by ``optimality`` below from the definition (attackbenchlib
  2.0.2 needs wandb and pins geotorch<0.4, which robustbench's zoo extra does not allow).
* ``auc_ratio``: the area *under* the envelope's curve divided by the area under the
  attack's, ``sum min(d*, eps_0) / sum min(d, eps_0)``, the reading of issue 15.

Also: failures (points left unbroken), the median distance, forward and backward passes
per point (robeval's :class:`~robeval.eval.counting.PassCounter` around the model, so every
library is counted the same way) and seconds (one run, no warm-up; the 2-core machine is
shared, so compare passes rather than seconds).

Run: ``python benchmarks/attack_optimality.py [--models A.pt,B.pt] [--n 300]
[--norms l2,linf] [--skip-slow]``. Models default to the demo's mnist-cnn and the PGD-AT
mnist-cnn of ``results/paper-runs/issue15/`` when they exist. Writes
``results/benchmarks/attack_optimality.{csv,md}``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import robeval
from robeval.attacks import advlib
from robeval.eval.counting import PassCounter
from robeval.eval.runner import eval_mode

DEFAULT_MODELS = ("results/demo/mnist_cnn.pt", "results/paper-runs/issue15/mnist_pgdat.pt")
Run = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
# The README attack guide's fast and tight curves: DeepFool, then an FMN warm-started from
# its answers, with a larger first step than adv-lib's alpha_init=1. FAST was chosen on the
# first 100 test digits and checked on the next 200, TIGHT chosen on the first 300 and
# checked on the next 300 (benchmarks/README.md).
FAST_MEMBERS = "deepfool+fmn/steps=25/alpha_init=10"
TIGHT_MEMBERS = "deepfool+fmn/steps=100/alpha_init=30"


@dataclass(frozen=True)
class Entry:
    library: str
    attack: str
    run: Run
    slow: bool = False


def robeval_entry(spec: str, slow: bool = False) -> Entry:
    attack = robeval.attacks.get(spec)
    return Entry("robeval", spec, lambda m, x, y: attack(m, x, y, eps=math.inf,
                                                         generator=torch.Generator().manual_seed(0)), slow)


def advlib_entries(norm: str) -> list[Entry]:
    lib = advlib.library
    p = advlib.LP[norm]
    entries = [Entry("adv-lib", "fmn, 100 steps (defaults)", lambda m, x, y: lib("fmn")(m, x, y, norm=p, steps=100))]
    if norm == "l2":
        entries = [
            Entry("adv-lib", "ddn, 100 steps", lambda m, x, y: lib("ddn")(m, x, y, steps=100)),
            *entries,
            Entry("adv-lib", "alma, 1000 steps (init_lr_distance=1)", lambda m, x, y: lib("alma")(
                m, x, y, penalty=lib("all_penalties", "utils.lagrangian_penalties")["P2"], num_steps=1000,
                init_lr_distance=1.0), slow=True),
        ]
    entries.append(Entry("adv-lib", "fab, 100 steps", lambda m, x, y: lib("fab")(m, x, y, norm=p, n_iter=100)))
    return entries


def foolbox_entries(norm: str) -> list[Entry]:
    import foolbox as fb

    def run(attack: object) -> Run:
        def call(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            _, clipped, _ = attack(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=None)  # type: ignore[operator]
            return clipped
        return call

    if norm == "l2":
        return [Entry("foolbox", "L2DeepFoolAttack (50 steps)", run(fb.attacks.L2DeepFoolAttack())),
                Entry("foolbox", "DDNAttack (100 steps)", run(fb.attacks.DDNAttack(steps=100))),
                Entry("foolbox", "L2FMNAttack (100 steps)", run(fb.attacks.L2FMNAttack(steps=100)))]
    return [Entry("foolbox", "LinfDeepFoolAttack (50 steps)", run(fb.attacks.LinfDeepFoolAttack())),
            Entry("foolbox", "LInfFMNAttack (100 steps)", run(fb.attacks.LInfFMNAttack(steps=100)))]


def peer_entries(norm: str) -> list[Entry]:
    """torchattacks and ART (the `peers` extra), or one row saying they are missing."""
    entries = []
    try:
        import torchattacks as ta

        if norm == "l2":
            entries.append(Entry("torchattacks", "DeepFool (50 steps)",
                                 lambda m, x, y: ta.DeepFool(m, steps=50, overshoot=0.02)(x, y), slow=True))
        # torchattacks' FAB keeps only adversarials inside its eps (default 8/255): unbounded here
        entries.append(Entry("torchattacks", "FAB (100 steps, eps=inf)", lambda m, x, y: ta.FAB(
            m, norm="L2" if norm == "l2" else "Linf", eps=math.inf, steps=100, n_classes=10)(x, y), slow=True))
    except ImportError:
        entries.append(Entry("torchattacks", "not installed (pip install '.[peers]')", None))  # type: ignore[arg-type]
    try:
        from art.attacks.evasion import DeepFool
        from art.estimators.classification import PyTorchClassifier

        def art_deepfool(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            clf = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                    nb_classes=10, clip_values=(0.0, 1.0))
            return torch.from_numpy(DeepFool(clf, max_iter=50, epsilon=0.02, verbose=False).generate(x.numpy()))

        if norm == "l2":
            entries.append(Entry("ART", "DeepFool (50 steps)", art_deepfool))
    except ImportError:
        entries.append(Entry("ART", "not installed (pip install '.[peers]')", None))  # type: ignore[arg-type]
    return entries


def robeval_entries(norm: str) -> list[Entry]:
    if norm == "l2":
        return [robeval_entry("deepfool"), robeval_entry("cw:steps=200,binary_search_steps=5", slow=True),
                robeval_entry("ddn"), robeval_entry("ddn:steps=50"), robeval_entry("fmn"),
                robeval_entry("fmn:steps=50"), robeval_entry("fmn:grow_eps=false"),
                robeval_entry("ensemble:members=deepfool+ddn+fmn"),
                robeval_entry("fmn:alpha_init=10"),
                robeval_entry("ensemble:members=deepfool+fmn/steps=30,warm_start=true"),
                robeval_entry(f"ensemble:members={FAST_MEMBERS},warm_start=true"),
                robeval_entry(f"ensemble:members={TIGHT_MEMBERS},warm_start=true")]
    return [robeval_entry("deepfool:norm=linf"), robeval_entry("fmn:norm=linf"),
            robeval_entry("fmn:norm=linf,steps=50"), robeval_entry("fmn:norm=linf,grow_eps=false"),
            robeval_entry("ensemble:members=deepfool+fmn,norm=linf"),
            robeval_entry("fmn:norm=linf,alpha_init=10"),
            robeval_entry("ensemble:members=deepfool+fmn/steps=30,norm=linf,warm_start=true"),
            robeval_entry(f"ensemble:members={FAST_MEMBERS},norm=linf,warm_start=true"),
            robeval_entry(f"ensemble:members={TIGHT_MEMBERS},norm=linf,warm_start=true")]


def measure(entry: Entry, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str) -> dict:
    """One attack: its per-point distances (``inf`` where it failed), passes and seconds."""
    counter = PassCounter(model).eval()  # the model itself is in eval mode already
    tic = time.perf_counter()
    x_adv = entry.run(counter, x, y).detach()
    seconds = time.perf_counter() - tic
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    inside = (x_adv.min() >= -1e-6) & (x_adv.max() <= 1 + 1e-6)
    distances = torch.where(fooled & inside, advlib.lp_norms(x_adv - x, norm).double(), math.inf)
    return {"distances": distances.numpy(), "seconds": seconds, "forward": counter.counts.forward / len(x),
            "backward": counter.counts.backward / len(x)}


def optimality(distances: np.ndarray, best: np.ndarray) -> tuple[float, float]:
    """AttackBench's local optimality (Eq. 5) and the ratio of areas under the curves."""
    eps_0 = float(best[np.isfinite(best)].max())
    above = lambda d: float(np.sum(eps_0 - np.minimum(d, eps_0)))  # noqa: E731
    under = lambda d: float(np.sum(np.minimum(d, eps_0)))  # noqa: E731
    return above(distances) / above(best), under(best) / under(distances)


def table(model_path: str, norm: str, n: int, skip_slow: bool) -> pd.DataFrame:
    model = robeval.load_model(model_path)
    x, y = robeval.load_dataset("mnist-mini", split="test", n=n, seed=0)
    with eval_mode(model), torch.no_grad():
        ok = model(x).argmax(1) == y
    x, y = x[ok], y[ok]
    entries = robeval_entries(norm) + advlib_entries(norm) + foolbox_entries(norm) + peer_entries(norm)
    rows = []
    with eval_mode(model):
        for entry in entries:
            if entry.run is None or (skip_slow and entry.slow):
                rows.append({"library": entry.library, "attack": entry.attack + (" (skipped: slow)" if entry.run
                                                                                  else "")})
                continue
            print(f"{Path(model_path).stem} {norm} {entry.library} {entry.attack} ...", flush=True)
            rows.append({"library": entry.library, "attack": entry.attack, **measure(entry, model, x, y, norm)})
    measured = [r for r in rows if "distances" in r]
    best = np.min(np.stack([r["distances"] for r in measured]), axis=0)
    for r in measured:
        d = r.pop("distances")
        r["optimality"], r["auc_ratio"] = optimality(d, best)
        r["failed_pct"] = 100 * float(np.mean(~np.isfinite(d)))
        r["median"] = float(np.median(d))
    frame = pd.DataFrame(rows)
    frame.insert(0, "norm", norm)
    frame.insert(0, "model", Path(model_path).stem)
    frame["points"] = len(x)
    return frame


def markdown(frame: pd.DataFrame) -> str:
    """A Markdown table (3 significant digits; empty cells for attacks not run)."""
    def cell(value: object) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(m for m in DEFAULT_MODELS if Path(m).exists()))
    parser.add_argument("--n", type=int, default=300, help="test digits (the clean-correct ones are attacked)")
    parser.add_argument("--norms", default="l2,linf")
    parser.add_argument("--skip-slow", action="store_true", help="skip C&W, ALMA-1000 and torchattacks")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for missing in (m for m in DEFAULT_MODELS if not Path(m).exists()):
        print(f"note: {missing} is missing, so its tables are left out; make it with the commands in "
              "benchmarks/README.md (attack_optimality.py), or pass --models")
    if not args.models:
        raise SystemExit("error: no model to attack; run `make demo` (results/demo/mnist_cnn.pt) or pass --models")
    frames = [table(m, norm, args.n, args.skip_slow) for m in args.models.split(",") if m
              for norm in args.norms.split(",")]
    result = pd.concat(frames, ignore_index=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.to_csv(out / "attack_optimality.csv", index=False)
    columns = ["model", "norm", "library", "attack", "optimality", "auc_ratio", "median", "failed_pct", "forward",
               "backward", "seconds", "points"]
    text = markdown(result.reindex(columns=columns))
    (out / "attack_optimality.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
