"""``robeval report``: curves, table, spec and example grid from a run directory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

import robeval
from robeval.cli import app
from robeval.errors import RobevalError
from robeval.results.report import curve_series, write_report


@pytest.fixture(scope="module")
def run_dir(digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    robeval.evaluate(models=[str(digits_checkpoint)], attacks=["fgsm", "pgd:steps=3"], eps="0,0.1,0.2", n=30,
                     out=str(out), device="cpu")
    return out


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.mark.parametrize("suffix", [".md", ".html"])
def test_report_contents(run_dir: Path, tmp_path: Path, suffix: str) -> None:
    out = write_report(run_dir, tmp_path / f"report{suffix}", examples=4)
    text = out.read_text()
    files = tmp_path / "report_files"
    curves = list(files.glob("curves_*.png"))
    assert len(curves) == 1
    width, height = _png(curves[0])
    assert width > 300 and height > 200
    assert _png(files / "examples.png")[0] > 200
    assert "report_files/examples.png" in text and f"report_files/{curves[0].name}" in text
    spec_text = (run_dir / "spec.yaml").read_text()
    assert "pgd:steps=3" in text and "dataset: digits" in text
    if suffix == ".md":
        table = (run_dir / "accuracy_eps.md").read_text().split("\n\n", 1)[1]
        assert table in text
        assert spec_text.strip() in text
    else:
        assert "<table" in text and "<img" in text and "<pre><code>" in text


def test_curve_series_matches_results(run_dir: Path) -> None:
    results = pd.read_csv(run_dir / "results.csv")
    series = curve_series(results)
    assert list(series) == [("digits", "linf")]
    panels = series[("digits", "linf")]
    assert set(panels) == {"fgsm", "pgd:steps=3"}
    for attack, lines in panels.items():
        for model, points in lines.items():
            rows = results[(results["attack"] == attack) & (results["model"] == model)].sort_values("eps")
            assert points == list(zip(rows["eps"].astype(float), rows["robust_acc"].astype(float), strict=True))


def test_report_moved_model_is_a_note(run_dir: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("results.csv", "spec.yaml", "accuracy_eps.md"):
        (moved / name).write_text((run_dir / name).read_text().replace(
            str(robeval_models(run_dir)), "/nonexistent/model.pt"))
    text = write_report(moved, tmp_path / "r.md").read_text()
    assert "could not be loaded" in text
    assert not (tmp_path / "report_files" / "examples.png").exists()


def robeval_models(run_dir: Path) -> str:
    import yaml

    return yaml.safe_load((run_dir / "spec.yaml").read_text())["models"][0]


def test_report_errors(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(RobevalError, match="use .md or .html"):
        write_report(run_dir, tmp_path / "report.pdf")
    runner = CliRunner()
    missing = runner.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r.md")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    no_results = runner.invoke(app, ["report", str(empty), "--out", str(tmp_path / "r.md")])
    assert no_results.exit_code == 2 and "results.csv" in no_results.output
    bad = runner.invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "r.pdf")])
    assert bad.exit_code == 2 and "unsupported" in bad.output


def test_report_cli(run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "r.html"), "--examples", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").is_file() and (tmp_path / "report_files" / "examples.png").is_file()
