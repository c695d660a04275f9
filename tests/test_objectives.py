"""Adversarial training objectives: the losses equal their papers' formulas, adversarials
come from robeval's attacks (own labels for the augmented baselines), the model's mode
and parameter gradients are left alone, and PGD training buys PGD robustness."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import robeval
from robeval.attacks.fgsm import FGSM
from robeval.attacks.pgd import PGD
from robeval.cli import app
from robeval.errors import RobevalError
from robeval.models import load_checkpoint
from robeval.train import TrainSpec, train
from robeval.train.objectives import get_objective, objectives

ALL = {
    "pgd-at": "pgd-at:eps=0.1,steps=2,step_size=0.05",
    "trades": "trades:eps=0.1,steps=2,step_size=0.05",
    "logit-pairing": "logit-pairing:eps=0.1,steps=2,step_size=0.05",
    "fgsm-aug": "fgsm-aug:eps=0.1",
    "pgd-aug": "pgd-aug:eps=0.1,steps=2",
    "lrc-aug": "lrc-aug:eps=0.1,zeta=2",
}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_model(seed: int = 0, *, norm_layers: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    if norm_layers:
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2),
                             nn.Flatten(), nn.Linear(4 * 64, 10))
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = robeval.load_dataset("digits", split="test")
    return x[:24], y[:24]


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) || softmax(q)) by explicit sums, averaged over the batch."""
    p, log_p, log_q = p_logits.softmax(1), p_logits.log_softmax(1), q_logits.log_softmax(1)
    return (p * (log_p - log_q)).sum(1).mean()


def test_all_objectives_registered() -> None:
    assert set(ALL) | {"ce"} <= set(objectives.names())


def test_trades_loss_is_ce_clean_plus_beta_kl_clean_adv(batch) -> None:
    x, y = batch
    model = tiny_model()
    obj = get_objective("trades:beta=3,eps=0.1,steps=5,step_size=0.03")
    x_adv = obj.adversarial(model, x, y, gen(1))
    loss, logits = obj(model, x, y, generator=gen(1))
    with torch.no_grad():
        clean, adv = model(x), model(x_adv)
    expected = F.cross_entropy(clean, y) + 3 * kl(clean, adv)
    assert torch.allclose(logits, clean)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(obj.loss_from(clean, adv, y)) == pytest.approx(float(expected), rel=1e-5)
    # the inner loop stays in the ball and the box and increases the KL from the start
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    start = x + 0.001 * torch.randn(x.shape, generator=gen(1))
    with torch.no_grad():
        assert float(kl(clean, adv)) > 10 * float(kl(clean, model(start)))


