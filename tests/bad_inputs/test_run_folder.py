"""The output folder of ``robeval run`` / ``robeval transfer`` (issue 12): an --out that
cannot be written is refused before any model is loaded; a folder holding another run's
tables is refused unless ``overwrite`` (which then clears the stale tables and reuses the
store); two processes never write one folder at once; ``transfer(out=...)`` leaves no
empty temporary folder; a written spec.yaml remakes its run from any directory."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

import robeval
from robeval.errors import RobevalError
from robeval.eval import evaluate as evaluate_module
from robeval.eval import runner
from robeval.eval import transfer as transfer_module
from robeval.results.run_folder import LOCK_NAME, ensure_writable_dir, folder_lock
from robeval.spec import RunSpec
from tests.bad_inputs.run_helpers import (
    FACTORY,
    FAST,
    FAST_TRANSFER,
    assert_ok,
    assert_one_error,
    invoke,
    same_tables,
)

LIB = dict(attacks=["fgsm"], eps="0,0.1", n=16, device="cpu", checks="off")


@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if run or transfer gets as far as loading a model."""
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded before the folder was refused")

    monkeypatch.setattr(evaluate_module, "load_model", forbidden)
    monkeypatch.setattr(transfer_module, "load_model", forbidden)


# --- 1. an --out that cannot be written: refused before any model is loaded ---------------------


def _existing_file(tmp: Path) -> tuple[Path, str]:
    path = tmp / "results.txt"
    path.write_text("not a folder")
    return path, "is a file, not a folder"


def _file_in_its_path(tmp: Path) -> tuple[Path, str]:
    (tmp / "blocker").write_text("a file where a folder should be")
    return tmp / "blocker" / "run", "a file stands where one of its folders should be"


def _read_only_system_folder(tmp: Path) -> tuple[Path, str]:
    return Path("/sys/robeval-test-out"), "cannot write to the folder /sys/robeval-test-out"


def _read_only_folder(tmp: Path) -> tuple[Path, str]:
    if os.geteuid() == 0:
        pytest.skip("root writes into a 0o500 folder anyway")
    folder = tmp / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / "run", "cannot write to the folder"


@pytest.mark.parametrize("command", ["run", "transfer"])
@pytest.mark.parametrize("make", [_existing_file, _file_in_its_path, _read_only_system_folder, _read_only_folder],
                         ids=["existing-file", "file-in-its-path", "read-only-sys", "chmod-500-folder"])
def test_unwritable_out_is_refused_before_any_model_is_loaded(
    make, command, tmp_path, no_model_loading, digits_checkpoint,
) -> None:
    out, fragment = make(tmp_path)
    args = FAST if command == "run" else FAST_TRANSFER
    try:
        line = assert_one_error(invoke(command, digits_checkpoint, *args, "--out", out), fragment, "--out")
        assert str(out) in line
    finally:
        (tmp_path / "locked").exists() and (tmp_path / "locked").chmod(0o700)


def test_ensure_writable_dir_creates_the_folder_and_leaves_nothing_in_it(tmp_path) -> None:
    folder = ensure_writable_dir(tmp_path / "a" / "b", flag="--out")
    assert folder.is_dir() and list(folder.iterdir()) == []


