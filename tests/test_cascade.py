"""``robeval run --worst-case`` (the attacks as a cascade) and AutoAttack's breakdown:
the cascade's per-point result is the per-sample worst case over the attacks run alone,
later stages attack only what is left, mixed norms and targeted mode are refused, an
interrupted cascade resumes without recomputing, and the breakdown ends at the
AutoAttack row's accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import robeval
from robeval.errors import RobevalError
from robeval.eval import cascade

STEPS = 3
ATTACKS = ["fgsm", f"pgd:steps={STEPS},random_start=false,keep=last"]  # deterministic, fixed passes per point
RUN = dict(attacks=ATTACKS, eps="0,0.05,0.1,0.2", n=60, batch_size=25, device="cpu", checks="off")
AUTOATTACK = "autoattack:version=custom,attacks=apgd-ce+square,n_iter=5,n_queries=50"


def robust(samples: pd.DataFrame) -> pd.Series:
    return (samples["adv_pred"] == samples["label"]).rename("robust")


def test_cascade_is_the_per_sample_worst_case(digits_checkpoint, tmp_path) -> None:
    alone = robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "alone"), **RUN)
    worst = robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "worst"), worst_case=True, **RUN)
    assert set(worst["attack"]) == {"worst-case"}, "the listed attacks get no standalone rows"
    assert sorted(worst["eps"]) == [0.0, 0.05, 0.1, 0.2]

    samples = pd.read_csv(tmp_path / "alone" / "samples.csv")
    expected = samples.assign(robust=robust(samples)).groupby(["eps", "index"])["robust"].all()
    staged = pd.read_csv(tmp_path / "worst" / "samples.csv")
    assert set(staged["attack"]) == {"worst-case"}
    got = staged.assign(robust=robust(staged)).set_index(["eps", "index"])["robust"]
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index())

    by_eps = worst.set_index("eps")
    for eps, group in alone.groupby("eps"):
        assert by_eps.loc[eps, "robust_acc"] <= group["robust_acc"].min()
        assert by_eps.loc[eps, "clean_acc"] == group["clean_acc"].iloc[0]
    assert by_eps.loc[0.0, "robust_acc"] == by_eps.loc[0.0, "clean_acc"]

    stages = pd.read_csv(tmp_path / "worst" / "worst_case.csv").sort_values(["eps", "stage"])
    assert list(stages["attack"].unique()) == ["fgsm", f"pgd:keep=last,random_start=false,steps={STEPS}"]
    clean_correct = round(by_eps.loc[0.0, "clean_acc"] * 60)
    left = clean_correct
    for eps, group in stages.groupby("eps", sort=True):
        first, second = group.iloc[0], group.iloc[1]
        assert first["attacked"] == left, "stage 1 attacks what no stage broke at a smaller eps"
        assert second["attacked"] == first["attacked"] - first["broken"], "stage 2 attacks what stage 1 left"
        assert first["forward_passes"] == first["backward_passes"] == first["attacked"]
        assert second["forward_passes"] == second["backward_passes"] == STEPS * second["attacked"]
        left -= group["broken"].sum()
        assert left == round(by_eps.loc[eps, "robust_acc"] * 60), "broken per stage adds up"
        assert group.iloc[-1]["robust_acc"] == by_eps.loc[eps, "robust_acc"]
    cumulative = stages.groupby("eps", sort=True)["forward_passes"].sum().cumsum()
    assert (by_eps.loc[cumulative.index, "forward_passes"] == cumulative).all(), "costs add up along the walk"


@pytest.mark.parametrize(("attacks", "target", "fragment"), [
    (["fgsm", "deepfool"], None, r"one ball norm.*fgsm \(linf\), deepfool \(l2\)"),
    (["pgd", "adef"], None, r"adef \(field\)"),
    (["fgsm", "pgd"], "all", "untargeted"),
])
def test_refused_cascades(digits_checkpoint, tmp_path, attacks, target, fragment) -> None:
    with pytest.raises(RobevalError, match=fragment):
        robeval.evaluate(models=[str(digits_checkpoint)], attacks=attacks, eps="0.1", n=10, target=target,
                         worst_case=True, checks="off", out=str(tmp_path))
    assert not (tmp_path / "store.sqlite").exists(), "refused before anything ran"


def test_interrupted_cascade_resumes_without_recomputing(digits_checkpoint, tmp_path, monkeypatch) -> None:
    run = dict(RUN, eps="0,0.1,0.2", n=50)
    calls: list[int] = []
    real = cascade._attack_points

    def counted(*args, **kwargs):
        calls.append(1)
        if fail_at and len(calls) == fail_at:
            raise KeyboardInterrupt  # killed in the middle of the cascade
        return real(*args, **kwargs)

    monkeypatch.setattr(cascade, "_attack_points", counted)
    fail_at = 0
    full = robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "full"), worst_case=True, **run)
    total, calls[:] = len(calls), []
    assert total == 2 * 2 * 2  # batches x eps x stages

    fail_at = 5
    with pytest.raises(KeyboardInterrupt):
        robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "cut"), worst_case=True, **run)
    calls[:], fail_at = [], 0
    resumed = robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "cut"), worst_case=True, **run)
    assert len(calls) == total - 4, "only the batches not stored before the interruption are computed"
    columns = ["attack", "eps", "n", "clean_acc", "robust_acc", "forward_passes", "backward_passes", "cell_key"]
    pd.testing.assert_frame_equal(resumed[columns], full[columns])

    calls[:] = []
    again = robeval.evaluate(models=[str(digits_checkpoint)], out=str(tmp_path / "cut"), worst_case=True, **run)
    assert not calls, "a finished cascade was recomputed"
    pd.testing.assert_frame_equal(again, resumed)


def _check_breakdown(out: Path, results: pd.DataFrame, attack_rows: pd.DataFrame) -> pd.DataFrame:
    breakdown = pd.read_csv(out / "autoattack_breakdown.csv")
    for eps, group in breakdown.groupby("eps"):
        assert list(group["sub_attack"]) == ["apgd-ce", "square"]
        accs = group["robust_acc_after"].to_numpy()
        assert np.all(np.diff(accs) <= 0), "non-increasing along the sub-attacks"
        assert accs[-1] == pytest.approx(float(attack_rows.set_index("eps").loc[eps, "robust_acc"]))
    return breakdown


def test_autoattack_breakdown_alone_and_in_a_cascade(digits_checkpoint, tmp_path) -> None:
    run = dict(eps="0.1", n=24, batch_size=12, device="cpu", checks="off")
    alone = robeval.evaluate(models=[str(digits_checkpoint)], attacks=[AUTOATTACK], out=str(tmp_path / "a"), **run)
    breakdown = _check_breakdown(tmp_path / "a", alone, alone)
    assert breakdown["stage"].isna().all()
    assert breakdown["robust_acc_after"].iloc[-1] < alone["clean_acc"].iloc[0], "it did break points"

    staged = robeval.evaluate(models=[str(digits_checkpoint)], attacks=["fgsm", AUTOATTACK], worst_case=True,
                              out=str(tmp_path / "w"), **run)
    breakdown = _check_breakdown(tmp_path / "w", staged, staged)
    assert (breakdown["stage"] == 2).all()
    stages = pd.read_csv(tmp_path / "w" / "worst_case.csv")
    after_fgsm = float(stages.loc[stages["stage"] == 1, "robust_acc"].iloc[0])
    assert breakdown["robust_acc_after"].iloc[0] <= after_fgsm
