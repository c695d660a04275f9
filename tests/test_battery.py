"""The runner's battery features: eps reuse with pass counters, minimal-norm one-pass
curves, ``unbounded``, L0/L2/L-inf curves, targeted grids, restarts and fgm."""

from __future__ import annotations

import math
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
from robeval.attacks.base import loss_gradient, restrict_to_ball
from robeval.errors import RobevalError
from robeval.eval.counting import PassCounter
from tests.attack_checks import accuracy

EPS = "0,0.05,0.1,0.15,0.2"


def run(ckpt: Path, out: Path, **kwargs) -> pd.DataFrame:
    settings = {"n": 150, "batch_size": 64, "device": "cpu", "seed": 0}
    return robeval.evaluate(models=[str(ckpt)], out=str(out), **{**settings, **kwargs})


def samples(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "samples.csv")


# --- pass counting ------------------------------------------------------------------


def test_pass_counter_counts_images_through_forward_and_backward(digits_model, digits_test) -> None:
    x, y = digits_test
    counter = PassCounter(digits_model)
    with torch.no_grad():
        counter(x[:10])
    assert (counter.counts.forward, counter.counts.backward) == (10, 0)
    loss_gradient(counter, x[:7], y[:7])  # autograd.grad w.r.t. the input
    assert (counter.counts.forward, counter.counts.backward) == (17, 7)
    robeval.attacks.get("pgd:steps=4,keep=last")(counter, x[:5], y[:5], eps=0.1, generator=torch.Generator().manual_seed(0))
    assert (counter.counts.forward, counter.counts.backward) == (37, 27)


# --- budgeted attacks: reuse across eps ----------------------------------------------------


@pytest.mark.parametrize("attack", ["fgsm", "pgd:steps=5,random_start=false"])
def test_reuse_equals_running_minimum_of_independent_runs_with_fewer_passes(
    digits_checkpoint, tmp_path, attack
) -> None:
    grid = [0.05, 0.1, 0.15, 0.2]
    cascade = run(digits_checkpoint, tmp_path / "cascade", attacks=[attack], eps=grid)
    fooled_cascade = samples(tmp_path / "cascade").pivot(index="index", columns="eps", values="adv_pred")
    labels = samples(tmp_path / "cascade").groupby("index")["label"].first()

    independent, backward = {}, 0
    for eps in grid:
        df = run(digits_checkpoint, tmp_path / f"alone{eps}", attacks=[attack], eps=[eps])
        s = samples(tmp_path / f"alone{eps}").set_index("index")
        independent[eps] = s["adv_pred"] != s["label"]
        backward += int(df["backward_passes"].iloc[0])
    # Per sample: fooled at eps_k by the cascade <=> fooled at some eps_j <= eps_k alone.
    running = pd.DataFrame(independent).cummax(axis=1)
    assert ((fooled_cascade.ne(labels, axis=0)) == running).all().all()
    assert np.allclose(cascade["robust_acc"], [1 - running[e].mean() for e in grid], atol=1e-12)
    # The cascade did strictly less work for the same curve.
    assert cascade["backward_passes"].iloc[-1] < backward


def test_pass_counts_follow_the_cascade_exactly(digits_checkpoint, tmp_path) -> None:
    """FGSM is one forward and one backward pass per attacked point, and the cascade
    attacks exactly the points still robust at the previous eps; costs are cumulative."""
    df = run(digits_checkpoint, tmp_path, attacks=["fgsm"], eps=EPS).sort_values("eps")
    n = df["n"].iloc[0]
    robust = (df["robust_acc"] * n).round().astype(int).to_numpy()
    attacked = np.concatenate([[0], robust[:-1]])  # eps 0 attacks nothing
    attacked[1] = robust[0]  # eps_1 attacks the clean-correct points
    assert df["backward_passes"].to_list() == np.cumsum(attacked).tolist()
    assert df["forward_passes"].to_list() == df["backward_passes"].to_list()
    assert (np.diff(df["seconds"].to_numpy()) >= 0).all()


def test_cells_depend_on_the_lower_grid(digits_checkpoint, tmp_path) -> None:
    """An eps reached through another grid is another cell, so a cached independent
    result can never be mixed into a cascade (the curve could then rise)."""
    alone = run(digits_checkpoint, tmp_path, attacks=["fgsm"], eps=[0.2])
    both = run(digits_checkpoint, tmp_path, attacks=["fgsm"], eps=[0.1, 0.2], overwrite=True)  # same store
    assert alone["cell_key"].iloc[0] != both["cell_key"].iloc[1]
    assert both["robust_acc"].iloc[1] <= min(both["robust_acc"].iloc[0], alone["robust_acc"].iloc[0])


