"""Most deceptive adversarial examples (`robeval deceptive`, smooth-kernels Fig. 2): the
wrong-class confidence by hand, the per-class choice by hand, and the command with FGSM
and with ADef deformations."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn
from typer.testing import CliRunner

from robeval.analysis.deceptive import Deception, deception, most_deceptive
from robeval.cli import app


def test_deception_is_the_wrong_class_probability_where_fooled() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(6, 1, 2, 2)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    got = deception(model, x, y, batch_size=4)
    probs = torch.softmax(model(x), 1).detach()
    for i in range(6):
        wrong = max(float(probs[i, k]) for k in range(3) if k != int(y[i]))
        fooled = int(probs[i].argmax()) != int(y[i])
        assert float(got.confidence[i]) == (wrong if fooled else 0.0)
        assert int(got.predicted[i]) == int(probs[i].argmax())
    clean = y.clone()
    clean[0] = 2  # misclassified before any attack: no adversarial success
    masked = deception(model, x, y, clean_pred=clean)
    assert float(masked.confidence[0]) == 0.0 and torch.equal(masked.confidence[1:], got.confidence[1:])


def test_most_deceptive_takes_the_best_mean_over_models_per_class() -> None:
    y = torch.tensor([0, 0, 1, 1, 2])
    a = Deception(torch.zeros(5, 1, 2, 2), torch.tensor([1, 2, 0, 0, 2]), torch.tensor([0.9, 0.2, 0.0, 0.6, 0.0]))
    b = Deception(torch.zeros(5, 1, 2, 2), torch.tensor([1, 2, 0, 0, 2]), torch.tensor([0.1, 0.9, 0.7, 0.0, 0.0]))
    # class 0: means 0.5 and 0.55 -> index 1; class 1: 0.35 and 0.3 -> index 2; class 2: never fooled
    assert most_deceptive(y, [a, b], 3) == [1, 2, None]


def test_cli_fgsm_and_adef(digits_checkpoint, tmp_path) -> None:
    for attack, eps in (("fgsm", "0.3"), ("adef", "1.5")):
        out = tmp_path / attack
        result = CliRunner().invoke(app, ["deceptive", str(digits_checkpoint), "--attack", attack, "--eps", eps,
                                          "--n", "60", "--out", str(out)])
        assert result.exit_code == 0, result.output
        table = pd.read_csv(out / "deceptive.csv")
        assert len(table) >= 5 and (table["confidence"] > 0).all() and (table["predicted"] != table["class"]).all()
        assert (out / "deceptive.png").stat().st_size > 0
    none = CliRunner().invoke(app, ["deceptive", str(digits_checkpoint), "--eps", "0", "--n", "20",
                                    "--out", str(tmp_path / "zero")])
    assert none.exit_code != 0 and "no adversarial fooled" in none.output and "Traceback" not in none.output
