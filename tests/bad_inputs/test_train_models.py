"""Bad inputs to ``robeval train`` and to the model sources (issue 12): an --out that
cannot be written (refused before the first epoch), a full disk after an epoch (one line
naming the epoch kept), resuming announced, a user's model factory that raises or returns
nonsense, and pickles that carry code (refused, never run, never called corrupt)."""

from __future__ import annotations

import builtins
import errno
import os
import pickle
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from robeval.cli import app
from robeval.data.safepickle import safe_load
from robeval.errors import RobevalError
from robeval.models import load_checkpoint, load_model
from robeval.train import loop

cli = CliRunner()
TRAIN = ["train", "--dataset", "digits", "--arch", "small-cnn", "--n-train", "64", "--batch-size", "32",
         "--seed", "0", "--device", "cpu", "--quiet"]


def invoke(*args: str) -> Any:
    return cli.invoke(app, list(args))


def assert_one_error(result: Any, *fragments: str) -> str:
    """Exit code 2, exactly one ``error:`` line holding every fragment, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if training gets as far as loading its data."""
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("training started: the data set was loaded")

    monkeypatch.setattr(loop, "load_dataset", forbidden)


# --- 1. --out that cannot be written: refused before any epoch ------------------------------


def _out_is_directory(tmp: Path) -> Path:
    (tmp / "runs").mkdir()
    return tmp / "runs"


def _out_under_sys(tmp: Path) -> Path:
    return Path("/sys/robeval-test/model.pt")  # PermissionError even for root


