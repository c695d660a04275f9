"""Ray fan-out of ``robeval run`` and ``robeval transfer`` (issue 13).

The outputs of a run with ``--workers 2`` must equal those of the in-process run of the
same spec file for file (timing columns apart), and so must the result store row for
row; a worker killed mid-task is retried with the same numbers; a driver killed and
started again recomputes nothing it had stored; a user error raised inside a task is
reported once, as the in-process path's one-line error, and not retried.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import robeval
from robeval.cli import app
from robeval.cluster.options import ClusterOptions
from robeval.cluster.run_tasks import contiguous_ranges
from robeval.errors import RobevalError
from robeval.eval.transfer import transfer
from robeval.results.store import ResultStore
from robeval.results.store_rows import export_rows, import_rows

RUN = {"attacks": ["fgsm", "pgd", "deepfool"], "eps": "0,0.1,0.2", "n": 60, "batch_size": 10, "seed": 0}
TIMING = {"seconds"}  # columns that differ between any two runs

FACTORY = '''
"""A test model source: the digits checkpoint, with faults that fire inside Ray tasks only."""
import os
import time
from pathlib import Path

import torch

import robeval


def in_ray_task() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


class Faulty(torch.nn.Module):
    def __init__(self, inner, mode, marker):
        super().__init__()
        self.inner, self.mode, self.marker = inner, mode, marker

    def forward(self, x):
        if self.mode == "kill" and in_ray_task() and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-task
        if self.mode == "slow" and in_ray_task():  # the in-process reference run stays fast
            time.sleep(0.01)
        return self.inner(x)


def make(ckpt: str, mode: str = "plain", marker: str = ""):
    if mode == "fail" or (mode == "fail-in-task" and in_ray_task()):
        with open(marker, "a") as f:
            f.write("attempt\\n")
        raise ValueError("the weights file is missing")
    return Faulty(robeval.load_model(ckpt), mode, marker), {"dataset": "digits", "input_shape": (1, 8, 8)}
'''


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("factory") / "faulty.py"
    path.write_text(FACTORY)
    return path


def source(factory: Path, ckpt: Path, mode: str = "plain", marker: Path | None = None) -> str:
    text = f"{factory}:make:ckpt={ckpt},mode={mode}"
    return text + (f",marker={marker}" if marker is not None else "")


def outputs(out: Path) -> dict[str, object]:
    """Every table and text file a run wrote (timing columns dropped), by name."""
    found: dict[str, object] = {}
    for path in sorted(out.iterdir()):
        if path.suffix == ".csv":
            frame = pd.read_csv(path)
            found[path.name] = frame.drop(columns=[c for c in frame.columns if c in TIMING])
        elif path.suffix in (".json", ".yaml", ".md"):  # spec.yaml names its own folder: that line differs
            found[path.name] = "".join(line for line in path.read_text().splitlines(True)
                                       if not line.startswith("out:"))
    return found


def store_rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table of a store (the batches' seconds dropped), sorted."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = {}
        for table in tables:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            keep = ", ".join(c for c in columns if c not in TIMING)
            rows[table] = sorted(conn.execute(f"SELECT {keep} FROM {table}").fetchall(), key=repr)
        return rows
    finally:
        conn.close()


def assert_same_outputs(a: Path, b: Path) -> None:
    first, second = outputs(a), outputs(b)
    assert sorted(first) == sorted(second)
    for name, value in first.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(value, second[name], check_exact=True, obj=name)
        else:
            assert value == second[name], name
    assert store_rows(a / "store.sqlite") == store_rows(b / "store.sqlite")


# -- options, no Ray needed -----------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"workers": 0}, "--workers must be >= 1"),
    ({"workers": 2, "address": "auto"}, "not both"),
    ({"workers": 2, "gpus_per_task": 1.5}, "whole number"),
    ({"workers": 2, "gpus_per_task": -1}, "--gpus-per-task must be >= 0"),
    ({"workers": 2, "cpus_per_task": 0}, "--cpus-per-task must be > 0"),
    ({"gpus_per_task": 0.5}, "need --workers N or --ray-address"),
    ({"address": " "}, "--ray-address is empty"),
])
def test_bad_cluster_options_are_one_clear_error(kwargs, message) -> None:
    with pytest.raises(RobevalError, match=message):
        ClusterOptions(**kwargs)


def test_cuda_without_gpus_per_task_is_refused_and_fractions_are_allowed() -> None:
    with pytest.raises(RobevalError, match="--gpus-per-task"):
        ClusterOptions(workers=2).worker_device("cuda:0")
    assert ClusterOptions(workers=2).worker_device("cpu") == "cpu"
    assert ClusterOptions(address="auto", gpus_per_task=0.25).worker_device("cuda") == "cuda"
    assert not ClusterOptions().enabled and ClusterOptions(workers=1).enabled


def test_cli_refuses_bad_cluster_flags_in_one_line(digits_checkpoint, tmp_path) -> None:
    result = CliRunner().invoke(app, ["run", str(digits_checkpoint), "--workers", "2", "--ray-address", "auto",
                                      "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code != 0 and "not both" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # refused before anything was made


def test_cluster_flags_are_not_part_of_the_run(digits_checkpoint) -> None:
    from robeval.spec import RunSpec

    spec = RunSpec(models=(str(digits_checkpoint),), workers=2, gpus_per_task=0.5)
    assert spec == RunSpec(models=(str(digits_checkpoint),))
    assert not {"workers", "ray_address", "gpus_per_task", "cpus_per_task"} & set(spec.to_dict())


def test_contiguous_ranges_cut_missing_batches_into_tasks() -> None:
    assert contiguous_ranges([0, 1, 2, 3, 4], 2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert contiguous_ranges([0, 2, 3, 7], 8) == [range(0, 1), range(2, 4), range(7, 8)]
    assert contiguous_ranges([], 3) == []


def test_store_rows_travel_whole(digits_checkpoint, tmp_path) -> None:
    """A store's rows exported and inserted into an empty store give the same store."""
    robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "a"), attacks=[
        "autoattack:version=custom,attacks=apgd-ce+square,n_iter=5,n_queries=20", "pgd"], eps="0,0.1", n=20, batch_size=10, progress=False)
    with ResultStore(tmp_path / "a" / "store.sqlite") as store:
        keys = [r[0] for r in store._conn.execute("SELECT cell_key FROM cells")]
        rows = export_rows(store, keys)
    assert "autoattack_breakdown" in rows.tables  # a table another module adds travels too
    with ResultStore(tmp_path / "b.sqlite") as copy:
        import_rows(copy, rows)
    original, copied = store_rows(tmp_path / "a" / "store.sqlite"), store_rows(tmp_path / "b.sqlite")
    original.pop("checks"), copied.pop("checks")  # findings are the driver's, not a task's
    assert original == copied


