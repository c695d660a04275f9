"""Input-gradient regularisers: gradient-norm and edge-alignment (gradient norm without
perturbations), SGR (structured gradient regularisation)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import correlate
from torch import nn

from robeval.train import TrainSpec, train
from robeval.train.reg_gradient import gaussian_derivative_filters, oriented_energy
from robeval.train.reg_sgr import lrc_matvec
from robeval.train.regularisers import get_regulariser


def _model(c: int = 1, side: int = 4, classes: int = 3, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(c, 2, 3, padding=1), nn.Tanh(), nn.Flatten(),
                         nn.Linear(2 * side * side, classes)).to(dtype)


def _batch(n: int = 5, c: int = 1, side: int = 4, classes: int = 3, seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, side, side, generator=g, dtype=dtype), torch.randint(classes, (n,), generator=g)


def _per_sample_grads(model: nn.Module, x: torch.Tensor, scalar) -> torch.Tensor:
    """The hand computation: one autograd.grad per sample."""
    rows = []
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(scalar(model(xi), i), xi)
        rows.append(g[0])
    return torch.stack(rows)


def _ce_grads(model, x, labels):
    return _per_sample_grads(model, x, lambda out, i: F.cross_entropy(out, labels[i : i + 1]))


def _penalty(reg, model, x, y):
    return reg.penalty(model, x, y, model(x))


def _value(reg, model, x, y) -> float:
    return float(_penalty(reg, model, x, y).detach())


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


def _roundtrip(state: dict) -> dict:
    """Through torch.save / torch.load(weights_only=True), as the resume file does."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# --- SGR ------------------------------------------------------------------------------------


def test_sgr_identity_is_squared_gradient_norm() -> None:
    model, (x, y) = _model(), _batch()
    reg = get_regulariser("sgr:source=identity,lambda=0.7,c=0.3")
    g = _ce_grads(model, x, y).flatten(1)
    expected = 0.7 * 0.3 / (2 * len(x)) * float(g.pow(2).sum())
    assert _value(reg, model, x, y) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("source", ["grad", "sign", "fgsm"])
def test_sgr_ema_and_scaling_follow_algorithm_1(source) -> None:
    model = _model()
    reg = get_regulariser(f"sgr:source={source},lambda=0.5,c=0.2,eps=0.3")
    sigma = torch.zeros(16, 16, dtype=torch.float64)
    for step in range(3):
        x, y = _batch(n=4, seed=10 + step)
        pred = model(x).argmax(1)
        if step == 0:
            y = (pred + 1) % 3  # perturbations must use the predictions, not y
        grad = _ce_grads(model, x, pred)
        xi = {"grad": grad, "sign": grad.sign(),
              "fgsm": (x + 0.3 * grad.sign()).clamp(0, 1) - x}[source].flatten(1)
        sigma = 0.9 * sigma + 0.1 * sum(torch.outer(v, v) for v in xi) / len(xi)
        value = _value(reg, model, x, y)
        assert torch.allclose(reg.covariance((1, 4, 4)), sigma, rtol=1e-12, atol=1e-15)
        sigma_t = 0.2 / float(sigma.diagonal().mean())
        assert reg.scaling(x) == pytest.approx(sigma_t, rel=1e-12)
        g = _ce_grads(model, x, y).flatten(1)  # labels y (Algorithm 1)
        expected = 0.5 * sigma_t / (2 * len(x)) * float(sum(v @ sigma @ v for v in g))
        assert value == pytest.approx(expected, rel=1e-10)
    if source == "fgsm":
        assert not torch.allclose(xi.abs(), torch.full_like(xi, 0.3)), "some entries clipped at 0 or 1"


