"""Local response differences (`robeval responses`): layer choice, exact differences on
a linear layer, the success/failure split by hand, and the command end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import robeval
from robeval.analysis.inputs import make_adversarials
from robeval.analysis.responses import (
    resolve_layers,
    response_differences,
    response_samples,
    response_summary,
)
from robeval.cli import app
from robeval.errors import RobevalError
from robeval.models import Normalize, build_model


def test_auto_layers_are_the_papers_resnet_stages_else_every_conv() -> None:
    resnet = Normalize(build_model("resnet18", in_channels=3, num_classes=10, input_size=32), 0.5, 0.5)
    chosen = resolve_layers(resnet)
    assert list(chosen) == ["conv1", "layer0", "layer1", "layer2", "layer3", "layer4"]
    assert chosen["layer0"] is resnet.model.maxpool and chosen["layer4"] is resnet.model.layer4
    cnn = Normalize(build_model("mnist-cnn", in_channels=1, num_classes=10, input_size=28), 0.1, 0.3)
    assert list(resolve_layers(cnn)) == ["conv1", "conv2"]
    assert list(resolve_layers(cnn, "conv2, fc1")) == ["conv2", "fc1"]
    with pytest.raises(RobevalError, match="no layer 'conv9'.*conv1"):
        resolve_layers(cnn, "conv9")


def test_differences_through_a_linear_layer_are_the_layer_applied_to_the_perturbation() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3, bias=True)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.LazyLinear(4)).eval()
    x = torch.rand(5, 1, 8, 8)
    model(x)  # materialise the lazy layer
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    diffs = response_differences(model, {"conv": conv}, x, x_adv)
    expected = F.conv2d(x_adv - x, conv.weight).abs().flatten(1).double()  # the bias cancels
    assert torch.allclose(diffs["conv"][0], expected.amax(1), atol=1e-6)
    assert torch.allclose(diffs["conv"][1], expected.sum(1), atol=1e-4)
    same = response_differences(model, {"conv": conv}, x, x)
    assert float(same["conv"][1].abs().max()) == 0.0


def test_summary_splits_by_hand(digits_model, digits_test) -> None:
    x, y = digits_test[0][:64], digits_test[1][:64]
    attack = robeval.attacks.get("fgsm")
    x_adv = make_adversarials(digits_model, attack, x, y, eps=0.1, batch_size=32, device=torch.device("cpu"),
                              seed=0, key="t")
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6 and 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    layers = resolve_layers(digits_model)
    samples = response_samples(digits_model, layers, x, y, x_adv, origin="own")
    samples.insert(0, "model", "m")
    summary = response_summary(samples).set_index(["layer", "group"])
    for layer in layers:
        part = samples[samples["layer"] == layer]
        correct, fooled = part["clean_pred"] == part["label"], part["adv_pred"] != part["label"]
        assert summary.at[(layer, "success"), "n"] == int((correct & fooled).sum()) > 0
        assert summary.at[(layer, "failure"), "n"] == int((correct & ~fooled).sum()) > 0
        assert summary.at[(layer, "failure"), "total_abs"] == pytest.approx(part[correct & ~fooled]["total_abs"].mean())
        assert summary.at[(layer, "all"), "max_abs"] == pytest.approx(part["max_abs"].mean())
    with torch.no_grad():
        assert (samples.groupby("layer")["adv_pred"].apply(list).iloc[0]
                == digits_model(x_adv).argmax(1).tolist())


def test_cli_own_and_transferred(digits_checkpoint, tmp_path) -> None:
    from robeval.train import TrainSpec, train

    other = train(TrainSpec(dataset="digits", arch="small-cnn:c1=8,c2=16", epochs=2, batch_size=32, lr=3e-3,
                            seed=1, device="cpu", out=str(tmp_path / "other.pt"))).checkpoint
    out = tmp_path / "resp"
    result = CliRunner().invoke(app, ["responses", str(digits_checkpoint), "--transfer-from", str(other),
                                      "--eps", "0.2", "--attack", "fgsm", "--n", "30", "--out", str(out)])
    assert result.exit_code == 0, result.output
    samples = pd.read_csv(out / "responses_samples.csv")
    assert set(samples["origin"]) == {"own", "from other"}
    assert len(samples) == 2 * 30 * len(resolve_layers(robeval.load_model(str(digits_checkpoint))))
    assert np.array_equal(np.sort(samples["index"].unique()), np.arange(30))
    assert (out / "responses.png").is_file() and "Total" in (out / "responses.md").read_text()
    bad = CliRunner().invoke(app, ["responses", str(digits_checkpoint), "--eps", "0.2", "--layers", "nope",
                                   "--n", "5", "--out", str(out)])
    assert bad.exit_code != 0 and "no layer 'nope'" in bad.output and "Traceback" not in bad.output
