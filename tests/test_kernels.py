"""Kernel smoothness statistics and the kernel figure (smooth-kernels Sec. 3, Fig. 1)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import robeval
from robeval.analysis.kernels import (
    STAT_COLUMNS,
    compare_kernels,
    high_freq_fraction,
    kernel_statistics,
    kernel_values,
    model_summary,
    plot_kernels,
)
from robeval.train import TrainSpec, train

CONSTANT = torch.ones(3, 3)
CHECKER = torch.tensor([[(-1.0) ** (i + j) for j in range(3)] for i in range(3)])


def _direct_hf_fraction(w: np.ndarray, n: int) -> float:
    """Power outside radius n/4 of the centred n x n DFT, by the DFT's defining sum."""
    freqs = np.arange(n) - n // 2
    power_total = power_high = 0.0
    for u in freqs:
        for v in freqs:
            value = sum(w[i, j] * np.exp(-2j * np.pi * (u * i + v * j) / n)
                        for i in range(w.shape[0]) for j in range(w.shape[1]))
            power_total += abs(value) ** 2
            power_high += abs(value) ** 2 if math.hypot(u, v) > n / 4 else 0.0
    return power_high / power_total


def test_constant_kernel_closed_forms() -> None:
    values = kernel_values(CONSTANT)
    assert float(values["roughness"]) == 0.0 and float(values["relative_roughness"]) == 0.0
    assert float(values["energy"]) == 9.0 and float(values["log_r"]) == -9.0
    # Zero-padded to 16: the box's transfer function leaks past 1/4 cycle per pixel
    # (first zero at 1/3), ~0.19; on the kernel's own grid all power is DC.
    padded = float(high_freq_fraction(CONSTANT))
    assert padded == pytest.approx(_direct_hf_fraction(CONSTANT.numpy(), 16), abs=1e-9)
    assert 0.15 < padded < 0.25
    assert float(high_freq_fraction(CONSTANT, fft_size=None)) < 1e-12
    assert float(high_freq_fraction(torch.zeros(3, 3))) == 0.0
    assert float(kernel_values(torch.zeros(3, 3))["relative_roughness"]) == 0.0


def test_checkerboard_kernel_closed_forms() -> None:
    values = kernel_values(CHECKER)
    # 8-neighbourhood of a 3x3 grid: 6 horizontal + 6 vertical pairs, each of opposite
    # sign, (1 - (-1))^2 = 4 -> 48; 4 + 4 diagonal pairs of equal sign -> 0.
    assert float(values["roughness"]) == 48.0
    assert float(values["energy"]) == 9.0
    assert float(values["relative_roughness"]) == pytest.approx(48 / 9)
    assert float(values["log_r"]) == 39.0
    padded = float(high_freq_fraction(CHECKER))
    assert padded == pytest.approx(_direct_hf_fraction(CHECKER.numpy(), 16), abs=1e-9)
    assert padded > 0.95
    assert float(high_freq_fraction(CHECKER, fft_size=None)) == pytest.approx(80 / 81)  # all but DC = 1/81


