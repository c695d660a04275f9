"""PGD-10 throughput against the forward+backward roofline, robeval vs torchattacks, and Ray scaling.

One command on a GPU machine (``python benchmarks/gpu_check.py``) answers: how close does
robeval's PGD-10 come to the cost of its own gradient passes at a batch that fills the
device, on the two architectures of most robustness leaderboards (WRN-28-10 at 32x32 with
10 classes, ResNet-50 at 224x224 with 1000; random weights, which timing does not depend
on); how does it compare with torchattacks' PGD in the same process; what bf16 autocast
(with channels_last) buys; and how aggregate throughput scales with 1, 2 or 4 Ray tasks
sharing one GPU (``--gpus-per-task 1, 0.5, 0.25``).

Per model and precision (``fp32``; ``bf16`` = CUDA autocast + channels_last):

* roofline: images/s of one forward + input-gradient backward pass with frozen parameters,
  the unit a PGD step costs. On CUDA without ``--batch`` the batch doubles from 64 until out
  of memory or until images/s improves by 5 % or less; the last batch that still improved
  is used (bf16 and Ray reuse it).
* robeval: ``pgd:steps=10,abs_stepsize=2/255,keep=last`` at L-inf eps 8/255, called as the
  runner calls it (eval mode, frozen parameters, a seeded CPU generator), and its ratio to
  the ideal ``roofline / 11`` (ten forward+backward passes and the forward the runner adds
  to score them; the attack alone makes the ten, so up to 1.1 is possible).
  ``keep=last`` because random weights misclassify most inputs at once, and the default
  ``keep=best`` would drop those after one step and time almost nothing.
* torchattacks: ``PGD(eps=8/255, alpha=2/255, steps=10, random_start=True)`` when installed
  (the ``peers`` extra; fp32 only), and robeval's speed relative to it (> 1: robeval faster).
* Ray: max(k) Ray actors (k = 1, 2, 4, each asking 1 CPU and 1/4 GPU so all fit on one;
  on the CPU k = 1, 2 and 1 CPU each) build the model and warm up; then the first k run
  robeval's PGD-10 on the same batch at once, as k tasks at ``--gpus-per-task 1/k`` would:
  aggregate images/s from the first start to the last end, and the speed-up over k = 1.

Checks, also with ``--smoke``: robeval's (and torchattacks') adversarials lie in the
eps-ball and [0, 1], are finite and raise the loss; the report has every section; every
skip names its reason. The exit status is 1 when a check fails. Timing uses CUDA events on
the GPU (warm-up calls excluded) and medians of ``--repeats`` calls.

Run: ``python benchmarks/gpu_check.py [--device auto] [--out results/benchmarks]``.
``--smoke`` runs tiny models (WRN-10-1, ResNet-50 of width 4; batch 4, one repeat, bf16
exercised on the CPU too) in seconds, for the tests. Writes OUT/gpu_check.{json,csv}.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import importlib.util
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import robeval
from robeval.device import resolve_device
from robeval.eval.runner import eval_mode
from robeval.models import build_model

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10
PASSES = STEPS + 1  # ten forward+backward passes and one forward: the ideal PGD-10 cost
IMPROVES = 1.05  # the batch search goes on while images/s grows by more than 5 %
BALL_TOL = 1e-6
RAY_TIMEOUT_S = 900
SECTIONS = ("environment", "settings", "models", "throughput", "ray_scaling", "checks", "skipped")


@dataclass(frozen=True)
class Case:
    """One model to time: a label, an arch spec for ``build_model`` and its data shape."""

    name: str
    arch: str
    input_size: int
    num_classes: int


FULL_CASES = (Case("wrn-28-10", "wrn:depth=28,width=10", 32, 10),
              Case("resnet50", "resnet50:stem=imagenet", 224, 1000))
SMOKE_CASES = (Case("wrn-10-1", "wrn:depth=10,width=1", 16, 10),
               Case("resnet50-w4", "resnet50:stem=imagenet,width=4", 32, 10))


@dataclass
class Settings:
    device: str
    smoke: bool
    batch: int | None  # None: search on CUDA
    max_batch: int
    repeats: int
    warmup: int
    threads: int  # torch CPU threads of this process (Ray workers use 1 each)
    ray: bool
    ray_ks: tuple[int, ...]
    variants: tuple[str, ...]
    cases: tuple[Case, ...] = field(default=())


@dataclass
class Report:
    """What the script found; ``as_dict`` is the JSON file."""

    environment: dict[str, Any]
    settings: dict[str, Any]
    models: list[dict[str, Any]] = field(default_factory=list)
    throughput: list[dict[str, Any]] = field(default_factory=list)
    ray_scaling: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each part of this script

    def skip(self, what: str, why: str) -> None:
        self.skipped.append({"what": what, "why": why})

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append({"name": name, "passed": bool(passed), "detail": detail})


# --- models, batches, timing ---------------------------------------------------------


def build(case: Case, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(case.arch, in_channels=3, num_classes=case.num_classes, input_size=case.input_size)
    return model.to(device)


def make_batch(case: Case, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, case.input_size, case.input_size, generator=gen)
    y = torch.randint(case.num_classes, (batch,), generator=gen)
    return x.to(device), y.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones
    (CUDA events on the GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1000)
        else:
            tic = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - tic)
    return statistics.median(samples)


def precision(variant: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if variant == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fwd_bwd(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """One forward and the backward to the input: what one PGD step costs."""
    xr = x.detach().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(model(xr), y), xr)[0]


def robeval_pgd() -> Callable[..., Tensor]:
    return robeval.attacks.get("pgd", steps=STEPS, abs_stepsize=ALPHA, keep="last", random_start=True)


def is_oom(exc: BaseException) -> bool:
    """Out of memory, also as cuDNN/cuBLAS report it (``CUDNN_STATUS_ALLOC_FAILED``)."""
    text = str(exc).lower()
    return isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError) or "out of memory" in text or "alloc_failed" in text


def find_batch(images_per_s: Callable[[int], float], start: int, max_batch: int) -> tuple[int, list[dict[str, Any]]]:
    """The batch that fills the device: double ``start`` until out of memory, ``max_batch``,
    or images/s improving by ``IMPROVES`` or less; return the last batch that improved and
    every trial."""
    trials: list[dict[str, Any]] = []
    best_batch, best = start, 0.0
    batch = start
    while batch <= max_batch:
        try:
            rate = images_per_s(batch)
        except (RuntimeError, MemoryError) as exc:
            if not is_oom(exc):
                raise
            trials.append({"batch": batch, "images_per_s": None, "stop": "out of memory"})
            break
        trials.append({"batch": batch, "images_per_s": rate})
        if rate <= best * IMPROVES:
            trials[-1]["stop"] = f"improved by {100 * (rate / best - 1):.1f} % <= {100 * (IMPROVES - 1):.0f} %"
            break
        best_batch, best = batch, rate
        batch *= 2
    else:
        trials[-1]["stop"] = f"reached --max-batch {max_batch}"
    if not trials or trials[0]["images_per_s"] is None:
        raise RuntimeError(f"out of memory already at batch {start}; pass a smaller --batch")
    return best_batch, trials


# --- per-model measurements ----------------------------------------------------------


def check_adversarial(report: Report, label: str, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> None:
    """Budget, box, finiteness, and that the attack raised the loss (it did something)."""
    dist = float((x_adv - x).abs().amax()) if len(x) else 0.0
    finite = bool(torch.isfinite(x_adv).all())
    in_box = bool((x_adv >= 0).all() and (x_adv <= 1).all())
    report.check(f"{label}: eps-ball and [0,1]", finite and in_box and dist <= EPS + BALL_TOL,
                 f"max |x_adv - x| = {dist:.6f} (eps {EPS:.6f}), in [0,1]: {in_box}, finite: {finite}")
    with torch.no_grad():
        clean, adv = F.cross_entropy(model(x), y), F.cross_entropy(model(x_adv), y)
    report.check(f"{label}: loss rises", float(adv) > float(clean), f"CE {float(clean):.4f} -> {float(adv):.4f}")


def timed(report: Report, row: dict[str, Any], fn: Callable[[], Any], settings: Settings,
          device: torch.device) -> dict[str, Any]:
    """Fill ``row`` with images/s of ``fn`` on ``row['batch']`` images, or name the failure."""
    try:
        seconds = median_seconds(fn, device, settings.repeats, settings.warmup)
    except (RuntimeError, MemoryError) as exc:
        if not is_oom(exc):
            raise
        seconds = None
    if seconds is None:  # out of the except block: the failed call's tensors are freed
        if device.type == "cuda":
            torch.cuda.empty_cache()
        row.update(status="failed", why=f"out of memory at batch {row['batch']}")
        report.check(f"{row['model']} {row['variant']} {row['measure']}: measured", False, row["why"])
        return row
    row.update(status="ok", seconds=seconds, images_per_s=row["batch"] / seconds)
    return row


def torchattacks_pgd(model: nn.Module) -> Callable[[Tensor, Tensor], Tensor] | str:
    """torchattacks' PGD with our settings, or why it cannot run."""
    if importlib.util.find_spec("torchattacks") is None:
        return "torchattacks not installed (pip install -e '.[peers]')"
    import torchattacks

    return torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)