@pytest.mark.parametrize("source", ["pgd", "deepfool"])
def test_sgr_attack_sources_are_robeval_attacks_on_the_predictions(source) -> None:
    """PGD_SGR / DeepFool covariance: xi = x_adv - x of the battery's own attack against the
    model's predictions (PGD: eps/5 steps, no random start; DeepFool: unbounded L2)."""
    import robeval

    model = _model()
    reg = get_regulariser(f"sgr:source={source},lambda=0.5,c=0.2,eps=0.3,steps=5")
    x, y = _batch(n=4, seed=3)
    pred = model(x).argmax(1)
    attack = (robeval.attacks.get("pgd", steps=5, rel_stepsize=0.2, random_start=False) if source == "pgd"
              else robeval.attacks.get("deepfool", steps=5))
    xi = (attack(model, x, pred, eps=0.3 if source == "pgd" else float("inf")) - x).flatten(1)
    assert float(xi.abs().sum()) > 0
    if source == "pgd":
        assert float(xi.abs().max()) <= 0.3 + 1e-12
    _value(reg, model, x, (pred + 1) % 3)
    expected = 0.1 * sum(torch.outer(v, v) for v in xi) / len(xi)
    assert torch.allclose(reg.covariance((1, 4, 4)), expected, rtol=1e-9, atol=1e-15)


def test_sgr_c_defaults_to_first_batch_pixel_variance() -> None:
    model, (x, y) = _model(), _batch(n=6)
    reg = get_regulariser("sgr:source=identity")
    reg.penalty(model, x, y, model(x))
    c = float(x.flatten(1).var(0).mean())
    assert reg.state_dict()["c"] == pytest.approx(c, rel=1e-12)
    x2, y2 = _batch(n=6, seed=7)
    reg.penalty(model, x2 * 0.1, y2, model(x2 * 0.1))
    assert reg.state_dict()["c"] == pytest.approx(c, rel=1e-12)  # estimated once


def test_sgr_state_dict_round_trip_gives_identical_penalties() -> None:
    model = _model()
    a = get_regulariser("sgr:source=grad")
    for seed in (1, 2):
        x, y = _batch(seed=seed)
        a.penalty(model, x, y, model(x))
    b = get_regulariser("sgr:source=grad")
    b.load_state_dict(_roundtrip(a.state_dict()))
    x, y = _batch(seed=3)
    assert torch.equal(a.penalty(model, x, y, model(x)), b.penalty(model, x, y, model(x)))
    assert torch.equal(a.covariance((1, 4, 4)), b.covariance((1, 4, 4)))
    x, y = _batch(seed=3)
    fresh = get_regulariser("sgr:source=grad")  # no state: another value
    assert not torch.equal(a.penalty(model, x, y, model(x)), fresh.penalty(model, x, y, model(x)))


def test_sgr_lrc_covariance_entries_and_matvec() -> None:
    zeta = 2.0
    reg = get_regulariser(f"sgr:source=lrc,zeta={zeta}")
    cov = reg.covariance((2, 3, 3))
    assert cov.shape == (18, 18)
    for a in range(18):
        for b in range(18):
            (ca, ia, ja), (cb, ib, jb) = np.unravel_index(a, (2, 3, 3)), np.unravel_index(b, (2, 3, 3))
            r = math.hypot(ia - ib, ja - jb)
            assert float(cov[a, b]) == pytest.approx((1.0 if ca == cb else 0.5) * math.exp(-r / zeta), rel=1e-12)
    assert float(cov[0, 9 + 4]) == pytest.approx(0.5 * math.exp(-math.sqrt(2) / zeta))  # (0,0,0)-(1,1,1)
    for shape in [(2, 3, 3), (3, 5, 7)]:
        g = torch.randn(4, *shape, dtype=torch.float64)
        dense = get_regulariser(f"sgr:source=lrc,zeta={zeta}").covariance(shape)
        assert torch.allclose(lrc_matvec(g, zeta).flatten(1), g.flatten(1) @ dense, atol=1e-10)


def test_sgr_lrc_penalty_uses_the_lrc_quadratic_form() -> None:
    model, (x, y) = _model(), _batch()
    reg = get_regulariser("sgr:source=lrc,zeta=8,c=0.5,lambda=2")
    g = _ce_grads(model, x, y).flatten(1)
    cov = reg.covariance((1, 4, 4))
    expected = 2 * 0.5 / (2 * len(x)) * float(sum(v @ cov @ v for v in g))
    assert _value(reg, model, x, y) == pytest.approx(expected, rel=1e-10)


