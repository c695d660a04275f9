"""The command line's own messages (issue 12): Ctrl-C at any moment, a full disk, a
read-only place or a damaged store that no command caught, and a genuine bug each end in
one line; warnings look alike; ``--help`` shows flags as flags; ``robeval ls`` shows
parameters in plain text; the results table keeps attack names on one line at 80
columns; parallel runs share the cores (run registry)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robeval import entry, threads
from robeval.cli import app, out_console
from robeval.failures import describe_failure

cli = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def _robeval_command() -> list[str]:
    script = Path(sys.executable).with_name("robeval")
    return [str(script)] if script.exists() else [sys.executable, "-m", "robeval"]


# --- 1. Ctrl-C in the first second, also while modules are still importing ---------------

@pytest.mark.parametrize("delay", [pytest.param(0.3, id="ctrl-c-at-0.3s-while-importing"),
                                   pytest.param(1.0, id="ctrl-c-at-1s")])
def test_ctrl_c_early_ends_with_one_line_and_130(delay: float, digits_checkpoint: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([*_robeval_command(), "run", str(digits_checkpoint), "--n", "16", "--device", "cpu",
                             "--quiet", "--out", str(tmp_path / "o")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines() and err.strip().splitlines()[-1].startswith("interrupted"), err
    assert len(err.strip().splitlines()) == 1, err


def test_ctrl_c_inside_a_command_says_how_to_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(kind: str):
        raise KeyboardInterrupt

    monkeypatch.setattr("robeval.listing.entries", interrupted)
    result = cli.invoke(app, ["ls", "attacks"])
    assert result.exit_code == 130
    assert result.output.strip() == "interrupted" and "Traceback" not in result.output


# --- 2. the safety net for failures of the disk and the store ------------------------------

NET_CASES = [
    pytest.param(OSError(errno.ENOSPC, "No space left on device", "/data/out/store.sqlite"),
                 ["no space left on device (/data/out/store.sqlite)", "free some space"], id="disk-full-ENOSPC"),
    pytest.param(OSError(errno.EDQUOT, "Disk quota exceeded", "/data/out/x.csv"),
                 ["no space left on device (/data/out/x.csv)"], id="quota-exceeded-EDQUOT"),
    pytest.param(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out"),
                 ["cannot write /mnt/ro/out (read-only file system)", "choose another --out"], id="read-only-EROFS"),
    pytest.param(PermissionError(errno.EACCES, "Permission denied", "/root/out"),
                 ["permission denied for /root/out", "choose another path"], id="permission-denied-EACCES"),
    pytest.param(PermissionError(errno.EPERM, "Operation not permitted", "/sys/out"),
                 ["permission denied for /sys/out"], id="not-permitted-EPERM"),
    pytest.param(sqlite3.DatabaseError("file is not a database"),
                 ["the result store is damaged (file is not a database)", "choose another --out"],
                 id="store-not-a-database"),
    pytest.param(sqlite3.DatabaseError("database disk image is malformed"),
                 ["the result store is damaged"], id="store-malformed"),
    pytest.param(sqlite3.OperationalError("database or disk is full"), ["no space left on device"],
                 id="store-disk-full"),
    pytest.param(sqlite3.OperationalError("attempt to write a readonly database"),
                 ["cannot write the result store (read-only)"], id="store-read-only"),
    pytest.param(sqlite3.OperationalError("database is locked"), ["in use by another process"], id="store-locked"),
]


@pytest.mark.parametrize(("exc", "fragments"), NET_CASES)
def test_failures_no_command_caught_print_one_line(exc: BaseException, fragments: list[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(kind: str):
        raise exc

    monkeypatch.setattr("robeval.listing.entries", failing)
    result = cli.invoke(app, ["ls", "attacks"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("exc", [
    pytest.param(OSError(errno.ECONNRESET, "Connection reset"), id="other-oserror"),
    pytest.param(sqlite3.IntegrityError("UNIQUE constraint failed"), id="sqlite-integrity-error"),
    pytest.param(ValueError("boom"), id="value-error"),
])
def test_bugs_are_not_dressed_as_user_errors(exc: BaseException) -> None:
    assert describe_failure(exc) is None


@pytest.mark.parametrize("verbose", [pytest.param(False, id="bug-one-line"),
                                     pytest.param(True, id="bug-traceback-with-verbose")])
def test_a_genuine_bug_is_one_line_or_its_traceback_with_verbose(
        verbose: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def buggy(kind: str):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("robeval.listing.entries", buggy)
    code = entry.run([*(["--verbose"] if verbose else []), "ls", "attacks"])
    err = capsys.readouterr().err
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: unexpected ZeroDivisionError (division by zero); this is a robeval bug")
    assert ("Traceback" in err) is verbose
    assert verbose or "rerun with --verbose for the traceback" in last


def test_disk_failure_outside_any_command_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def full_disk(verbose: bool) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("robeval.cli.setup_output", full_disk)
    code = entry.run(["ls", "attacks"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().startswith("error: no space left on device") and "Traceback" not in err


# --- 3. --overwrite -------------------------------------------------------------------------

@pytest.mark.parametrize("command", [pytest.param("run", id="run-has-overwrite"),
                                     pytest.param("transfer", id="transfer-has-overwrite")])
def test_overwrite_flag_is_offered(command: str) -> None:
    result = cli.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--overwrite" in result.output and "Replace the tables of a different earlier run" in result.output


# --- 4. robeval ls: plain text, parameters with defaults ------------------------------------

MARKUP = ("``", ":class:", ":func:", ":mod:", ":math:", ":data:", ":meth:", ":attr:")


@pytest.fixture()
def width_80(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(out_console, "width", 80)


@pytest.mark.parametrize(("kind", "expected"), [
    pytest.param("attacks", ["pgd", "defaults: norm=linf steps=10 rel_stepsize=0.25", "[budgeted, targeted]"],
                 id="ls-attacks"),
    pytest.param("models", ["small-cnn", "defaults: activation=relu c1=16 c2=32", "onnx:PATH[:backend="], id="ls-models"),
    pytest.param("datasets", ["mnist-mini", "shapes:size=28"], id="ls-datasets"),
    pytest.param("objectives", ["pgd-at", "defaults: eps=0.3 steps=40 step_size=0.01"], id="ls-objectives"),
    pytest.param("regularisers", ["smooth-kernel", "defaults: lambda=100"], id="ls-regularisers"),
    pytest.param("indicators", ["silent-success", "[fast]"], id="ls-indicators"),
])
def test_ls_shows_plain_summaries_and_defaults_at_80_columns(kind: str, expected: list[str], width_80: None) -> None:
    result = cli.invoke(app, ["ls", kind])
    assert result.exit_code == 0, result.output
    for text in expected:
        assert text in result.output
    assert not [m for m in MARKUP if m in result.output], result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80


@pytest.mark.parametrize(("args", "expected"), [
    pytest.param(["attacks", "pgd"], ["rel_stepsize", "0.25", "linf|l2", "Madry"], id="ls-one-attack"),
    pytest.param(["models", "onnx"], ["usage: onnx:PATH"], id="ls-one-model-source"),
    pytest.param(["indicators", "silent-success"], ["Fires when:", "Cost:"], id="ls-one-indicator"),
])
def test_ls_one_entry_shows_everything(args: list[str], expected: list[str], width_80: None) -> None:
    result = cli.invoke(app, ["ls", *args])
    assert result.exit_code == 0, result.output
    for text in expected:
        assert text in result.output
    assert not [m for m in MARKUP if m in result.output]


def test_ls_unknown_entry_is_one_line_with_a_hint() -> None:
    result = cli.invoke(app, ["ls", "attacks", "pdg"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: unknown attack 'pdg'; did you mean 'pgd' or 'apgd'? (see `robeval ls attacks`)"


# --- 5. one warning style, flags without <bool>, tables at 80 columns -----------------------

def test_log_warnings_look_like_warnings_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    def warn_twice(kind: str):
        logging.getLogger("robeval.some.module").warning("cache file x is unreadable; rebuilding it")
        warnings.warn("model has no weights", stacklevel=1)
        return []

    monkeypatch.setattr("robeval.listing.entries", warn_twice)
    result = cli.invoke(app, ["ls", "attacks"])
    assert result.exit_code == 0, result.output
    assert "warning: cache file x is unreadable; rebuilding it" in result.output
    assert "warning: model has no weights" in result.output
    assert "WARNING" not in result.output and "robeval.some.module" not in result.output


@pytest.mark.parametrize("args", [pytest.param([], id="help-top-level"), pytest.param(["run"], id="help-run"),
                                  pytest.param(["train"], id="help-train"), pytest.param(["ls"], id="help-ls"),
                                  pytest.param(["transfer"], id="help-transfer")])
def test_help_shows_flags_without_a_value(args: list[str]) -> None:
    result = cli.invoke(app, [*args, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "--help" in result.output


def test_results_table_keeps_attack_names_on_one_line_at_80_columns(digits_checkpoint: Path, tmp_path: Path,
                                                                     width_80: None) -> None:
    long_name = "pgd:random_start=false,rel_stepsize=0.1,steps=2"  # cheap, and as long as a real one
    result = cli.invoke(app, ["run", str(digits_checkpoint), "--attack", "fgsm", "--attack",
                              "pgd:steps=2,rel_stepsize=0.1,random_start=false", "--eps", "0,0.05,0.1,0.15,0.2,0.3",
                              "--n", "16",
                              "--checks", "off", "--device", "cpu", "--quiet", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert any(long_name in line for line in result.output.splitlines()), result.output
    table = [line for line in result.output.splitlines() if line.startswith(("┃", "│", "┏", "└"))]
    assert table and max(len(line) for line in table) <= 80, result.output


# --- 6. torch threads: the run registry ---------------------------------------------------

def _dead_pid() -> int:
    pid = 4_000_000  # above Linux's largest pid_max, so never a live process
    assert not threads.is_alive(pid, None)
    return pid


def test_registry_counts_live_processes_and_removes_dead_ones(tmp_path: Path) -> None:
    live = os.getppid()
    (tmp_path / f"{live}.pid").write_text(threads.start_stamp(live) or "")
    (tmp_path / f"{_dead_pid()}.pid").write_text("12345")
    (tmp_path / f"{os.getpid()}.pid").write_text(threads.start_stamp(os.getpid()) or "")
    assert threads.count_others(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.glob("*.pid")) == sorted([f"{live}.pid", f"{os.getpid()}.pid"])


def test_registry_ignores_a_reused_pid(tmp_path: Path) -> None:
    if threads.start_stamp(os.getppid()) is None:
        pytest.skip("no /proc to tell processes apart")
    (tmp_path / f"{os.getppid()}.pid").write_text("1")  # the pid's owner started at another time
    assert threads.count_others(tmp_path) == 0
    assert not list(tmp_path.glob("*.pid"))


@pytest.mark.parametrize(("cores", "others", "expected"), [
    pytest.param(2, 0, 2, id="alone-on-2-cores"), pytest.param(2, 1, 1, id="two-on-2-cores"),
    pytest.param(2, 3, 1, id="four-on-2-cores-at-least-1"), pytest.param(16, 3, 4, id="four-on-16-cores"),
])
def test_share_of_the_cores(cores: int, others: int, expected: int) -> None:
    assert threads.share(cores, others) == expected


def test_configure_threads_shares_the_cores_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    import torch

    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(threads, "_torch_default", 2)
    monkeypatch.setattr(threads, "_shared", {**threads._shared, "hook": None, "warned": False})
    monkeypatch.setattr(threads, "available_cores", lambda default: 2)
    monkeypatch.delenv("ROBEVAL_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    (tmp_path / f"{os.getppid()}.pid").write_text(threads.start_stamp(os.getppid()) or "")
    try:
        with caplog.at_level(logging.WARNING, logger="robeval.threads"):
            assert threads.configure_threads(directory=tmp_path) == 1
    finally:
        threads.stop_sharing()
    assert calls == [1] and (tmp_path / f"{os.getpid()}.pid").exists()
    assert "1 other robeval process is running on these 2 cores: this one uses 1 torch thread" in caplog.text


@pytest.mark.parametrize(("env", "expected"), [
    pytest.param({"ROBEVAL_THREADS": "3"}, 3, id="robeval-threads-wins"),
    pytest.param({"OMP_NUM_THREADS": "2"}, None, id="omp-num-threads-left-to-torch"),
])
def test_explicit_thread_counts_win(env: dict[str, str], expected: int | None, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.delenv("ROBEVAL_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / f"{os.getppid()}.pid").write_text(threads.start_stamp(os.getppid()) or "")
    try:
        assert threads.configure_threads(directory=tmp_path) == expected
    finally:
        threads.stop_sharing()
    assert calls == ([expected] if expected else [])


def test_a_bad_robeval_threads_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBEVAL_THREADS", "many")
    result = cli.invoke(app, ["run", "missing.pt"])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: ROBEVAL_THREADS='many' is not a whole number; set it to a thread "
                                     "count >= 1 or unset it")
