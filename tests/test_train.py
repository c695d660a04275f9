"""Training: seeded, writes a checkpoint whose metadata lets `run` rebuild everything."""

from __future__ import annotations

import pytest
import torch

import robeval
from robeval.errors import RobevalError
from robeval.models import load_checkpoint
from robeval.train import TrainSpec, train

FAST = dict(dataset="digits", arch="small-cnn", epochs=2, batch_size=64, lr=3e-3, device="cpu")


def test_same_seed_same_weights_other_seed_other_weights(tmp_path) -> None:
    paths = [train(TrainSpec(**FAST, seed=s, out=str(tmp_path / f"{i}.pt"))).checkpoint
             for i, s in enumerate((3, 3, 4))]
    a, b, c = (load_checkpoint(p)[0].state_dict() for p in paths)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_metadata_describes_the_run(tmp_path) -> None:
    result = train(TrainSpec(**{**FAST, "optimizer": "sgd", "lr": 0.05}, seed=0, out=str(tmp_path / "m.pt")))
    model, meta = load_checkpoint(result.checkpoint)
    assert (meta.arch, meta.dataset, meta.input_shape) == ("small-cnn", "digits", (1, 8, 8))
    assert meta.classes == tuple(str(i) for i in range(10))
    assert meta.train_spec["optimizer"] == "sgd" and meta.train_spec["seed"] == 0
    assert meta.robeval_version == robeval.__version__
    x, y = robeval.load_dataset("digits", split="test")
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    assert acc == pytest.approx(meta.metrics["test_acc"], abs=1e-6)
    assert acc > 0.5  # SGD with momentum learns


@pytest.mark.parametrize(("change", "fragment"), [
    ({"objective": "pgd-att"}, "unknown objective"),
    ({"regularisers": ("absumm",)}, "unknown regulariser"),
    ({"epochs": 0}, "--epochs"),
    ({"optimizer": "rmsprop"}, "adam or sgd"),
])
def test_bad_train_specs(change, fragment, tmp_path) -> None:
    with pytest.raises(RobevalError, match=fragment):
        train(TrainSpec(**{**FAST, **change}, out=str(tmp_path / "x.pt")))
