"""Bad inputs to ``robeval leaderboard`` and ``robeval report`` (issue 12): outputs that
cannot be written (refused before any work), damaged results.csv / samples.csv (refused
naming the line and the fix, never read in part), runs of other n or seed (never merged
into one row), custom or reduced AutoAttacks (never ``autoattack_acc``), the fallback worst
case (says why) and the SFA summary (shown in %)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

import robeval
from robeval.cli import app
from robeval.errors import RobevalError
from robeval.results.leaderboard import leaderboard, leaderboard_markdown
from robeval.results.leaderboard_files import write_leaderboard
from robeval.results.report import write_report
from robeval.results.robustbench_json import from_model_info, to_model_info
from robeval.results.tables import RESULT_COLUMNS, SAMPLE_COLUMNS

cli = CliRunner()
READ_ONLY = Path("/sys/robeval-test-out")  # PermissionError even for root


def invoke(*args: object) -> Any:
    return cli.invoke(app, [str(a) for a in args])


def assert_one_error(result: Any, *fragments: str) -> str:
    """Exit code 2, exactly one ``error:`` line holding every fragment, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def run(digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run: fgsm and pgd-3 at eps 0, 0.1, 0.2 on 30 seeded digits (seed 0)."""
    out = tmp_path_factory.mktemp("tables") / "run"
    robeval.evaluate(models=[str(digits_checkpoint)], attacks=["fgsm", "pgd:steps=3"], eps="0,0.1,0.2", n=30,
                     seed=0, out=str(out), device="cpu", checks="off")
    return out


@pytest.fixture(scope="module")
def other_run(digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model, attacks and eps on other points: 20 digits drawn with seed 1."""
    out = tmp_path_factory.mktemp("tables") / "other"
    robeval.evaluate(models=[str(digits_checkpoint)], attacks=["fgsm", "pgd:steps=3"], eps="0,0.1,0.2", n=20,
                     seed=1, out=str(out), device="cpu", checks="off")
    return out


def _copy(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("store.sqlite*"))
    return target


# --- 1. outputs that cannot be written: refused before any work -----------------------------

def _leaderboard_outputs(case: str, tmp: Path) -> tuple[list[object], str]:
    """(the options of the case, what the error names)."""
    folder = tmp / "a_folder"
    folder.mkdir()
    return {
        "out-is-a-folder": (["--out", folder], "is a folder"),
        "out-read-only": (["--out", READ_ONLY / "lb.csv"], "--out"),
        "markdown-read-only": (["--out", tmp / "lb.csv", "--markdown", READ_ONLY / "lb.md"], "--markdown"),
        "markdown-is-a-folder": (["--out", tmp / "lb.csv", "--markdown", folder], "--markdown"),
        "model-info-dir-read-only": (["--out", tmp / "lb.csv", "--model-info-dir", READ_ONLY], "--model-info-dir"),
        "model-info-dir-is-a-file": (["--out", tmp / "lb.csv", "--model-info-dir", tmp / "lb.csv"],
                                     "--model-info-dir"),
        "markdown-is-the-out-file": (["--out", tmp / "lb.md"], "--markdown"),
    }[case]


LEADERBOARD_OUTPUT_CASES = ["out-is-a-folder", "out-read-only", "markdown-read-only", "markdown-is-a-folder",
                            "model-info-dir-read-only", "model-info-dir-is-a-file", "markdown-is-the-out-file"]


@pytest.mark.parametrize("case", LEADERBOARD_OUTPUT_CASES)
def test_leaderboard_outputs_are_checked_before_any_work(case: str, run: Path, tmp_path: Path) -> None:
    options, names = _leaderboard_outputs(case, tmp_path)
    if case == "model-info-dir-is-a-file":
        (tmp_path / "lb.csv").write_text("not a folder\n")
        options = ["--out", tmp_path / "other.csv", *options[2:]]
    flags = dict(zip(options[::2], options[1::2], strict=True))
    # a damaged source: had the work started, the error would name it instead of the output
    broken = _copy(run, tmp_path, "broken")
    (broken / "results.csv").write_bytes((broken / "results.csv").read_bytes()[:-30])
    with pytest.raises(RobevalError, match=names) as error:
        write_leaderboard([broken], flags["--out"], markdown=flags.get("--markdown"),
                          model_info_dir=flags.get("--model-info-dir"))
    assert "damaged" not in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "lb.csv").exists() or case == "model-info-dir-is-a-file"


@pytest.mark.parametrize("case", LEADERBOARD_OUTPUT_CASES)
def test_cli_leaderboard_bad_output_is_one_line(case: str, run: Path, tmp_path: Path) -> None:
    options, names = _leaderboard_outputs(case, tmp_path)
    if case == "model-info-dir-is-a-file":
        (tmp_path / "lb.csv").write_text("not a folder\n")
        options = ["--out", tmp_path / "other.csv", *options[2:]]
    assert_one_error(invoke("leaderboard", run, *options), names)


