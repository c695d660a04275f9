"""Input-gradient regularisers: gradient-norm and edge-alignment (gradient norm without
perturbations), and all three in the training loop; SGR's own tests are in test_sgr.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import correlate
from torch import nn

from robeval.train import TrainSpec, train
from robeval.train.reg_gradient import gaussian_derivative_filters, oriented_energy
from robeval.train.regularisers import get_regulariser
from tests.gradient_helpers import (
    _batch,
    _ce_grads,
    _model,
    _penalty,
    _per_sample_grads,
    _roundtrip,
    _value,
)

# --- gradient-norm --------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_gradient_norm_equals_hand_computation(norm) -> None:
    model, (x, y) = _model(), _batch()
    reg = get_regulariser(f"gradient-norm:lambda=0.5,sigma=0.25,norm={norm}")
    grads = _ce_grads(model, x, y).flatten(1)
    norms = grads.abs().sum(1) if norm == "l1" else grads.norm(dim=1)
    expected = 0.5 * (4 / 255) / 0.25 * float(norms.mean())
    assert _value(reg, model, x, y) == pytest.approx(expected, rel=1e-10)


def test_gradient_norm_double_backprop_matches_finite_differences() -> None:
    model, (x, y) = _model(), _batch()
    reg = get_regulariser("gradient-norm:lambda=2")
    weight = model[3].weight
    (grad,) = torch.autograd.grad(_penalty(reg, model, x, y), weight)
    assert grad.abs().max() > 1e-4  # the penalty reaches the parameters
    h = 1e-6
    for idx in [(0, 0), (1, 5), (2, 31)]:
        with torch.no_grad():
            weight[idx] += h
            up = _value(reg, model, x, y)
            weight[idx] -= 2 * h
            down = _value(reg, model, x, y)
            weight[idx] += h
        assert float(grad[idx]) == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9)
    conv_grad = torch.autograd.grad(_penalty(reg, model, x, y), model[0].weight)[0]
    assert conv_grad.abs().max() > 1e-4


def test_gradient_norm_warmup_is_linear_in_the_step_counter_and_resumes() -> None:
    model, (x, y) = _model(), _batch()
    full = _value(get_regulariser("gradient-norm"), model, x, y)
    reg = get_regulariser("gradient-norm:warmup_steps=4")
    values = []
    for _ in range(6):
        values.append(_value(reg, model, x, y))
        reg.after_step(model, 0.1)
    assert values == pytest.approx([full * f for f in (0.25, 0.5, 0.75, 1, 1, 1)], rel=1e-12)
    again = get_regulariser("gradient-norm:warmup_steps=10")
    for _ in range(3):
        again.after_step(model, 0.1)
    fresh = get_regulariser("gradient-norm:warmup_steps=10")
    fresh.load_state_dict(_roundtrip(again.state_dict()))
    assert fresh.state_dict() == {"steps": 3}
    assert _value(fresh, model, x, y) == pytest.approx(0.4 * full, rel=1e-12)


def test_gradient_norm_leaves_batchnorm_statistics_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.LazyLinear(3))
    x, y = _batch(dtype=torch.float32)
    logits = model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    get_regulariser("gradient-norm").penalty(model, x, y, logits).backward()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- edge alignment -------------------------------------------------------------------------


def test_gaussian_derivative_filters_and_a_vertical_edge() -> None:
    g_u, g_v = gaussian_derivative_filters(1.0)
    assert g_u.shape == (7, 7)
    assert abs(float(g_u.sum())) < 1e-15 and abs(float(g_v.sum())) < 1e-15
    assert torch.allclose(g_u.flip(1), -g_u) and torch.allclose(g_u.flip(0), g_u)  # odd in u, even in v
    assert torch.allclose(g_v, g_u.T)
    x = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    x[..., 6:] = 1.0  # a vertical edge: intensity changes along u only
    r = 3
    padded = F.pad(x, (r, r, r, r), mode="replicate")
    resp_u, resp_v = F.conv2d(padded, g_u[None, None]), F.conv2d(padded, g_v[None, None])
    assert resp_v.abs().max() < 1e-15
    assert resp_u[..., 5:7].abs().min() > 0.1  # at the edge
    assert resp_u[..., :2].abs().max() < 1e-15 and resp_u[..., 10:].abs().max() < 1e-15  # flat far away
    energy = oriented_energy(x, 1.0)
    assert torch.allclose(energy, resp_u.pow(2))


def test_edge_alignment_cosine_by_hand_for_fixed_classes() -> None:
    model, (x, _) = _model(c=2), _batch(c=2)
    t = torch.tensor([0, 2, 1, 1, 0])
    reg = get_regulariser("edge-alignment:sigma=0.8")
    grads = _per_sample_grads(model, x, lambda out, i: out[0, t[i]])
    g_u, g_v = (f.numpy() for f in gaussian_derivative_filters(0.8))
    losses = []
    for i in range(len(x)):
        edge = np.stack([correlate(ch, g_u, mode="nearest") ** 2 + correlate(ch, g_v, mode="nearest") ** 2
                         for ch in x[i].numpy()])
        a, b = grads[i].numpy().ravel(), edge.ravel()
        losses.append(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    value = reg.cosine_loss(model, x, t)
    assert float(value.detach()) == pytest.approx(float(np.mean(losses)), rel=1e-10)
    assert torch.autograd.grad(value, model[3].weight)[0].abs().max() > 0  # double backprop


def test_edge_alignment_sampling_is_seeded_tempered_and_resumable() -> None:
    logits = torch.tensor([[1.0, 0.0, -1.0]]).repeat(20000, 1)
    a, b = get_regulariser("edge-alignment:seed=3"), get_regulariser("edge-alignment:seed=3")
    ta = a.sample_classes(logits)
    assert torch.equal(ta, b.sample_classes(logits))
    assert not torch.equal(ta, get_regulariser("edge-alignment:seed=4").sample_classes(logits))
    freq = torch.bincount(ta, minlength=3).double() / len(ta)
    assert torch.allclose(freq, torch.softmax(logits[0].double() / 0.5, 0), atol=0.015)
    state = _roundtrip(a.state_dict())
    next_a = a.sample_classes(logits[:50])
    c = get_regulariser("edge-alignment:seed=3")
    c.load_state_dict(state)
    assert torch.equal(c.sample_classes(logits[:50]), next_a)


# --- training loop and listing --------------------------------------------------------------

REGS = ("gradient-norm:lambda=0.5,warmup_steps=5", "sgr:lambda=0.5,source=grad",
        "edge-alignment:lambda=0.1")
SPEC = {"dataset": "digits", "arch": "small-cnn", "n_train": 192, "batch_size": 64, "lr": 3e-3,
        "device": "cpu", "seed": 2, "regularisers": REGS}


def test_training_with_the_gradient_regularisers_logs_and_resumes(tmp_path, monkeypatch) -> None:
    from robeval.models import load_checkpoint
    from robeval.train import loop

    whole = train(TrainSpec(**SPEC, epochs=2, out=str(tmp_path / "whole.pt"))).checkpoint
    assert whole.exists()
    log = __import__("pandas").read_csv(tmp_path / "whole.log.csv")
    for name in ("gradient-norm", "sgr", "edge-alignment"):
        assert (log[f"reg:{name}"] > 0).all(), log

    real_save = loop.save_resume

    def save_then_die(path, spec_dict, state):
        real_save(path, spec_dict, state)
        raise KeyboardInterrupt("killed after epoch 1")

    monkeypatch.setattr(loop, "save_resume", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(TrainSpec(**SPEC, epochs=2, out=str(tmp_path / "split.pt")))
    monkeypatch.setattr(loop, "save_resume", real_save)
    resumed = train(TrainSpec(**SPEC, epochs=2, out=str(tmp_path / "split.pt"))).checkpoint
    a, b = load_checkpoint(whole)[0].state_dict(), load_checkpoint(resumed)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_listing_names_the_three_regularisers() -> None:
    from robeval.listing import listing

    names = {name for name, _ in listing("regularisers")}
    assert {"gradient-norm", "sgr", "edge-alignment"} <= names