def test_logit_pairing_loss_is_ce_adv_plus_gamma_kl_adv_clean(batch) -> None:
    x, y = batch
    model = tiny_model()
    obj = get_objective("logit-pairing:gamma=2.5,eps=0.1,steps=4,step_size=0.03")
    x_adv = obj.adversarial(model, x, y, gen(2))
    reference = PGD(steps=4, abs_stepsize=0.03, keep="last")(model, x, y, eps=0.1, generator=gen(2))
    assert torch.equal(x_adv, reference)  # robeval's PGD on the true labels
    loss, logits = obj(model, x, y, generator=gen(2))
    with torch.no_grad():
        clean, adv = model(x), model(x_adv)
    expected = F.cross_entropy(adv, y) + 2.5 * kl(adv, clean)
    assert torch.allclose(logits, clean)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_kl_directions_on_lopsided_logits() -> None:
    """TRADES: KL(p_clean || p_adv); logit pairing: KL(p_adv || p_clean), by explicit sums."""
    clean, adv, y = torch.tensor([[6.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([0])
    p, q = clean.softmax(1)[0], adv.softmax(1)[0]
    kl_pq, kl_qp = float((p * (p / q).log()).sum()), float((q * (q / p).log()).sum())
    assert abs(kl_pq - kl_qp) > 0.5
    trades = get_objective("trades:beta=2")
    pairing = get_objective("logit-pairing:gamma=2")
    assert float(trades.loss_from(clean, adv, y)) == pytest.approx(
        float(F.cross_entropy(clean, y)) + 2 * kl_pq, rel=1e-6)
    assert float(pairing.loss_from(clean, adv, y)) == pytest.approx(
        float(F.cross_entropy(adv, y)) + 2 * kl_qp, rel=1e-6)


def test_pgd_at_loss_is_ce_of_pgd_adversarials_and_returns_clean_logits(batch) -> None:
    x, y = batch
    model = tiny_model()
    obj = get_objective("pgd-at:eps=0.1,steps=3,step_size=0.04")
    loss, logits = obj(model, x, y, generator=gen(3))
    x_adv = PGD(steps=3, abs_stepsize=0.04, keep="last")(model, x, y, eps=0.1, generator=gen(3))
    with torch.no_grad():
        assert float(loss.detach()) == pytest.approx(float(F.cross_entropy(model(x_adv), y)), rel=1e-6)
        assert torch.allclose(logits, model(x))


@pytest.mark.parametrize(("spec", "attack"), [
    ("fgsm-aug:eps=0.1", lambda m, x, lab: FGSM()(m, x, lab, eps=0.1)),
    ("pgd-aug:eps=0.1,steps=3", lambda m, x, lab: PGD(steps=3, rel_stepsize=0.2, keep="last")(m, x, lab, eps=0.1,
                                                                                  generator=gen(4))),
])
def test_augmented_attack_the_models_own_predictions(spec, attack, batch) -> None:
    x, y = batch
    model = tiny_model()
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = torch.where(torch.arange(len(y)) % 2 == 0, (pred + 1) % 10, pred)  # half disagree
    assert (pred != y).any()
    obj = get_objective(spec)
    x_own = obj.adversarial(model, x, y, gen(4))
    assert torch.equal(x_own, attack(model, x, pred))
    assert not torch.equal(x_own, attack(model, x, y))
    x_leak = get_objective(spec + ",own_labels=false").adversarial(model, x, y, gen(4))
    assert torch.equal(x_leak, attack(model, x, y))
    # the mixture: (1 - alpha) CE(clean) + alpha CE(adv), true labels in the loss
    loss, _ = get_objective(spec + ",alpha=0.25")(model, x, y, generator=gen(4))
    with torch.no_grad():
        expected = 0.75 * F.cross_entropy(model(x), y) + 0.25 * F.cross_entropy(model(x_own), y)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("name", ["fgsm-aug", "pgd-aug", "lrc-aug"])
def test_alpha_zero_is_exactly_ce(name, batch) -> None:
    x, y = batch
    grads = []
    for spec in ("ce", f"{name}:alpha=0"):
        model = tiny_model()
        loss, _ = get_objective(spec)(model, x, y, generator=gen(5))
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (la, ga), (lb, gb) = grads
    assert torch.equal(la, lb) and all(torch.equal(a, b) for a, b in zip(ga, gb, strict=True))


def test_lrc_aug_uses_one_lrc_draw(batch) -> None:
    x, y = batch
    model = tiny_model()
    obj = get_objective("lrc-aug:eps=0.2,zeta=4")
    x_noisy = obj.adversarial(model, x, y, gen(6))
    reference = robeval.attacks.get("lrc:zeta=4,samples=1")(model, x, y, eps=0.2, generator=gen(6))
    assert torch.equal(x_noisy, reference)
    assert not torch.equal(x_noisy, x)


@pytest.mark.parametrize("name", sorted(ALL))
def test_mode_restored_and_gradients_from_the_loss_only(name, batch) -> None:
    x, y = batch
    obj = get_objective(ALL[name])
    model = tiny_model(norm_layers=True)
    model.train()
    model[1].eval()  # a frozen BatchNorm stays frozen: the mode is restored module by module
    modes = [m.training for m in model.modules()]
    obj.adversarial(model, x, y, gen(7))
    assert all(p.grad is None for p in model.parameters())  # input gradients only
    assert [m.training for m in model.modules()] == modes
    loss, logits = obj(model, x, y, generator=gen(7))
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert logits.shape == (len(x), 10) and loss.dim() == 0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    obj(model, x, y, generator=gen(7))
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_objective_trains_one_epoch(name, tmp_path: Path) -> None:
    spec = TrainSpec(dataset="digits", arch="small-cnn", epochs=1, n_train=64, batch_size=32, lr=3e-3,
                     objective=ALL[name], device="cpu", out=str(tmp_path / "m.pt"))
    result = train(spec)
    _, meta = load_checkpoint(result.checkpoint)
    assert meta.train_spec["objective"] == ALL[name]
    assert torch.isfinite(torch.tensor(result.metrics["train_loss"]))


def test_cli_trains_with_an_adversarial_objective(tmp_path: Path) -> None:
    ckpt = tmp_path / "t.pt"
    result = CliRunner().invoke(app, [
        "train", "--dataset", "digits", "--arch", "small-cnn", "--epochs", "1", "--n-train", "64",
        "--objective", "trades:beta=1,eps=0.1,steps=2,step_size=0.05", "--device", "cpu",
        "--out", str(ckpt), "--quiet"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(ckpt)[1].train_spec["objective"].startswith("trades:")


def test_pgd_training_beats_ce_under_pgd(tmp_path: Path) -> None:
    x, y = robeval.load_dataset("digits", split="test")
    attack = robeval.attacks.get("pgd:steps=10")
    acc = {}
    for obj in ("ce", "pgd-at:eps=0.1,steps=5,step_size=0.03"):
        spec = TrainSpec(dataset="digits", arch="small-cnn", epochs=5, n_train=600, batch_size=32, lr=3e-3,
                         objective=obj, device="cpu", seed=0, out=str(tmp_path / f"{obj[:3]}.pt"))
        model = robeval.load_model(str(train(spec).checkpoint)).eval()
        x_adv = attack(model, x, y, eps=0.1, generator=gen(0))
        with torch.no_grad():
            acc[obj[:3]] = float((model(x_adv).argmax(1) == y).float().mean())
    assert acc["pgd"] > acc["ce"] + 0.05, acc


@pytest.mark.parametrize(("spec", "fragment"), [
    ("pgd-at:eps=-0.1", "eps"),
    ("pgd-at:steps=0", "steps"),
    ("trades:step_size=0", "step_size"),
    ("trades:beta=-1", "beta"),
    ("logit-pairing:gamma=nan", "gamma"),
    ("fgsm-aug:alpha=1.5", "alpha"),
    ("pgd-aug:epz=0.1", "did you mean 'eps'"),
    ("lrc-aug:zeta=0", "zeta"),
    ("lrc-aug:own_labels=true", "no parameter"),
    ("pgd-at:steps=ten", "integer"),
])
def test_bad_parameters(spec, fragment) -> None:
    with pytest.raises(RobevalError, match=fragment):
        get_objective(spec)
