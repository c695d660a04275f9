"""Parameters users type (issue 12): an attack key given twice and an empty eps entry
are one error naming them (never the last value silently, never a shorter grid); a
budget whose ball holds the whole [0, 1] box (usually 8 typed for 8/255) is warned,
once per eps and norm, where it can be said for sure: L-inf eps >= 1, L2 eps past the
images' diameter; ordinary L2 budgets above 1 are not."""

from __future__ import annotations

import math
import warnings

import pytest

import robeval
from robeval.errors import RobevalError
from robeval.params import large_eps_warnings, parse_eps_list, parse_named
from tests.bad_inputs.run_helpers import assert_one_error, invoke


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--attack", "pgd:steps=3,steps=4", "--eps", "0,0.1"], "attack 'pgd:steps=3,steps=4' gives steps twice"),
        (["--attack", "pgd:rel-stepsize=0.1,rel_stepsize=0.2", "--eps", "0.1"], "gives rel_stepsize twice"),
        (["--attack", "fgsm", "--eps", "0,,0.1"], "the eps list '0,,0.1' has an empty entry (entry 2 of 3)"),
        (["--attack", "fgsm", "--eps", "0,0.1,"], "has an empty entry (entry 3 of 3)"),
    ],
    ids=["attack-key-twice", "attack-key-twice-spelled-two-ways", "empty-eps-entry", "trailing-comma-in-eps"],
)
def test_malformed_parameters_are_one_error(args, fragment, digits_checkpoint, tmp_path) -> None:
    assert_one_error(invoke("run", digits_checkpoint, *args, "--n", "8", "--device", "cpu", "--quiet",
                            "--out", tmp_path / "run"), fragment)
    assert not (tmp_path / "run" / "results.csv").exists()


def test_the_parsers_name_the_fix() -> None:
    with pytest.raises(RobevalError, match="keep one steps=VALUE"):
        parse_named("pgd:steps=3,steps=4", kind="attack")
    with pytest.raises(RobevalError, match="remove the extra comma"):
        parse_eps_list("0,,0.1")
    assert parse_eps_list("0, 2/255 ,unbounded") == (0.0, 2 / 255, math.inf)


def test_a_model_source_option_given_twice_is_one_error() -> None:
    from robeval.models.source_utils import parse_options

    with pytest.raises(RobevalError, match="gives weights twice; keep one weights=VALUE"):
        parse_options("weights=a.pt,weights=b.pt", source="torchvision:resnet18:weights=a.pt,weights=b.pt",
                      allowed=("weights", "mean", "std"))
    assert parse_options("weights=a.pt,mean=0.5", source="s", allowed=("weights", "mean")) == {
        "weights": "a.pt", "mean": "0.5"}


@pytest.mark.parametrize(
    ("eps", "norm", "warned"),
    [
        (1.5, "linf", True), (1.0, "linf", True), (0.3, "linf", False), (math.inf, "linf", False),
        (1.5, "l2", False), (7.9, "l2", False), (8.0, "l2", True), (64.0, "l0", True), (10.0, "l0", False),
        (5.0, "field", False), (2.0, "scale", False),
    ],
    ids=["linf-1.5", "linf-1", "linf-0.3", "linf-unbounded", "l2-1.5", "l2-below-diameter", "l2-diameter",
         "l0-every-pixel", "l0-10-pixels", "deformation-field", "noise-scale"],
)
def test_budgets_that_cover_the_whole_box_are_warned(eps, norm, warned) -> None:
    lines = large_eps_warnings((0.0, eps), [norm], (1, 8, 8))  # digits: 64 pixels, L2 diameter 8
    assert bool(lines) == warned and len(lines) <= 1
    if warned:
        assert lines[0].startswith(f"eps {eps:g} is at least ") and "can reach any image" in lines[0]


def test_a_run_at_linf_eps_1_5_warns_in_one_line(digits_checkpoint, tmp_path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        robeval.evaluate(models=[str(digits_checkpoint)], attacks=["fgsm", "pgd:norm=l2,steps=2"], eps="0,1.5", n=8,
                         device="cpu", checks="off", out=str(tmp_path / "run"))
    lines = [str(w.message) for w in caught if "can reach any image" in str(w.message)]
    assert lines == ["eps 1.5 is at least the [0, 1] pixel range; every L-inf-bounded attack can reach any image at "
                     "this budget (fine as a sanity check; else write the budget as a fraction, e.g. 8/255)"]
