"""Structured gradient regularisation (`sgr`, Roth et al. Algorithm 1): the EMA covariance
of each perturbation source, the scaling, the LRC covariance and its FFT product, the
covariance function of Eq. 16, state round trips and training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from robeval.train.reg_sgr import lrc_matvec
from robeval.train.regularisers import get_regulariser
from tests.gradient_helpers import _batch, _ce_grads, _model, _roundtrip, _value


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
    x, _ = _batch(n=4, seed=3)
    pred = model(x).argmax(1)
    attack = (robeval.attacks.get("pgd", steps=5, rel_stepsize=0.2, random_start=False, keep="last") if source == "pgd"
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
    from robeval.train.sgr_covfun import (
        covfun_matvec,
        dense_covfun_matrix,
        estimate_covfun,
    )

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


def test_sgr_data_source_is_the_training_covariance() -> None:
    """``source=data`` (Sec. 4.3's data-set covariance): Sigma = the training images'
    covariance at unit mean diagonal, c = their mean per-pixel variance, so the penalty is
    lam / (2m) sum_i g_i^T Cov_data g_i; a resume keeps the bound covariance; unbound it
    refuses."""
    model, (x, y) = _model(), _batch()
    x_train = torch.rand(200, 1, 4, 4) ** 2  # uneven variances and correlations
    flat = x_train.flatten(1).double()
    cov_data = torch.cov(flat.T)  # unbiased, as the paper's sample covariance
    reg = get_regulariser("sgr:source=data,lambda=2")
    with pytest.raises(ValueError, match="bind_data"):
        reg.penalty(model, x, y, model(x))
    reg.bind_data(x_train)
    assert torch.allclose(reg.covariance((1, 4, 4)), cov_data / cov_data.diagonal().mean(), atol=1e-6)
    g = _ce_grads(model, x, y).flatten(1).double()
    expected = 2 / (2 * len(x)) * float(sum(v @ cov_data @ v for v in g))
    assert _value(reg, model, x, y) == pytest.approx(expected, rel=1e-5)
    given_c = get_regulariser("sgr:source=data,lambda=2,c=0.5")
    given_c.bind_data(x_train)
    assert _value(given_c, model, x, y) == pytest.approx(expected * 0.5 / float(cov_data.diagonal().mean()), rel=1e-5)
    reg.load_state_dict(_roundtrip(reg.state_dict()))  # robeval train binds, then resumes
    assert _value(reg, model, x, y) == pytest.approx(expected, rel=1e-5)
    get_regulariser("sgr:source=sign").bind_data(x_train)  # other sources ignore the data


def test_sgr_data_source_trains_through_robeval_train(tmp_path) -> None:
    """``robeval train --reg sgr:source=data`` binds the covariance of the split it trains
    on; an input too large for a dense covariance is refused before any epoch."""
    from robeval.errors import RobevalError
    from robeval.train import TrainSpec, train
    from robeval.train import reg_sgr

    spec = TrainSpec(dataset="digits", arch="small-cnn", epochs=1, batch_size=64, lr=3e-3, seed=0, device="cpu",
                     n_train=256, regularisers=("sgr:source=data,lambda=0.5",), out=str(tmp_path / "m.pt"))
    train(spec)
    logged = np.loadtxt(tmp_path / "m.log.csv", delimiter=",", skiprows=1, ndmin=2)
    header = (tmp_path / "m.log.csv").read_text().splitlines()[0].split(",")
    value = float(logged[-1, header.index("reg:sgr")])
    assert math.isfinite(value) and value > 0
    original = reg_sgr.MAX_DENSE_DIM
    try:
        reg_sgr.MAX_DENSE_DIM = 32
        with pytest.raises(RobevalError, match="64 x 64.*source=lrc"):
            train(TrainSpec(**{**spec.to_dict(), "out": str(tmp_path / "big.pt")}))
    finally:
        reg_sgr.MAX_DENSE_DIM = original