# --- minimal-norm attacks -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _LineSearch:
    """A toy minimal-norm attack: the smallest ``t`` on a grid up to ``t_max`` for which
    ``x + t * sign(grad)`` is misclassified (``x`` where none is)."""

    name: ClassVar[str] = "linesearch"
    minimal: ClassVar[bool] = True
    targeted: ClassVar[bool] = False
    nested: ClassVar[bool] = True
    norm: str = "linf"
    t_max: float = 0.3

    def __call__(self, model, x, y, *, eps=math.inf, generator=None):
        direction = loss_gradient(model, x, y).sign()
        best = x.detach().clone()
        done = torch.zeros(len(x), dtype=torch.bool)
        for t in torch.linspace(0.01, self.t_max, 30):
            cand = (x + t * direction).clamp(0, 1)
            with torch.no_grad():
                fooled = model(cand).argmax(1) != y
            new = fooled & ~done
            best[new] = cand[new]
            done |= fooled
        return restrict_to_ball(x, best, eps, self.norm)


@pytest.fixture
def linesearch():
    attacks.register("linesearch")(_LineSearch)
    yield
    attacks.unregister("linesearch")


@pytest.mark.parametrize(
    ("spec", "grid"),
    [("linesearch", [0.0, 0.03, 0.06, 0.1, 0.2]), ("deepfool", [0.0, 0.3, 0.6, 0.9, 1.5]),
     ("deepfool:norm=linf", [0.0, 0.05, 0.1, 0.15, 0.3]),
     ("cw:steps=50,binary_search_steps=3,initial_const=1", [0.0, 0.3, 0.6, 0.9, 1.5])],
)
def test_minimal_one_pass_curve_equals_separate_bounded_calls(
    linesearch, digits_checkpoint, digits_model, tmp_path, spec, grid
) -> None:
    df = run(digits_checkpoint, tmp_path, attacks=[spec], eps=grid).set_index("eps")
    assert df["robust_acc"].iloc[-1] < df["robust_acc"].iloc[0] - 0.2, "the grid must span the curve"
    x, y = robeval.load_dataset("digits", split="test", n=150, seed=0)
    with torch.no_grad():
        ok = digits_model(x).argmax(1) == y  # clean-misclassified points count as wrong
    attack = robeval.attacks.get(spec)
    for eps in grid:
        robust = accuracy(digits_model, attack(digits_model, x[ok], y[ok], eps=eps), y[ok]) * ok.sum() / len(y)
        assert df.loc[eps, "robust_acc"] == pytest.approx(float(robust))
    # One search served the whole curve: every row reports the same (whole) cost.
    assert df["backward_passes"].nunique() == 1 and df["backward_passes"].iloc[0] > 0


def test_unbounded_counts_failed_searches_as_robust(linesearch, digits_checkpoint, tmp_path) -> None:
    df = run(digits_checkpoint, tmp_path, attacks=["linesearch:t_max=0.08", "fgsm"], eps="0.05,unbounded")
    unbounded = df[np.isinf(df["eps"])]
    assert list(unbounded["attack"]) == ["linesearch:t_max=0.08"]  # budgeted attacks have no such cell
    s = samples(tmp_path)
    s = s[(s.attack == "linesearch:t_max=0.08") & np.isinf(s.eps)]
    clean_ok = s.clean_pred == s.label
    failed = clean_ok & (s.adv_pred == s.label)
    assert failed.any() and np.isinf(s.loc[failed, "perturbation_norm"]).all()
    assert unbounded["robust_acc"].iloc[0] == pytest.approx(failed.mean())
    md = (tmp_path / "accuracy_eps.md").read_text()
    assert "unbounded" in md and "| fgsm |" in md.replace("digits_small | ", "")


def test_norm_curves_agree_with_the_table_and_are_monotone(linesearch, digits_checkpoint, tmp_path) -> None:
    grid = [0.02, 0.05, 0.1]
    df = run(digits_checkpoint, tmp_path, attacks=["linesearch"], eps=grid).set_index("eps")
    curves = pd.read_csv(tmp_path / "norm_curves.csv")
    assert set(curves["norm"]) == {"l0", "l2", "linf"}
    for _, curve in curves.groupby("norm"):
        assert (np.diff(curve["robust_acc"]) <= 0).all() and (np.diff(curve["bound"]) > 0).all()
    linf = curves[curves.norm == "linf"]
    for eps in grid:  # the step curve at bound eps is the table's value
        at = linf[linf.bound <= eps]["robust_acc"].iloc[-1]
        assert at == pytest.approx(df.loc[eps, "robust_acc"])
    assert (tmp_path / "norm_curves.png").stat().st_size > 1000
    # The relative perturbation ||r||/||x|| (DeepFool Eq. 2) is the mean over fooled points.
    s = samples(tmp_path)
    x, _ = robeval.load_dataset("digits", split="test", n=150, seed=0)
    x_norm = x.flatten(1).abs().amax(1).double().numpy()[s["index"]]
    row = s[(s.eps == 0.1) & (s.clean_pred == s.label) & (s.adv_pred != s.label)]
    expected = (row["perturbation_norm"] / x_norm[row.index]).mean()
    assert df.loc[0.1, "mean_rel_perturbation"] == pytest.approx(expected)


