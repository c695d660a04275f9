"""The helpers of benchmarks/papers/structured_gradient_regularization.py (issue 14, SGR):
DeepFool's rho with and without the -0.5 shift, the LRC table's zeta parsing, checkpoint
reuse, the paper's numbers against their repetition in Table 1, and both plans' specs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "papers"))
import structured_gradient_regularization as sgr  # noqa: E402

import robeval  # noqa: E402
from robeval.train import TrainSpec  # noqa: E402


@pytest.fixture(scope="module")
def deepfool_run(digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("df")
    frame = robeval.evaluate(models=[str(digits_checkpoint)], attacks=[sgr.FOOL_ATTACK], eps="unbounded", n=48,
                             seed=0, device="cpu", out=str(out), checks="off")
    return frame, pd.read_csv(out / "samples.csv")


def test_rho_matches_robevals_mean_relative_perturbation(deepfool_run) -> None:
    """Unshifted, the helper is robeval's own DeepFool Eq. 2 (results.csv)."""
    frame, samples = deepfool_run
    x_test, _ = robeval.load_dataset("digits", split="test")
    expected = float(frame["mean_rel_perturbation"].iloc[0])
    assert np.isfinite(expected) and expected > 0
    assert sgr.deepfool_rho(samples, x_test) == pytest.approx(expected, rel=1e-5)


def test_shifted_rho_equals_a_direct_recomputation(deepfool_run, digits_model) -> None:
    """Shifted by -0.5: ||x_adv - x|| / ||x - 0.5|| from the attack's own adversarials."""
    _, samples = deepfool_run
    x_test, y_test = robeval.load_dataset("digits", split="test")
    idx = torch.as_tensor(samples["split_index"].to_numpy().copy())
    x, y = x_test[idx], y_test[idx]
    x_adv = robeval.attacks.get(sgr.FOOL_ATTACK)(digits_model, x, y, eps=float("inf"))
    with torch.no_grad():
        clean_ok = digits_model(x).argmax(1) == y
        fooled = digits_model(x_adv).argmax(1) != y
    keep = clean_ok & fooled
    ratios = (x_adv - x)[keep].flatten(1).norm(dim=1) / (x[keep] - 0.5).flatten(1).norm(dim=1)
    assert keep.sum() > 10
    assert sgr.deepfool_rho(samples, x_test, shift=0.5) == pytest.approx(float(ratios.mean()), rel=1e-3)
    # the shift changes the denominator only: it differs from the unshifted rho on real images
    assert sgr.deepfool_rho(samples, x_test, shift=0.5) != pytest.approx(sgr.deepfool_rho(samples, x_test), rel=1e-3)


def test_rho_skips_failed_and_misclassified_points() -> None:
    x = torch.full((4, 1, 2, 2), 1.0)  # ||x|| = 2
    samples = pd.DataFrame({"split_index": [0, 1, 2, 3], "label": [0, 0, 0, 0], "clean_pred": [0, 0, 1, 0],
                            "adv_pred": [1, 1, 1, 0], "l2": [1.0, 3.0, 5.0, np.inf]})
    assert sgr.deepfool_rho(samples, x) == pytest.approx((0.5 + 1.5) / 2)  # rows 2 (misclassified) and 3 (failed) out
    assert sgr.deepfool_rho(samples, x, shift=0.5) == pytest.approx((1.0 + 3.0) / 2)  # ||x - 0.5|| = 1


def test_lrc_table_reads_zeta_from_every_canonical_name() -> None:
    """zeta = 8 is the default, so its canonical name carries no zeta (a bug once)."""
    names = [sgr.canonical(f"lrc:zeta={z:g},samples=100") for z in sgr.ZETAS]
    assert any("zeta" not in name for name in names)
    frame = pd.DataFrame({"model": "M", "attack": names, "robust_acc": [0.1, 0.2, 0.3, 0.4, 0.5]})
    table = sgr.lrc_table(frame)
    assert list(table.columns) == list(sgr.ZETAS)
    assert table.loc["M", 8.0] == pytest.approx(40.0)


