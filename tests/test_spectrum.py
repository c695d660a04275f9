"""Average log-amplitude spectra (local-response-differences Fig. 2; Absum Fig. 7) and
the `robeval spectrum` command."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from robeval.analysis.spectrum import (
    average_log_amplitude,
    average_power,
    spectrum_analysis,
)
from robeval.attacks.fourier import sfa_perturbation
from robeval.cli import app


def test_single_mode_images_peak_at_their_mode() -> None:
    for l, m in [(1, 2), (3, 0), (2, 5)]:
        images = torch.stack([0.5 + sfa_perturbation(l, m, (8, 8), 0.3, dtype=torch.float64) * s
                              for s in (1.0, 0.5, 0.8)]).unsqueeze(1).expand(3, 3, 8, 8)
        wave = images - 0.5
        spectrum = average_log_amplitude(wave)
        assert spectrum.shape == (8, 8)
        centre = (4, 4)  # fftshift puts frequency 0 at (H // 2, W // 2)
        peak = {tuple(i) for i in (spectrum > spectrum.max() - 1e-9).nonzero().tolist()}
        assert peak == {((l + 4) % 8, (m + 4) % 8), ((-l + 4) % 8, (-m + 4) % 8)}  # the mode and its conjugate
        with_dc = average_log_amplitude(images)
        assert with_dc.argmax().item() == centre[0] * 8 + centre[1]  # the 0.5 offset dominates
        power = average_power(wave)
        assert torch.isclose(power.sum(), (wave**2).sum(dim=(-2, -1)).mean() * 64)  # Parseval


def test_log_amplitude_definition() -> None:
    x = torch.rand(5, 3, 6, 10, generator=torch.Generator().manual_seed(0))
    spec = torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1))
    expected = torch.log(spec.abs() + 1e-8).mean(dim=(0, 1))
    assert torch.allclose(average_log_amplitude(x), expected)
    dc = torch.log(x.double().sum((-2, -1)) + 1e-8).mean()  # the centre is the DC term
    assert torch.isclose(average_log_amplitude(x)[3, 5], dc)


def test_spectrum_analysis_fgsm(digits_model, digits_test) -> None:
    x, y = digits_test
    result = spectrum_analysis(digits_model, x[:64], y[:64], "fgsm", 0.1)
    assert result.clean.shape == result.adversarial.shape == result.perturbation.shape == (8, 8)
    assert np.allclose(result.difference, result.adversarial - result.clean)
    assert result.adversarial_accuracy < result.clean_accuracy and result.attack == "fgsm"
    assert np.all(result.perturbation >= 0) and result.perturbation.sum() > 0
    none = spectrum_analysis(digits_model, x[:16], y[:16], "fgsm", 0.0)
    assert np.allclose(none.difference, 0) and np.allclose(none.perturbation, 0)


def test_cli_spectrum_writes_png_and_npz(digits_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "spec"
    result = CliRunner().invoke(app, ["spectrum", str(digits_checkpoint), "--attack", "fgsm", "--eps", "0.1",
                                      "--n", "100", "--seed", "0", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "spectrum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(out / "spectrum.npz") as data:
        assert data["clean"].shape == (8, 8) and float(data["eps"]) == 0.1 and int(data["n"]) == 100
        assert np.allclose(data["difference"], data["adversarial"] - data["clean"])
    assert "spectrum.png" in result.output and "spectrum.npz" in result.output


def test_cli_spectrum_errors(digits_checkpoint: Path, tmp_path: Path) -> None:
    cli = CliRunner()
    bad = cli.invoke(app, ["spectrum", str(digits_checkpoint), "--attack", "nosuch", "--eps", "0.1",
                           "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "error:" in bad.output
    two = cli.invoke(app, ["spectrum", str(digits_checkpoint), "--eps", "0.1,0.2", "--out", str(tmp_path)])
    assert two.exit_code == 2 and "one finite budget" in two.output
    sfa = cli.invoke(app, ["spectrum", str(digits_checkpoint), "--attack", "sfa:l=1,m=1", "--eps", str(80 / 255),
                           "--n", "20", "--device", "cpu", "--out", str(tmp_path / "sfa")])
    assert sfa.exit_code == 0, sfa.output
    with np.load(tmp_path / "sfa" / "spectrum.npz") as data:
        power = data["perturbation"]
        assert not math.isnan(power.sum())