def measure_variant(report: Report, case: Case, model: nn.Module, variant: str, batch: int,
                    settings: Settings, device: torch.device) -> None:
    x, y = make_batch(case, batch, device)
    if variant == "bf16":
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    base = {"section": "throughput", "model": case.name, "variant": variant, "batch": batch}
    attack = robeval_pgd()
    with precision(variant, device):
        roof = timed(report, {**base, "measure": "fwd_bwd"}, lambda: fwd_bwd(model, x, y), settings, device)
        ours = timed(report, {**base, "measure": "robeval_pgd10"},
                     lambda: attack(model, x, y, eps=EPS, generator=torch.Generator().manual_seed(0)), settings, device)
        if ours["status"] == "ok":
            check_adversarial(report, f"{case.name} {variant} robeval", model, x, y,
                              attack(model, x, y, eps=EPS, generator=torch.Generator().manual_seed(0)))
    theirs = {**base, "measure": "torchattacks_pgd10"}
    runner = torchattacks_pgd(model) if variant == "fp32" else "torchattacks is timed in fp32 only"
    if isinstance(runner, str):
        theirs.update(status="skipped", why=runner)
        report.skip(f"{case.name} {variant} torchattacks_pgd10", runner)
    else:
        timed(report, theirs, lambda: runner(x, y), settings, device)
        if theirs["status"] == "ok":
            check_adversarial(report, f"{case.name} {variant} torchattacks", model, x, y, runner(x, y))
    if roof["status"] == "ok":
        roof["ideal_pgd10_images_per_s"] = roof["images_per_s"] / PASSES
        for row in (ours, theirs):
            if row.get("status") == "ok":
                row["vs_ideal"] = row["images_per_s"] / roof["ideal_pgd10_images_per_s"]
    if ours["status"] == "ok" and theirs.get("status") == "ok":
        ours["vs_torchattacks"] = ours["images_per_s"] / theirs["images_per_s"]
    report.throughput += [roof, ours, theirs]