# --- targeted mode ---------------------------------------------------------------------


def test_targeted_grid_counts_success_against_the_target(digits_checkpoint, tmp_path) -> None:
    df = run(digits_checkpoint, tmp_path, attacks=["pgd:steps=5"], eps="0.1,0.3", n=60, target="all")
    assert (df["target"] == "all").all()
    grid = pd.read_csv(tmp_path / "targeted_grid.csv")
    assert not (grid["original"] == grid["target"]).any(), "the diagonal must be empty"
    s = samples(tmp_path)
    assert s["target"].notna().all() and (s["target"] != s["label"]).all()
    ok = s[s.clean_pred == s.label]
    # Misclassified into a class other than the target is not a targeted success.
    wrong_class = ok[(ok.adv_pred != ok.label) & (ok.adv_pred != ok.target)]
    assert len(wrong_class) > 0
    expected = ok.assign(hit=ok.adv_pred == ok.target).groupby(["eps", "label", "target"])["hit"].mean()
    got = grid.set_index(["eps", "original", "target"])["success_rate"]
    assert np.allclose(got.sort_index().to_numpy(), expected.sort_index().to_numpy())
    rate = ok[ok.eps == 0.3].eval("adv_pred == target").mean()
    assert df.set_index("eps").loc[0.3, "target_success"] == pytest.approx(rate)
    assert rate > 0.3 and (tmp_path / "targeted_digits_small_pgd-steps=5.png").stat().st_size > 1000


def test_targeted_mode_rejects_attacks_without_one(digits_checkpoint, tmp_path, linesearch) -> None:
    with pytest.raises(RobevalError, match="no targeted mode.*fgsm"):
        run(digits_checkpoint, tmp_path, attacks=["linesearch"], eps="0.1", target="all")
    with pytest.raises(RobevalError, match="--target"):
        run(digits_checkpoint, tmp_path, attacks=["fgsm"], eps="0.1", target="some")


def test_unbounded_alone_with_budgeted_attacks_is_an_error(digits_checkpoint, tmp_path) -> None:
    with pytest.raises(RobevalError, match="unbounded"):
        run(digits_checkpoint, tmp_path, attacks=["pgd"], eps="unbounded")


# --- attack variants --------------------------------------------------------------------


def test_fgm_is_the_l2_fast_gradient(digits_model, digits_test) -> None:
    x, y = digits_test
    fgm = robeval.attacks.get("fgm")(digits_model, x, y, eps=1.0)
    fgsm_l2 = robeval.attacks.get("fgsm:norm=l2")(digits_model, x, y, eps=1.0)
    assert robeval.attacks.get("fgm").norm == "l2" and torch.equal(fgm, fgsm_l2)