# --- 4. a folder that holds the tables of another run -------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits_checkpoint) -> Path:
    """A finished FAST run (fgsm at 0 and 0.1), copied per test by :func:`reused`."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert_ok(invoke("run", digits_checkpoint, *FAST, "--out", out))
    return out


@pytest.fixture
def reused(finished, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        (["--attack", "pgd:steps=3"], "attacks"),
        (["--eps", "0,0.2"], "eps"),
        (["--seed", "1"], "seed"),
        (["--n", "12"], "n"),
        (["--worst-case", "--attack", "pgd:steps=2"], "attacks, worst_case"),
        (["--checks", "fast"], "checks"),
    ],
    ids=["other-attack", "other-eps", "other-seed", "other-n", "worst-case", "other-checks"],
)
def test_a_different_run_into_a_used_folder_is_refused(reused, digits_checkpoint, change, differs) -> None:
    before = {p.name: p.read_bytes() for p in reused.iterdir() if p.is_file()}
    args = [*FAST, *change] if "--attack" not in change else [*_without_attacks(FAST), *change]
    assert_one_error(invoke("run", digits_checkpoint, *args, "--out", reused),
                     f"{reused} already holds the tables of a different run (differs in: {differs})",
                     "use another --out, or --overwrite to replace those tables")
    assert {p.name: p.read_bytes() for p in reused.iterdir() if p.is_file()} == before, "nothing was touched"


def _without_attacks(args: list[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--attack":
            skip = True
        else:
            out.append(arg)
    return out


def test_another_command_into_a_used_folder_is_refused(reused, digits_checkpoint, no_model_loading) -> None:
    assert_one_error(invoke("transfer", digits_checkpoint, *FAST_TRANSFER, "--out", reused),
                     "differs in: command (robeval run wrote them)")


def test_the_same_command_again_resumes_without_overwrite(reused, digits_checkpoint, monkeypatch) -> None:
    before = (reused / "results.csv").read_bytes()
    monkeypatch.setattr(runner, "_attack_points", _forbidden_attack)
    assert_ok(invoke("run", digits_checkpoint, *FAST, "--out", reused))
    assert (reused / "results.csv").read_bytes() == before


def _forbidden_attack(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a stored cell was attacked again")


def test_overwrite_replaces_the_tables_removes_stale_ones_and_reuses_the_store(digits_checkpoint, tmp_path) -> None:
    out = tmp_path / "run"
    robeval.evaluate(models=[str(digits_checkpoint)], out=str(out), worst_case=True,
                     **{**LIB, "attacks": ["fgsm", "pgd:steps=2"]})
    assert (out / "worst_case.csv").exists()
    with pytest.raises(RobevalError, match="differs in: attacks, worst_case"):
        robeval.evaluate(models=[str(digits_checkpoint)], out=str(out), **LIB)
    batches = _stored_batches(out)
    df = robeval.evaluate(models=[str(digits_checkpoint)], out=str(out), overwrite=True, **LIB)
    assert not (out / "worst_case.csv").exists(), "a stale table of the earlier run would describe other numbers"
    assert set(df["attack"]) == {"fgsm"} and RunSpec.from_yaml(out / "spec.yaml").attacks == ("fgsm",)
    assert _stored_batches(out) > batches, "the earlier cascade's batches stay in the store"
    again = _stored_batches(out)
    robeval.evaluate(models=[str(digits_checkpoint)], out=str(out), overwrite=True, **LIB)
    assert _stored_batches(out) == again, "stored batches are reused"


@pytest.mark.parametrize("command", ["run", "transfer"])
def test_overwrite_from_the_command_line_leaves_only_the_new_tables(reused, digits_checkpoint, command) -> None:
    args = [*FAST, "--seed", "1"] if command == "run" else FAST_TRANSFER
    assert_ok(invoke(command, digits_checkpoint, *args, "--out", reused, "--overwrite"))
    tables = {p.name for p in reused.iterdir() if p.is_file() and not p.name.startswith(".")}
    if command == "run":
        assert RunSpec.from_yaml(reused / "spec.yaml").seed == 1
    else:  # the run's tables went with it
        assert tables == {"spec.yaml", "store.sqlite", "transfer.csv", "transfer_grid.md", "transfer_samples.csv",
                          "transfer_fgsm.png"}


def _stored_batches(out: Path) -> int:
    with sqlite3.connect(out / "store.sqlite") as conn:
        return conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]


def test_overwrite_is_a_flag_not_a_setting_of_the_tables() -> None:
    spec = RunSpec.from_dict({"models": ["m.pt"], "overwrite": True})
    assert spec.overwrite and "overwrite" not in spec.to_dict() and spec == spec.replace(overwrite=False)
    assert RunSpec.from_dict({"models": ["m.pt"], "overwrite": None}).overwrite is False
    transfer_spec = transfer_module.TransferSpec.from_dict({"sources": ["m.pt"], "overwrite": True})
    assert transfer_spec.overwrite and "overwrite" not in transfer_spec.to_dict()


# --- 4b. one process per folder -------------------------------------------------------------------


def test_a_second_run_into_a_locked_folder_is_refused(digits_checkpoint, tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with folder_lock(out):
        with pytest.raises(RobevalError, match=f"another robeval process \\(pid {os.getpid()}\\) is writing to {out}"):
            robeval.evaluate(models=[str(digits_checkpoint)], out=str(out), **LIB)
        with pytest.raises(RobevalError, match="wait for it to finish or use another --out"):
            robeval.transfer(sources=[str(digits_checkpoint)], out=str(out), **_transfer(LIB))
    assert not (out / "results.csv").exists()
    robeval.evaluate(models=[str(digits_checkpoint)], out=str(out), **LIB)  # released: runs


def _transfer(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "checks"}


def test_a_folder_locked_by_another_process_names_its_pid(digits_checkpoint, tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    holder = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(out / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "os.write(fd, str(os.getpid()).encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert_one_error(invoke("run", digits_checkpoint, *FAST, "--out", out),
                         f"another robeval process (pid {proc.pid}) is writing to {out}")
    finally:
        proc.kill()
        proc.wait()


# --- 5. transfer(out=...) makes no temporary folder -----------------------------------------------


def test_transfer_into_a_given_folder_leaves_no_temporary_folder(digits_checkpoint, tmp_path, monkeypatch) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    robeval.transfer(sources=[str(digits_checkpoint)], out=str(tmp_path / "grid"), **_transfer(LIB))
    assert list(temp.iterdir()) == []


# --- 6. spec.yaml remakes its run from any working directory --------------------------------------


def test_a_written_spec_reproduces_its_run_from_another_directory(digits_checkpoint, tmp_path, monkeypatch) -> None:
    first, second = tmp_path / "A", tmp_path / "B"
    first.mkdir()
    second.mkdir()
    shutil.copy(digits_checkpoint, first / "model.pt")
    shutil.copy(FACTORY, first / "factory.py")
    monkeypatch.chdir(first)
    assert_ok(invoke("run", "model.pt", "factory.py:make", *FAST, "--out", "out"))
    monkeypatch.chdir(second)
    assert_ok(invoke("run", "--spec", first / "out" / "spec.yaml", "--out", "out"))
    same_tables(first / "out", second / "out")  # same model names too
    monkeypatch.setattr(runner, "_attack_points", _forbidden_attack)
    assert_ok(invoke("run", "--spec", first / "out" / "spec.yaml", "--out", first / "out"))  # resumes there