# -- with a local Ray ------------------------------------------------------------------------


def test_run_with_workers_equals_the_in_process_run(ray_local, digits_checkpoint, tmp_path) -> None:
    local = robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "local"), **RUN)
    spread = robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "ray"), workers=2, **RUN)
    assert len(local) == len(spread) == 9 and local["robust_acc"].min() < local["clean_acc"].max()
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")


def test_worst_case_and_targeted_runs_with_workers_equal_in_process(ray_local, digits_checkpoint, tmp_path) -> None:
    for name, extra in {"cascade": {"attacks": ["fgsm", "pgd"], "worst_case": True},
                        "targeted": {"attacks": ["pgd"], "target": "all", "n": 20}}.items():
        spec = {**RUN, **extra}
        robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / f"{name}-local"), **spec)
        robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / f"{name}-ray"), workers=2, **spec)
        assert_same_outputs(tmp_path / f"{name}-local", tmp_path / f"{name}-ray")


def test_a_walk_cut_short_resumes_from_the_stored_eps(ray_local, digits_checkpoint, tmp_path) -> None:
    """Batches whose smaller eps are stored and larger not (a driver killed between two
    eps) go to the tasks with their stored rows: the walk continues from there, the
    stored rows are kept as they were, and the tables equal an uninterrupted run's."""
    robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "whole"), **RUN)
    robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "cut"), **RUN)
    path = tmp_path / "cut" / "store.sqlite"
    conn = sqlite3.connect(path)
    largest = [key for key, text in conn.execute("SELECT cell_key, description FROM cells")
               if json.loads(text)["eps"] == 0.2 and json.loads(text)["attack"] == "pgd"]
    with conn:
        conn.execute("DELETE FROM batches WHERE cell_key = ? AND batch >= 2", (largest[0],))
    kept = conn.execute("SELECT cell_key, batch, seconds FROM batches").fetchall()
    conn.close()
    robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "cut"), workers=2, **RUN)
    conn = sqlite3.connect(path)
    after = dict(((k, b), s) for k, b, s in conn.execute("SELECT cell_key, batch, seconds FROM batches"))
    conn.close()
    assert all(after[(k, b)] == s for k, b, s in kept)  # stored batches were not recomputed
    assert sum(1 for k, _ in after if k == largest[0]) == 6
    assert_same_outputs(tmp_path / "whole", tmp_path / "cut")


