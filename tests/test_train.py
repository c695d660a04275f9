"""Training: seeded, writes a checkpoint whose metadata lets `run` rebuild everything."""

from __future__ import annotations

from pathlib import Path

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


# --- schedules, augmentation, epoch log, resume -------------------------------------------


def test_lr_schedules_follow_their_formulas() -> None:
    from robeval.train.schedule import lr_at

    step = TrainSpec(epochs=100, lr=0.1, schedule="step", milestones=(50, 75))
    assert [lr_at(step, e * 10, 10) for e in (0, 49, 50, 74, 75, 99)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3])
    cosine = TrainSpec(epochs=10, lr=1.0, schedule="cosine", warmup_epochs=2)
    assert [lr_at(cosine, s, 5) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lr_at(cosine, 10, 5) == pytest.approx(1.0) and lr_at(cosine, 30, 5) == pytest.approx(0.5)
    assert lr_at(cosine, 49, 5) < 0.01


def test_crop_flip_moves_and_mirrors_images_without_changing_content() -> None:
    from robeval.train.augment import crop_flip

    x = torch.rand(64, 3, 8, 8)
    out = crop_flip(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    same = [torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1)) for i in range(64)]
    assert 0 < sum(same) < 64, "some images are shifted, some only flipped or untouched"
    for i in range(64):  # every output pixel is an input pixel (or zero padding)
        values = set(out[i].flatten().tolist()) - {0.0}
        assert values <= set(x[i].flatten().tolist())
    assert torch.equal(crop_flip(x, 2, torch.Generator().manual_seed(0)), out)


def test_epoch_log_and_schedule_in_training(tmp_path) -> None:
    spec = TrainSpec(**{**FAST, "epochs": 3}, schedule="step", milestones=(2,), lr_decay=0.5,
                     augment="crop-flip", crop_padding=1, out=str(tmp_path / "m.pt"))
    result = train(spec)
    log = __import__("pandas").read_csv(tmp_path / "m.log.csv")
    assert log["epoch"].tolist() == [1, 2, 3]
    assert log["lr"].tolist() == pytest.approx([3e-3, 3e-3, 1.5e-3])  # epochs count from 0, as MultiStepLR
    assert log["test_acc"].iloc[-1] == pytest.approx(result.metrics["test_acc"])
    assert not (tmp_path / "m.pt.resume").exists(), "the resume file goes once training is done"


@pytest.mark.parametrize("regularisers", [(), ("snc:sigma=0.5,every=7",)], ids=["ce", "snc"])
def test_killed_training_resumes_to_the_same_weights(tmp_path, monkeypatch, regularisers) -> None:
    """Also with a stateful regulariser: SNC's step counter travels with the resume file."""
    from robeval.train import loop

    spec = dict(FAST, epochs=3, seed=5, regularisers=regularisers)
    whole = train(TrainSpec(**spec, out=str(tmp_path / "whole.pt"))).checkpoint

    real_save = loop.save_resume

    def save_then_die(path, spec_dict, state):
        real_save(path, spec_dict, state)
        if state.epoch == 2:
            raise KeyboardInterrupt("killed after epoch 2")

    monkeypatch.setattr(loop, "save_resume", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(TrainSpec(**spec, out=str(tmp_path / "split.pt")))
    monkeypatch.setattr(loop, "save_resume", real_save)
    assert (tmp_path / "split.pt.resume").exists()
    resumed = train(TrainSpec(**spec, out=str(tmp_path / "split.pt"))).checkpoint
    a, b = load_checkpoint(whole)[0].state_dict(), load_checkpoint(resumed)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = __import__("pandas").read_csv(tmp_path / "split.log.csv")
    assert log["epoch"].tolist() == [1, 2, 3]


def test_recipe_files_and_flag_overrides(tmp_path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("notes: a test recipe\ndataset: digits\narch: small-cnn\nepochs: 4\n"
                      "schedule: step\nmilestones: [2, 3]\nregularisers: []\n")
    spec = TrainSpec.from_yaml(recipe, epochs=5)
    assert (spec.dataset, spec.epochs, spec.milestones) == ("digits", 5, (2, 3))
    with pytest.raises(RobevalError, match="unknown training setting"):
        TrainSpec.from_dict({"epoch": 3})
    with pytest.raises(RobevalError, match="milestones"):
        TrainSpec(epochs=3, milestones=(5,))


RECIPES = sorted((Path(__file__).parent.parent / "recipes").rglob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipes_are_valid(recipe) -> None:
    from robeval.models import resolve_arch
    from robeval.train.objectives import get_objective
    from robeval.train.regularisers import get_regulariser

    spec = TrainSpec.from_yaml(recipe)
    resolve_arch(spec.arch)
    get_objective(spec.objective)
    for reg in spec.regularisers:
        get_regulariser(reg)
    text = recipe.read_text()
    assert ("GPU-sized" in text) != ("cpu" in recipe.parts), "full-size recipes say so; CPU ones live in cpu/"


def test_train_from_a_recipe_on_the_command_line(tmp_path) -> None:
    from typer.testing import CliRunner

    from robeval.cli import app

    recipe = Path(__file__).parent.parent / "recipes" / "cpu" / "digits_smoke.yaml"
    result = CliRunner().invoke(app, ["train", "--recipe", str(recipe), "--out", str(tmp_path / "m.pt"),
                                      "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    _, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta.train_spec["objective"].startswith("trades") and meta.train_spec["schedule"] == "cosine"
    assert meta.train_spec["regularisers"] == ["absum:lambda=0.001"]
    log = __import__("pandas").read_csv(tmp_path / "m.log.csv")
    assert "reg:absum" in log.columns and len(log) == 2
