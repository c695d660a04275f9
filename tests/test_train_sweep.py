"""Training sweeps (issue 13, item 4): ``robeval train --seeds ... --sweep KEY=V1|V2``
writes one resumable checkpoint per combination and sweep.csv, the same bits in this
process and as Ray tasks."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from robeval.cli import app
from robeval.errors import RobevalError
from robeval.models import read_checkpoint
from robeval.train import TrainSpec, loop
from robeval.train.sweep import check_flags, combination_name, parse_axis, parse_seeds
from robeval.train.sweep_run import SweepSpec, plan, run_sweep, sweep_from_flags

BASE = TrainSpec(dataset="digits", arch="small-cnn", epochs=2, n_train=192, device="cpu")  # the flags below
TRAIN = ["train", "--arch", "small-cnn", "--epochs", "2", "--n-train", "192", "--device", "cpu", "--quiet"]
FLAGS = [*TRAIN, "--dataset", "digits"]
cli = CliRunner()


def sweep(out: Path, seeds: str = "0", *sweeps: str, **options: Any) -> SweepSpec:
    spec = sweep_from_flags(BASE, seeds=seeds, sweeps=list(sweeps), given=(), out=str(out), **options)
    assert spec is not None
    return spec


def weights(path: str | Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[0]


def same_weights(a: str | Path, b: str | Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def one_error(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a combination was trained")

    monkeypatch.setattr(loop, "load_dataset", forbidden)


# --- parsing --------------------------------------------------------------------------------


def test_seeds_are_whole_numbers_in_the_order_given() -> None:
    assert parse_seeds("3, 0,1") == (3, 0, 1)


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "empty entry"), ("0,,1", "empty entry"), ("0,x", "'x' is not a whole number"),
    ("-1", "'-1' is not a whole number"), ("1.5", "not a whole number"), ("0,1,0", "'0' twice"),
])
def test_bad_seeds(text: str, fragment: str) -> None:
    with pytest.raises(RobevalError, match=fragment):
        parse_seeds(text)


@pytest.mark.parametrize(("text", "field", "values"), [
    ("regulariser=absum:lambda=0.01|0.1|1", "regularisers",
     (("absum:lambda=0.01",), ("absum:lambda=0.1",), ("absum:lambda=1",))),
    ("reg=none|l2:lam=1e-3+absum:lambda=1e+2", "regularisers", ((), ("l2:lam=1e-3", "absum:lambda=1e+2"))),
    ("regularisers=l2:lam=0.1,scope=all|l1:lam=0.1", "regularisers", (("l2:lam=0.1,scope=all",), ("l1:lam=0.1",))),
    ("lr=1e-3|0.01|1/100", "lr", None),  # 0.01 twice: refused below
    ("lr=1e-3|0.01", "lr", (0.001, 0.01)),
    ("--weight-decay=0|5e-4", "weight_decay", (0.0, 5e-4)),
    ("n-train=none|512", "n_train", (None, 512)),
    ("epochs=1|3", "epochs", (1, 3)),
    ("milestones=2,3|1", "milestones", ((2, 3), (1,))),
    ("arch=small-cnn:activation=relu|gelu", "arch", ("small-cnn:activation=relu", "small-cnn:activation=gelu")),
    ("optimizer=adam|sgd", "optimizer", ("adam", "sgd")),
])
def test_a_sweep_is_one_setting_and_its_typed_values(text: str, field: str, values: tuple | None) -> None:
    if values is None:
        with pytest.raises(RobevalError, match="'0.01' and '1/100', the same value"):
            parse_axis(text)
        return
    axis = parse_axis(text)
    assert axis.field == field and axis.values == values
    assert all(type(v) is type(w) for v, w in zip(axis.values, values, strict=True)), "coerced to the field's type"


@pytest.mark.parametrize(("text", "fragment"), [
    ("lr", "must be KEY=V1|V2"), ("=1|2", "must be KEY=V1|V2"), ("lr=", "gives no value"),
    ("lr=0.1||1", "empty value (value 2)"), ("lr=0.1|0.1", "'0.1' twice"),
    ("lrr=0.1", "did you mean 'lr'"), ("colour=red", "unknown setting 'colour'"),
    ("seed=1|2", "--seeds"), ("out=a|b", "--out is the sweep's folder"), ("device=cpu|cuda", "cannot vary"),
    ("epochs=1.5", "'1.5' is not a whole number"), ("lr=fast", "cannot read --sweep lr value 'fast'"),
])
def test_bad_sweeps(text: str, fragment: str) -> None:
    with pytest.raises(RobevalError, match=fragment.replace("|", r"\|").replace("(", r"\(").replace(")", r"\)")):
        parse_axis(text)


def test_a_setting_given_as_a_flag_and_swept_is_refused() -> None:
    with pytest.raises(RobevalError, match="--lr and --sweep lr=... both set lr"):
        check_flags({"lr", "epochs"}, [parse_axis("lr=0.1|1")], seeds=False)
    with pytest.raises(RobevalError, match="--regulariser and --sweep"):
        check_flags({"regularisers"}, [parse_axis("reg=l2|l1")], seeds=False)
    with pytest.raises(RobevalError, match="--seed .* or --seeds"):
        check_flags({"seed"}, [], seeds=True)
    with pytest.raises(RobevalError, match="varies lr twice"):
        check_flags(set(), [parse_axis("lr=0.1"), parse_axis("lr=1")], seeds=False)


def test_cluster_flags_without_a_sweep_and_a_pt_folder_are_refused(tmp_path) -> None:
    with pytest.raises(RobevalError, match="add --seeds or --sweep"):
        sweep_from_flags(BASE, seeds=None, sweeps=None, given=(), out=None, workers=2)
    assert sweep_from_flags(BASE, seeds=None, sweeps=None, given=(), out=None) is None  # a plain training
    with pytest.raises(RobevalError, match="--out is a folder"):
        sweep(tmp_path / "model.pt", "0,1")
    with pytest.raises(RobevalError, match="need --workers N or --ray-address"):
        sweep(tmp_path, "0,1", cpus_per_task=2)


# --- names ----------------------------------------------------------------------------------


def test_names_say_the_combination_and_are_safe_file_names() -> None:
    assert combination_name((("regularisers", "absum:lambda=0.1"),), 3) == "absum-lambda=0.1_seed=3"
    assert combination_name((("regularisers", "none"), ("lr", "0.01")), 0) == "none_lr=0.01_seed=0"
    assert combination_name((), 7) == "seed=7"
    odd = combination_name((("objective", "trades:beta=6, eps=8/255"),), 1)
    assert odd == "trades-beta=6,eps=8-255_seed=1" and "/" not in odd
    long_a = combination_name((("regularisers", "l2:lam=0.1" + ",x=1" * 80),), 0)
    long_b = combination_name((("regularisers", "l2:lam=0.1" + ",x=1" * 81),), 0)
    assert len(long_a.encode()) <= 200 and long_a != long_b


def test_combinations_run_seeds_outermost_and_check_every_setting_first(tmp_path) -> None:
    names = [c.name for c in plan(sweep(tmp_path, "1,0", "lr=0.01|0.1", "epochs=1|2"))]
    assert names == [f"lr={lr}_epochs={e}_seed={s}" for s in (1, 0) for lr in (0.01, 0.1) for e in (1, 2)]
    with pytest.raises(RobevalError, match="sweep combination warmup_epochs=3_seed=0: --warmup-epochs"):
        plan(sweep(tmp_path, "0", "warmup-epochs=0|3"))
    with pytest.raises(RobevalError, match="sweep combination absum-lambda=snc_seed=0: .*'snc'"):
        plan(sweep(tmp_path, "0", "reg=absum:lambda=0.1|snc"))  # bare values replace the last value
    with pytest.raises(RobevalError, match="combination absumm-lambda=1_seed=0: unknown regulariser 'absumm'"):
        plan(sweep(tmp_path, "0", "reg=absum:lambda=1|absumm:lambda=1"))


# --- running in this process ----------------------------------------------------------------


def test_a_local_sweep_writes_one_checkpoint_per_combination_and_a_rerun_keeps_them(
    tmp_path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "grid"
    threads = torch.get_num_threads()
    result = cli.invoke(app, [*FLAGS, "--out", str(out), "--seeds", "0,1", "--sweep", "reg=none|l2:lam=0.01"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "sweep.csv", keep_default_na=False)
    names = ["none_seed=0", "l2-lam=0.01_seed=0", "none_seed=1", "l2-lam=0.01_seed=1"]
    assert table["name"].tolist() == names and set(table["status"]) == {"trained"}
    assert table["regularisers"].tolist() == ["none", "l2:lam=0.01"] * 2
    assert torch.get_num_threads() == threads, "the pinned thread count is given back"
    for row in table.itertuples():
        assert Path(row.checkpoint) == out / f"{row.name}.pt"
        _, meta = read_checkpoint(row.checkpoint)
        assert meta.train_spec["seed"] == row.seed
        assert meta.train_spec["regularisers"] == ([] if row.regularisers == "none" else [row.regularisers])
        assert meta.metrics["test_acc"] == pytest.approx(row.test_acc)
        assert not Path(f"{row.checkpoint}.resume").exists()
    assert not same_weights(out / f"{names[0]}.pt", out / f"{names[1]}.pt"), "the regulariser changed the training"
    assert not same_weights(out / f"{names[0]}.pt", out / f"{names[2]}.pt"), "the seed changed the training"

    # The same training alone, on one torch thread, gives the same bits.
    torch.set_num_threads(1)
    try:
        alone = loop.train(BASE.replace(seed=1, regularisers=("l2:lam=0.01",), out=str(tmp_path / "alone.pt")))
    finally:
        torch.set_num_threads(threads)
    assert same_weights(alone.checkpoint, out / f"{names[3]}.pt")

    monkeypatch.setattr(loop, "load_dataset", lambda *a, **k: pytest.fail("a finished combination was retrained"))
    again = cli.invoke(app, [*FLAGS, "--out", str(out), "--seeds", "0,1", "--sweep", "reg=none|l2:lam=0.01"])
    assert again.exit_code == 0, again.output
    assert again.output.count("kept (trained before)") == 4
    assert set(pd.read_csv(out / "sweep.csv")["status"]) == {"existing"}


def test_a_file_in_the_way_of_a_checkpoint_is_refused_before_training(tmp_path, no_training) -> None:
    out = tmp_path / "grid"
    out.mkdir()
    torch.save({"format": "x"}, out / "lr=0.1_seed=0.pt")
    with pytest.raises(RobevalError, match="lr=0.1_seed=0.pt is in the way of the sweep's checkpoint"):
        run_sweep(sweep(out, "0", "lr=0.01|0.1"))
    assert not (out / "lr=0.01_seed=0.pt").exists()


def test_a_rerun_with_other_settings_is_refused_before_training(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "grid"
    run_sweep(sweep(out, "0", "lr=0.01"))
    monkeypatch.setattr(loop, "load_dataset", lambda *a, **k: pytest.fail("trained"))
    changed = sweep_from_flags(BASE.replace(epochs=1), seeds="0", sweeps=["lr=0.01|0.1"], given=(), out=str(out))
    with pytest.raises(RobevalError, match=r"lr=0.01_seed=0.pt was trained with other settings \(epochs 2 there, "
                                           r"1 here\); delete it or choose another --out"):
        run_sweep(changed)


def test_a_killed_sweep_resumes_the_half_trained_combination(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = run_sweep(sweep(tmp_path / "whole", "0", "lr=0.01|0.003"))
    out = tmp_path / "split"
    real_save = loop.save_resume

    def die_in_the_second(path: Path, spec: dict, state: Any) -> None:
        real_save(path, spec, state)
        if spec["lr"] == 0.003:
            raise KeyboardInterrupt("killed after epoch 1")

    monkeypatch.setattr(loop, "save_resume", die_in_the_second)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep(out, "0", "lr=0.01|0.003"))
    monkeypatch.setattr(loop, "save_resume", real_save)
    assert pd.read_csv(out / "sweep.csv")["status"].tolist() == ["trained", "pending"]
    assert (out / "lr=0.003_seed=0.pt.resume").exists()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = run_sweep(sweep(out, "0", "lr=0.01|0.003"))
    assert any("resuming from epoch 1 of 2" in str(w.message) for w in caught)
    assert resumed["status"].tolist() == ["existing", "trained"]
    for name in whole["name"]:
        assert same_weights(tmp_path / "whole" / f"{name}.pt", out / f"{name}.pt")


def test_a_failing_combination_stops_the_sweep_with_one_line_naming_it(tmp_path) -> None:
    out = tmp_path / "grid"
    empty = tmp_path / "no-data"
    empty.mkdir()
    result = cli.invoke(app, [*TRAIN, "--out", str(out), "--data-root", str(empty), "--seeds", "0,1",
                              "--sweep", "dataset=digits|mnist"])
    line = one_error(result)
    assert "sweep combination mnist_seed=0: cannot find the train files of dataset 'mnist'" in line
    table = pd.read_csv(out / "sweep.csv", keep_default_na=False)
    assert table["status"].tolist() == ["trained", "failed", "pending", "pending"]
    assert "cannot find the train files" in table["error"][1]
    assert (out / "digits_seed=0.pt").exists(), "finished combinations stay"


# --- Ray ------------------------------------------------------------------------------------


def test_workers_give_bitwise_the_checkpoints_of_the_local_sweep(ray_local, tmp_path, monkeypatch) -> None:
    args = ["--seeds", "0", "--sweep", "lr=0.01|0.003|1e-3"]
    local = cli.invoke(app, [*FLAGS, "--out", str(tmp_path / "local"), *args])
    assert local.exit_code == 0, local.output
    remote = cli.invoke(app, [*FLAGS, "--out", str(tmp_path / "ray"), "--workers", "2", *args])
    assert remote.exit_code == 0, remote.output
    a, b = (pd.read_csv(tmp_path / d / "sweep.csv") for d in ("local", "ray"))
    same = ["name", "seed", "lr", "status", "test_acc", "train_acc", "train_loss"]
    pd.testing.assert_frame_equal(a[same], b[same])
    for name in a["name"]:
        assert same_weights(tmp_path / "local" / f"{name}.pt", tmp_path / "ray" / f"{name}.pt"), name

    from robeval.cluster import train_tasks

    monkeypatch.setattr(train_tasks, "train_on_ray", lambda *a, **k: pytest.fail("Ray ran finished combinations"))
    again = cli.invoke(app, [*FLAGS, "--out", str(tmp_path / "ray"), "--workers", "2", *args])
    assert again.exit_code == 0 and again.output.count("kept (trained before)") == 3, again.output


def test_a_user_error_in_a_ray_task_is_the_local_one_line_error(ray_local, tmp_path) -> None:
    out = tmp_path / "grid"
    empty = tmp_path / "no-data"
    empty.mkdir()
    result = cli.invoke(app, [*TRAIN, "--out", str(out), "--data-root", str(empty), "--seeds", "0",
                              "--sweep", "dataset=mnist|digits", "--workers", "2"])
    line = one_error(result)
    assert "sweep combination mnist_seed=0: cannot find the train files of dataset 'mnist'" in line
    assert pd.read_csv(out / "sweep.csv")["status"][0] == "failed"


def test_a_task_brings_back_its_warnings(tmp_path) -> None:
    """Called in-process: what a worker would send the driver (its own output is lost)."""
    from robeval.cluster.train_tasks import TrainTask, train_task

    combo = plan(sweep(tmp_path, "0", "lr=0.01"))[0]
    Path(f"{combo.spec.out}.resume").write_bytes(b"not a resume file")
    outcome = train_task(TrainTask(combo, threads=1))
    assert outcome.row.status == "trained" and Path(combo.spec.out).exists()
    assert [kind for kind, _ in outcome.messages] == ["log"]
    assert "ignoring unreadable resume file" in outcome.messages[0][1]


def test_tasks_larger_than_the_cluster_are_refused_not_left_waiting(ray_local, tmp_path) -> None:
    """Four torch threads per combination ask Ray for four CPUs; the test's Ray has two."""
    with pytest.raises(RobevalError, match="asks Ray for 4 CPUs but the Ray cluster has 2"):
        run_sweep(sweep(tmp_path / "grid", "0", "lr=0.01|0.1", workers=2, threads=4))
    assert pd.read_csv(tmp_path / "grid" / "sweep.csv")["status"].tolist() == ["pending", "pending"]
