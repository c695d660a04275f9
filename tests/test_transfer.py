"""Transfer grids: every entry equals the target's accuracy on the source's adversarials
recomputed by hand; resume and added targets recompute nothing stored; minimal-norm
sources keep only what fits each ball; black-box targets are allowed."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import robeval
from robeval.attacks.base import perturbation_norms, restrict_to_ball
from robeval.cli import app
from robeval.errors import RobevalError
from robeval.eval import transfer as transfer_module
from robeval.eval.transfer import transfer
from tests.fixture_seed import fixture_seed

EPS = "0,0.1,0.3"


@pytest.fixture(scope="module")
def second_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another digits CNN (other width and seed): a substitute model, as in Absum's
    transferred PGD."""
    from robeval.train import TrainSpec, train

    out = tmp_path_factory.mktemp("ckpt2") / "digits_other.pt"
    return train(TrainSpec(dataset="digits", arch="small-cnn:c1=8,c2=16", epochs=6, batch_size=32, lr=3e-3,
                           seed=1 + fixture_seed(), device="cpu", out=str(out))).checkpoint


def _by_hand(sources: list[Path], targets: list[Path], attack: str, eps: float, n: int) -> dict[tuple[str, str], float]:
    x, y = robeval.load_dataset("digits", split="test", n=n, seed=0)
    models = {p.stem: robeval.load_model(str(p)) for p in dict.fromkeys(sources + targets)}
    expected = {}
    for s in sources:
        x_adv = x if eps == 0 else robeval.attacks.get(attack)(models[s.stem], x, y, eps=eps)
        for t in dict.fromkeys(sources + targets):
            with torch.no_grad():
                ok = (models[t.stem](x).argmax(1) == y) & (models[t.stem](x_adv).argmax(1) == y)
            expected[(s.stem, t.stem)] = float(ok.double().mean())
    return expected


def test_every_entry_is_the_targets_accuracy_on_the_sources_adversarials(digits_checkpoint, second_checkpoint, tmp_path):
    df = robeval.transfer(sources=[str(digits_checkpoint)], targets=[str(second_checkpoint)], attacks=["fgsm"], eps=EPS,
                  n=60, batch_size=25, device="cpu", out=str(tmp_path / "grid"))
    assert set(df["source"]) == {digits_checkpoint.stem} and len(df) == 2 * 3
    for eps in (0.0, 0.1, 0.3):
        expected = _by_hand([digits_checkpoint], [second_checkpoint], "fgsm", eps, 60)
        part = df[df["eps"] == eps].set_index(["source", "target"])["robust_acc"].to_dict()
        assert part == pytest.approx(expected, abs=1e-12), eps
    white = df[df["white_box"]]
    assert list(white["target"].unique()) == [digits_checkpoint.stem]
    # white box hurts more than transfer, and the budget does harm
    at = df[df["eps"] == 0.3].set_index("target")["robust_acc"]
    assert at[digits_checkpoint.stem] < at[second_checkpoint.stem] < df[df["eps"] == 0]["robust_acc"].max()
    out = Path(df.attrs["out"])
    for name in ("transfer.csv", "transfer_grid.md", "transfer_samples.csv", "transfer_fgsm.png", "spec.yaml"):
        assert (out / name).is_file(), name
    samples = pd.read_csv(out / "transfer_samples.csv")
    assert len(samples) == 6 * 60
    row = df[(df["eps"] == 0.3) & (df["target"] == second_checkpoint.stem)].iloc[0]
    mine = samples[(samples["eps"] == 0.3) & (samples["target"] == second_checkpoint.stem)]
    assert row["robust_acc"] == pytest.approx(((mine["clean_pred"] == mine["label"]) & (mine["adv_pred"] == mine["label"])).mean())
    assert row["source_backward_passes"] == 60 and df[df["eps"] == 0]["source_backward_passes"].eq(0).all()


