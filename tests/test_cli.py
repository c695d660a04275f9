"""End to end through the command line: train, run, tables, errors, resume after kill -9."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from robeval.cli import app

cli = CliRunner()
RUN_ARGS = ["--attack", "fgsm", "--attack", "pgd:steps=5", "--eps", "0,0.05,1/10,0.2",
            "--n", "150", "--batch-size", "50", "--device", "cpu", "--quiet"]


def invoke(*args: str):
    return cli.invoke(app, list(args))


def test_train_then_run_writes_tables(tmp_path: Path) -> None:
    ckpt = tmp_path / "m.pt"
    result = invoke("train", "--dataset", "digits", "--arch", "small-cnn", "--epochs", "3", "--lr", "3e-3",
                    "--batch-size", "32", "--seed", "1", "--device", "cpu", "--out", str(ckpt), "--quiet")
    assert result.exit_code == 0, result.output
    assert ckpt.exists() and "test_acc" in result.output

    out = tmp_path / "run"
    result = invoke("run", str(ckpt), "--out", str(out), *RUN_ARGS)
    assert result.exit_code == 0, result.output
    assert "robust accuracy" in result.output
    pivot = pd.read_csv(out / "accuracy_eps.csv")
    assert list(pivot.columns) == ["model", "attack", "0", "0.05", "0.1", "0.2"]
    assert list(pivot["attack"]) == ["fgsm", "pgd:steps=5"]
    values = pivot[["0", "0.05", "0.1", "0.2"]].to_numpy()
    assert (values[:, 1:] <= values[:, :-1]).all() and (values[:, -1] < values[:, 0]).all()
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 8 and set(results["model"]) == {"m"}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "missing.pt"], "does not exist"),
        (["run"], "no model given; pass a checkpoint (robeval run path/to/model.pt)"),
        (["run", "CKPT", "--attack", "pgd:x=[1]"], "has no parameter 'x'"),
        (["run", "CKPT", "--attack", "pdg"], "did you mean 'pgd'"),
        (["run", "CKPT", "--eps", "0,abc"], "cannot read eps"),
        (["run", "CKPT", "--eps", "-0.1"], "eps must be >= 0 or `unbounded`"),
        (["run", "CKPT", "--dataset", "mnist-mnii"], "did you mean"),
        (["run", "CKPT", "--device", "cuda:7"], "cuda"),
        (["train", "--arch", "resnet81", "--epochs", "1"], "did you mean 'resnet18'"),
        (["train", "--dataset", "cifar10", "--epochs", "1"], "data-root"),
        (["ls", "atacks"], "did you mean 'attacks'"),
    ],
)
def test_user_errors_are_one_line_without_traceback(args, fragment, digits_checkpoint, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("ROBEVAL_DATA_ROOT", raising=False)
    args = [str(digits_checkpoint) if a == "CKPT" else a for a in args]
    result = invoke(*args, "--out", str(tmp_path / "o")) if args[0] != "ls" else invoke(*args)
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.count("error:") == 1


def test_ls_lists_registries() -> None:
    for kind, expected in [("attacks", "pgd"), ("models", "mnist-cnn"), ("datasets", "mnist-mini")]:
        result = invoke("ls", kind)
        assert result.exit_code == 0 and expected in result.output, result.output


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    import torch

    torch.save({"format": "robeval.checkpoint", "state_dict": {}, "meta": _Payload(marker)}, evil)
    plain = tmp_path / "evil.pkl.pt"
    plain.write_bytes(pickle.dumps(_Payload(marker)))
    for path, fragment in ((evil, "refusing"), (plain, "refusing")):  # a code-carrying pickle is never "corrupt"
        result = invoke("run", str(path), "--dataset", "digits", "--out", str(tmp_path / "o"))
        assert result.exit_code == 2, result.output
        assert fragment in result.output
        assert not marker.exists(), "unpickling executed code from the checkpoint"
    pickle.loads(plain.read_bytes())  # the payload is live: loading it unsafely would run it
    assert marker.exists()


def _cli(args: list[str], kill_after: int | None = None) -> subprocess.CompletedProcess:
    """The command line in a fresh process; ``kill_after=N``: SIGKILLed after N stored
    batches (tests/fault_injection.py)."""
    entry = ["-m", "robeval"] if kill_after is None else ["-m", "tests.fault_injection", str(kill_after)]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *entry, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_resume_after_kill_9_gives_identical_tables(digits_checkpoint, tmp_path: Path) -> None:
    args = ["run", str(digits_checkpoint), *RUN_ARGS]
    killed = _cli([*args, "--out", str(tmp_path / "killed")], kill_after=5)
    assert killed.returncode == -9, killed.stderr  # SIGKILL mid-run, after 5 stored batches
    assert not (tmp_path / "killed" / "results.csv").exists()

    resumed = _cli([*args, "--out", str(tmp_path / "killed")])
    assert resumed.returncode == 0, resumed.stderr
    clean = _cli([*args, "--out", str(tmp_path / "clean")])
    assert clean.returncode == 0, clean.stderr

    for name in ("accuracy_eps.csv", "samples.csv", "accuracy_eps.md"):
        assert (tmp_path / "killed" / name).read_text() == (tmp_path / "clean" / name).read_text(), name
    drop = ["seconds"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "killed" / "results.csv").drop(columns=drop),
                                  pd.read_csv(tmp_path / "clean" / "results.csv").drop(columns=drop))


@pytest.mark.slow
def test_kill_at_an_arbitrary_moment_then_resume(digits_checkpoint, tmp_path: Path) -> None:
    """SIGKILL as soon as the first batch is in the store, wherever the run then is."""
    import signal
    import sqlite3
    import time

    args = ["run", str(digits_checkpoint), "--attack", "pgd:steps=20", "--eps", "0,0.05,0.1,0.2",
            "--n", "200", "--batch-size", "20", "--device", "cpu", "--quiet"]
    store = tmp_path / "killed" / "store.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "robeval", *args, "--out", str(tmp_path / "killed")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(store) as conn:
                if conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0] > 0:
                    break
        except sqlite3.Error:
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "results.csv").exists()
    assert _cli([*args, "--out", str(tmp_path / "killed")]).returncode == 0
    assert _cli([*args, "--out", str(tmp_path / "clean")]).returncode == 0
    for name in ("accuracy_eps.csv", "samples.csv"):
        assert (tmp_path / "killed" / name).read_text() == (tmp_path / "clean" / name).read_text(), name


def test_run_minimal_norm_unbounded_and_targeted_from_the_command_line(digits_checkpoint, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke("run", str(digits_checkpoint), "--attack", "deepfool", "--attack", "fgm", "--eps", "0.5,unbounded",
                    "--n", "60", "--device", "cpu", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert "unbounded" in result.output and "nan" not in result.output
    assert (out / "norm_curves.png").exists()
    result = invoke("run", str(digits_checkpoint), "--attack", "deepfool", "--eps", "0.5", "--target", "all",
                    "--n", "60", "--device", "cpu", "--out", str(out), "--quiet")
    assert result.exit_code == 2 and "no targeted mode" in result.output and "Traceback" not in result.output