def test_pgd_restarts_only_add_successes(digits_model, digits_test) -> None:
    x, y = digits_test
    one = robeval.attacks.get("pgd:steps=3")(digits_model, x, y, eps=0.1, generator=torch.Generator().manual_seed(0))
    counter = PassCounter(digits_model)
    three = robeval.attacks.get("pgd:steps=3,restarts=3")(counter, x, y, eps=0.1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fooled_one = digits_model(one).argmax(1) != y
        fooled_three = digits_model(three).argmax(1) != y
    assert (fooled_three >= fooled_one).all() and fooled_three.sum() > fooled_one.sum()
    # Restarts attack only the points the earlier runs left robust.
    assert counter.counts.backward < 3 * 3 * len(x)
    with pytest.raises(RobevalError, match="random_start"):
        robeval.attacks.get("pgd:restarts=2,random_start=false")


def test_store_of_another_format_is_refused(digits_checkpoint, tmp_path) -> None:
    with sqlite3.connect(tmp_path / "store.sqlite") as conn:
        conn.execute("CREATE TABLE samples (cell_key TEXT)")
    with pytest.raises(RobevalError, match="another robeval version"):
        run(digits_checkpoint, tmp_path, attacks=["fgsm"], eps="0.1")


# --- non-nested attacks (noise of a given scale) ---------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Noise:
    """A toy non-nested attack: one Gaussian draw of std eps (``scale``: eps is no bound)."""

    name: ClassVar[str] = "toynoise"
    minimal: ClassVar[bool] = False
    targeted: ClassVar[bool] = False
    nested: ClassVar[bool] = False
    norm: str = "scale"

    def __call__(self, model, x, y, *, eps, generator=None):
        with torch.no_grad():
            model(x)  # one counted forward pass per point
        return (x + eps * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def test_non_nested_attacks_attack_every_clean_correct_point_at_every_eps(digits_checkpoint, tmp_path) -> None:
    attacks.register("toynoise")(_Noise)
    try:
        df = run(digits_checkpoint, tmp_path, attacks=["toynoise"], eps=[0.2, 0.5, 1.0]).sort_values("eps")
    finally:
        attacks.unregister("toynoise")
    correct = round(df["clean_acc"].iloc[0] * df["n"].iloc[0])
    assert df["forward_passes"].tolist() == [correct] * 3, "no reuse, and costs are per eps"
    assert df["robust_acc"].iloc[-1] < df["robust_acc"].iloc[0]
    s = samples(tmp_path)
    attacked = s[s.clean_pred == s.label]
    assert np.allclose(attacked["perturbation_norm"], attacked["eps"]), "the scale is the recorded size"
    assert len({*df["cell_key"]}) == 3 and all(np.isnan(df["mean_rel_perturbation"]))


# --- battery II through the runner -------------------------------------------------------


def test_sfa_run_writes_the_grid_and_table1_summary(digits_checkpoint, tmp_path) -> None:
    df = run(digits_checkpoint, tmp_path, attacks=["sfa"], eps="0,80/255", n=60)
    grid = pd.read_csv(tmp_path / "sfa_grid.csv")
    summary = pd.read_csv(tmp_path / "sfa_summary.csv").iloc[0]
    assert len(grid) == 8 * 8 and set(grid["l"]) == set(range(8))
    assert summary["avg_acc"] == pytest.approx(grid["accuracy"].mean())
    assert summary["min_acc"] == pytest.approx(grid["accuracy"].min())
    # The per-sample worst case over (l, m) is at least as strong as the best single mode.
    assert df.set_index("eps").loc[80 / 255, "robust_acc"] <= summary["min_acc"] + 1e-12
    assert (tmp_path / "sfa_digits_small_80-255.png").stat().st_size > 1000


def test_adef_through_the_runner_records_field_norms(digits_checkpoint, tmp_path) -> None:
    df = run(digits_checkpoint, tmp_path, attacks=["adef"], eps="0.5,1,unbounded", n=60).set_index("eps")
    s = samples(tmp_path)
    s = s[np.isinf(s.eps) & (s.clean_pred == s.label) & (s.adv_pred != s.label)]
    assert len(s) > 0 and (s["perturbation_norm"] > 0).all()
    assert not np.allclose(s["perturbation_norm"], s["l2"]), "the field norm, not a pixel norm"
    for eps in (0.5, 1.0):  # read off the field norms of the one search
        assert df.loc[eps, "robust_acc"] >= df.loc[math.inf, "robust_acc"]


@dataclass(frozen=True, kw_only=True)
class _LyingDeformation:
    """A budgeted deformation attack that returns additive noise (or an over-budget field)."""

    name: ClassVar[str] = "liar"
    minimal: ClassVar[bool] = False
    targeted: ClassVar[bool] = False
    nested: ClassVar[bool] = True
    norm: str = "field"
    over_budget: bool = False

    def __call__(self, model, x, y, *, eps=math.inf, generator=None):
        from robeval.attacks.base import Deformation

        field = torch.zeros(x.shape[0], 2, *x.shape[2:])
        if self.over_budget:
            field[:, 1] = 3.0
            from robeval.attacks.adef import deform

            return Deformation(deform(x, field), field)
        return Deformation((x + 0.1).clamp(0, 1), field)


@pytest.mark.parametrize(("params", "message"), [("", "not the deformation"), ("over_budget=true", "budget")])
def test_runner_refuses_false_deformations(digits_checkpoint, tmp_path, params, message) -> None:
    from robeval.errors import AttackContractError

    attacks.register("liar")(_LyingDeformation)
    try:
        spec = "liar" + (f":{params}" if params else "")
        with pytest.raises(AttackContractError, match=message):
            run(digits_checkpoint, tmp_path, attacks=[spec], eps="1", n=30)
    finally:
        attacks.unregister("liar")