def _out_in_read_only_folder(tmp: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root writes into a 0o500 folder")
    folder = tmp / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / "model.pt"


def _out_below_a_file(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("a file, not a folder")
    return tmp / "notes.txt" / "model.pt"


def _log_path_is_a_folder(tmp: Path) -> Path:
    (tmp / "m.log.csv").mkdir()
    return tmp / "m.pt"


def _resume_path_is_a_folder(tmp: Path) -> Path:
    (tmp / "m.pt.resume").mkdir()
    return tmp / "m.pt"


@pytest.mark.parametrize(("make_out", "fragments"), [
    pytest.param(_out_is_directory, ("--out must be a checkpoint file path such as", "model.pt", "not a directory"),
                 id="out-is-an-existing-directory"),
    pytest.param(_out_under_sys, ("cannot write the checkpoint /sys/robeval-test/model.pt", "choose an --out"),
                 id="out-under-read-only-sys"),
    pytest.param(_out_in_read_only_folder, ("cannot write the checkpoint", "choose an --out"),
                 id="out-in-chmod-500-folder"),
    pytest.param(_out_below_a_file, ("cannot write the checkpoint", "choose an --out"), id="out-below-a-file"),
    pytest.param(_log_path_is_a_folder, ("m.log.csv is a folder", "epoch log"), id="epoch-log-path-is-a-folder"),
    pytest.param(_resume_path_is_a_folder, ("m.pt.resume is a folder", "resume file"), id="resume-path-is-a-folder"),
])
def test_unwritable_out_is_refused_before_training(
    tmp_path: Path, no_training: None, make_out: Callable[[Path], Path], fragments: tuple[str, ...]
) -> None:
    out = make_out(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = invoke(*TRAIN, "--epochs", "1", "--out", str(out))
    assert_one_error(result, *fragments)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "nothing is written beside --out"


def _fail_on(kind: str, epoch: int) -> Callable[..., Any]:
    """A torch.save that hits a full disk writing the resume file of ``epoch`` or the
    final checkpoint (``kind`` "resume" or "checkpoint")."""
    real = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        hit = (kind == "resume" and isinstance(obj, dict) and obj.get("epoch") == epoch) or (
            kind == "checkpoint" and isinstance(obj, dict) and obj.get("format") == "robeval.checkpoint")
        if hit:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(obj, f, *args, **kwargs)

    return save


@pytest.mark.parametrize(("kind", "epoch", "epochs", "says"), [
    pytest.param("resume", 2, 2, "it resumes from epoch 1 of 2 kept in", id="disk-full-saving-epoch-2-keeps-epoch-1"),
    pytest.param("resume", 1, 1, "no epoch is saved yet, so it starts afresh", id="disk-full-saving-epoch-1"),
    pytest.param("checkpoint", 0, 1, "it resumes from epoch 1 of 1 kept in", id="disk-full-saving-the-checkpoint"),
])
def test_full_disk_names_the_epoch_kept_and_the_rerun_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, epoch: int, epochs: int, says: str
) -> None:
    out = tmp_path / "m.pt"
    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", _fail_on(kind, epoch))
        line = assert_one_error(invoke(*TRAIN, "--epochs", str(epochs), "--out", str(out)),
                                "No space left on device", "free disk space", says)
    assert not out.exists() and not list(tmp_path.glob(".*.tmp")), "no half-written file"
    resume = Path(f"{out}.resume")
    kept = epoch - 1 if kind == "resume" else epochs
    assert resume.exists() == (kept > 0)
    if kept:
        assert str(resume) in line
        assert torch.load(resume, weights_only=True)["epoch"] == kept, "the last finished epoch is kept"
    again = invoke(*TRAIN, "--epochs", str(epochs), "--out", str(out))
    assert again.exit_code == 0, again.output
    assert ("resuming from epoch" in again.output) == (kept > 0)
    assert out.exists() and not resume.exists()


# --- 2. resuming is announced ---------------------------------------------------------------


def test_a_killed_run_says_it_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "m.pt"
    real = loop.save_resume

    def save_then_die(path: Path, spec: dict[str, Any], state: Any) -> None:
        real(path, spec, state)
        raise KeyboardInterrupt("killed after epoch 1")

    with monkeypatch.context() as patch:
        patch.setattr(loop, "save_resume", save_then_die)
        first = invoke(*TRAIN, "--epochs", "2", "--out", str(out))
    assert first.exit_code == 130 and "resuming" not in first.output, first.output
    again = invoke(*TRAIN, "--epochs", "2", "--out", str(out))
    assert again.exit_code == 0, again.output
    expected = f"resuming from epoch 1 of 2 ({out}.resume); delete it to start afresh"
    assert expected in " ".join(again.output.split()), again.output
    fresh = invoke(*TRAIN, "--epochs", "1", "--out", str(tmp_path / "fresh.pt"))
    assert fresh.exit_code == 0 and "resuming" not in fresh.output


def test_a_resume_file_that_carries_code_is_ignored_without_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "MARKER"
    out = tmp_path / "m.pt"
    torch.save({"format": 2, "epoch": _System(marker)}, f"{out}.resume", _use_new_zipfile_serialization=False,
               pickle_protocol=4)
    result = invoke(*TRAIN, "--epochs", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert not marker.exists() and out.exists()
    assert "which could run code; it is not loaded" in caplog.text and "resuming" not in result.output


# --- 3. a user's model factory that raises or returns nonsense ------------------------------

FACTORIES = '''
import sys
import torch

def raises():
    raise ValueError("boom")

def raises_type_error():
    return None + 1

def exits():
    sys.exit(3)

def no_arguments():
    return torch.nn.Flatten()

def returns_int():
    return 3

def returns_none():
    pass

def bad_tuple():
    return torch.nn.Flatten(), [1, 2]

def bad_mean():
    return torch.nn.Flatten(), {"mean": "abc"}

def bad_input_shape():
    return torch.nn.Flatten(), {"dataset": "digits", "input_shape": "1x8x8"}

def unknown_info():
    return torch.nn.Flatten(), {"colour": "red"}
'''


@pytest.mark.parametrize(("source", "fragments"), [
    pytest.param("f.py:raises", ("model factory 'f.py:raises' raised ValueError: boom",
                                 "fix the factory (run it in Python to see the traceback)"), id="factory-raises"),
    pytest.param("f.py:raises_type_error", ("raised TypeError: unsupported operand",), id="factory-raises-type-error"),
    pytest.param("f.py:exits", ("raised SystemExit: 3",), id="factory-calls-sys-exit"),
    pytest.param("f.py:no_arguments:width=3", ("rejected its arguments {'width': 3}", "give the key=value options"),
                 id="factory-given-unknown-arguments"),
    pytest.param("f.py:returns_int", ("returned int, not an nn.Module", "return the model"), id="factory-returns-int"),
    pytest.param("f.py:returns_none", ("returned NoneType, not an nn.Module",), id="factory-returns-none"),
    pytest.param("f.py:bad_tuple", ("must return an nn.Module or (nn.Module, info dict)",),
                 id="factory-returns-bad-tuple"),
    pytest.param("f.py:bad_mean", ("info 'mean' is 'abc'", "one number per channel"),
                 id="factory-info-mean-not-numbers"),
    pytest.param("f.py:bad_input_shape", ("info 'input_shape' is '1x8x8'", "(C, H, W)"),
                 id="factory-info-bad-input-shape"),
    pytest.param("f.py:unknown_info", ("unknown info keys ['colour']",), id="factory-info-unknown-key"),
    pytest.param("f.py:missing", ("has no function 'missing'", "raises"), id="factory-name-not-in-file"),
    pytest.param("broken.py:make", ("importing", "failed: NameError", "fix the file"), id="file-raises-on-import"),
    pytest.param("syntax.py:make", ("importing", "failed: SyntaxError", "fix the file"), id="file-has-a-syntax-error"),
])
def test_model_factory_problems_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str,
                                             fragments: tuple[str, ...]) -> None:
    (tmp_path / "f.py").write_text(FACTORIES)
    (tmp_path / "broken.py").write_text("undefined_name + 1\n")
    (tmp_path / "syntax.py").write_text("def make(:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    result = invoke("run", source, "--dataset", "digits", "--attack", "fgsm", "--eps", "0.1", "--n", "8",
                    "--device", "cpu", "--quiet", "--out", str(tmp_path / "o"))
    assert_one_error(result, *fragments)


# --- 4. pickles that carry code: refused, never run, never "corrupt" -----------------------


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _torch(**options: Any) -> Callable[[Path, Any], None]:
    return lambda path, obj: torch.save(obj, path, **options)


def _plain(protocol: int) -> Callable[[Path, Any], None]:
    return lambda path, obj: path.write_bytes(pickle.dumps(obj, protocol=protocol))


WRITERS = [
    pytest.param(_torch(), id="zip"),
    pytest.param(_torch(pickle_protocol=4), id="zip-protocol-4"),
    pytest.param(_torch(_use_new_zipfile_serialization=False), id="legacy"),
    pytest.param(_torch(_use_new_zipfile_serialization=False, pickle_protocol=4), id="legacy-protocol-4"),
    pytest.param(_torch(_use_new_zipfile_serialization=False, pickle_protocol=5), id="legacy-protocol-5"),
    pytest.param(_plain(0), id="plain-pickle-protocol-0"),
    pytest.param(_plain(2), id="plain-pickle-protocol-2"),
    pytest.param(_plain(5), id="plain-pickle-protocol-5"),
]


@pytest.mark.parametrize("gadget", [_System, _Exec], ids=["os-system", "builtins-exec"])
@pytest.mark.parametrize("writer", WRITERS)
def test_checkpoint_that_carries_code_is_refused_not_called_corrupt(
    tmp_path: Path, writer: Callable[[Path, Any], None], gadget: type
) -> None:
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pt"
    writer(evil, {"format": "robeval.checkpoint", "format_version": 1, "state_dict": {"w": torch.zeros(3)},
                  "meta": gadget(marker)})
    with pytest.raises(RobevalError, match="refusing to load .*may run code") as info:
        load_checkpoint(evil)
    assert "corrupt" not in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists(), "unpickling ran the payload"


def test_legacy_code_pickle_is_refused_through_the_cli(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pt"
    torch.save(_System(marker), evil, _use_new_zipfile_serialization=False, pickle_protocol=4)
    result = invoke("run", str(evil), "--dataset", "digits", "--out", str(tmp_path / "o"), "--quiet")
    assert_one_error(result, "refusing to load", "system", "may run code")
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated-zip", "truncated-legacy", "random-bytes"])
def test_damaged_checkpoint_is_still_called_corrupt(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "bad.pt"
    payload = {"format": "robeval.checkpoint", "format_version": 1, "state_dict": {"w": torch.rand(4096)}, "meta": {}}
    if damage == "random-bytes":
        path.write_bytes(random.Random(0).randbytes(4096))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=damage == "truncated-zip")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RobevalError, match="not a readable robeval checkpoint .truncated or corrupt"):
        load_checkpoint(path)


def test_state_dict_that_carries_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    evil = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "x": _System(marker)}, evil, _use_new_zipfile_serialization=False,
               pickle_protocol=4)
    with pytest.raises(RobevalError, match="refusing to load") as info:
        load_model(f"torchvision:resnet18:weights={evil}")
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_non_robeval_checkpoint_names_the_model_sources(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(RobevalError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "once available" not in message
    assert all(name in message for name in ("torchvision:", "timm:", "robustbench:", "robeval ls models"))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1), ids=lambda p: f"cifar-pickle-protocol-{p}")
def test_cifar_pickle_that_carries_code_is_refused(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": [1, 2], b"labels": [_System(marker)]}, protocol=protocol))
    with pytest.raises(RobevalError, match="refusing to load .*could run code"):
        safe_load(path)
    assert not marker.exists()


def test_payloads_are_live(tmp_path: Path) -> None:
    """The gadgets above do run when unpickled unsafely, so the tests prove a refusal."""
    marker = tmp_path / "MARKER"
    pickle.loads(pickle.dumps(_Exec(marker)))
    assert marker.exists()