@pytest.mark.parametrize("case", ["out-read-only", "out-is-a-folder", "images-folder-is-a-file", "format-unknown"])
def test_cli_report_bad_output_is_one_line(case: str, run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "a_folder"
    folder.mkdir()
    (tmp_path / "report_files").write_text("a file where the images folder goes\n")
    out, fragment = {
        "out-read-only": (READ_ONLY / "report.html", "cannot be written"),
        "out-is-a-folder": (folder, "is a folder"),
        "images-folder-is-a-file": (tmp_path / "report.md", "report_files is a file"),
        "format-unknown": (tmp_path / "report.pdf", "use .md or .html"),
    }[case]
    assert_one_error(invoke("report", run, "--out", out, "--examples", "0"), fragment)
    assert not (tmp_path / "report.md").exists()


# --- 2. damaged results.csv / samples.csv: refused, never read in part ---------------------

def _cut_mid_row(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-25])


def _drop_last_rows(path: Path, k: int) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-k]))


def _set_cell(path: Path, row: int, column: str, value: str) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    frame.to_csv(path, index=False)


DAMAGE: dict[str, tuple[str, Callable[[Path], None], str]] = {  # id: (file, damage, what the error says)
    "results-cut-mid-row": ("results.csv", _cut_mid_row, "is cut off"),
    "results-last-rows-missing": ("results.csv", lambda p: _drop_last_rows(p, 1), "has no eps 0.2"),
    "results-whole-attack-missing": ("results.csv", lambda p: _drop_last_rows(p, 3), "1 of the 2 attacks"),
    "results-robust-acc-not-a-number": ("results.csv", lambda p: _set_cell(p, 4, "robust_acc", "abc"),
                                        "line 6: 'robust_acc' is 'abc'"),
    "results-eps-not-a-number": ("results.csv", lambda p: _set_cell(p, 1, "eps", "0.1x"), "'eps' is '0.1x'"),
    "results-n-not-a-number": ("results.csv", lambda p: _set_cell(p, 2, "n", "3o"), "'n' is '3o'"),
    "results-robust-acc-empty": ("results.csv", lambda p: _set_cell(p, 2, "robust_acc", ""), "'robust_acc' is empty"),
    "results-accuracy-out-of-range": ("results.csv", lambda p: _set_cell(p, 2, "clean_acc", "1.7"), "not an accuracy"),
    "results-binary": ("results.csv", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary"),
                       "not a text file"),
    "results-empty": ("results.csv", lambda p: p.write_text(""), "is empty"),
    "results-short-row": ("results.csv", lambda p: p.write_text(p.read_text().replace(",,", ",", 1)),
                          "fields, the header has"),
    "samples-cut-mid-row": ("samples.csv", _cut_mid_row, "is cut off"),
    "samples-adv-pred-not-a-number": ("samples.csv", lambda p: _set_cell(p, 70, "adv_pred", "abc"),
                                      "'adv_pred' is 'abc'"),
    "samples-points-missing": ("samples.csv", lambda p: _drop_last_rows(p, 7), "has 23 points, results.csv says 30"),
}
REPORT_READS = [k for k, (name, _, _) in DAMAGE.items() if name == "results.csv"]


@pytest.mark.parametrize("case", list(DAMAGE))
def test_leaderboard_refuses_a_damaged_run(case: str, run: Path, tmp_path: Path) -> None:
    name, damage, fragment = DAMAGE[case]
    copy = _copy(run, tmp_path)
    damage(copy / name)
    line = assert_one_error(invoke("leaderboard", copy, "--out", tmp_path / "lb.csv"), fragment,
                            f"{copy / name} is damaged", f"robeval run --spec {copy / 'spec.yaml'} --out {copy}")
    assert line.count(";") == 1  # one sentence: what is wrong; how to fix it
    assert not (tmp_path / "lb.csv").exists()


@pytest.mark.parametrize("case", REPORT_READS)
def test_report_refuses_a_damaged_run(case: str, run: Path, tmp_path: Path) -> None:
    name, damage, fragment = DAMAGE[case]
    copy = _copy(run, tmp_path)
    damage(copy / name)
    assert_one_error(invoke("report", copy, "--out", tmp_path / "r.md", "--examples", "0"), fragment,
                     f"{copy / name} is damaged", "robeval run --spec")
    assert not (tmp_path / "r.md").exists() and not (tmp_path / "report_files").exists()