def measure_case(report: Report, case: Case, settings: Settings, device: torch.device) -> int:
    """Every variant of one model; returns the batch used (for the Ray part)."""
    model = build(case, device)
    info: dict[str, Any] = {**asdict(case), "params": sum(p.numel() for p in model.parameters())}
    with eval_mode(model):
        if settings.batch is None:
            def rate(batch: int) -> float:
                x, y = make_batch(case, batch, device)
                return batch / median_seconds(lambda: fwd_bwd(model, x, y), device, 3, 1)

            batch, trials = find_batch(rate, 64, settings.max_batch)
            torch.cuda.empty_cache()
            info.update(batch=batch, batch_search=trials)
        else:
            batch = settings.batch
            info.update(batch=batch, batch_search=f"none: batch fixed at {batch} (--batch, --smoke or the CPU)")
        for variant in settings.variants:
            measure_variant(report, case, model, variant, batch, settings, device)
    report.models.append(info)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return batch


# --- Ray: k workers sharing one device -----------------------------------------------


class PgdWorker:
    """A Ray actor: builds a model, warms robeval's PGD-10 up, then times ``repeats`` calls
    when told to (all workers of one k are told at once)."""

    def __init__(self, device: str, threads: int) -> None:
        torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.call: Callable[[], Tensor] | None = None
        self.batch = 0

    def setup(self, case: Case, batch: int, warmup: int) -> None:
        model = build(case, self.device).eval().requires_grad_(False)
        x, y = make_batch(case, batch, self.device)
        attack = robeval_pgd()
        self.call = lambda: attack(model, x, y, eps=EPS, generator=torch.Generator().manual_seed(0))
        self.batch = batch
        for _ in range(warmup):
            self.call()
        sync(self.device)

    def run(self, repeats: int) -> dict[str, float]:
        assert self.call is not None, "setup() first"
        start = time.time()
        for _ in range(repeats):
            self.call()
        sync(self.device)
        return {"start": start, "end": time.time(), "images": float(repeats * self.batch)}