def test_transfer_with_workers_equals_in_process(ray_local, digits_checkpoint, factory, tmp_path) -> None:
    other = source(factory, digits_checkpoint)  # a second target (same weights, another source text)
    spec = {"sources": [str(digits_checkpoint)], "targets": [other], "attacks": ["pgd", "deepfool"],
            "eps": "0,0.1,0.2", "n": 40, "batch_size": 10}
    transfer(out=str(tmp_path / "local"), **spec)
    transfer(out=str(tmp_path / "ray"), workers=2, **spec)
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")


def test_a_worker_killed_mid_task_is_retried_with_the_same_numbers(ray_local, digits_checkpoint, factory,
                                                                   tmp_path) -> None:
    marker = tmp_path / "killed"
    spec = {**RUN, "attacks": ["pgd"]}
    robeval.evaluate(models=[source(factory, digits_checkpoint, "kill", marker)], out=str(tmp_path / "local"), **spec)
    assert not marker.exists()  # in-process nothing is killed
    robeval.evaluate(models=[source(factory, digits_checkpoint, "kill", marker)], out=str(tmp_path / "ray"),
                     workers=2, **spec)
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker did die
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")


def test_a_user_error_in_a_task_is_the_local_one_line_error_once(ray_local, digits_checkpoint, factory,
                                                                 tmp_path) -> None:
    local_marker, task_marker = tmp_path / "local-attempts", tmp_path / "task-attempts"
    args = ["--attack", "pgd", "--eps", "0,0.1", "--n", "20", "--batch-size", "10", "-q"]  # two tasks
    local = CliRunner().invoke(app, ["run", source(factory, digits_checkpoint, "fail", local_marker),
                                     "--out", str(tmp_path / "a"), *args])
    in_task = CliRunner().invoke(app, ["run", source(factory, digits_checkpoint, "fail-in-task", task_marker),
                                       "--out", str(tmp_path / "b"), "--workers", "2", *args])
    assert local.exit_code == in_task.exit_code != 0
    assert "Traceback" not in in_task.output and len(in_task.output.strip().splitlines()) == 1
    assert in_task.output.replace("fail-in-task", "fail").replace(str(task_marker), str(local_marker)) \
        == local.output  # the same line the in-process path gives
    attempts = task_marker.read_text().splitlines()
    assert 1 <= len(attempts) <= 2  # each of the two tasks tried at most once (a retried one alone would make 4)


def test_a_task_larger_than_the_cluster_is_refused_not_left_waiting(ray_local, digits_checkpoint,
                                                                    tmp_path) -> None:
    """Ray would queue a task asking for more CPUs than any node has forever; the run
    says so in one line instead (the session's Ray has 2 CPUs)."""
    result = CliRunner().invoke(app, ["run", str(digits_checkpoint), "--attack", "fgsm", "--eps", "0,0.1", "--n",
                                      "20", "--out", str(tmp_path / "big"), "--workers", "2", "--cpus-per-task", "4", "-q"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "asks Ray for 4 CPUs but the Ray cluster has 2" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_killed_driver_resumes_and_recomputes_nothing_stored(ray_local, digits_checkpoint, factory,
                                                               tmp_path) -> None:
    """The driver process is killed (SIGKILL) while its tasks run on the session's Ray;
    the same command started again keeps every batch stored before the kill (their
    timing rows unchanged) and ends with the tables of an uninterrupted run."""
    address = ray_local.get_runtime_context().gcs_address
    slow = source(factory, digits_checkpoint, "slow")
    spec = {**RUN, "attacks": ["pgd:steps=10"], "n": 120, "eps": "0,0.1,0.2"}
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "robeval", "run", slow, "--attack", "pgd:steps=10", "--eps", spec["eps"], "--n",
           "120", "--batch-size", "10", "--out", str(out), "--ray-address", address, "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    store = out / "store.sqlite"
    stored: list[tuple] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if store.exists():
            try:
                conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
                stored = conn.execute("SELECT cell_key, batch, seconds FROM batches").fetchall()
                conn.close()
            except sqlite3.Error:
                stored = []
            if len(stored) >= 4:
                break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 4 <= len(stored) < 36, "the driver was not killed mid-run"
    conn = sqlite3.connect(store)
    before = conn.execute("SELECT cell_key, batch, seconds FROM batches").fetchall()
    conn.close()
    robeval.evaluate(models=[slow], out=str(out), ray_address=address, **spec)
    robeval.evaluate(models=[slow], out=str(tmp_path / "whole"), **spec)
    conn = sqlite3.connect(store)
    after = {(k, b): s for k, b, s in conn.execute("SELECT cell_key, batch, seconds FROM batches")}
    conn.close()
    assert all(after[(k, b)] == s for k, b, s in before)
    assert len(after) == 36  # 3 eps x 12 batches
    assert_same_outputs(tmp_path / "whole", out)
