"""Leaderboard across runs, per-sample worst case, merge-order independence,
RobustBench model_info round trip and the `robeval leaderboard` command."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from robeval.cli import app
from robeval.errors import RobevalError
from robeval.results.leaderboard import leaderboard, leaderboard_markdown
from robeval.results.robustbench_json import (
    from_model_info,
    model_info_filename,
    read_model_info,
    to_model_info,
    write_model_info,
)
from robeval.results.tables import RESULT_COLUMNS, SAMPLE_COLUMNS


def _result(model, attack, eps, n, clean, robust, **extra):
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(model=model, training="ce, 1 epoch", dataset="toy", attack=attack, norm="linf", eps=eps, n=n,
               clean_acc=clean, robust_acc=robust, robeval_version="0.1.0", seed=0, cell_key=f"{model}-{attack}-{eps}")
    row.update(extra)
    return row


def _samples(model, attack, eps, robust_mask, labels=None):
    rows = []
    for i, ok in enumerate(robust_mask):
        label = 0 if labels is None else labels[i]
        rows.append({"model": model, "attack": attack, "eps": eps, "index": i, "split_index": 100 + i, "target": None,
                     "label": label, "clean_pred": label, "adv_pred": label if ok else label + 1,
                     "perturbation_norm": eps, "l0": 1.0, "l2": eps, "linf": eps})
    return rows


def _run_dir(path, results, samples=None):
    path.mkdir(parents=True)
    pd.DataFrame(results, columns=RESULT_COLUMNS).to_csv(path / "results.csv", index=False)
    if samples is not None:
        pd.DataFrame(samples, columns=SAMPLE_COLUMNS).to_csv(path / "samples.csv", index=False)
    return path


def _two_attack_run(path, model, a_mask, b_mask, eps=0.1):
    n = len(a_mask)
    results = [_result(model, "fgsm", 0.0, n, 1.0, 1.0),
               _result(model, "fgsm", eps, n, 1.0, sum(a_mask) / n), _result(model, "pgd", eps, n, 1.0, sum(b_mask) / n),
               _result(model, "pgd", eps, n, 1.0, 0.0, target="3")]
    samples = _samples(model, "fgsm", eps, a_mask) + _samples(model, "pgd", eps, b_mask)
    return _run_dir(path, results, samples)


def test_worst_case_is_per_sample_not_min_over_attacks(tmp_path):
    # each attack alone leaves half the points robust, but never the same half
    run = _two_attack_run(tmp_path / "run", "m", [1, 1, 0, 0], [0, 0, 1, 1])
    frame = leaderboard([run])
    assert len(frame) == 1  # eps 0 and the targeted row are skipped
    row = frame.iloc[0]
    assert row["acc:fgsm"] == 0.5 and row["acc:pgd"] == 0.5
    assert row["worst_case_acc"] == 0.0 and row["worst_case_from"] == "samples"
    assert not row["unreliable"] and row["n"] == 4 and pd.isna(row["autoattack_acc"])
    # a bare results CSV can only give the min over attacks, and says so
    csv_row = leaderboard([run / "results.csv"]).iloc[0]
    assert csv_row["worst_case_acc"] == 0.5
    assert csv_row["worst_case_from"] == "min over attacks: a results CSV alone, no samples.csv"
    assert csv_row["unreliable"]


def test_different_point_sets_fall_back_and_flag(tmp_path):
    run = _two_attack_run(tmp_path / "run", "m", [1, 1, 0, 0], [0, 0, 1, 1])
    samples = pd.read_csv(run / "samples.csv")
    samples.loc[samples["attack"] == "pgd", "split_index"] += 50
    samples.to_csv(run / "samples.csv", index=False)
    row = leaderboard([run]).iloc[0]
    assert row["worst_case_from"] == "min over attacks: fgsm and pgd ran on different points"
    assert row["worst_case_acc"] == 0.5 and row["unreliable"]


def test_a_full_autoattack_alone_is_reliable_a_custom_one_is_not(tmp_path):
    results = [_result("m", "autoattack", 0.1, 10, 0.9, 0.5), _result("m", "pgd", 0.2, 10, 0.9, 0.3),
               _result("c", "autoattack:version=custom,attacks=apgd-ce", 0.1, 10, 0.9, 0.6)]
    path = tmp_path / "results.csv"
    pd.DataFrame(results, columns=RESULT_COLUMNS).to_csv(path, index=False)
    frame = leaderboard([path]).set_index(["model", "eps"])
    assert not frame.loc[("m", 0.1), "unreliable"] and frame.loc[("m", 0.1), "worst_case_acc"] == 0.5
    assert frame.loc[("m", 0.2), "unreliable"] and frame.loc[("c", 0.1), "unreliable"]
    # a custom AutoAttack is its own attack column, never `autoattack_acc` (only the standard one is)
    assert pd.isna(frame.loc[("c", 0.1), "autoattack_acc"])
    assert frame.loc[("c", 0.1), "acc:autoattack:version=custom,attacks=apgd-ce"] == 0.6
    assert frame.loc[("m", 0.1), "autoattack_acc"] == 0.5


def test_ranking_order_is_deterministic(tmp_path):
    results = [
        _result("b", "fgsm", 0.1, 10, 0.9, 0.5), _result("b", "pgd", 0.1, 10, 0.9, 0.4),
        _result("a", "fgsm", 0.1, 10, 0.9, 0.5), _result("a", "pgd", 0.1, 10, 0.9, 0.4),  # tie with b -> name
        _result("c", "fgsm", 0.1, 10, 0.95, 0.6), _result("c", "pgd", 0.1, 10, 0.95, 0.4),  # tie on worst, better clean
        _result("d", "fgsm", 0.1, 10, 0.5, 0.7), _result("d", "autoattack", 0.1, 10, 0.5, 0.6),
        _result("d", "fgsm", 0.3, 10, 0.5, 0.1),
    ]
    path = tmp_path / "results.csv"
    pd.DataFrame(results, columns=RESULT_COLUMNS).to_csv(path, index=False)
    frame = leaderboard([path])
    first = frame[frame["eps"] == 0.1]
    assert list(first["model"]) == ["d", "c", "a", "b"]
    assert list(first["rank"]) == [1, 2, 3, 4]
    assert first.iloc[0]["autoattack_acc"] == 0.6
    single = frame[frame["eps"] == 0.3].iloc[0]
    assert single["rank"] == 1 and single["unreliable"]  # one attack only
    md = leaderboard_markdown(frame)
    assert "| 1 | d | toy | linf | 0.1 | 50.00 |" in md


def test_merge_order_independent_with_duplicate(tmp_path):
    a = _two_attack_run(tmp_path / "a", "m", [1, 1, 0, 0], [0, 0, 1, 1])
    b = _two_attack_run(tmp_path / "b", "m", [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0])  # same cells, more points
    c = _two_attack_run(tmp_path / "c", "other", [1, 0], [1, 1])
    ab = leaderboard([a, b, c])
    ba = leaderboard([c, b, a])
    pd.testing.assert_frame_equal(ab, ba)
    row = ab[ab["model"] == "m"].iloc[0]
    assert row["n"] == 6 and row["worst_case_acc"] == pytest.approx(4 / 6)


def test_robustbench_round_trip_keeps_every_field(tmp_path):
    run = _two_attack_run(tmp_path / "run", "m", [1, 1, 1, 0], [1, 1, 0, 0], eps=8 / 255)
    row = leaderboard([run]).iloc[0].to_dict()
    info = to_model_info(row, link="https://example.org", authors="A. Author", venue="Test 2024")
    assert info["eps"] == "8/255" and info["clean_acc"] == "100.00" and info["autoattack_acc"] == ""
    assert info["unreliable"] is False and info["architecture"] == ""
    assert info["number_forward_passes"] == 1 and info["additional_data"] is False
    assert info["external"] == f"{100 * row['worst_case_acc']:.2f}"  # the per-sample worst case
    path = write_model_info(tmp_path / "m.json", info)
    again = to_model_info(from_model_info(read_model_info(path)))
    assert again == info
    assert json.dumps(again) == json.dumps(info)  # same key order too
    # a published entry (no robeval key) imports as an external row and round-trips too
    published = {"link": "https://arxiv.org/abs/x", "name": "Some Paper", "authors": "X", "additional_data": True,
                 "number_forward_passes": 1, "dataset": "cifar10", "venue": "ICML 2020", "architecture": "WRN-34-10",
                 "eps": "8/255", "clean_acc": "86.04", "reported": "59.53", "autoattack_acc": "59.48",
                 "unreliable": False, "footnote": "", "external": "59.5"}
    ext = from_model_info(published)
    assert ext["worst_case_from"] == "external" and ext["worst_case_acc"] == pytest.approx(0.5948)
    assert to_model_info(ext) == published
    assert to_model_info(from_model_info(to_model_info(ext))) == published
    # a stronger external evaluation than AutoAttack is the published entry's worst case
    stronger = from_model_info({**published, "external": "58.10"})
    assert stronger["worst_case_acc"] == pytest.approx(0.581) and stronger["autoattack_acc"] == pytest.approx(0.5948)


def test_published_entry_takes_its_norm_from_robustbench_layout(tmp_path):
    """model_info/<dataset>/<threat>/<name>.json: the folder names the threat model, so a
    published entry is ranked together with our rows of that norm and eps."""
    run = _two_attack_run(tmp_path / "run", "m", [1, 1, 1, 0], [1, 1, 0, 0], eps=8 / 255)
    folder = tmp_path / "model_info" / "toy" / "Linf"
    folder.mkdir(parents=True)
    published = {"name": "Paper", "dataset": "toy", "eps": "8/255", "clean_acc": "90.00", "autoattack_acc": "60.00",
                 "unreliable": False}
    write_model_info(folder / "Paper2020.json", published)
    board = leaderboard([run, folder / "Paper2020.json"])
    board = board[board["eps"] > 0]
    assert set(board["norm"]) == {"linf"} and list(board["model"]) == ["Paper", "m"]
    assert list(board["rank"]) == [1, 2]
    again = to_model_info(board.iloc[0].to_dict())
    assert {k: again[k] for k in published} == published and "norm" not in again  # inferred, not added
    # a whole model_info tree (RobustBench's repository layout) is one source
    write_model_info(tmp_path / "model_info" / "toy" / "L2" / "Other2021.json", {**published, "name": "Other"})
    tree = leaderboard([run, tmp_path / "model_info"])
    assert set(tree["model"]) == {"Paper", "Other", "m"}
    assert set(tree[tree["model"] == "Other"]["norm"]) == {"l2"}


def test_cli_writes_files_and_bad_path_is_one_line(tmp_path):
    run = _two_attack_run(tmp_path / "run", "m", [1, 1, 0, 0], [0, 0, 1, 1])
    published = tmp_path / "pub.json"
    published.write_text(json.dumps({"name": "Paper", "dataset": "toy", "eps": "0.1", "clean_acc": "90.00",
                                     "autoattack_acc": "40.00", "unreliable": False}))
    out = tmp_path / "lb" / "leaderboard.csv"
    runner = CliRunner()
    result = runner.invoke(app, ["leaderboard", str(run), str(published), "--out", str(out),
                                 "--markdown", str(tmp_path / "lb.md"), "--model-info-dir", str(tmp_path / "mi")])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert set(frame["model"]) == {"m", "Paper"} and set(frame["worst_case_from"]) == {"samples", "external"}
    assert "worst case" in (tmp_path / "lb.md").read_text()
    assert len(list((tmp_path / "mi").glob("*.json"))) == 2
    bad = runner.invoke(app, ["leaderboard", str(tmp_path / "missing"), "--out", str(out)])
    assert bad.exit_code == 2
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "does not exist" in lines[0]
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    bad_json = runner.invoke(app, ["leaderboard", str(broken), "--out", str(out)])
    assert bad_json.exit_code == 2


def test_no_sources_is_an_error():
    with pytest.raises(RobevalError):
        leaderboard([])


# --- threat models of non-ball norms -------------------------------------------------------

CHECK_COLUMNS = [*RESULT_COLUMNS, *[c for c in ("unreliable", "indicators") if c not in RESULT_COLUMNS]]


def _write(path, results, *, checked=True):
    """A results CSV with (``checked``) or without (an old file) the indicator columns."""
    frame = pd.DataFrame(results, columns=CHECK_COLUMNS)
    if checked:
        frame["unreliable"] = frame["unreliable"].map(lambda v: v is True or v == "True")
        frame["indicators"] = frame["indicators"].fillna("")
    else:
        frame = frame.drop(columns=["unreliable", "indicators"])
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def test_scale_attacks_are_never_merged_into_one_worst_case(tmp_path):
    """gaussian and lowpass at the same eps as pgd: eps is a std for one, ignored by the
    other, a ball radius for pgd -- three threat models, three rows, three rankings."""
    results = [
        _result("m", "pgd", 0.1, 4, 1.0, 0.75), _result("m", "fgsm", 0.1, 4, 1.0, 0.5),
        _result("m", "gaussian", 0.1, 4, 1.0, 0.25, norm="scale"),
        _result("m", "lowpass:radius=1.5", 0.1, 4, 1.0, 0.0, norm="scale"),
        _result("o", "gaussian", 0.1, 4, 1.0, 0.5, norm="scale"),
    ]
    masks = {"pgd": [1, 1, 1, 0], "fgsm": [1, 1, 0, 0], "gaussian": [1, 0, 0, 0], "lowpass:radius=1.5": [0, 0, 0, 0]}
    samples = [r for a, mask in masks.items() for r in _samples("m", a, 0.1, mask)]
    samples += _samples("o", "gaussian", 0.1, [1, 1, 0, 0])
    run = _run_dir(tmp_path / "run", results, samples)
    for source in (run, run / "results.csv"):  # per sample, and from the bare CSV
        frame = leaderboard([source])
        mine = frame[frame["model"] == "m"].set_index("threat")
        assert sorted(mine.index) == ["linf", "scale (gaussian)", "scale (lowpass:radius=1.5)"]
        assert mine.loc["linf", "attacks"] == 2 and mine.loc["linf", "worst_case_acc"] == 0.5
        assert mine.loc["scale (gaussian)", "worst_case_acc"] == 0.25
        assert mine.loc["scale (gaussian)", "attacks"] == 1 and pd.isna(mine.loc["scale (gaussian)", "acc:pgd"])
        assert mine.loc["scale (lowpass:radius=1.5)", "worst_case_acc"] == 0.0
        assert set(mine["norm"]) == {"linf", "scale"}
        # a non-ball threat model is its one attack: not flagged for being one attack
        assert not mine.loc["scale (gaussian)", "unreliable"]
        assert not mine.loc["scale (lowpass:radius=1.5)", "unreliable"]
        # ranked within its own threat model: o beats m under gaussian, m is alone under lowpass
        gauss = frame[frame["threat"] == "scale (gaussian)"]
        assert list(gauss["model"]) == ["o", "m"] and list(gauss["rank"]) == [1, 2]
        assert frame[frame["threat"] == "scale (lowpass:radius=1.5)"]["rank"].tolist() == [1]
    md = leaderboard_markdown(leaderboard([run]))
    assert "| scale (gaussian) |" in md and "| scale (lowpass:radius=1.5) |" in md
    # each row is its own RobustBench entry, and comes back into its own threat model
    board = leaderboard([run])
    names = {model_info_filename(r) for r in board.to_dict("records")}
    assert len(names) == len(board)
    for row in board.to_dict("records"):
        back = from_model_info(to_model_info(row))
        assert back["threat"] == row["threat"] and back["norm"] == row["norm"]
    folder = tmp_path / "mi"
    for row in board.to_dict("records"):
        write_model_info(folder / model_info_filename(row), to_model_info(row))
    again = leaderboard([folder])
    assert sorted(again["threat"]) == sorted(board["threat"])


# --- attack-failure indicators -------------------------------------------------------------


def test_fired_indicators_make_a_row_unreliable(tmp_path):
    results = [
        _result("m", "fgsm", 0.1, 4, 1.0, 0.5, unreliable=True, indicators="zero-grad;flat-loss"),
        _result("m", "pgd", 0.1, 4, 1.0, 0.5, unreliable=True, indicators="flat-loss"),
        _result("m", "deepfool", 0.1, 4, 1.0, 0.75, unreliable=False, indicators=""),
        _result("m", "pgd", 0.2, 4, 1.0, 0.25, unreliable=False, indicators=""),
        _result("m", "fgsm", 0.2, 4, 1.0, 0.25, unreliable=False, indicators=""),
        _result("ok", "pgd", 0.1, 4, 1.0, 0.5, unreliable=False, indicators=""),
        _result("ok", "fgsm", 0.1, 4, 1.0, 0.5, unreliable=False, indicators=""),
    ]
    masks = {("m", "fgsm", 0.1): [1, 1, 0, 0], ("m", "pgd", 0.1): [1, 1, 0, 0], ("m", "deepfool", 0.1): [1, 1, 1, 0],
             ("m", "pgd", 0.2): [1, 0, 0, 0], ("m", "fgsm", 0.2): [1, 0, 0, 0],
             ("ok", "pgd", 0.1): [1, 1, 0, 0], ("ok", "fgsm", 0.1): [1, 1, 0, 0]}
    run = tmp_path / "run"
    _write(run / "results.csv", results)
    samples = [r for (model, attack, eps), mask in masks.items() for r in _samples(model, attack, eps, mask)]
    pd.DataFrame(samples, columns=SAMPLE_COLUMNS).to_csv(run / "samples.csv", index=False)
    frame = leaderboard([run]).set_index(["model", "eps"])
    flagged = frame.loc[("m", 0.1)]
    assert flagged["worst_case_from"] == "samples" and flagged["unreliable"]  # per sample, but an attack failed
    assert flagged["indicators"] == "fgsm: zero-grad;flat-loss | pgd: flat-loss"  # attacks sorted, names as given
    assert flagged["checked"]
    for key in [("m", 0.2), ("ok", 0.1)]:
        assert not frame.loc[key, "unreliable"] and frame.loc[key, "indicators"] == "" and frame.loc[key, "checked"]
    board = leaderboard([run])
    md = leaderboard_markdown(board)
    line = next(x for x in md.splitlines() if x.startswith("| ") and "| m |" in x and "| 0.1 |" in x)
    assert "50.00*" in line
    assert "attack-failure indicators fired: fgsm: zero-grad;flat-loss | pgd: flat-loss" in md
    assert "not checked" not in md
    # the RobustBench entry never says "unreliable": false for it, whatever it is told
    row = board[(board["model"] == "m") & (board["eps"] == 0.1)].iloc[0].to_dict()
    for info in (to_model_info(row), to_model_info(row, unreliable=False)):
        assert info["unreliable"] is True and info["robeval"]["unreliable"] is True
        assert "flat-loss" in info["footnote"]
    back = from_model_info(to_model_info(row))
    assert back["unreliable"] and back["indicators"] == row["indicators"]
    assert to_model_info(back) == to_model_info(row)
    # also from a leaderboard CSV read back (strings, not bools)
    board.to_csv(tmp_path / "lb.csv", index=False)
    read = pd.read_csv(tmp_path / "lb.csv", keep_default_na=False)
    as_text = read[(read["model"] == "m") & (read["eps"] == 0.1)].iloc[0].to_dict()
    assert to_model_info({**as_text, "unreliable": "False"})["unreliable"] is True  # indicators alone suffice
    good = read[(read["model"] == "ok")].iloc[0].to_dict()
    assert to_model_info(good)["unreliable"] is False


def test_a_flag_without_names_still_counts(tmp_path):
    results = [_result("m", "fgsm", 0.1, 4, 1.0, 0.5, unreliable=True, indicators=""),
               _result("m", "pgd", 0.1, 4, 1.0, 0.5, unreliable=False, indicators="")]
    row = leaderboard([_write(tmp_path / "results.csv", results)]).iloc[0]
    assert row["unreliable"] and row["indicators"] == "fgsm: flagged"


def test_old_results_are_not_flagged_but_not_checked(tmp_path):
    old = _two_attack_run(tmp_path / "old", "m", [1, 1, 0, 0], [0, 0, 1, 1])
    results = pd.read_csv(old / "results.csv").drop(columns=["unreliable", "indicators"], errors="ignore")
    results.to_csv(old / "results.csv", index=False)
    row = leaderboard([old]).iloc[0]
    assert not row["unreliable"] and row["indicators"] == "" and not row["checked"]
    md = leaderboard_markdown(leaderboard([old]))
    assert "Attack-failure checks: not checked for 1 of 1 rows" in md
    # merged with a checked run of another model: only the old row is unchecked
    new = tmp_path / "new"
    _write(new / "results.csv", [_result("n", "autoattack", 0.1, 4, 1.0, 0.5, unreliable=False, indicators="")])
    both = leaderboard([old, new]).set_index("model")
    assert both.loc["n", "checked"] and not both.loc["m", "checked"] and not both.loc["n", "unreliable"]
    assert "not checked for 1 of 2 rows" in leaderboard_markdown(leaderboard([old, new]))
    # `--checks off` writes the columns but leaves `unreliable` empty: not known, not false
    off = tmp_path / "off"
    _write(off / "results.csv", [_result("n", "autoattack", 0.1, 4, 1.0, 0.5)], checked=False)
    frame = pd.read_csv(off / "results.csv").assign(unreliable=pd.NA, indicators="")
    frame.to_csv(off / "results.csv", index=False)
    row = leaderboard([off]).iloc[0]
    assert not row["unreliable"] and not row["checked"]


def test_a_worst_case_cascade_with_a_full_autoattack_counts_as_one(tmp_path):
    stages = {"strong": "pgd > autoattack", "weak": "fgsm > pgd", "custom": "pgd > autoattack:version=custom,attacks=apgd-ce"}
    results = [_result(m, "worst-case", 0.3, 10, 0.9, 0.5, stages=s) for m, s in stages.items()]
    frame = leaderboard([_run_dir(tmp_path / "r", results)]).set_index("model")
    assert not frame.loc["strong", "unreliable"]
    assert frame.loc["weak", "unreliable"] and frame.loc["custom", "unreliable"]
    assert frame["autoattack_acc"].isna().all()  # a cascade is not AutoAttack alone
