"""Accuracy on filtered and frequency-swapped images (local-response-differences Sec. 3.1,
Fig. 1; Absum's High-Frequency attack) and the `robeval frequency` command."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from robeval.analysis.frequency import (
    COLUMNS,
    accuracy,
    default_radii,
    frequency_sweep,
    make_adversarials,
    write_frequency,
)
from robeval.attacks.fourier import highpass, lowpass
from robeval.cli import app


def test_default_radii_reach_the_half_diagonal() -> None:
    assert default_radii(8, 8) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # ceil(sqrt(32)) = 6
    assert default_radii(28, 28)[-1] == math.ceil(math.hypot(14, 14)) == 20
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    top = default_radii(8, 8)[-1]
    assert torch.allclose(lowpass(x, top), x) and torch.allclose(highpass(x, top), torch.zeros_like(x))


def test_highpass_of_a_constant_image_is_zero_at_radius_zero() -> None:
    x = torch.full((3, 3, 8, 8), 0.37, dtype=torch.float64)
    assert torch.allclose(highpass(x, 0.0), torch.zeros_like(x), atol=1e-12)
    assert torch.allclose(lowpass(x, 0.0), x)


@pytest.fixture(scope="module")
def digits_adv(digits_model, digits_test):
    x, y = digits_test
    x, y = x[:96], y[:96]
    return x, y, make_adversarials(digits_model, x, y, "fgsm", 0.1)


def test_sweep_limits(digits_model, digits_adv) -> None:
    x, y, x_adv = digits_adv
    clean, adv = accuracy(digits_model, x, y), accuracy(digits_model, x_adv, y)
    assert adv < clean
    frame = frequency_sweep(digits_model, x, y, x_adv, [0, 2, 6, 100], batch_size=40)
    assert list(frame.columns) == list(COLUMNS) and frame["radius"].tolist() == [0, 2, 6, 100]
    for r in (6, 100):  # radius >= the half-diagonal sqrt(32): the low-pass filter keeps everything
        row = frame[frame["radius"] == r].iloc[0]
        assert row["natural_lowpass_acc"] == pytest.approx(clean)
        assert row["adversarial_lowpass_acc"] == pytest.approx(adv)
        assert row["low_natural_high_adv_acc"] == pytest.approx(clean)  # all of x, nothing of x_adv
        assert row["low_adv_high_natural_acc"] == pytest.approx(adv)
    values = frame[list(COLUMNS[1:])].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()


def test_swap_with_itself_is_the_natural_accuracy(digits_model, digits_adv) -> None:
    x, y, _ = digits_adv
    clean = accuracy(digits_model, x, y)
    frame = frequency_sweep(digits_model, x, y, x, [0, 1, 3, 6])
    assert frame["low_natural_high_adv_acc"].tolist() == pytest.approx([clean] * 4)
    assert frame["low_adv_high_natural_acc"].tolist() == pytest.approx([clean] * 4)
    assert (frame["natural_lowpass_acc"] == frame["adversarial_lowpass_acc"]).all()
    assert (frame["natural_highpass_acc"] == frame["adversarial_highpass_acc"]).all()


def test_sweep_rejects_bad_inputs(digits_model, digits_adv) -> None:
    x, y, x_adv = digits_adv
    with pytest.raises(ValueError):
        frequency_sweep(digits_model, x, y, x_adv[:10], [1])
    with pytest.raises(ValueError):
        frequency_sweep(digits_model, x, y, x_adv, [-1])


def test_write_frequency(tmp_path: Path) -> None:
    frame = pd.DataFrame([[r, 1.0, 0.1, 0.5, 0.1, 0.9, 0.6] for r in (0.0, 1.0, 2.0)], columns=list(COLUMNS))
    csv, png = write_frequency(tmp_path / "f", frame)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pd.testing.assert_frame_equal(pd.read_csv(csv), frame)


def test_cli_frequency_writes_csv_and_png(digits_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "freq"
    result = CliRunner().invoke(app, ["frequency", str(digits_checkpoint), "--attack", "fgsm", "--eps", "0.1",
                                      "--n", "40", "--seed", "0", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "frequency.csv")
    assert list(frame.columns) == list(COLUMNS) and frame["radius"].tolist() == default_radii(8, 8)
    assert (out / "frequency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "frequency.csv" in result.output and "frequency.png" in result.output
    chosen = CliRunner().invoke(app, ["frequency", str(digits_checkpoint), "--attack", "fgsm", "--eps", "0.1",
                                      "--n", "20", "--radii", "0,1,2,4", "--device", "cpu", "--out", str(out)])
    assert chosen.exit_code == 0, chosen.output
    assert pd.read_csv(out / "frequency.csv")["radius"].tolist() == [0, 1, 2, 4]


@pytest.mark.parametrize("radii", ["0,x", "-1", "1,inf"])
def test_cli_frequency_bad_radii(digits_checkpoint: Path, tmp_path: Path, radii: str) -> None:
    bad = CliRunner().invoke(app, ["frequency", str(digits_checkpoint), "--attack", "fgsm", "--eps", "0.1",
                                   "--radii", radii, "--out", str(tmp_path)])
    assert bad.exit_code == 2
    assert "error:" in bad.output and "--radii" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def test_cli_frequency_clip_flag_reaches_the_sweep(digits_checkpoint: Path, tmp_path: Path) -> None:
    """--clip clamps the filtered images (the high-pass ones lose their negative half);
    the default, --no-clip, feeds them as the paper did. Both tables equal the sweep's."""
    frames = {}
    for flag in ("--clip", "--no-clip"):
        out = tmp_path / flag
        result = CliRunner().invoke(app, ["frequency", str(digits_checkpoint), "--attack", "fgsm", "--eps", "0.1",
                                          "--n", "40", "--seed", "0", "--device", "cpu", "--out", str(out), flag])
        assert result.exit_code == 0, result.output
        frames[flag] = pd.read_csv(out / "frequency.csv")
    default = CliRunner().invoke(app, ["frequency", str(digits_checkpoint), "--attack", "fgsm", "--eps", "0.1",
                                       "--n", "40", "--seed", "0", "--device", "cpu", "--out", str(tmp_path / "d")])
    assert default.exit_code == 0, default.output
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "d" / "frequency.csv"), frames["--no-clip"])
    assert not frames["--clip"]["natural_highpass_acc"].equals(frames["--no-clip"]["natural_highpass_acc"])