def test_relative_roughness_and_hf_fraction_are_scale_invariant() -> None:
    w = torch.randn(5, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    a, b = kernel_values(w), kernel_values(3 * w)
    assert torch.allclose(a["relative_roughness"], b["relative_roughness"])
    assert torch.allclose(a["high_freq_fraction"], b["high_freq_fraction"])
    assert torch.allclose(b["roughness"], 9 * a["roughness"])


def test_table_matches_direct_computation_and_skips_1x1() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, (3, 5)))
    frame = kernel_statistics(model)
    assert list(frame["layer"]) == ["0", "3"]
    assert list(frame["shape"]) == [(3, 2, 3, 3), (2, 4, 3, 5)]
    assert list(frame["kernels"]) == [6, 8]
    w = model[0].weight.detach().double()
    pairs = [(a, b) for a in range(9) for b in range(a + 1, 9)
             if max(abs(a // 3 - b // 3), abs(a % 3 - b % 3)) == 1]
    assert len(pairs) == 20
    flat = w.reshape(6, 9)
    rough = sum((flat[:, a] - flat[:, b]) ** 2 for a, b in pairs)
    energy = flat.pow(2).sum(1)
    fractions = [_direct_hf_fraction(k.numpy(), 16) for k in w.reshape(6, 3, 3)]
    row = frame.iloc[0]
    assert row["roughness"] == pytest.approx(float(rough.mean()))
    assert row["energy"] == pytest.approx(float(energy.mean()))
    assert row["relative_roughness"] == pytest.approx(float((rough / energy).mean()))
    assert row["log_r"] == pytest.approx(float((rough - energy).mean()))
    assert row["high_freq_fraction"] == pytest.approx(float(np.mean(fractions)))

    both = compare_kernels([("a", model), ("b", model)])
    assert list(both["model"]) == ["a", "a", "b", "b"]
    summary = model_summary(both)
    assert list(summary["model"]) == ["a", "b"] and list(summary["kernels"]) == [14, 14]
    for column in STAT_COLUMNS:
        assert summary[column].iloc[0] == pytest.approx(frame[column].mean())
    assert len(model_summary(frame)) == 1


def _png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


@pytest.mark.parametrize(("count", "with_image"), [(4, False), (3, True)])
def test_plot_kernels_writes_the_panels(tmp_path, count, with_image) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 1, 1), nn.Conv2d(1, 8, 3))  # the 1x1 layer is not "first"
    image = torch.rand(3, 12, 12) if with_image else None
    path = plot_kernels(model, tmp_path / "sub" / "k.png", count=count, image=image)
    assert path.stat().st_size > 0
    rows = 3 if with_image else 2
    assert _png_size(path) == (round(2.4 * count * 110), round(2.3 * rows * 110))
    with pytest.raises(ValueError, match="no Conv2d layer named"):
        plot_kernels(model, tmp_path / "x.png", layer="nope")


def test_smooth_kernel_regulariser_gives_smoother_kernels(tmp_path) -> None:
    # lambda=100 (the paper's value) dominates this tiny model's loss (it learns little
    # in 3 epochs) but trains without diverging. Over seeds 0-4 the same-seed relative
    # roughness is V 4.2-4.5, VR 3.1-3.5 (drop 1.0-1.2), VH 4.9-5.2 (rise 0.6-0.7).
    fast = {"dataset": "digits", "arch": "small-cnn", "epochs": 3, "batch_size": 64, "lr": 3e-3, "device": "cpu",
            "n_train": 300, "seed": 0}
    models = []
    for name, regs in (("V", ()), ("VR", ("smooth-kernel:lambda=100",)), ("VH", ("smooth-kernel:lambda=-100",))):
        result = train(TrainSpec(**fast, regularisers=regs, out=str(tmp_path / f"{name}.pt")))
        models.append((name, robeval.load_model(str(result.checkpoint))))
    summary = model_summary(compare_kernels(models)).set_index("model")
    assert np.isfinite(summary.to_numpy(dtype=float)).all()
    rough = summary["relative_roughness"]
    assert rough["VR"] < rough["V"] - 0.3 < rough["VH"] - 0.3
    assert summary.loc["VR", "high_freq_fraction"] < summary.loc["V", "high_freq_fraction"]


def test_cli_writes_tables_and_figures(digits_checkpoint, tmp_path) -> None:
    from typer.testing import CliRunner

    from robeval.cli import app

    out = tmp_path / "kern"
    result = CliRunner().invoke(app, ["kernels", str(digits_checkpoint), "--count", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "kernels.csv")
    direct = kernel_statistics(robeval.load_model(str(digits_checkpoint)))
    assert table["relative_roughness"].tolist() == pytest.approx(direct["relative_roughness"].tolist())
    assert (out / f"kernels_{digits_checkpoint.stem}.png").stat().st_size > 0
    assert "| model | layers |" in (out / "kernels.md").read_text()
    bad = CliRunner().invoke(app, ["kernels", str(digits_checkpoint), "--layer", "nope", "--out", str(out)])
    assert bad.exit_code != 0 and "nope" in bad.output and "Traceback" not in bad.output