def test_rerun_recomputes_nothing_and_a_new_target_reuses_the_same_adversarials(
    digits_checkpoint, second_checkpoint, tmp_path, monkeypatch
):
    out = str(tmp_path / "grid")
    spec = dict(sources=[str(digits_checkpoint)], attacks=["pgd:steps=5"], eps="0.2", n=40, batch_size=20,
                device="cpu", out=out)
    first = transfer(**spec)
    calls = []
    real = transfer_module._make
    monkeypatch.setattr(transfer_module, "_make", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = transfer(**spec)
    assert calls == [] and again["robust_acc"].tolist() == first["robust_acc"].tolist()
    grown = transfer(**spec, targets=[str(second_checkpoint)], overwrite=True)  # another grid into the same folder
    assert len(calls) == 2  # two batches, remade once for the new target only
    keep = ["source", "target", "eps", "robust_acc", "adv_acc"]
    white = grown[grown["white_box"]][keep].reset_index(drop=True)
    assert white.equals(first[keep].reset_index(drop=True))  # seeded per batch: same adversarials


def test_minimal_norm_source_keeps_what_fits_each_ball(digits_checkpoint, second_checkpoint, tmp_path):
    df = transfer(sources=[str(second_checkpoint)], targets=[str(digits_checkpoint)], attacks=["deepfool"],
                  eps="0.5,1.5,unbounded", n=30, device="cpu", out=str(tmp_path / "df"))
    x, y = robeval.load_dataset("digits", split="test", n=30, seed=0)
    source, target = robeval.load_model(str(second_checkpoint)), robeval.load_model(str(digits_checkpoint))
    found = robeval.attacks.get("deepfool")(source, x, y, eps=float("inf"))
    for eps in (0.5, 1.5, float("inf")):
        x_adv = restrict_to_ball(x, found, eps, "l2")
        assert float(perturbation_norms(x_adv - x, "l2").max()) <= eps
        with torch.no_grad():
            want = float(((target(x).argmax(1) == y) & (target(x_adv).argmax(1) == y)).double().mean())
        got = df[(df["eps"] == eps) & (df["target"] == digits_checkpoint.stem)]["robust_acc"].item()
        assert got == pytest.approx(want), eps
    costs = df.groupby("eps")["source_backward_passes"].first()
    assert costs.nunique() == 1 and costs.iloc[0] > 0  # one search serves every eps


def test_black_box_target_is_allowed_but_not_as_a_source(digits_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "digits.onnx"
    model = robeval.load_model(str(digits_checkpoint))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(2, 1, 8, 8),), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
    box = f"onnx:{path}:backend=runtime"
    df = transfer(sources=[str(digits_checkpoint)], targets=[box], attacks=["fgsm"], eps="0.3", n=30,
                  dataset="digits", device="cpu", out=str(tmp_path / "bb"))
    by_target = df.set_index("target")["robust_acc"]
    assert by_target["digits"] == pytest.approx(by_target[digits_checkpoint.stem], abs=1e-9)  # same network
    with pytest.raises(RobevalError, match="black box"):
        transfer(sources=[box], attacks=["fgsm"], eps="0.3", n=10, dataset="digits", device="cpu",
                 out=str(tmp_path / "bad"))


def test_cli_prints_the_grid_and_bad_input_is_one_line(digits_checkpoint, second_checkpoint, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["transfer", str(digits_checkpoint), str(second_checkpoint), "--attack", "fgsm",
                                      "--eps", "0,0.2", "--n", "20", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "target \\ source" in result.output and (out / "transfer_grid.md").is_file()
    assert len(pd.read_csv(out / "transfer.csv")) == 2 * 2 * 2
    bad = CliRunner().invoke(app, ["transfer", str(digits_checkpoint), "--attack", "pgdd", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "unknown attack 'pgdd'" in bad.output and "Traceback" not in bad.output
    report = CliRunner().invoke(app, ["report", str(out), "--out", str(tmp_path / "rep" / "report.md")])
    assert report.exit_code == 0, report.output
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "transfer report" in text and "## fgsm, eps 0.2" in text and "report_files/transfer_fgsm.png" in text
    assert (tmp_path / "rep" / "report_files" / "transfer_fgsm.png").is_file()


def test_spec_yaml_reproduces_the_grid(digits_checkpoint, second_checkpoint, tmp_path) -> None:
    first = transfer(sources=[str(digits_checkpoint), str(second_checkpoint)], attacks=["fgsm"], eps="0.2", n=20,
                     device="cpu", out=str(tmp_path / "a"))
    again = CliRunner().invoke(app, ["transfer", "--spec", str(tmp_path / "a" / "spec.yaml"), "--out",
                                     str(tmp_path / "b"), "-q"])
    assert again.exit_code == 0, again.output
    second = pd.read_csv(tmp_path / "b" / "transfer.csv")
    assert second["robust_acc"].tolist() == first["robust_acc"].tolist()
    empty = CliRunner().invoke(app, ["transfer", "--out", str(tmp_path / "c")])
    assert empty.exit_code != 0 and "no source model" in empty.output