def test_same_training_ignores_where_a_model_ran() -> None:
    spec = TrainSpec(dataset="digits", arch="small-cnn", epochs=2, out="a/model.pt", device="cpu")
    recorded = spec.to_dict()
    assert sgr.same_training(recorded, spec.replace(out="b/model.pt", device="auto", data_root="/data"))
    assert not sgr.same_training(recorded, spec.replace(epochs=3))
    assert not sgr.same_training(recorded, spec.replace(regularisers=("sgr:source=identity,lambda=5.0",)))


def test_table1_repeats_tables_3_and_4() -> None:
    """Table 1 as printed (left: MNIST eps 32 white-box; right: CIFAR10 eps 8 transfer,
    SGR = SGR_SIGN) must agree with the appendix transcriptions the script compares to."""
    left = {"CLEAN": (99.4, 99.4, 98.0, 89.1, 44.8, 0.159), "WDECAY": (99.4, 99.3, 99.4, 88.2, 59.8, 0.209),
            "PGD": (99.5, 99.5, 99.5, 98.8, 98.3, 0.423), "FGSM": (99.4, 99.4, 99.2, 98.5, 96.9, 0.325),
            "GN": (99.4, 99.3, 99.3, 94.2, 90.0, 0.307), "SGR_SIGN": (99.5, 99.5, 99.5, 94.9, 89.5, 0.301)}
    for label, values in left.items():
        assert sgr.TABLE3["mnist"][label] == values
    right_cols = ("CLEAN", "WDECAY", "PGD", "FGSM", "GN", "SGR_SIGN")
    right = {"CLEAN": (84.3, 11.2, 27.7, 61.6, 68.1, 27.8, 26.5), "WDECAY": (85.2, 44.5, 8.0, 63.7, 68.6, 25.6, 24.2),
             "PGD": (77.7, 76.2, 75.0, 40.5, 71.3, 66.6, 67.3), "FGSM": (81.2, 75.9, 74.0, 60.3, 13.2, 62.9, 63.8),
             "GN": (83.3, 75.0, 70.1, 63.9, 70.3, 11.2, 44.0), "SGR_SIGN": (84.2, 74.3, 67.8, 65.3, 70.9, 40.5, 10.0)}
    for target, (test, *cells) in right.items():
        assert sgr.TABLE4["cifar-8"][1][target][0] == test
        assert [sgr.paper_transfer("cifar-8", target, s) for s in right_cols] == cells
    for order, table in sgr.TABLE4.values():
        assert all(len(row) == 1 + len(order) for row in table.values())


@pytest.fixture
def no_thread_sharing(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() parses with common.parse_args, which registers the process and sets torch's
    threads for a script; keep the test process as it is."""
    monkeypatch.setattr(sys.modules["common"], "share_cores", lambda threads=None: None)


@pytest.mark.parametrize("argv", [["--dry-run"], ["--dry-run", "--scale", "paper", "--data-root", "/nowhere"],
                                  ["--dry-run", "--variants", "CLEAN,PGD_SGR,PGD_AT", "--eps64"]])
def test_both_scales_build_every_spec(argv: list[str], capsys: pytest.CaptureFixture[str], no_thread_sharing) -> None:
    assert sgr.main(argv) == 0
    printed = capsys.readouterr().out
    assert "train " in printed and "transfer" in printed
    if "paper" in argv:  # every table of the paper is planned
        for key in ("whitebox-mnist", "whitebox-cifar", "transfer-mnist-32", "transfer-mnist-64",
                    "transfer-cifar-4", "transfer-cifar-8", "lrc-cifar"):
            assert key in printed


def test_unknown_variant_is_one_line_error(capsys: pytest.CaptureFixture[str], no_thread_sharing) -> None:
    assert sgr.main(["--dry-run", "--variants", "SGR_SING"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --variants: unknown training method 'SGR_SING'")
