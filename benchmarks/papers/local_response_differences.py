"""Local-response-differences paper ("Dissecting local properties of adversarial
examples", anonymous ICLR submission; shared/papers/local-response-differences.txt):
Tables 1-5, Figs. 1, 2, 5 and 6 side by side with the published numbers.

Trains a standard (STD, cross-entropy) and adversarially trained (ADV, PGD-10 with a
random start, steps of eps/4: the paper's 8/255 and 2/255) ResNet-18 with the paper's
optimiser (Sec. 3, "Setup": SGD, momentum 0.9, weight decay 5e-4, lr 0.1 divided by 10 at
half and three quarters of training), plus ADV models at other weight decays (Sec. 4.4),
then on a seeded test subset:

- accuracies: clean, PGD-20 (steps of eps/8: the paper's 1/255, random start, last
  iterate) and FGSM through ``robeval.evaluate``, with its attack-failure indicators;
- Tables 1-5: per image, the maximum and total absolute difference between a layer's
  responses to the natural image and to its adversarial (``robeval.analysis.responses``;
  Conv 1, Layer 0 = the maps before ``layer1``, Layer 1..4), for STD vs ADV (Table 1),
  successful vs failed FGSM attacks on STD (Table 2) and PGD-20/FGSM on ADV (Table 4),
  own vs transferred adversarials on ADV (Table 3) and on STD (Table 5);
- Fig. 1 and Fig. 6: accuracy on low-/high-pass filtered and frequency-swapped images
  against the radius (``robeval.analysis.frequency``, unclipped as in the paper);
- Fig. 2: mean log-amplitude spectra of natural and adversarial images and their
  difference (``robeval.analysis.spectrum``);
- Fig. 5 (final epoch only): parameters' quadratic sum, Max differences and accuracies
  against the weight decay.

``--scale cpu`` (default): the bundled MNIST subset (``mnist-mini``, 2,000 training
digits, 500 test digits analysed), ResNet-18 of base width 4 (CIFAR stem), 3 epochs of
batch 32, eps 0.1, weight decays 1e-4, 5e-4 and 1e-3. ``--scale paper``: CIFAR-10 from
``--data-root``, ResNet-18 (width 64), 100 epochs, eps 8/255, weight decays 1e-4, 3e-4,
5e-4, 7e-4 and 1e-3, the whole test set (Fig. 2: 1,000 images); batch 128 with random
crop and flip, which the paper does not state: those of Pang et al. (2021), whose
settings it follows. At ``--scale cpu`` also STD's PGD-20 accuracy at the paper's 8/255.
``--dry-run`` builds and checks every training spec and attack and prints the plan.

Writes results/papers/local-response-differences.{md,csv} and -*.png; checkpoints and the
evaluation folder go to results/paper-runs/local-response-differences/ (checkpoints
trained before with the same settings are kept; delete the folder to retrain).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Row, Timer, log, parse_args, pct, write_report  # noqa: E402

import robeval  # noqa: E402
from robeval.analysis.frequency import default_radii, frequency_sweep, plot_frequency_figure  # noqa: E402
from robeval.analysis.inputs import make_adversarials  # noqa: E402
from robeval.analysis.responses import (  # noqa: E402
    batched_response_samples,
    resolve_layers,
    response_summary,
)
from robeval.analysis.spectrum import compare_spectra, plot_spectra, radial_band_mean  # noqa: E402
from robeval.attacks import get as get_attack  # noqa: E402
from robeval.device import resolve_device  # noqa: E402
from robeval.errors import RobevalError  # noqa: E402
from robeval.models import resolve_arch  # noqa: E402
from robeval.params import parse_number  # noqa: E402
from robeval.results.plots import save_figure  # noqa: E402
from robeval.train import TrainSpec  # noqa: E402
from robeval.train.objectives import get_objective  # noqa: E402
from robeval.train.sweep import parse_axis  # noqa: E402
from robeval.train.sweep_run import SweepSpec, plan, run_sweep  # noqa: E402

PAPER = "local-response-differences"
RUNS = ROOT / "results" / "paper-runs" / PAPER
LAYERS = ("conv1", "layer0", "layer1", "layer2", "layer3", "layer4")
LAYER_NAMES = dict(zip(LAYERS, ("Conv 1", "Layer 0", "Layer 1", "Layer 2", "Layer 3", "Layer 4"), strict=True))
MAIN_WD = 5e-4  # Sec. 3 "Setup", following Pang et al. 2021
PAPER_EPS = "8/255"

# The published numbers, quoted as printed: per statistic, (left, right) per layer Conv 1 .. Layer 4.
TABLES = {
    "Table 1": ("STD / ADV, all test images, own PGD-20 adversarials", {
        "Max": (("0.12", "0.05"), ("0.30", "0.15"), ("1.92", "0.52"), ("1.46", "0.36"), ("1.45", "0.41"),
                ("3.72", "1.02")),
        "Total": (("370", "556"), ("443", "489"), ("4276", "1246"), ("2093", "430"), ("581", "164"),
                  ("2624", "526"))}),
    "Table 2": ("STD, FGSM, successful / failed attacks among correctly classified images", {
        "Max": (("0.16", "0.15"), ("0.379", "0.378"), ("2.50", "2.51"), ("1.38", "1.37"), ("1.16", "1.08"),
                ("2.11", "1.38")),
        "Total": (("558", "554"), ("676", "669"), ("5955", "6001"), ("2363", "2339"), ("522", "494"),
                  ("1481", "757"))}),
    "Table 3": ("ADV, own / transferred (made on STD) PGD-20 adversarials", {
        "Max": (("0.05", "0.04"), ("0.15", "0.12"), ("0.52", "0.44"), ("0.36", "0.14"), ("0.41", "0.08"),
                ("1.02", "0.10")),
        "Total": (("556", "321"), ("489", "302"), ("1246", "767"), ("430", "138"), ("164", "38"),
                  ("526", "57"))}),
    "Table 4": ("ADV, successful / failed attacks among correctly classified images", {
        "Max (PGD-20)": (("0.048", "0.047"), ("0.15", "0.15"), ("0.51", "0.53"), ("0.36", "0.37"),
                         ("0.40", "0.42"), ("1.10", "0.99")),
        "Total (PGD-20)": (("557", "555"), ("488", "490"), ("1264", "1242"), ("445", "420"), ("169", "160"),
                           ("578", "491")),
        "Max (FGSM)": (("0.048", "0.047"), ("0.16", "0.15"), ("0.53", "0.54"), ("0.35", "0.36"),
                       ("0.37", "0.38"), ("0.90", "0.86")),
        "Total (FGSM)": (("580", "576"), ("510", "511"), ("1292", "1272"), ("436", "414"), ("161", "153"),
                         ("478", "428"))}),
    "Table 5": ("STD, own / transferred (made on ADV) PGD-20 adversarials", {
        "Max": (("0.12", "0.15"), ("0.30", "0.29"), ("1.92", "0.85"), ("1.46", "0.88"), ("1.45", "0.67"),
                ("3.72", "0.88")),
        "Total": (("370", "532"), ("443", "509"), ("4276", "2639"), ("2093", "1157"), ("581", "280"),
                  ("2624", "525"))}),
}


@dataclass(frozen=True)
class Setup:
    """Everything ``--scale`` changes."""

    scale: str
    dataset: str
    data_root: str | None
    width: int  # ResNet-18 base width (64 in the paper)
    eps_text: str  # the L-inf budget of training and evaluation
    epochs: int
    batch_size: int
    n_train: int | None
    augment: str
    weight_decays: tuple[float, ...]
    n_test: int  # test images of the tables and Fig. 1 (CIFAR-10 has 10,000)
    n_spectrum: int  # test images of Fig. 2

    @property
    def eps(self) -> float:
        return parse_number(self.eps_text)

    @property
    def folder(self) -> Path:
        return RUNS / f"{self.scale}-{self.dataset}-w{self.width}-{self.epochs}ep"

    @property
    def milestones(self) -> tuple[int, ...]:
        """Epochs 50 and 75 of 100, scaled to ``epochs`` (only those strictly inside)."""
        return tuple(sorted({m for m in (round(self.epochs / 2), round(3 * self.epochs / 4)) if 0 < m < self.epochs}))

    def pgd20(self) -> str:
        return f"pgd:steps=20,abs_stepsize={self.eps / 8!r},random_start=true,keep=last"


def make_setup(args: argparse.Namespace) -> Setup:
    if args.scale == "cpu":
        return Setup("cpu", "mnist-mini", None, 4, "0.1", 3, 32, 2000, "none", (1e-4, 5e-4, 1e-3), 500, 500)
    if args.data_root is None and not args.dry_run:
        raise RobevalError("--scale paper trains on the real CIFAR-10: give --data-root DIR (cifar-10-batches-py)")
    return Setup("paper", "cifar10", args.data_root, 64, "8/255", 100, 128, None, "crop-flip",
                 (1e-4, 3e-4, 5e-4, 7e-4, 1e-3), 10000, 1000)


def base_spec(setup: Setup, device: str) -> TrainSpec:
    """Sec. 3 "Setup": SGD 0.9, weight decay 5e-4, lr 0.1 / 10 at 50 % and 75 % of training."""
    return TrainSpec(dataset=setup.dataset, arch=f"resnet18:stem=cifar,width={setup.width}", epochs=setup.epochs,
                     batch_size=setup.batch_size, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=MAIN_WD,
                     schedule="step", milestones=setup.milestones, lr_decay=0.1, augment=setup.augment,
                     n_train=setup.n_train, device=device, data_root=setup.data_root)


def sweeps(setup: Setup, seed: int, device: str, threads: int) -> tuple[SweepSpec, SweepSpec]:
    """STD (cross-entropy) and ADV (PGD-10 training, ``--sweep weight-decay=...``)."""
    base = base_spec(setup, device)
    eps = setup.eps
    adv = base.replace(objective=f"pgd-at:eps={eps!r},steps=10,step_size={eps / 4!r},random_start=true")
    axis = parse_axis("weight-decay=" + "|".join(f"{wd:g}" for wd in setup.weight_decays))
    return (SweepSpec(base=base, seeds=(seed,), out=str(setup.folder / "std"), threads=threads),
            SweepSpec(base=adv, seeds=(seed,), axes=(axis,), out=str(setup.folder / "adv"), threads=threads))


def train_models(std: SweepSpec, adv: SweepSpec) -> tuple[dict[str, Path], int]:
    """``STD`` and ``ADV wd=<value>`` -> checkpoint (kept when trained before alike), and
    how many were kept rather than trained."""
    paths = {"STD": Path(plan(std)[0].spec.out)}
    paths |= {f"ADV wd={c.spec.weight_decay:g}": Path(c.spec.out) for c in plan(adv)}
    kept = 0
    for spec in (std, adv):
        table = run_sweep(spec, on_row=lambda row: log(f"  {row.name}: {row.describe()}"))
        kept += int((table["status"] == "existing").sum())
    return paths, kept


def dry_run(setup: Setup, std: SweepSpec, adv: SweepSpec) -> None:
    """Check every spec and attack without data or training, and print the plan."""
    for spec in (std.base, adv.base):
        resolve_arch(spec.arch)
        get_objective(spec.objective)
    for attack in (setup.pgd20(), "fgsm"):
        get_attack(attack)
    log(f"scale {setup.scale}: {setup}")
    for sweep in (std, adv):
        for combo in plan(sweep):
            log(f"  {combo.spec.out}: {combo.spec.objective}, weight decay {combo.spec.weight_decay:g}, "
                f"{combo.spec.epochs} epochs, milestones {list(combo.spec.milestones)}")
    log(f"  evaluation: {setup.pgd20()} and fgsm at eps {setup.eps_text}; n_test {setup.n_test}")


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Measured:
    """What the analyses return."""

    accuracy: pd.DataFrame  # robeval.evaluate rows of STD and ADV
    checks: pd.DataFrame  # checks.json findings
    summary: pd.DataFrame  # response_summary over every (model, origin) with attack in origin
    frequency: dict[str, pd.DataFrame]
    clipped: dict[str, pd.DataFrame]  # the same at a few radii with clip=True
    spectra: dict  # name -> Spectrum
    sweep: pd.DataFrame  # per weight decay: accuracies, quadratic sum, Max/Total per layer
    adv_accuracy: dict[tuple[str, str], float]  # (model, origin) -> accuracy on those adversarials
    std_at_paper_eps: float  # STD's PGD-20 accuracy at 8/255 (NaN at --scale paper, where it is the main row)


def measure(setup: Setup, paths: dict[str, Path], args: argparse.Namespace) -> Measured:
    """Every number of the report, on one seeded test subset."""
    device = resolve_device(args.device)
    main = f"ADV wd={MAIN_WD:g}"
    x, y = robeval.load_dataset(setup.dataset, split="test", n=setup.n_test, seed=args.seed, root=setup.data_root)
    log(f"evaluate STD and ADV on {len(x)} test images ({setup.pgd20()}, fgsm; checks fast)")
    frame = robeval.evaluate(models=[str(paths["STD"]), str(paths[main])], attacks=[setup.pgd20(), "fgsm"],
                             eps=setup.eps_text, n=setup.n_test, seed=args.seed, dataset=setup.dataset,
                             data_root=setup.data_root, device=args.device, checks="fast",
                             out=str(setup.folder / "eval"), overwrite=True)
    checks_path = Path(frame.attrs.get("out", setup.folder / "eval")) / "checks.json"
    checks = pd.read_json(checks_path) if checks_path.is_file() else pd.DataFrame()
    models = {name: robeval.load_model(str(path), device=str(device)) for name, path in paths.items()}
    adversarial = make_all_adversarials(setup, models, x, y, args.seed, device)
    std_at_paper_eps = float("nan")
    if setup.eps_text != PAPER_EPS:
        eps = parse_number(PAPER_EPS)
        attack = get_attack(f"pgd:steps=20,abs_stepsize={eps / 8!r},random_start=true,keep=last")
        log(f"  PGD-20 adversarials of STD at the paper's eps {PAPER_EPS}")
        x_adv = make_adversarials(models["STD"], attack, x, y, eps=eps, batch_size=250, device=device,
                                  seed=args.seed, key="lrd:STD:paper-eps")
        with torch.no_grad():
            std_at_paper_eps = float((models["STD"](x_adv.to(device)).argmax(1).cpu() == y).double().mean())
    samples = response_table(models, adversarial, x, y, device)
    frequency, clipped, spectra = {}, {}, {}
    for short, name in (("STD", "STD"), ("ADV", main)):
        log(f"  frequency sweeps and spectra of {short}")
        frequency[short], clipped[short] = frequency_sweeps(models[name], x, y, adversarial[(name, "PGD-20")], device)
        n = min(setup.n_spectrum, len(x))
        spectra[short] = compare_spectra(x[:n], adversarial[(name, "PGD-20")][:n], attack="PGD-20", eps=setup.eps)
    first = samples[samples["layer"] == LAYERS[0]]
    adv_accuracy = {key: float((part["adv_pred"] == part["label"]).mean())
                    for key, part in first.groupby(["model", "origin"])}
    return Measured(frame, checks, response_summary(samples), frequency, clipped, spectra,
                    sweep_table(models, samples), adv_accuracy, std_at_paper_eps)


def make_all_adversarials(setup: Setup, models: dict[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor,
                          seed: int, device: torch.device) -> dict[tuple[str, str], torch.Tensor]:
    """(model, "PGD-20" | "FGSM") -> adversarials of every test image; FGSM for STD and
    the main ADV model only (Tables 2 and 4)."""
    attacks = {"PGD-20": get_attack(setup.pgd20()), "FGSM": get_attack("fgsm")}
    main = f"ADV wd={MAIN_WD:g}"
    adversarial = {}
    for name, model in models.items():
        for label, attack in attacks.items():
            if label == "FGSM" and name not in ("STD", main):
                continue
            log(f"  {label} adversarials of {name}")
            adversarial[(name, label)] = make_adversarials(model, attack, x, y, eps=setup.eps, batch_size=250,
                                                           device=device, seed=seed, key=f"lrd:{name}:{label}")
    return adversarial


def response_table(models: dict[str, torch.nn.Module], adversarial: dict[tuple[str, str], torch.Tensor],
                   x: torch.Tensor, y: torch.Tensor, device: torch.device) -> pd.DataFrame:
    """Per model, origin ("own PGD-20", "own FGSM", "from STD PGD-20", "from ADV PGD-20"),
    image and layer: the Max and Total difference (robeval.analysis.responses)."""
    main = f"ADV wd={MAIN_WD:g}"
    frames = []
    for name, model in models.items():
        sources = [(f"own {label}", x_adv) for (owner, label), x_adv in adversarial.items() if owner == name]
        other = {"STD": main, main: "STD"}.get(name)
        if other is not None:
            sources.append((f"from {other.split()[0]} PGD-20", adversarial[(other, "PGD-20")]))
        layers = resolve_layers(model)
        for origin, x_adv in sources:
            part = batched_response_samples(model, layers, x, y, x_adv, origin=origin, batch_size=250, device=device)
            frames.append(part.assign(model=name))
    return pd.concat(frames, ignore_index=True)


def frequency_sweeps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                     device: torch.device) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 1 / Fig. 6 over every radius, unclipped (the paper's inputs), and at a few
    radii with ``clip=True`` (what robeval computed before the option, for comparison)."""
    half = x.shape[-1] // 2
    unclipped = frequency_sweep(model, x, y, x_adv, default_radii(*x.shape[-2:]), batch_size=500, device=device)
    clip_radii = sorted({1.0, 2.0, float(half // 4), float(half // 2), float(half)})
    return unclipped, frequency_sweep(model, x, y, x_adv, clip_radii, batch_size=500, device=device, clip=True)


def sweep_table(models: dict[str, torch.nn.Module], samples: pd.DataFrame) -> pd.DataFrame:
    """Fig. 5 at the last epoch: per ADV weight decay the clean and PGD-20 accuracy, the
    quadratic sum of all parameters (Fig. 5(a)) and the mean Max / Total per layer."""
    rows = []
    for name, model in models.items():
        if not name.startswith("ADV"):
            continue
        own = samples[(samples["model"] == name) & (samples["origin"] == "own PGD-20")]
        first = own[own["layer"] == LAYERS[0]]
        row = {"weight_decay": float(name.split("=")[1]),
               "quadratic_sum": float(sum((p.detach().double() ** 2).sum() for p in model.parameters())),
               "clean_acc": float((first["clean_pred"] == first["label"]).mean()),
               "pgd20_acc": float((first["adv_pred"] == first["label"]).mean())}
        for layer, part in own.groupby("layer"):
            row[f"max_{layer}"] = float(part["max_abs"].mean())
            row[f"total_{layer}"] = float(part["total_abs"].mean())
        rows.append(row)
    return pd.DataFrame(rows).sort_values("weight_decay").reset_index(drop=True)


# ----------------------------------------------------------------------------- rows


def value(summary: pd.DataFrame, model: str, origin: str, group: str, layer: str, stat: str) -> float:
    part = summary[(summary["model"] == model) & (summary["origin"] == origin) & (summary["group"] == group)
                   & (summary["layer"] == layer)]
    return float(part[stat].iloc[0]) if len(part) else float("nan")


def count(summary: pd.DataFrame, model: str, origin: str, group: str) -> int:
    part = summary[(summary["model"] == model) & (summary["origin"] == origin) & (summary["group"] == group)]
    return int(part["n"].iloc[0]) if len(part) else 0


def pair(left: float, right: float, stat: str) -> str:
    fmt = (lambda v: f"{v:.3g}") if stat.startswith("Max") else (lambda v: f"{v:.4g}")
    ratio = left / right if right else float("nan")
    return f"{fmt(left)} / {fmt(right)} (ratio {ratio:.2f})"


def paper_pair(left: str, right: str) -> str:
    return f"{left} / {right} (ratio {float(left) / float(right):.2f})"


def table_sources(main: str) -> dict[str, dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]]]:
    """Per table and statistic: the (model, origin, group) of the left and right numbers."""
    std_pgd, adv_pgd = ("STD", "own PGD-20", "all"), (main, "own PGD-20", "all")
    both = {"Max": "max_abs", "Total": "total_abs"}
    tables = {
        "Table 1": {s: (std_pgd, adv_pgd) for s in both},
        "Table 2": {s: (("STD", "own FGSM", "success"), ("STD", "own FGSM", "failure")) for s in both},
        "Table 3": {s: (adv_pgd, (main, "from STD PGD-20", "all")) for s in both},
        "Table 5": {s: (std_pgd, ("STD", "from ADV PGD-20", "all")) for s in both},
        "Table 4": {f"{s} ({a})": ((main, f"own {a}", "success"), (main, f"own {a}", "failure"))
                    for a in ("PGD-20", "FGSM") for s in both},
    }
    return tables


SCALE_NOTE = "{short}; totals sum over {entries:,} Conv 1 entries here vs 65,536 (64x32x32): compare the ratios"


def table_rows(m: Measured, setup: Setup) -> list[Row]:
    main = f"ADV wd={MAIN_WD:g}"
    stat_key = {"Max": "max_abs", "Total": "total_abs"}
    side = 28 if setup.dataset.startswith("mnist") else 32
    note = SCALE_NOTE.format(short=short_scale(setup), entries=setup.width * side * side)
    rows = []
    for table, (setting, stats) in TABLES.items():
        sources = table_sources(main)[table]
        for stat, published in stats.items():
            (lm, lo, lg), (rm, ro, rg) = sources[stat]
            key = stat_key[stat.split()[0]]
            for layer, (p_left, p_right) in zip(LAYERS, published, strict=True):
                left, right = value(m.summary, lm, lo, lg, layer, key), value(m.summary, rm, ro, rg, layer, key)
                counts = f"; n = {count(m.summary, lm, lo, lg)} / {count(m.summary, rm, ro, rg)}" \
                    if lg != "all" or rg != "all" else ""
                rows.append(Row(f"{table}, {stat}, {LAYER_NAMES[layer]}", setting + counts,
                                paper_pair(p_left, p_right), pair(left, right, stat), note))
    return rows


def short_scale(setup: Setup) -> str:
    """The "what differs" of every row (the whole setting is in the notes)."""
    if setup.scale == "paper":
        return "paper's setting (one seed, last-epoch checkpoint)"
    return f"{setup.dataset}, ResNet-18 width {setup.width}, eps {setup.eps_text}, {setup.epochs} epochs (see notes)"


def scale_text(setup: Setup) -> str:
    return (f"{setup.dataset} ({setup.n_train or 'all'} training images), ResNet-18 width {setup.width}, eps "
            f"{setup.eps_text}, {setup.epochs} epochs")


def accuracy_rows(m: Measured, setup: Setup, stems: dict[str, str]) -> list[Row]:
    main = f"ADV wd={MAIN_WD:g}"
    frame = m.accuracy.assign(label=m.accuracy["model"].map(stems))
    differs = short_scale(setup)

    def robust(label: str, attack_prefix: str) -> str:
        part = frame[(frame["label"] == label) & frame["attack"].str.startswith(attack_prefix)]
        if part.empty:
            return "-"
        row = part.iloc[0]
        fired = row.get("indicators") if isinstance(row.get("indicators"), str) and row.get("indicators") else ""
        return f"{pct(row['robust_acc'])} (checks: {fired + ' fired' if fired else 'none fired'})"

    def clean(label: str) -> str:
        return pct(frame[frame["label"] == label]["clean_acc"].iloc[0])

    adv_on_std = value_acc(m, main, "from STD PGD-20")
    std_on_adv = value_acc(m, "STD", "from ADV PGD-20")
    return [
        Row("Sec. 4.3 / App. C text, STD clean", "clean test accuracy", "94.4 %", clean("STD"), differs),
        Row("Sec. 4.3 text, ADV clean", "clean test accuracy", "84.9 %", clean(main), differs),
        Row("Fig. 1(a) text, STD PGD-20", "PGD-20, last iterate", "0.0 %", robust("STD", "pgd"), differs),
        *([Row("Fig. 1(a) text, STD PGD-20 at the paper's eps", "PGD-20 at eps 8/255, last iterate", "0.0 %",
               pct(m.std_at_paper_eps), differs + "; why eps 0.1 here")] if not np.isnan(m.std_at_paper_eps) else []),
        Row("Sec. 3.2 footnote, ADV PGD-20", "PGD-20, last iterate",
            "51.9 % (best checkpoint); 47.5 % (Fig. 1(b) text)", robust(main, "pgd"), differs + "; last epoch"),
        Row("Sec. 3.2 footnote, ADV FGSM", "FGSM", "57.4 %", robust(main, "fgsm"), differs),
        Row("Table 2 note, STD FGSM", "FGSM (the paper uses it because PGD-20 leaves few failures)", "-",
            robust("STD", "fgsm"), differs),
        Row("Sec. 4.3 text (Table 3), ADV on STD's adversarials", "transferred PGD-20",
            "83.6 % (clean 84.9 %)", pct(adv_on_std), differs),
        Row("App. C text (Table 5), STD on ADV's adversarials", "transferred PGD-20",
            "78.4 % (clean 94.4 %)", pct(std_on_adv), differs),
    ]


def value_acc(m: Measured, model: str, origin: str) -> float:
    """``model``'s accuracy on the adversarials of ``origin`` (all analysed images)."""
    return m.adv_accuracy.get((model, origin), float("nan"))


def frequency_rows(m: Measured, setup: Setup) -> list[Row]:
    """Fig. 1(a, b) peaks, Fig. 1(c, d) and Fig. 6 curve means, Fig. 2 band means."""
    differs = short_scale(setup)
    published = {"STD": ("47.5 %", "0.0 %"), "ADV": ("51.2 %", "47.5 %")}
    rows = []
    for short, (peak, final) in published.items():
        frame = m.frequency[short]
        curve = frame["adversarial_lowpass_acc"]
        best = int(curve.idxmax())
        rows.append(Row(f"Fig. 1({'a' if short == 'STD' else 'b'}), {short}",
                        "low-pass filtered adversarials: peak over the radius / unfiltered",
                        f"{peak} / {final}",
                        f"{pct(curve.max())} at radius {frame['radius'][best]:g} / {pct(curve.iloc[-1])}", differs))
    for short in ("STD", "ADV"):
        frame, clipped = m.frequency[short], m.clipped[short]
        rows.append(Row(f"Fig. 1({'c' if short == 'STD' else 'd'}), {short}",
                        "merged natural (natural low + adversarial high) / merged adversarial examples, mean "
                        "accuracy over all radii", "- (curves only)",
                        f"{pct(frame['low_natural_high_adv_acc'].mean())} / "
                        f"{pct(frame['low_adv_high_natural_acc'].mean())}", differs))
        same = frame[frame["radius"].isin(clipped["radius"])]
        radii = ", ".join(f"{r:g}" for r in clipped["radius"])
        rows.append(Row(f"Fig. 6({'a' if short == 'STD' else 'b'}), {short}",
                        f"high-pass filtered natural / adversarial, unclipped, mean accuracy over radii {radii}",
                        "- (curves only: natural on STD keeps some accuracy, then chance (10 %))",
                        f"{pct(same['natural_highpass_acc'].mean())} / {pct(same['adversarial_highpass_acc'].mean())}",
                        differs + f"; clipped to [0, 1] (robeval's behaviour before): "
                                  f"{pct(clipped['natural_highpass_acc'].mean())} / "
                                  f"{pct(clipped['adversarial_highpass_acc'].mean())}"))
    for short, panel in (("STD", "c"), ("ADV", "e")):
        high, low = band_means(m.spectra[short])
        rows.append(Row(f"Fig. 2({panel}), {short}", "mean log|adv| - log|nat|: high band (d > H/4) / low band",
                        "- (map only: > 0, concentrated at high frequencies; smaller on ADV)",
                        f"{high:.3f} / {low:.3f}", differs))
    return rows


def band_means(spectrum) -> tuple[float, float]:
    """Mean log-amplitude difference at distance > H/4 and at 0 < d <= H/4 from DC."""
    quarter = spectrum.difference.shape[0] / 4
    return (radial_band_mean(spectrum.difference, quarter, np.inf),
            radial_band_mean(spectrum.difference, 0.0, quarter))


def sweep_rows(m: Measured, setup: Setup) -> list[Row]:
    differs = short_scale(setup) + "; last epoch only (the paper: curves over 100 epochs)"
    rows = []
    for _, r in m.sweep.iterrows():
        rows.append(Row(f"Fig. 5, weight decay {r['weight_decay']:g}",
                        "quadratic sum of parameters; Max at Layer 4; clean / PGD-20 accuracy",
                        "- (curves only: a larger weight decay gives smaller values and a narrower gap)",
                        f"{r['quadratic_sum']:.4g}; {r['max_layer4']:.3g}; {pct(r['clean_acc'])} / "
                        f"{pct(r['pgd20_acc'])}", differs))
    return rows


# ----------------------------------------------------------------------------- claims and figures


Claim = tuple[str, bool | None, bool, str]  # claim, holds in the paper's numbers (None: figure only), here, how


def paper_summary(main: str) -> pd.DataFrame:
    """Tables 1-5 as published, in :func:`response_summary`'s layout, so that the table
    claims are checked on the paper's numbers with the same code as on robeval's."""
    rows = {}
    for table, (_, stats) in TABLES.items():
        for stat, published in stats.items():
            key = "max_abs" if stat.startswith("Max") else "total_abs"
            for side, source in enumerate(table_sources(main)[table][stat]):
                for layer, numbers in zip(LAYERS, published, strict=True):
                    rows.setdefault((*source, layer), {})[key] = float(numbers[side])
    return pd.DataFrame([{"model": m, "origin": o, "group": g, "layer": la, "n": 0, **v}
                         for (m, o, g, la), v in rows.items()])


def table_claims(s: pd.DataFrame, main: str) -> list[tuple[str, bool, str]]:
    """Tables 1-5's claims (Sec. 4.3, App. C) on a summary: (claim, holds, numbers)."""
    def ratios(model: str, origin: str, key: str) -> list[float]:
        return [value(s, model, origin, "success", la, key) / value(s, model, origin, "failure", la, key)
                for la in LAYERS]

    def listed(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    out = []
    table1 = {k: [value(s, "STD", "own PGD-20", "all", la, k) > value(s, main, "own PGD-20", "all", la, k)
                  for la in LAYERS] for k in ("max_abs", "total_abs")}
    out.append(("Table 1: STD's differences exceed ADV's layer by layer (Max in all six layers, Total from Layer 1 "
                "on)", all(table1["max_abs"]) and all(table1["total_abs"][2:]),
                f"STD > ADV in Max at {sum(table1['max_abs'])} of 6 layers, in Total at "
                f"{sum(table1['total_abs'][2:])} of Layers 1-4"))
    for model, origin, label in (("STD", "own FGSM", "Table 2 (STD, FGSM)"), (main, "own PGD-20", "Table 4 (ADV, "
                                                                                                     "PGD-20)")):
        r, t = ratios(model, origin, "max_abs"), ratios(model, origin, "total_abs")
        out.append((f"{label}: successful and failed attacks differ alike in the front layers (Conv 1 to Layer 1), "
                    "successes more in Layer 4", r[-1] > max(r[:3]) and t[-1] > max(t[:3]),
                    f"success / failure ratio per layer, Max: {listed(r)}; Total: {listed(t)}"))
    r_std, r_adv = ratios("STD", "own FGSM", "max_abs")[-1], ratios(main, "own FGSM", "max_abs")[-1]
    out.append(("Tables 2 and 4: the success / failure gap at Layer 4 is smaller on ADV than on STD (FGSM)",
                r_adv < r_std, f"Layer 4 Max ratio: ADV {r_adv:.2f}, STD {r_std:.2f}"))
    for model, origin, label, layers in ((main, "from STD PGD-20", "Table 3: on ADV, adversarials transferred "
                                          "from STD give smaller differences than its own, in every layer", LAYERS),
                                         ("STD", "from ADV PGD-20", "Table 5: on STD, adversarials transferred from "
                                          "ADV give smaller differences than its own from Layer 1 on", LAYERS[2:])):
        smaller = [value(s, model, origin, "all", la, k) < value(s, model, "own PGD-20", "all", la, k)
                   for la in layers for k in ("max_abs", "total_abs")]
        deep = value(s, model, origin, "all", "layer4", "max_abs") / value(s, model, "own PGD-20", "all", "layer4",
                                                                           "max_abs")
        out.append((label, all(smaller), f"smaller in {sum(smaller)} of {len(smaller)} (layer, statistic) pairs; "
                                         f"Layer 4 Max transferred / own {deep:.2f}"))
    return out


def claims(m: Measured) -> list[Claim]:
    """The paper's qualitative claims with verdicts computed from the numbers: the table
    claims also on the paper's own numbers (a check of the criterion)."""
    main = f"ADV wd={MAIN_WD:g}"
    out: list[Claim] = []
    gain = {k: float(f["adversarial_lowpass_acc"].max() - f["adversarial_lowpass_acc"].iloc[-1])
            for k, f in m.frequency.items()}

    def restores(std: float, adv: float) -> bool:
        return std > max(2 * adv, 0.05)

    out.append(("Fig. 1(a, b): removing the high frequencies of the adversarials restores much accuracy on STD "
                "(47.5 % peak vs 0.0 %) and little on ADV (51.2 % vs 47.5 %)", restores(0.475 - 0.0, 0.512 - 0.475),
                restores(gain["STD"], gain["ADV"]),
                f"peak minus unfiltered: STD {100 * gain['STD']:.1f} points, ADV {100 * gain['ADV']:.1f} points"))
    merged = {k: (float(f["low_natural_high_adv_acc"].mean()), float(f["low_adv_high_natural_acc"].mean()))
              for k, f in m.frequency.items()}
    out.append(("Fig. 1(c): on STD the adversarials' high frequencies are the destructive part (merged natural "
                "examples, natural low + adversarial high, score below merged adversarial ones)", None,
                merged["STD"][0] < merged["STD"][1],
                "mean accuracy over the radius, merged natural / merged adversarial: STD "
                f"{100 * merged['STD'][0]:.1f} / {100 * merged['STD'][1]:.1f} %, ADV "
                f"{100 * merged['ADV'][0]:.1f} / {100 * merged['ADV'][1]:.1f} %"))
    high = {k: (float(f["natural_highpass_acc"].mean()), float(f["adversarial_highpass_acc"].mean()))
            for k, f in m.frequency.items()}
    out.append(("Fig. 6: the high frequencies alone of natural images still classify on STD, those of its "
                "adversarials hardly (unclipped high-pass images)", None, high["STD"][0] > high["STD"][1] + 0.05,
                "mean accuracy over the radius, natural / adversarial: STD "
                f"{100 * high['STD'][0]:.1f} / {100 * high['STD'][1]:.1f} %, ADV "
                f"{100 * high['ADV'][0]:.1f} / {100 * high['ADV'][1]:.1f} %"))
    (h_std, _), (h_adv, _) = band_means(m.spectra["STD"]), band_means(m.spectra["ADV"])
    out.append(("Fig. 2: adversarials carry more high-frequency amplitude than natural images, less so on ADV",
                None, h_std > 0 and h_adv > 0 and h_std > h_adv,
                f"mean log ratio at d > H/4: STD {h_std:.3f}, ADV {h_adv:.3f}"))
    published = {c: ok for c, ok, _ in table_claims(paper_summary(main), main)}
    out += [(c, published[c], ok, how) for c, ok, how in table_claims(m.summary, main)]
    sweep = m.sweep
    wds = ", ".join(f"{w:g}" for w in sweep["weight_decay"])
    gap = sweep["clean_acc"] - sweep["pgd20_acc"]
    maxima = sweep[[f"max_{la}" for la in LAYERS]].to_numpy()
    falls = [int(np.all(np.diff(maxima[:, i]) < 0)) for i in range(len(LAYERS))]
    out += [
        ("Fig. 5(a): a larger weight decay gives smaller parameters (quadratic sum)", None,
         bool(np.all(np.diff(sweep["quadratic_sum"].to_numpy()) < 0)),
         f"weight decay {wds}: " + ", ".join(f"{v:.4g}" for v in sweep["quadratic_sum"])),
        ("Fig. 5(b-g): a larger weight decay gives (slightly) smaller Max differences, layer by layer", None,
         all(falls), f"falling with the weight decay at {sum(falls)} of 6 layers; Layer 4 Max "
                     + ", ".join(f"{v:.3g}" for v in sweep["max_layer4"])),
        ("Fig. 5(h): a larger weight decay narrows the gap between clean and robust accuracy", None,
         bool(np.all(np.diff(gap.to_numpy()) < 0)),
         f"clean minus PGD-20 at weight decay {wds}: " + ", ".join(f"{100 * v:.1f}" for v in gap) + " points"),
    ]
    return out


def claims_markdown(items: list[Claim]) -> str:
    def yes(flag: bool | None) -> str:
        return "figure only" if flag is None else ("yes" if flag else "no")

    lines = ["## Claims at this scale", "",
             "Each verdict is computed from the numbers; the table claims are also checked on the paper's own "
             "numbers with the same code.", "",
             "| claim | the paper's numbers | holds here | measured here |", "|---|---|---|---|"]
    lines += [f"| {c} | {yes(paper)} | {yes(ok)} | {how} |" for c, paper, ok, how in items]
    return "\n".join(lines)


def plot_responses_figure(m: Measured, path: Path) -> Path:
    """Tables 1, 3 and 5 as curves: mean Max and Total per layer (log scale)."""
    main = f"ADV wd={MAIN_WD:g}"
    curves = (("STD", "own PGD-20", "STD, own", "tab:red", "-"), (main, "own PGD-20", "ADV, own", "tab:blue", "-"),
              (main, "from STD PGD-20", "ADV, from STD", "tab:blue", "--"),
              ("STD", "from ADV PGD-20", "STD, from ADV", "tab:red", "--"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (key, label) in zip(axes, (("max_abs", "Max"), ("total_abs", "Total")), strict=True):
        for model, origin, name, colour, style in curves:
            ax.plot([LAYER_NAMES[la] for la in LAYERS], [value(m.summary, model, origin, "all", la, key)
                                                        for la in LAYERS], marker="o", color=colour, linestyle=style,
                    label=name)
        ax.set_yscale("log")
        ax.set_ylabel(f"{label} |difference| per image")
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=8)
    fig.suptitle("local response differences (Tables 1, 3, 5): PGD-20 adversarials", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_sweep_figure(m: Measured, path: Path) -> Path:
    """Fig. 5 at the last epoch: quadratic sum, Max per layer and accuracies vs weight decay."""
    sweep = m.sweep
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    wd = sweep["weight_decay"]
    axes[0].plot(wd, sweep["quadratic_sum"], "o-")
    axes[0].set_title("(a) quadratic sum of parameters", fontsize=9)
    for layer in LAYERS:
        axes[1].plot(wd, sweep[f"max_{layer}"], "o-", label=LAYER_NAMES[layer])
    axes[1].set_yscale("log")
    axes[1].set_title("(b)-(g) Max difference per layer", fontsize=9)
    axes[1].legend(fontsize=7)
    axes[2].plot(wd, sweep["clean_acc"], "o-", color="tab:green", label="clean")
    axes[2].plot(wd, sweep["pgd20_acc"], "o-", color="tab:red", label="PGD-20")
    axes[2].set_title("(h) test accuracy", fontsize=9)
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("weight decay")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def lr_sum(setup: Setup, n_train: int) -> float:
    """The sum of the learning rate over all SGD steps: plain weight decay alone shrinks
    the weights by ``exp(-wd * lr_sum)`` over training."""
    steps = -(-n_train // setup.batch_size)
    return sum(0.1 * 0.1 ** sum(epoch >= m for m in setup.milestones) * steps for epoch in range(setup.epochs))


def setting_notes(setup: Setup, m: Measured) -> list[str]:
    here, paper = lr_sum(setup, setup.n_train or 50_000), 0.1 * 50 * 391 + 0.01 * 25 * 391 + 0.001 * 25 * 391
    notes = [
        f"Setting here: {scale_text(setup)}, batch {setup.batch_size}, SGD lr 0.1 momentum 0.9, lr / 10 at epochs "
        f"{list(setup.milestones)}; PGD-10 training (steps of eps/4), PGD-20 evaluation (steps of eps/8, random "
        f"start, last iterate); {m.spectra['STD'].n} test images analysed, {len(m.frequency['STD'])} radii. The "
        "paper: CIFAR-10, ResNet-18 width 64, 100 epochs, lr / 10 at 50 and 75, eps 8/255 (2/255 and 1/255 "
        "steps); its batch size and augmentation are not stated.",
    ]
    if setup.scale == "cpu":
        notes += [
            "Why MNIST and eps 0.1: the bundled mnist-mini has 10 classes of real images like CIFAR-10 (shapes has 4 "
            "synthetic classes of black shapes on white, which a standard ResNet learned to 100 % in a 3-epoch "
            "probe), and a 28x28 ResNet-18 has feature maps of about the paper's sizes (28, 28, 28, 14, 7, 4 vs 32, "
            "32, 32, 16, 8, 4). At the paper's 8/255 the standard model here keeps much of its accuracy (row 'STD PGD-20 at "
            "the paper's eps'), far from the paper's 0.0 %; 0.1, a standard MNIST budget, fools it about as 8/255 "
            "fools the paper's CIFAR-10 model (row 'STD PGD-20'). The attack steps keep the paper's ratios to eps.",
            "MNIST digits are mostly exactly 0 (background) or near 1: there the [0, 1] box lets a perturbation go "
            "one way only, which likely makes MNIST adversarials more one-signed (more low-frequency content) than "
            "CIFAR-10 ones; this bears on Figs. 1, 2 and 6.",
            f"Weight decay (Fig. 5) has little time to act at this scale: the learning rate summed over all steps "
            f"is {here:.3g} here vs {paper:.4g} in the paper, so the decay term of weight decay 1e-3 by itself "
            f"shrinks the weights by {100 * (1 - np.exp(-1e-3 * here)):.1f} % here vs "
            f"{100 * (1 - np.exp(-1e-3 * paper)):.0f} % there (its effect through BatchNorm's scale invariance "
            "comes on top); one seed per weight decay, so small differences are within training noise.",
        ]
    notes += [
        "Totals depend on how many entries a layer has (Conv 1: width x H x W), so compare the ratios of the "
        "tables, not the totals; the Max values depend on the scale of the activations (BatchNorm follows Conv 1).",
        "Filtered and merged images are fed to the models unclipped, as in the paper (robeval.analysis.frequency, "
        "clip=False, the default): high-pass images are zero-mean with values outside [0, 1]. The Fig. 6 rows "
        "also give the clipped numbers (clip=True, robeval's behaviour before the option).",
        "FGSM is one step: the unconstrained-failure indicator (a one-step attack that fails at an unbounded eps) "
        "is expected to fire for it and does not question the PGD-20 numbers.",
    ]
    return notes


def checks_notes(m: Measured, stems: dict[str, str]) -> list[str]:
    if m.checks.empty:
        return ["attack-failure checks: no checks.json was written"]
    fired = m.checks[m.checks["fired"].astype(bool)]
    if fired.empty:
        return [f"attack-failure checks (robeval.evaluate, fast): none of {len(m.checks)} findings fired "
                "for STD and ADV (PGD-20 and FGSM)"]
    return [f"attack-failure check fired: {stems.get(r['model'], r['model'])}, {r['attack']}, {r['indicator']}: "
            f"{r.get('detail', '')}" for _, r in fired.iterrows()]


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="build and check the specs, print the plan")
    args = parse_args(__doc__, argv, parser)
    timer = Timer()
    setup = make_setup(args)
    std, adv = sweeps(setup, args.seed, args.device, torch.get_num_threads())
    if args.dry_run:
        dry_run(setup, std, adv)
        return
    log(f"training STD and {len(setup.weight_decays)} ADV models into {setup.folder}")
    paths, kept = train_models(std, adv)
    measured = measure(setup, paths, args)
    stems = {path.stem: name for name, path in paths.items()}
    out = args.out
    figures = [
        plot_frequency_figure({"STD": measured.frequency["STD"], "ADV": measured.frequency["ADV"]},
                              out / f"{PAPER}-fig1-frequency.png", half_size=setup_half(measured),
                              title=f"Fig. 1 / Fig. 6: PGD-20 adversarials, unclipped ({setup.dataset}, "
                                    f"ResNet-18 width {setup.width}, eps {setup.eps_text})"),
        plot_spectra(measured.spectra, out / f"{PAPER}-fig2-spectra.png"),
        plot_responses_figure(measured, out / f"{PAPER}-responses.png"),
        plot_sweep_figure(measured, out / f"{PAPER}-fig5-weight-decay.png"),
    ]
    rows = (accuracy_rows(measured, setup, stems) + table_rows(measured, setup) + frequency_rows(measured, setup)
            + sweep_rows(measured, setup))
    notes = [*setting_notes(setup, measured), *checks_notes(measured, stems)]
    if kept:
        notes.insert(0, f"{kept} of {len(paths)} checkpoints were kept from an earlier run with the same settings: "
                        f"the wall time above leaves out their training (delete {setup.folder.relative_to(ROOT)} to retrain).")
    md = write_report(PAPER, "Dissecting local properties of adversarial examples (local response differences)",
                      rows, out=out, scale=setup.scale, wall_s=timer.seconds, figures=figures, notes=notes,
                      extra=claims_markdown(claims(measured)))
    log(f"wrote {md} in {timer.seconds / 60:.1f} min")


def setup_half(m: Measured) -> float:
    """Half the image width, from the spectra's shape (the x axis of Fig. 1 is radius / it)."""
    return m.spectra["STD"].clean.shape[-1] / 2


if __name__ == "__main__":
    try:
        main()
    except RobevalError as exc:
        log(f"error: {exc}")
        sys.exit(2)
