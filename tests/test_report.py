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


# --- attack-failure checks ------------------------------------------------------------------


def _checked_run(path: Path, *, checks: list[dict] | None, flags: bool = True) -> Path:
    """A hand-made run directory: pgd flagged by an indicator, fgsm not."""
    import json

    from robeval.results.tables import RESULT_COLUMNS

    rows = []
    for attack, accs in (("fgsm", (0.9, 0.5, 0.3)), ("pgd:steps=3", (0.9, 0.4, 0.2))):
        for eps, acc in zip((0.0, 0.1, 0.2), accs, strict=True):
            row = dict.fromkeys(RESULT_COLUMNS, "")
            row.update(model="m", dataset="digits", attack=attack, norm="linf", eps=eps, n=30, clean_acc=0.9,
                       robust_acc=acc, unreliable=attack.startswith("pgd"),
                       indicators="zero-grad;flat-loss" if attack.startswith("pgd") else "")
            rows.append(row)
    frame = pd.DataFrame(rows)
    if not flags:
        frame = frame.drop(columns=["unreliable", "indicators"])
    path.mkdir(parents=True)
    frame.to_csv(path / "results.csv", index=False)
    if checks is not None:
        (path / "checks.json").write_text(json.dumps(checks))
    return path


CHECKS = [
    {"model": "m", "attack": "fgsm", "eps": None, "indicator": "zero-grad", "fired": False, "value": 0.0,
     "threshold": 0.5, "detail": "Gradients vanish; run BPDA or a gradient-free attack instead."},
    {"model": "m", "attack": "pgd:steps=3", "eps": 0.1, "indicator": "flat-loss", "fired": True, "value": 0.0123456,
     "threshold": "inf", "detail": "The loss did not rise along the path; run PGD with more steps or APGD-CE."},
    {"model": "m", "attack": "pgd:steps=3", "eps": None, "indicator": "zero-grad", "fired": True, "value": 0.9,
     "threshold": 0.5, "detail": "Most gradients are zero; run BPDA or Square."},
]


@pytest.mark.parametrize("suffix", [".md", ".html"])
def test_report_marks_flagged_rows_and_renders_the_checks(tmp_path: Path, suffix: str) -> None:
    run = _checked_run(tmp_path / "run", checks=CHECKS)
    text = write_report(run, tmp_path / f"r{suffix}", examples=0).read_text()
    assert "Attack-failure checks" in text
    assert "pgd:steps=3 *" in text and "fgsm *" not in text
    assert "2 of 3 checks fired, flagging 1 of 2 model x attack pairs" in text
    assert "The loss did not rise along the path; run PGD with more steps or APGD-CE." in text
    assert "Most gradients are zero; run BPDA or Square." in text
    # fired ones first: in the list and in the table of every finding
    section = text[text.index("Attack-failure checks</h2>" if suffix == ".html" else "## Attack-failure checks"):]
    assert section.index("flat-loss") < section.index("fgsm")
    if suffix == ".md":
        assert "- m · pgd:steps=3 · flat-loss (eps 0.1, value 0.01235, threshold inf): The loss" in text
        assert "| m | pgd:steps=3 | 0.1 | flat-loss | yes | 0.01235 | inf |" in section
        assert "| m | fgsm |  | zero-grad | no | 0 | 0.5 |" in section
        assert "| m | pgd:steps=3 * |" in text
    else:
        assert "<ul><li>m · pgd:steps=3 · flat-loss" in text
    assert "not run" not in text


def test_report_flags_from_checks_json_alone_and_all_clear(tmp_path: Path) -> None:
    run = _checked_run(tmp_path / "old_csv", checks=CHECKS, flags=False)  # only checks.json says it
    assert "| m | pgd:steps=3 * |" in write_report(run, tmp_path / "a.md", examples=0).read_text()
    clear = [{**c, "fired": False} for c in CHECKS]
    run = _checked_run(tmp_path / "clear", checks=clear, flags=False)
    text = write_report(run, tmp_path / "b.md", examples=0).read_text()
    assert "No indicator fired: 3 checks of 2 model x attack pairs" in text and " * |" not in text


def test_report_without_checks_json_says_the_checks_were_not_run(tmp_path: Path) -> None:
    run = _checked_run(tmp_path / "old", checks=None, flags=False)
    text = write_report(run, tmp_path / "r.md", examples=0).read_text()
    assert "## Attack-failure checks" in text and "The attack-failure checks were not run" in text
    assert "not checked" in text and " * |" not in text
    broken = _checked_run(tmp_path / "broken", checks=None)
    (broken / "checks.json").write_text("{not json")
    text = write_report(broken, tmp_path / "b.html", examples=0).read_text()
    assert "could not be read" in text and "pgd:steps=3 *" in text  # results.csv still flags it
