"""Models whose logits are NaN or inf (issue 12): on the clean test images that is one
error before any attack (never "clean 12 %, robust 12 % at every eps"); on the inputs an
attack tries only, the attack's rows are ``unreliable`` with the reason, also after a
rerun that attacks nothing."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from tests.bad_inputs.run_helpers import FACTORY, assert_ok, assert_one_error, invoke

RUN = ["--attack", "fgsm", "--attack", "pgd:steps=3", "--eps", "0,0.1", "--n", "16", "--device", "cpu", "--quiet"]


@pytest.mark.parametrize(("mode", "count"), [("clean-nan", "16 of 16"), ("clean-inf", "16 of 16"), ("some-nan", None)],
                         ids=["nan-on-every-image", "inf-on-every-image", "nan-on-some-images"])
def test_nonfinite_logits_on_clean_images_are_an_error_before_any_attack(mode, count, tmp_path) -> None:
    out = tmp_path / "run"
    line = assert_one_error(invoke("run", f"{FACTORY}:make:mode={mode}", *RUN, "--out", out),
                            "model 'nonfinite_factory' returns non-finite logits (NaN/inf) for ",
                            "fix the model or its input normalisation")
    found = re.search(r"for (\d+) of (\d+) test images", line)
    assert found, line
    if count is not None:
        assert f"{found[1]} of {found[2]}" == count
    else:
        assert 0 < int(found[1]) < int(found[2]) == 16
    assert not (out / "results.csv").exists() and not (out / "store.sqlite").exists()


def test_nonfinite_logits_on_perturbed_inputs_make_the_attacks_unreliable(tmp_path) -> None:
    out = tmp_path / "run"
    source = f"{FACTORY}:make:mode=perturbed-nan"
    result = invoke("run", source, *RUN, "--out", out)
    assert_ok(result)
    assert "non-finite-outputs" in result.output and "UNRELIABLE" in result.output
    first = pd.read_csv(out / "results.csv")
    assert first["unreliable"].all() and (first["indicators"].str.contains("non-finite-outputs")).all()
    assert_ok(invoke("run", source, *RUN, "--out", out))  # a rerun reads the store: the verdict stays
    again = pd.read_csv(out / "results.csv")
    assert again["unreliable"].all() and (again["indicators"].str.contains("non-finite-outputs")).all()