@pytest.mark.parametrize("command", ["leaderboard", "report"])
def test_a_damaged_spec_yaml_is_one_line(command: str, run: Path, tmp_path: Path) -> None:
    copy = _copy(run, tmp_path)
    (copy / "spec.yaml").write_text("models: [unclosed\n")
    out = ["--out", tmp_path / "lb.csv"] if command == "leaderboard" else ["--out", tmp_path / "r.md", "--examples", "0"]
    assert_one_error(invoke(command, copy, *out), "spec.yaml", "restore it or delete it")


@pytest.mark.parametrize("case", ["results-csv-alone", "run-without-samples", "intact-run"])
def test_worst_case_names_its_source(case: str, run: Path, tmp_path: Path) -> None:
    """The right number from a complete run, and the fallback saying why it is one."""
    samples = pd.read_csv(run / "samples.csv")
    results = pd.read_csv(run / "results.csv")
    copy = _copy(run, tmp_path)
    source = {"results-csv-alone": copy / "results.csv", "run-without-samples": copy, "intact-run": copy}[case]
    if case == "run-without-samples":
        (copy / "samples.csv").unlink()
    board = leaderboard([source]).set_index("eps")
    for eps in (0.1, 0.2):
        row = board.loc[eps]
        if case == "intact-run":
            at = samples[samples["eps"] == eps]
            robust = (at["adv_pred"] == at["label"]).groupby(at["split_index"]).all()  # robust to every attack
            assert row["worst_case_from"] == "samples" and row["worst_case_acc"] == pytest.approx(robust.mean())
        else:
            why = {"results-csv-alone": "a results CSV alone, no samples.csv",
                   "run-without-samples": "samples.csv missing"}[case]
            assert row["worst_case_from"] == f"min over attacks: {why}" and row["unreliable"]
            assert row["worst_case_acc"] == pytest.approx(results[results["eps"] == eps]["robust_acc"].min())
            assert why in leaderboard_markdown(leaderboard([source]))


# --- 3. runs of other n or seed are never merged ---------------------------------------------

@pytest.mark.parametrize("case", ["other-n-and-seed", "unknown-seed", "same-run-twice"])
def test_runs_on_other_points_are_separate_rows(case: str, run: Path, other_run: Path, tmp_path: Path) -> None:
    second = {"other-n-and-seed": other_run, "same-run-twice": _copy(run, tmp_path, "twice"),
              "unknown-seed": _copy(run, tmp_path, "old")}[case]
    if case == "unknown-seed":  # a results.csv from before the seed column
        old = pd.read_csv(second / "results.csv").drop(columns=["seed"])
        old.to_csv(second / "results.csv", index=False)
    board = leaderboard([run, second])
    at = board[board["eps"] == 0.1]
    if case == "same-run-twice":  # the same points: one row
        assert len(at) == 1 and at.iloc[0]["n"] == 30 and at.iloc[0]["worst_case_from"] == "samples"
        return
    assert len(at) == 2, at
    expected_seed = {"other-n-and-seed": "1", "unknown-seed": ""}[case]
    assert sorted(at["seed"]) == sorted(["0", expected_seed])
    for source in (run, second):
        results = pd.read_csv(source / "results.csv")
        mine = results[results["eps"] == 0.1]
        seed = str(int(mine["seed"].iloc[0])) if "seed" in mine.columns else ""
        row = at[(at["n"] == int(mine["n"].iloc[0])) & (at["seed"] == seed)]
        assert len(row) == 1  # each run its own row, its clean accuracy and worst case from its own points
        assert row.iloc[0]["clean_acc"] == pytest.approx(mine["clean_acc"].iloc[0])
        assert row.iloc[0]["worst_case_acc"] <= mine["robust_acc"].min() + 1e-12
        assert row.iloc[0]["worst_case_from"] == "samples"
    assert "never merged" in leaderboard_markdown(board)
    written = write_leaderboard([run, second], tmp_path / "lb.csv", model_info_dir=tmp_path / "mi")
    entries = [json.loads(p.read_text()) for p in sorted((tmp_path / "mi").glob("*.json"))]
    assert len(entries) == len(written.frame)  # no entry overwrote another
    assert {(e["robeval"]["n"], e["robeval"]["seed"]) for e in entries if e["robeval"]["eps"] == 0.1} == {
        (int(n), int(s) if s else None) for n, s in zip(at["n"], at["seed"], strict=True)}


# --- 4. only the standard AutoAttack is autoattack_acc --------------------------------------

AUTOATTACKS = {  # id: (attack as results.csv writes it, standard?, a whole ensemble?)
    "standard": ("autoattack", True, True),
    "standard-l2": ("autoattack:norm=l2", True, True),
    "standard-explicit-budgets": ("autoattack:n_iter=100,n_queries=5000,n_target_classes=9", True, True),
    "custom-subset": ("autoattack:attacks=apgd-ce,version=custom", False, False),
    "fewer-iterations": ("autoattack:n_iter=10", False, False),
    "fewer-queries": ("autoattack:n_queries=500", False, False),
    "fewer-targets": ("autoattack:n_target_classes=3", False, False),
    "plus-version": ("autoattack:version=plus", False, True),
}


