"""Attack-failure indicators: each fires on the failure it names and stays quiet on a sound
evaluation; their findings reach checks.json, results.csv and the console."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import robeval
from robeval.attacks.trace import loss_trend
from robeval.eval import indicators as ind
from robeval.eval.indicators import Finding, apply_flags, consistency_findings
from robeval.eval.indicators.probes import gradient_probe, output_probe, point_loss, stability_probe

REQUIRED = {"model", "attack", "eps", "indicator", "fired", "value", "threshold", "detail"}


class Round(nn.Module):
    def forward(self, x):
        return torch.round(7 * x) / 7


class Cut(nn.Module):
    def forward(self, x):
        return x.detach()


class _Named(nn.Module):
    def __init__(self, step: nn.Module, base: nn.Module) -> None:
        super().__init__()
        self.step, self.base = step, base

    def forward(self, x):
        return self.base(self.step(x))


def _sample(digits_model, digits_test, k=32):
    x, y = digits_test
    with torch.no_grad():
        ok = digits_model(x).argmax(1) == y
    return x[ok][:k], y[ok][:k]


def test_loss_trend_closed_form() -> None:
    assert math.isnan(loss_trend(np.array([1.0, 2.0, 3.0])))  # too short
    assert loss_trend(np.zeros(8)) == 0.0  # flat
    # linear rise over 8 steps: last quarter mean 6.5, previous 4.5, range 7
    assert loss_trend(np.arange(8.0)) == pytest.approx(2 / 7)
    assert loss_trend(np.array([0, 5, 6, 6, 6, 6, 6, 6.0])) == pytest.approx(0.0)


def test_gradient_probe_names_the_module_that_stops_the_gradient(digits_model, digits_test) -> None:
    x, y = _sample(digits_model, digits_test)
    plain = gradient_probe(digits_model, x, y)
    assert not plain.unusable.any() and plain.blocking == []
    rounded = gradient_probe(_Named(Round(), digits_model), x, y)
    assert rounded.zero.all() and rounded.blocking == ["step"]
    cut = gradient_probe(_Named(Cut(), digits_model), x, y)
    assert cut.missing.all() and cut.blocking == ["step"]


def test_probability_outputs_and_stability_probes(digits_model, digits_test) -> None:
    x, y = _sample(digits_model, digits_test)
    assert not output_probe(digits_model, x).probabilities
    soft = nn.Sequential(digits_model, nn.Softmax(dim=1))
    probe = output_probe(soft, x)
    assert probe.probabilities and probe.softmax_module == "1"
    generator = torch.Generator().manual_seed(0)
    calm = stability_probe(digits_model, x, y, gradient_probe(digits_model, x, y), generator)
    assert calm.flips == 0 and calm.logit_change == 0 and calm.jumps == 0

    class Noisy(nn.Module):
        def forward(self, inp):
            return digits_model((inp + 0.2 * torch.randn_like(inp)).clamp(0, 1))

    noisy = stability_probe(Noisy(), x, y, gradient_probe(digits_model, x, y), generator)
    assert noisy.logit_change > 1e-3


def test_margin_and_dlr_losses_match_their_formulas() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, -1.0]])
    y = torch.tensor([0])
    assert point_loss(logits, y, "margin").item() == pytest.approx(2.0 - 3.0)
    assert point_loss(logits, y, "dlr").item() == pytest.approx((2.0 - 3.0) / (3.0 - 1.0))


def test_consistency_fires_on_a_rising_nested_curve_and_a_wrong_table() -> None:
    results = pd.DataFrame({
        "model": "m", "attack": "pgd", "eps": [0.0, 0.1, 0.2], "target": "", "n": 4,
        "robust_acc": [1.0, 0.5, 0.75],
    })
    samples = pd.DataFrame({
        "model": "m", "attack": "pgd", "eps": np.repeat([0.0, 0.1, 0.2], 4),
        "label": 0, "adv_pred": [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1],
    })
    (finding,) = consistency_findings(results, samples, {"pgd": True})
    assert finding.fired and "rises" in finding.detail
    assert finding.value == pytest.approx(0.25)
    (quiet,) = consistency_findings(results, samples, {"pgd": False})  # a noise attack may rise
    assert not quiet.fired
    wrong = results.assign(robust_acc=[1.0, 0.4, 0.3])
    (table,) = consistency_findings(wrong, samples, {"pgd": False})
    assert table.fired and "the table says" in table.detail


def test_apply_flags_marks_only_the_model_and_attack_that_fired() -> None:
    results = pd.DataFrame({"model": ["a", "a", "b"], "attack": ["pgd", "cw", "pgd"]})
    findings = [
        Finding("a", "cw", None, "unconstrained-failure", True, 0.9, 0.01, "x"),
        Finding("a", "cw", 0.1, "silent-success", True, 0.1, 0.0, "y"),
        Finding("a", "pgd", None, "unconstrained-failure", False, 0.0, 0.01, "z"),
    ]
    flagged = apply_flags(results, findings)
    assert list(flagged["unreliable"]) == [False, True, False]
    assert list(flagged["indicators"]) == ["", "silent-success;unconstrained-failure", ""]
    assert apply_flags(results, [], checked=False)["unreliable"].isna().all()


RUN = dict(eps="0,0.1,0.3,unbounded", n=96, batch_size=48, device="cpu", seed=0, check_samples=32)


def test_short_cw_search_fires_unconstrained_failure_deepfool_stays_quiet(digits_checkpoint, tmp_path) -> None:
    frame = robeval.evaluate(models=[str(digits_checkpoint)], attacks=["deepfool", "cw:steps=5,binary_search_steps=1"],
                             out=str(tmp_path), **RUN)
    checks = json.loads((tmp_path / "checks.json").read_text())
    assert checks and all(REQUIRED <= set(c) for c in checks)
    by = {(c["attack"], c["indicator"]): c for c in checks if c["eps"] is None}
    cw = by[("cw:binary_search_steps=1,steps=5", "unconstrained-failure")]
    assert cw["fired"] and cw["value"] > 0.5 and "cw with its full search" in cw["detail"]
    assert not by[("deepfool", "unconstrained-failure")]["fired"]
    rows = pd.read_csv(tmp_path / "results.csv")
    assert rows.loc[rows["attack"].str.startswith("cw"), "unreliable"].all()
    assert "unconstrained-failure" in rows.loc[rows["attack"].str.startswith("cw"), "indicators"].iloc[0]
    assert not rows.loc[rows["attack"] == "deepfool", "unreliable"].any()
    assert frame.attrs["checks_seconds"] > 0


def test_checks_are_cached_and_off_writes_nothing(digits_checkpoint, tmp_path, monkeypatch) -> None:
    args = dict(models=[str(digits_checkpoint)], attacks=["fgsm", "pgd:steps=5"], **{**RUN, "eps": "0,0.1"})
    first = robeval.evaluate(out=str(tmp_path / "a"), **args)
    import robeval.eval.indicators as module

    def fail(*a, **k):
        raise AssertionError("checks recomputed")

    monkeypatch.setattr(module, "model_findings", fail)
    again = robeval.evaluate(out=str(tmp_path / "a"), **args)
    assert [f.to_json() for f in again.attrs["checks"]] == [f.to_json() for f in first.attrs["checks"]]
    off = robeval.evaluate(out=str(tmp_path / "off"), checks="off", **args)
    assert not (tmp_path / "off" / "checks.json").exists()
    assert off["unreliable"].isna().all()


def test_silent_success_fires_for_keep_last_only(digits_checkpoint, tmp_path) -> None:
    # A step twice the budget makes the iterates jump in and out of adversarial (with a
    # step of one budget whether any point does so at one eps hangs on the CPU's rounding).
    attacks = ["pgd:keep=last,steps=10,rel_stepsize=2.0", "pgd:steps=10,rel_stepsize=2.0"]
    robeval.evaluate(models=[str(digits_checkpoint)], attacks=attacks, out=str(tmp_path),
                     **{**RUN, "eps": "0,0.1,0.15,0.2"})
    checks = json.loads((tmp_path / "checks.json").read_text())
    silent = {c["attack"]: c for c in checks if c["indicator"] == "silent-success" and c["fired"]}
    assert "pgd:keep=last,rel_stepsize=2" in silent
    assert "pgd:rel_stepsize=2" not in silent
    assert "keep=best" in silent["pgd:keep=last,rel_stepsize=2"]["detail"]


def test_unknown_check_level_is_a_user_error(digits_checkpoint) -> None:
    with pytest.raises(robeval.RobevalError, match="--checks must be one of"):
        robeval.evaluate(models=[str(digits_checkpoint)], checks="some")


def test_every_indicator_is_documented() -> None:
    names = set(ind.indicators.names())
    assert {"unavailable-gradients", "unstable-predictions", "silent-success", "incomplete-optimization",
            "unconstrained-failure", "gradient-free-beats-gradient", "probability-outputs",
            "inconsistent-results"} <= names
    for name in names:
        info = ind.indicators.get(name)
        assert info.catches and info.fires_when and info.cost


CUT_FACTORY = '''
import robeval
from torch import nn


class Cut(nn.Module):
    def forward(self, x):
        return x.detach()


class Net(nn.Module):
    def __init__(self, ckpt):
        super().__init__()
        self.cut = Cut()
        self.base = robeval.load_model(ckpt)

    def forward(self, x):
        return self.base(self.cut(x))


def make(ckpt):
    return Net(ckpt).eval(), {"dataset": "digits", "input_shape": (1, 8, 8)}
'''


def test_a_cut_graph_is_named_not_a_traceback(digits_checkpoint, tmp_path) -> None:
    factory = tmp_path / "cut.py"
    factory.write_text(CUT_FACTORY)
    source = f"{factory}:make:ckpt={digits_checkpoint}"
    frame = robeval.evaluate(models=[source], attacks=["pgd"], out=str(tmp_path / "pgd"), **{**RUN, "eps": "0,0.1"})
    (finding,) = [f for f in frame.attrs["checks"] if f.indicator == "unavailable-gradients"]
    assert finding.fired and "--bpda cut" in finding.detail
    with pytest.raises(robeval.RobevalError, match="cuts the autograd graph in 'cut'.*--bpda cut"):
        robeval.evaluate(models=[source], attacks=["deepfool"], out=str(tmp_path / "df"), **{**RUN, "eps": "0,0.1"})
    # 40 steps, not pgd's default 10: 10 steps leave the loss rising on some trainings of this
    # model (seed 3 of 1-4, and CI's machine at stop 20), and incomplete-optimization then
    # rightly fires; the claim here is about the gradient, not the step count.
    fixed = robeval.evaluate(models=[source], attacks=["pgd:steps=40"], bpda=("cut",), out=str(tmp_path / "bpda"),
                             **{**RUN, "eps": "0,0.1"})
    assert fixed["robust_acc"].iloc[-1] < frame["robust_acc"].iloc[-1] - 0.2
    fired = [(f.indicator, f.detail) for f in fixed.attrs["checks"] if f.fired]
    assert not fired and not fixed["unreliable"].any(), fired


def test_unconstrained_failure_skips_noise_but_not_budgeted_searches(digits_checkpoint, tmp_path) -> None:
    """Uniform noise (SGR's RAND baseline) is no search: its failures at eps = the whole box
    are expected, so unconstrained-failure is not run for it; FGSM still gets the check."""
    robeval.evaluate(models=[str(digits_checkpoint)], attacks=["uniform:samples=2", "fgsm"], out=str(tmp_path),
                     **{**RUN, "eps": "0,0.1"})
    checks = json.loads((tmp_path / "checks.json").read_text())
    ran = {c["attack"] for c in checks if c["indicator"] == "unconstrained-failure"}
    assert "fgsm" in ran and not any(a.startswith("uniform") for a in ran)