def test_sgr_large_inputs_use_the_covariance_function_and_a_forced_matrix_is_refused() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    x, y = torch.rand(2, 3, 40, 40), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="representation=function"):
        get_regulariser("sgr:source=sign,representation=matrix").penalty(model, x, y, model(x))
    for spec in ("sgr:source=lrc", "sgr:source=sign"):  # sign: auto switches to the function above 4096
        reg = get_regulariser(spec)
        value = reg.penalty(model, x, y, model(x)).detach()
        assert math.isfinite(float(value)) and float(value) > 0, spec
    assert reg.state_dict()["covfun"].shape == (2, round(math.hypot(39, 39)) + 1)


def _brute_covfun(xi: torch.Tensor) -> torch.Tensor:
    """Eq. 16 by brute force: average the dense second-moment matrix over the pixel pairs
    of each rounded distance, within and across channels."""
    from robeval.train.sgr_covfun import max_distance

    m, c, h, w = xi.shape
    moments = xi.flatten(1).T.double() @ xi.flatten(1).double() / m
    ch, row, col = torch.meshgrid(torch.arange(c), torch.arange(h), torch.arange(w), indexing="ij")
    ch, row, col = ch.flatten(), row.flatten(), col.flatten()
    dist = torch.round(torch.sqrt((row[:, None] - row[None, :]).double() ** 2
                                  + (col[:, None] - col[None, :]).double() ** 2)).long()
    cross = ch[:, None] != ch[None, :]
    out = torch.zeros(2, max_distance(h, w) + 1, dtype=torch.float64)
    for d in range(out.shape[1]):
        for kind, mask in ((0, ~cross), (1, cross)):
            chosen = moments[(dist == d) & mask]
            out[kind, d] = chosen.mean() if len(chosen) else 0.0
    return out


def test_sgr_covariance_function_estimate_and_product_match_brute_force() -> None:
    from robeval.train.sgr_covfun import covfun_matvec, dense_covfun_matrix, estimate_covfun

    g = torch.Generator().manual_seed(0)
    xi = torch.randn(5, 3, 4, 6, generator=g, dtype=torch.float64)
    f = estimate_covfun(xi)
    assert torch.allclose(f, _brute_covfun(xi), atol=1e-12)
    v = torch.randn(2, 3, 4, 6, generator=g, dtype=torch.float64)
    dense = dense_covfun_matrix((3, 4, 6), f)
    assert torch.allclose(covfun_matvec(v, f).flatten(1), v.flatten(1) @ dense.T, atol=1e-10)
    one = estimate_covfun(xi[:, :1])
    assert torch.allclose(one, _brute_covfun(xi[:, :1]), atol=1e-12) and float(one[1].abs().max()) == 0.0


def test_sgr_function_representation_follows_algorithm_1() -> None:
    model = _model(c=2, side=4)
    reg = get_regulariser("sgr:source=sign,representation=function,lambda=0.5,c=0.2")
    from robeval.train.sgr_covfun import dense_covfun_matrix, estimate_covfun

    covfun = None
    for step in range(2):
        x, y = _batch(n=4, c=2, side=4, seed=20 + step)
        pred = model(x).argmax(1)
        xi = _ce_grads(model, x, pred).sign()
        batch = estimate_covfun(xi)
        covfun = 0.1 * batch if covfun is None else 0.9 * covfun + 0.1 * batch
        value = _value(reg, model, x, y)
        sigma = dense_covfun_matrix((2, 4, 4), covfun)
        gy = _ce_grads(model, x, y).flatten(1)
        expected = 0.5 * (0.2 / float(covfun[0, 0])) / (2 * len(x)) * float(sum(v @ sigma @ v for v in gy))
        assert value == pytest.approx(expected, rel=1e-9)
    again = get_regulariser("sgr:source=sign,representation=function,lambda=0.5,c=0.2")
    again.load_state_dict(reg.state_dict())
    x, y = _batch(n=4, c=2, side=4, seed=30)
    assert _value(again, model, x, y) == _value(reg, model, x, y)


def test_sgr_training_lowers_the_penalty() -> None:
    model, (x, y) = _model(), _batch(n=16)
    reg = get_regulariser("sgr:source=sign,c=0.1")
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    values = []
    for _ in range(15):
        penalty = reg.penalty(model, x, y, model(x))
        values.append(float(penalty.detach()))
        opt.zero_grad()
        penalty.backward()
        opt.step()
    assert values[-1] < 0.5 * values[0]


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