def _aa_run(path: Path, attack: str) -> Path:
    """pgd and ``attack`` on the same 4 points; ``attack`` breaks one more point than pgd."""
    norm = "l2" if "norm=l2" in attack else "linf"
    rows, samples = [], []
    for name, robust in (("pgd", [1, 1, 1, 0]), (attack, [1, 1, 0, 0])):
        row = dict.fromkeys(RESULT_COLUMNS, "")
        row.update(model="m", dataset="toy", attack=name, norm=norm, eps=0.5, n=4, clean_acc=1.0,
                   robust_acc=sum(robust) / 4, seed=0, robeval_version="0.1.0", cell_key=name)
        rows.append(row)
        samples += [{"model": "m", "attack": name, "eps": 0.5, "index": i, "split_index": i, "label": 0,
                     "clean_pred": 0, "adv_pred": 0 if ok else 1} for i, ok in enumerate(robust)]
    path.mkdir()
    pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(path / "results.csv", index=False)
    pd.DataFrame(samples, columns=SAMPLE_COLUMNS).to_csv(path / "samples.csv", index=False)
    return path


@pytest.mark.parametrize("case", list(AUTOATTACKS))
def test_only_the_standard_autoattack_fills_autoattack_acc(case: str, tmp_path: Path) -> None:
    attack, standard, ensemble = AUTOATTACKS[case]
    row = leaderboard([_aa_run(tmp_path / "run", attack)]).iloc[0].to_dict()
    assert row["worst_case_acc"] == 0.5 and row[f"acc:{attack}"] == 0.5  # reported under its own name
    info = to_model_info(row)
    if standard:
        assert row["autoattack_acc"] == 0.5 and info["autoattack_acc"] == "50.00"
    else:
        assert pd.isna(row["autoattack_acc"]) and info["autoattack_acc"] == ""
        assert info["robeval"]["autoattack_acc"] is None and attack in info["footnote"]
    # alone, a custom or reduced AutoAttack is one attack, not an evaluation to trust
    alone = tmp_path / "alone.csv"
    pd.read_csv(tmp_path / "run" / "results.csv").iloc[1:].to_csv(alone, index=False)
    only = leaderboard([alone]).iloc[0].to_dict()
    assert bool(only["unreliable"]) is (not ensemble)
    assert to_model_info(only)["unreliable"] is (not ensemble)
    if not standard:  # not even a row, a stored entry or an override that claims one exports one
        assert to_model_info({**only, "autoattack_acc": 0.5})["autoattack_acc"] == ""
        stored = {**only, "model_info": json.dumps({"autoattack_acc": "50.00", "unreliable": False})}
        assert to_model_info(stored)["autoattack_acc"] == ""
        assert to_model_info(only, autoattack_acc="50.00")["autoattack_acc"] == ""
        assert pd.isna(from_model_info({**to_model_info(row), "robeval": {
            **to_model_info(row)["robeval"], "autoattack_acc": 0.5}})["autoattack_acc"])


# --- 5. the report shows every table in % ---------------------------------------------------

@pytest.mark.parametrize("suffix", [".md", ".html"])
def test_report_shows_the_sfa_summary_in_percent(suffix: str, run: Path, tmp_path: Path) -> None:
    copy = _copy(run, tmp_path)
    # the columns robeval.eval.evaluate writes (_write_sfa_tables)
    pd.DataFrame([{"model": "m", "eps": 8 / 255, "avg_acc": 0.678125, "min_acc": 0.4, "min_l": 0, "min_m": 1,
                   "max_acc": 0.9}]).to_csv(copy / "sfa_summary.csv", index=False)
    text = write_report(copy, tmp_path / f"r{suffix}", examples=0).read_text()
    section = text[text.index("SFA summary"):]
    for shown in ("67.8", "40.0", "90.0", "8/255", "(0, 1)", "avg (%)"):
        assert shown in section, section[:600]
    assert "0.6781" not in section and "0.678125" not in section


def test_report_refuses_a_damaged_sfa_summary(run: Path, tmp_path: Path) -> None:
    copy = _copy(run, tmp_path)
    (copy / "sfa_summary.csv").write_text("model,eps,avg_acc,min_acc\nm,0.3,abc,0.4\n")
    assert_one_error(invoke("report", copy, "--out", tmp_path / "r.md", "--examples", "0"),
                     "sfa_summary.csv is damaged", "'avg_acc' is 'abc'")



