"""The helpers of benchmarks/papers/gradient_norm.py (issue 14, gradient-norm thesis): the
pass counts of a training step against the algorithms' own structure, the paper-scale
plan against the thesis' App. B recipe, the model plan, and the noise and verdict text."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "papers"))
import gradient_norm as gn  # noqa: E402

from robeval.errors import RobevalError  # noqa: E402
from robeval.train.objectives import get_objective  # noqa: E402
from robeval.train.regularisers import get_regulariser  # noqa: E402


def _args(scale: str, **extra: object) -> argparse.Namespace:
    return argparse.Namespace(scale=scale, data_root=None, dry_run=True, autoattack=None, gn_lambdas=None, **extra)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand((8, 1, 8, 8), generator=generator), torch.randint(10, (8,), generator=generator)


def test_step_passes_follow_the_algorithm(batch) -> None:
    """Passes per image of one training step, from the algorithms' structure."""
    expected = {
        # one forward, one backward
        "ce": (gn.StepConfig("small-cnn", "ce"), 1, 1),
        # + the penalty's own forward; backward through the output: the input gradient
        # (create_graph), then CE's backward and the double backward in loss.backward()
        "gn": (gn.StepConfig("small-cnn", "ce", ("gradient-norm:lambda=1",)), 2, 3),
        # k attack steps (F + B each), the adversarial loss (F + B) and the clean logits (F)
        "pgd-3": (gn.StepConfig("small-cnn", "pgd-at:eps=0.1,steps=3,step_size=0.05"), 5, 4),
        "pgd-7": (gn.StepConfig("small-cnn", "pgd-at:eps=0.1,steps=7,step_size=0.05"), 9, 8),
    }
    x, y = batch
    costs = gn.step_costs({k: v[0] for k, v in expected.items()}, (1, 8, 8), 10, x, y, steps=2,
                          device=torch.device("cpu"))
    assert {k: (c.forward, c.backward) for k, c in costs.items()} == {k: v[1:] for k, v in expected.items()}


def test_paper_plan_is_the_thesis_recipe() -> None:
    """App. B.2 / B.2.1 (ResNet-50): eps 4/255, PGD-3 steps of 8/255/3, CE and GN weights
    0.5 / 0.5, GN weight and lr warmed up over 5 of 50 epochs, batch 256; Table 4.4's three
    non-linearities; the evaluation of Sec. 3.4 / Fig. 4.1 / Sec. 4.2."""
    setup = gn.make_setup(_args("paper"))
    assert (setup.epochs, setup.batch_size, setup.warmup_epochs, setup.lr) == (50, 256, 5, 1.25e-3)
    assert setup.activations == ("relu", "gelu", "silu")
    attack = get_objective(setup.at_objective())
    assert attack.eps == pytest.approx(0.01568627450980392, abs=1e-15)  # attack_eps, App. B.2
    assert attack.step_size == pytest.approx(0.01045751633986928, abs=1e-15)  # attack_step
    assert attack.steps == 3
    reg = get_regulariser(setup.gn_regulariser())
    assert reg.lam == 0.5 / 0.5 and reg.eps == pytest.approx(4 / 255) and reg.sigma == 1.0
    assert reg.warmup_steps == 5 * math.ceil(1_281_167 / 256)
    assert setup.autoattack == "autoattack"
    assert setup.aa_eps == pytest.approx((1 / 255, 2 / 255, 4 / 255))
    assert setup.pgd_grid[0] == 0 and setup.pgd_grid[-1] == pytest.approx(16 / 255) and len(setup.pgd_grid) == 17


def test_paper_scale_needs_its_data_unless_dry() -> None:
    with pytest.raises(RobevalError, match="--data-root"):
        gn.make_setup(argparse.Namespace(scale="paper", data_root=None, dry_run=False, autoattack=None, gn_lambdas=None))


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_every_method_and_activation_gets_its_own_checkpoint(scale: str) -> None:
    setup = gn.make_setup(_args(scale))
    natural, adversarial, probe = gn.sweeps(setup, 0, "cpu", None)
    specs = gn.model_specs(natural, adversarial, checked=False)
    probes = gn.probe_specs(probe, checked=False)
    assert list(specs) == [f"{m}-{a}" for a in setup.activations for m in gn.METHODS]
    assert list(probes) == [f"GN(λ={lam:g})-{a}" for a in setup.activations for lam in setup.probe_lambdas]
    every = [*specs.values(), *probes.values()]
    assert len({Path(spec.out).stem for spec in every}) == len(every)  # evaluate names models by stem
    for label, spec in probes.items():
        assert get_regulariser(spec.regularisers[0]).lam == float(label.split("=")[1].split(")")[0])
    for label, spec in specs.items():
        method, act = label.split("-")
        assert f"activation={act}" in spec.arch
        assert spec.regularisers == ((setup.gn_regulariser(),) if method == "GN" else ())
        assert spec.objective == (setup.at_objective() if method == "AT" else "ce")


def test_difference_counts_only_beyond_two_standard_errors() -> None:
    # 0.50 vs 0.45 on 200 points each: 2 SE of the difference is ~10 pts
    se = math.hypot(math.sqrt(0.25 / 200), math.sqrt(0.45 * 0.55 / 200))
    assert 0.05 < 2 * se
    assert gn.difference_text(0.50, 0.45, 200) == "+5.0 pts (within noise)"
    assert gn.difference_text(0.90, 0.50, 200) == "+40.0 pts"
    assert gn.difference_text(0.50, 0.45, 100_000) == "+5.0 pts"


def test_verdict_reads_the_indicator_columns() -> None:
    frame = pd.DataFrame({
        "model": ["a", "a", "b", "c"], "unreliable": [False, True, False, None],
        "indicators": ["", "incomplete-optimization;silent-success", "", None]})
    assert gn.verdict(frame, "a") == "UNRELIABLE: incomplete-optimization, silent-success"
    assert gn.verdict(frame, "b") == "checks ok"
    assert gn.verdict(frame, "c") == "checks off"


def test_probe_strengths_parse_or_fail_in_one_line() -> None:
    assert gn.probe_lambdas(None, (2.0,)) == (2.0,)
    assert gn.probe_lambdas("none", (2.0,)) == ()
    assert gn.probe_lambdas("2,4", ()) == (2.0, 4.0)
    for bad in ("x", "2,,4", "0", "-1"):
        with pytest.raises(RobevalError, match="--gn-lambdas"):
            gn.probe_lambdas(bad, ())
