"""The evaluation runner: tables, the eps cascade, contract enforcement, resuming."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

import robeval
from robeval.attacks import attacks
from robeval.errors import AttackContractError, RobevalError
from robeval.eval import runner

RUN = dict(attacks=["fgsm", "pgd:steps=5"], eps="0,0.05,0.1,0.2", n=120, batch_size=50, device="cpu")


def read_tables(out: Path) -> dict[str, pd.DataFrame]:
    return {
        "results": pd.read_csv(out / "results.csv").drop(columns=["seconds"]),
        "pivot": pd.read_csv(out / "accuracy_eps.csv"),
        "samples": pd.read_csv(out / "samples.csv"),
    }


def test_evaluate_writes_consistent_tables(digits_checkpoint, tmp_path) -> None:
    df = robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path), **RUN)
    assert {"model", "dataset", "attack", "norm", "eps", "n", "clean_acc", "robust_acc", "seconds",
            "robeval_version", "seed"} <= set(df.columns)
    assert len(df) == 2 * 4 and (df["dataset"] == "digits").all() and (df["n"] == 120).all()
    for _, group in df.groupby("attack"):
        acc = group.sort_values("eps")["robust_acc"].to_numpy()
        assert acc[0] == group["clean_acc"].iloc[0]  # eps 0 is clean accuracy
        assert np.all(np.diff(acc) <= 0)  # never rises with eps
        assert acc[-1] < acc[0] - 0.1  # and the attack does something
    samples = pd.read_csv(tmp_path / "samples.csv")
    assert (samples["perturbation_norm"] <= samples["eps"] + 1e-6).all()
    recomputed = samples.assign(ok=samples.adv_pred == samples.label).groupby(["attack", "eps"])["ok"].mean()
    merged = df.set_index(["attack", "eps"])["robust_acc"]
    assert np.allclose(recomputed.sort_index(), merged.sort_index())
    for name in ("spec.yaml", "results.csv", "accuracy_eps.csv", "accuracy_eps.md", "samples.csv"):
        assert (tmp_path / name).stat().st_size > 0


def test_same_spec_same_tables_and_nothing_recomputed(digits_checkpoint, tmp_path, monkeypatch) -> None:
    a = robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "a"), **RUN)
    b = robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "b"), **RUN)
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))

    def fail(*args, **kwargs):
        raise AssertionError("a finished batch was recomputed")

    monkeypatch.setattr(runner, "_attack_points", fail)
    again = robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "a"), **RUN)
    pd.testing.assert_frame_equal(a, again)


@dataclass(frozen=True)
class _Cheat:
    name: ClassVar[str] = "cheat"
    nested: ClassVar[bool] = True
    norm: str = "linf"
    factor: float = 3.0
    nan: bool = False

    def __call__(self, model, x, y, *, eps, generator=None):
        out = (x + self.factor * eps).clamp(0, 1)
        if self.nan:
            out[0, 0, 0, 0] = float("nan")
        return out


@pytest.mark.parametrize(("params", "message"), [("factor=3", "budget"), ("factor=0.5,nan=true", "NaN")])
def test_runner_refuses_results_that_break_the_contract(digits_checkpoint, tmp_path, params, message) -> None:
    attacks.register("cheat")(_Cheat)
    try:
        with pytest.raises(AttackContractError, match=message):
            robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path), attacks=[f"cheat:{params}"],
                             eps="0,0.1", n=60, device="cpu")
    finally:
        attacks.unregister("cheat")
    with sqlite3.connect(tmp_path / "store.sqlite") as conn:
        query = "SELECT COUNT(*) FROM samples JOIN cells USING (cell_key) WHERE description LIKE ?"
        at_zero = conn.execute(query, ('%"eps": 0.0,%',)).fetchone()[0]
        at_refused = conn.execute(query, ('%"eps": 0.1,%',)).fetchone()[0]
    assert at_zero > 0, "the eps=0 batch before the refusal is kept"
    assert at_refused == 0, "refused results must not be stored"


def test_run_uses_the_checkpoint_dataset_and_rejects_mismatches(digits_checkpoint, tmp_path) -> None:
    with pytest.raises(RobevalError, match="shape"):
        robeval.evaluate(models=[str(digits_checkpoint)], dataset="mnist-mini", out=str(tmp_path), n=10)
    with pytest.raises(RobevalError, match="did you mean"):
        robeval.evaluate(models=[str(digits_checkpoint)], dataset="digitz", out=str(tmp_path), n=10)


def test_n_larger_than_the_split_uses_it_all(digits_checkpoint, tmp_path) -> None:
    df = robeval.evaluate(models=[str(digits_checkpoint)], attacks=["fgsm"], eps="0.1", n=10**6,
                          out=str(tmp_path), device="cpu")
    x, _ = robeval.load_dataset("digits", split="test")
    assert (df["n"] == len(x)).all()


def test_public_api_round_trip(digits_checkpoint) -> None:
    model = robeval.load_model(str(digits_checkpoint))
    assert not model.training
    x, y = robeval.load_dataset("digits", split="test", n=64, seed=1)
    assert x.min() >= 0 and x.max() <= 1 and x.shape[0] == 64
    x_adv = robeval.attacks.get("pgd", steps=5)(model, x, y, eps=0.2, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6


def test_yaml_spec_with_flag_overrides(digits_checkpoint, tmp_path) -> None:
    from robeval.eval.evaluate import run
    from robeval.spec import RunSpec

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        f"models: [{digits_checkpoint}]\n"
        "attacks: [fgsm, {name: pgd, steps: 3, norm: l2}]\n"
        "eps: ['0', '1/2', 1.0]\nn: 40\nseed: 5\ndevice: cpu\n"
    )
    spec = RunSpec.from_yaml(spec_file, out=str(tmp_path / "out"), n=30)
    assert spec.eps == (0.0, 0.5, 1.0) and spec.n == 30 and spec.seed == 5
    df = run(spec)
    assert set(df["attack"]) == {"fgsm", "pgd:norm=l2,steps=3"} and (df["n"] == 30).all()
    resolved = RunSpec.from_yaml(tmp_path / "out" / "spec.yaml")
    assert resolved.dataset == "digits" and resolved.attacks == ("fgsm", "pgd:norm=l2,steps=3")
    with pytest.raises(RobevalError, match="unknown run setting"):
        RunSpec.from_dict({"models": ["m.pt"], "epsilon": [0.1]})


def test_samples_point_back_to_the_test_split(digits_checkpoint, tmp_path) -> None:
    robeval.evaluate(models=[str(digits_checkpoint)], attacks=["fgsm"], eps="0.1", n=50, seed=3,
                     out=str(tmp_path), device="cpu")
    samples = pd.read_csv(tmp_path / "samples.csv")
    _, y_split = robeval.load_dataset("digits", split="test")
    _, y_subset = robeval.load_dataset("digits", split="test", n=50, seed=3)
    assert (samples["label"].to_numpy() == y_subset.numpy()).all()
    assert (y_split.numpy()[samples["split_index"].to_numpy()] == samples["label"].to_numpy()).all()
    assert samples["split_index"].nunique() == 50


def test_eval_mode_freezes_and_restores(digits_model) -> None:
    digits_model.train()
    with runner.eval_mode(digits_model) as model:
        assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert digits_model.training and all(p.requires_grad for p in digits_model.parameters())
    digits_model.eval()


def test_results_say_how_each_model_was_trained(digits_checkpoint, tmp_path) -> None:
    df = robeval.evaluate(models=[str(digits_checkpoint)], attacks=["fgsm"], eps="0.1", n=20,
                          out=str(tmp_path), device="cpu")
    assert (df["training"] == "ce, 8 epochs").all()