def ray_capacity(ray: Any, device: torch.device) -> tuple[int, str]:
    """How many workers (1 CPU each; on CUDA a share of one GPU too) this Ray can hold at
    once, and what it has."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), resources.get("GPU", 0)
    have = f"{cpus} CPUs and {gpus:g} GPUs"
    return (0 if device.type == "cuda" and gpus < 1 else cpus), have


def ray_case(ray: Any, workers: list[Any], case: Case, batch: int, settings: Settings) -> list[dict[str, Any]]:
    """One model on every k: all workers build it and warm up, then the first k run together."""
    ks = [k for k in settings.ray_ks if k <= len(workers)]
    rows = [{"section": "ray", "model": case.name, "variant": "fp32", "measure": "ray_pgd10", "batch": batch,
             "tasks": k} for k in ks]
    try:
        ray.get([w.setup.remote(case, batch, settings.warmup) for w in workers], timeout=RAY_TIMEOUT_S)
    except Exception as exc:  # e.g. out of memory with every worker's model and batch on the device
        for row in rows:
            row.update(status="failed", why=f"worker setup: {_short(exc)}")
        return rows
    for k, row in zip(ks, rows, strict=True):
        try:
            spans = ray.get([w.run.remote(settings.repeats) for w in workers[:k]], timeout=RAY_TIMEOUT_S)
        except Exception as exc:  # an actor's OOM or a timeout is a finding: named in the report
            row.update(status="failed", why=_short(exc))
            continue
        window = max(s["end"] for s in spans) - min(s["start"] for s in spans)
        common = min(s["end"] for s in spans) - max(s["start"] for s in spans)
        row.update(status="ok", images_per_s=sum(s["images"] for s in spans) / window,
                   per_task_images_per_s=[s["images"] / (s["end"] - s["start"]) for s in spans],
                   overlap=max(0.0, common) / window)
    return rows


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1][:200] if lines else ''}"


def ray_scaling(report: Report, batches: dict[str, int], settings: Settings, device: torch.device) -> None:
    """k = 1, 2 (, 4) workers on one device: max(k) Ray actors, each asking 1/max(k) GPU (or 1
    CPU) so that all fit on one device, of which the first k run at once: what k tasks at
    ``--gpus-per-task 1/k`` do. Reusing the actors over k saves their start-up (torch import)."""
    section: dict[str, Any] = {"ks": list(settings.ray_ks), "rows": []}
    report.ray_scaling = section
    why = None if settings.ray else "--no-ray given"
    if why is None and importlib.util.find_spec("ray") is None:
        why = "ray not installed (pip install -e '.[ray]')"
    if why is None:
        from robeval.cluster.options import ClusterOptions
        from robeval.cluster.session import ray_session

        cpus = max(2, os.cpu_count() or 2) if device.type == "cuda" else 2
        tic = time.perf_counter()
        with ray_session(ClusterOptions(workers=cpus)) as session:  # reuses a running Ray, else starts one
            report.seconds["ray_start"] = time.perf_counter() - tic
            why = ray_measure(report, section, session.ray, batches, settings, device)
    section.update(status="skipped" if why else "ok", why=why)
    if why:
        report.skip("ray scaling", why)


def ray_measure(report: Report, section: dict[str, Any], ray: Any, batches: dict[str, int], settings: Settings,
                device: torch.device) -> str | None:
    """Start the workers, fill ``section['rows']``; return why nothing could run, if so."""
    if __name__ != "__main__":  # imported (tests): workers cannot import this file by name
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cuda = device.type == "cuda"
    fit, have = ray_capacity(ray, device)
    n = max([k for k in settings.ray_ks if k <= fit], default=0)
    for k in settings.ray_ks:
        if k > n:
            report.skip(f"ray k={k}", f"this Ray has {have}; {k} workers need {k} CPUs" + (" and a GPU" if cuda else ""))
    if not n:
        return f"no worker fits in this Ray ({have})"
    gpus = 1 / n if cuda else 0.0
    section.update(actors=n, num_gpus_per_actor=gpus, num_cpus_per_actor=1.0)
    workers = [ray.remote(PgdWorker).options(num_cpus=1, num_gpus=gpus).remote("cuda" if cuda else "cpu", 1)
               for _ in range(n)]
    try:
        for case in settings.cases:
            rows = ray_case(ray, workers, case, batches[case.name], settings)
            for row in rows:
                if row["status"] == "ok" and rows[0].get("images_per_s"):
                    row["speedup_vs_1"] = row["images_per_s"] / rows[0]["images_per_s"]
                elif row["status"] != "ok":
                    report.skip(f"ray {case.name} k={row['tasks']}", row["why"])
            section["rows"] += rows
    finally:
        for worker in workers:
            ray.kill(worker)
    return None


# --- report --------------------------------------------------------------------------


def environment(device: torch.device) -> dict[str, Any]:
    cuda = device.type == "cuda"
    versions = {}
    for lib in ("ray", "torchattacks"):
        spec = importlib.util.find_spec(lib)
        versions[lib] = _version(lib) if spec is not None else "not installed"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(), "robeval": robeval.__version__,
        "torch": torch.__version__, **versions, "device": str(device), "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if cuda else None, "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32, "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark, "argv": sys.argv,
    }


def _version(lib: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(lib)
    except PackageNotFoundError:
        return "unknown"


def final_checks(report: Report) -> None:
    data = asdict(report)
    missing = [s for s in SECTIONS if s != "skipped" and not data.get(s)]  # no skips is fine
    report.check("report has every section", not missing, f"missing or empty: {missing}" if missing else "all present")
    rows = report.throughput + report.ray_scaling.get("rows", [])
    unnamed = [r for r in rows if r.get("status") != "ok" and not r.get("why")]
    report.check("every skip names its reason", not unnamed and all(s["why"] for s in report.skipped),
                 f"{len(unnamed)} rows without a reason" if unnamed else f"{len(report.skipped)} skips, all named")
    numbers = [v for r in rows if r.get("status") == "ok"
               for key, v in r.items() if key in ("images_per_s", "vs_ideal", "vs_torchattacks", "speedup_vs_1")]
    bad = [v for v in numbers if not (math.isfinite(v) and v > 0)]
    report.check("throughputs and ratios finite and > 0", bool(numbers) and not bad, f"{len(numbers)} numbers, bad: {bad}")


def write_report(report: Report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    rows = report.throughput + report.ray_scaling.get("rows", [])
    columns = ["section", "model", "variant", "measure", "batch", "tasks", "images_per_s", "vs_ideal",
               "vs_torchattacks", "speedup_vs_1", "overlap", "status", "why"]
    with open(out / "gpu_check.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def table(report: Report) -> str:
    env = report.environment
    where = f"{env['device']} ({env['gpu']})" if env["gpu"] else env["device"]
    lines = [f"PGD-10 L-inf eps 8/255, step 2/255, random start; {where}, "
             f"torch {env['torch']}, torchattacks {env['torchattacks']}, ray {env['ray']}", "",
             "| model | variant | batch | measure | images/s | vs ideal (fwd+bwd / 11) | robeval / torchattacks | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report.throughput:
        lines.append(f"| {r['model']} | {r['variant']} | {r['batch']} | {r['measure']} | {_num(r.get('images_per_s'))} "
                     f"| {_num(r.get('vs_ideal'), 2)} | {_num(r.get('vs_torchattacks'), 2)} | {r.get('why', '')} |")
    lines += ["", "| model | tasks per device | batch | aggregate images/s | speed-up vs 1 | overlap | note |",
              "|---|---|---|---|---|---|---|"]
    for r in report.ray_scaling.get("rows", []):
        lines.append(f"| {r['model']} | {r['tasks']} | {r['batch']} | {_num(r.get('images_per_s'))} "
                     f"| {_num(r.get('speedup_vs_1'), 2)} | {_num(r.get('overlap'), 2)} | {r.get('why', '')} |")
    if report.ray_scaling.get("status") != "ok":
        lines.append(f"Ray scaling skipped: {report.ray_scaling.get('why')}")
    failed = [c for c in report.checks if not c["passed"]]
    lines += ["", f"checks: {len(report.checks) - len(failed)}/{len(report.checks)} passed"]
    lines += [f"  FAILED {c['name']}: {c['detail']}" for c in failed]
    return "\n".join(lines)


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def parse_settings(argv: list[str] | None) -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--smoke", action="store_true", help="tiny models, batch 4, one repeat: seconds on a CPU")
    parser.add_argument("--batch", type=int, default=None, help="fixed batch (default: search on CUDA, 16 on CPU)")
    parser.add_argument("--max-batch", type=int, default=1024, help="the batch search stops here")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 5; smoke 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 2; smoke 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; smoke 1: tiny models, and no spinning beside "
                             "other processes)")
    parser.add_argument("--no-ray", dest="ray", action="store_false", help="skip the Ray scaling part")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch if args.batch is not None else (4 if args.smoke else None if cuda else 16)
    variants = ("fp32", "bf16") if cuda or args.smoke else ("fp32",)
    settings = Settings(
        device=str(device), smoke=args.smoke, batch=batch, max_batch=args.max_batch,
        repeats=args.repeats or (1 if args.smoke else 5),
        warmup=args.warmup if args.warmup is not None else (1 if args.smoke else 2),
        threads=args.threads or (1 if args.smoke else torch.get_num_threads()),
        ray=args.ray, ray_ks=(1, 2, 4) if cuda else (1, 2), variants=variants,
        cases=SMOKE_CASES if args.smoke else FULL_CASES,
    )
    return settings, Path(args.out)


def main(argv: list[str] | None = None) -> int:
    """Run everything, write the report, print the tables; 0 when every check passed.
    Callable in-process (the tests): torch's thread count is restored afterwards."""
    logging.basicConfig(level=logging.WARNING)
    settings, out = parse_settings(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        report = run(settings)
    finally:
        torch.set_num_threads(threads)
    write_report(report, out)
    print(table(report))
    print(f"\nwrote {out / 'gpu_check.json'} and {out / 'gpu_check.csv'}")
    return 0 if all(c["passed"] for c in report.checks) else 1


def run(settings: Settings) -> Report:
    device = torch.device(settings.device)
    report = Report(environment(device), asdict(settings))
    if "bf16" not in settings.variants:
        report.skip("bf16 variant", "bf16 autocast is timed on CUDA only (run --smoke to exercise it on the CPU)")
    elif device.type == "cpu":
        report.environment["note"] = "bf16 on the CPU in --smoke exercises the code path; its times mean nothing"
    tic = time.perf_counter()
    batches = {case.name: measure_case(report, case, settings, device) for case in settings.cases}
    report.seconds["in_process"] = time.perf_counter() - tic
    ray_scaling(report, batches, settings, device)
    report.seconds["ray"] = time.perf_counter() - tic - report.seconds["in_process"]
    final_checks(report)
    return report


if __name__ == "__main__":
    sys.exit(main())
