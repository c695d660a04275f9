"""Regularisers: smooth kernels, Absum (prox and autograd), SNC, L1/L2."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from robeval.errors import RobevalError
from robeval.train import TrainSpec, train
from robeval.train.reg_absum import absum_prox
from robeval.train.reg_smooth import neighbour_sq_diffs
from robeval.train.reg_snc import clip_conv_spectrum, conv_singular_values
from robeval.train.regularisers import get_regulariser


def _conv_model(c_in: int = 1, c_out: int = 2, k: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=1), nn.Flatten(), nn.LazyLinear(3))


def _penalty(spec: str, model: nn.Module) -> torch.Tensor:
    x = torch.zeros(1, 1, 4, 4)
    return get_regulariser(spec).penalty(model, x, torch.zeros(1, dtype=torch.long), model(x))


def _value(spec: str, model: nn.Module) -> float:
    return float(_penalty(spec, model).detach())


# --- smooth kernel ------------------------------------------------------------------------

W = [[0.1, -0.2, 0.3], [0.0, 0.5, -0.1], [0.2, 0.1, -0.4]]
PAIRS_4 = [((0, 0), (0, 1)), ((0, 1), (0, 2)), ((1, 0), (1, 1)), ((1, 1), (1, 2)), ((2, 0), (2, 1)),
           ((2, 1), (2, 2)), ((0, 0), (1, 0)), ((1, 0), (2, 0)), ((0, 1), (1, 1)), ((1, 1), (2, 1)),
           ((0, 2), (1, 2)), ((1, 2), (2, 2))]
PAIRS_DIAG = [((0, 0), (1, 1)), ((0, 1), (1, 2)), ((1, 0), (2, 1)), ((1, 1), (2, 2)),
              ((0, 1), (1, 0)), ((0, 2), (1, 1)), ((1, 1), (2, 0)), ((1, 2), (2, 1))]


@pytest.mark.parametrize(("neighbourhood", "pairs"), [(4, PAIRS_4), (8, PAIRS_4 + PAIRS_DIAG)])
def test_smooth_kernel_value_by_hand(neighbourhood, pairs) -> None:
    assert len(pairs) == {4: 12, 8: 20}[neighbourhood] and len(set(pairs)) == len(pairs)
    by_hand_sq = sum((W[a][b] - W[c][d]) ** 2 for (a, b), (c, d) in pairs)
    by_hand = math.exp(by_hand_sq - sum(v * v for row in W for v in row))
    w = torch.tensor(W, dtype=torch.float64)
    assert float(neighbour_sq_diffs(w, neighbourhood)) == pytest.approx(by_hand_sq, rel=1e-12)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False))
    with torch.no_grad():
        model[0].weight[0, 0] = w.float()
        model[0].weight[1, 0] = -2 * w.float()  # R is per kernel, summed over kernels
    second = math.exp(4 * by_hand_sq - 4 * sum(v * v for row in W for v in row))
    x = torch.zeros(1, 1, 3, 3)
    reg = get_regulariser(f"smooth-kernel:lambda=2.5,neighbourhood={neighbourhood}")
    value = reg.penalty(model, x, torch.zeros(1), model(x).flatten(1)).detach()
    assert float(value) == pytest.approx(2.5 * (by_hand + second), rel=1e-5)


def _roughness(model: nn.Module) -> float:
    """Neighbour differences relative to the kernels' scale (R's exponent can also fall by
    growing the constant component of a kernel, which leaves the differences unchanged)."""
    w = model[0].weight.detach()
    return float((neighbour_sq_diffs(w, 8) / w.pow(2).sum((-2, -1))).mean())


@pytest.mark.parametrize("lam", [1.0, -1.0])
def test_smooth_kernel_sign_of_lambda(lam) -> None:
    model = _conv_model(c_out=4)
    model(torch.zeros(1, 1, 4, 4))
    with torch.no_grad():
        model[0].weight.mul_(0.3)
    before = _roughness(model)
    reg = get_regulariser(f"smooth-kernel:lam={lam}")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(5):
        opt.zero_grad()
        _penalty(f"smooth-kernel:lam={lam}", model).backward()
        opt.step()
        reg.after_step(model, 0.01)
    after = _roughness(model)
    assert (after < before) if lam > 0 else (after > before)


def test_smooth_kernel_lambda_alias_and_errors() -> None:
    assert get_regulariser("smooth-kernel:lambda=-100").lam == -100
    assert get_regulariser("smooth-kernel").lam == 100
    with pytest.raises(RobevalError, match="same parameter"):
        get_regulariser("smooth-kernel:lambda=1,lam=2")
    with pytest.raises(RobevalError):
        get_regulariser("smooth-kernel:neighbourhood=6")


# --- absum ---------------------------------------------------------------------------------


def _objective(u: np.ndarray, k: np.ndarray, t: float) -> float:
    return 0.5 * float(((u - k) ** 2).sum()) + t * abs(float(u.sum()))


@pytest.mark.parametrize(("shift", "case"), [(3.0, "above"), (-3.0, "below"), (0.05, "inside")])
def test_absum_prox_closed_form_cases(shift, case) -> None:
    torch.manual_seed(1)
    k = torch.randn(4, 3, 3, 3, dtype=torch.float64) * 0.1
    k = k - k.mean((-2, -1), keepdim=True) + shift / 9  # every filter sums to `shift`
    t = 0.02
    thr = 9 * t
    out = absum_prox(k, thr)
    if case == "above":
        expected = k - t
    elif case == "below":
        expected = k + t
    else:
        expected = k - k.sum((-2, -1), keepdim=True) / 9
        assert torch.allclose(out.sum((-2, -1)), torch.zeros(4, 3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(out, expected, atol=1e-12)


def test_absum_prox_is_the_argmin() -> None:
    rng = np.random.default_rng(0)
    for trial in range(30):
        k = rng.normal(size=(3, 3)) * (0.05 if trial % 2 else 1.0)
        t = float(rng.uniform(0.001, 0.2))
        u = absum_prox(torch.from_numpy(k), 9 * t).numpy()
        best = _objective(u, k, t)
        for _ in range(200):
            v = u + rng.normal(size=(3, 3)) * 10.0 ** rng.uniform(-6, -1)
            assert _objective(v, k, t) >= best - 1e-12
        # also against the two one-signed smooth problems (solved exactly) and u = k
        for sign in (1, -1):
            cand = k - sign * t
            assert _objective(cand, k, t) >= best - 1e-12
        assert _objective(k, k, t) >= best - 1e-12


def test_absum_autograd_subgradient_zero_at_zero_sum() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False))
    with torch.no_grad():
        # dyadic entries: the sum is exactly 0 in floating point
        model[0].weight.copy_(torch.tensor([[1.0, -1.0, 0.0], [0.5, -0.5, 0.0], [0.25, 0.0, -0.25]]).view(1, 1, 3, 3))
    assert float(model[0].weight.detach().sum()) == 0.0
    x = torch.zeros(1, 1, 3, 3)
    reg = get_regulariser("absum:lam=1,solver=autograd")
    reg.penalty(model, x, torch.zeros(1), model(x).flatten(1)).backward()
    assert torch.equal(model[0].weight.grad, torch.zeros_like(model[0].weight))


def test_absum_prox_after_step_and_zero_penalty() -> None:
    model = _conv_model(c_out=3)
    reg = get_regulariser("absum:lam=10")
    assert _value("absum:lam=10", model) == 0.0
    reg.after_step(model, 0.1)  # threshold 9 * 0.1 * 10 = 9: every small filter sums to 0
    assert torch.allclose(model[0].weight.sum((-2, -1)), torch.zeros(3, 1), atol=1e-6)


# --- snc -----------------------------------------------------------------------------------


def _explicit_matrix(weight: torch.Tensor, n: int) -> np.ndarray:
    """The matrix of torch's conv2d with circular padding on n x n inputs, column by column."""
    _, c_in, k, _ = weight.shape
    cols = []
    for i in range(c_in * n * n):
        e = torch.zeros(c_in * n * n, dtype=torch.float64)
        e[i] = 1
        xp = nn.functional.pad(e.view(1, c_in, n, n), (0, k - 1, 0, k - 1), mode="circular")
        cols.append(nn.functional.conv2d(xp, weight.double()).flatten())
    return torch.stack(cols, 1).numpy()


def test_snc_singular_values_match_explicit_matrix() -> None:
    torch.manual_seed(2)
    w = torch.randn(3, 2, 3, 3)
    mat = _explicit_matrix(w, 5)
    assert mat.shape == (75, 50)
    explicit = np.sort(np.linalg.svd(mat, compute_uv=False))[::-1]
    fft = np.sort(conv_singular_values(w, 5).flatten().numpy())[::-1]
    assert np.allclose(fft, explicit, atol=1e-6)


def test_snc_clipping() -> None:
    torch.manual_seed(3)
    w = torch.randn(3, 2, 3, 3)
    sigma = 1.0
    assert conv_singular_values(w, 5).max() > 3
    full = clip_conv_spectrum(w, 5, sigma, crop=False)  # n x n support: exactly clipped
    assert full.shape == (3, 2, 5, 5)
    assert np.linalg.svd(_explicit_matrix(full, 5), compute_uv=False).max() <= sigma + 1e-5
    # values below sigma are untouched
    small = w * 1e-3
    assert torch.allclose(clip_conv_spectrum(small, 5, sigma), small, atol=1e-7)
    # cropping back to 3x3 (Sedghi et al.'s projection) can raise the norm above sigma again;
    # repeated clip-and-project steps approach sigma
    norms = [float(conv_singular_values(w, 5).max())]
    for _ in range(8):
        w = clip_conv_spectrum(w, 5, sigma)
        assert w.shape == (3, 2, 3, 3)
        norms.append(float(conv_singular_values(w, 5).max()))
    assert norms[1] < norms[0] and norms[-1] < 1.05 and all(b <= a + 1e-6 for a, b in itertools.pairwise(norms))


def test_snc_every_and_input_size() -> None:
    model = _conv_model(c_out=3)
    reg = get_regulariser("snc:sigma=0.1,every=2,input_size=4")
    w0 = model[0].weight.detach().clone()
    reg.after_step(model, 0.1)
    assert torch.equal(model[0].weight, w0)
    reg.after_step(model, 0.1)
    assert not torch.equal(model[0].weight, w0)
    with pytest.raises(RobevalError, match="input_size"):
        get_regulariser("snc:every=1").after_step(_conv_model(), 0.1)


# --- l1 / l2 -------------------------------------------------------------------------------


def test_l1_l2_values_and_scope() -> None:
    model = _conv_model()
    model(torch.zeros(1, 1, 4, 4))
    conv_w = model[0].weight.detach()
    params = [p.detach() for p in model.parameters()]
    assert _value("l2:lam=0.5", model) == pytest.approx(0.5 * float(conv_w.pow(2).sum()), rel=1e-6)
    assert _value("l1:lam=0.5", model) == pytest.approx(0.5 * float(conv_w.abs().sum()), rel=1e-6)
    assert _value("l2:lam=0.5,scope=all", model) == pytest.approx(
        0.5 * sum(float(p.pow(2).sum()) for p in params), rel=1e-6)
    assert _value("l1:lam=0.5,scope=all", model) == pytest.approx(
        0.5 * sum(float(p.abs().sum()) for p in params), rel=1e-6)


# --- inside the training loop and the CLI -------------------------------------------------


@pytest.mark.parametrize("spec", ["smooth-kernel:lambda=1", "smooth-kernel:lam=-1", "absum:lam=0.01",
                                  "absum:lam=0.01,solver=autograd", "snc:every=1,sigma=2",
                                  "l1:lam=1e-4", "l2:lam=1e-4,scope=all"])
def test_regularisers_train_one_epoch(spec, tmp_path) -> None:
    result = train(TrainSpec(dataset="digits", arch="small-cnn", epochs=1, n_train=200, regularisers=(spec,),
                             device="cpu", out=str(tmp_path / "m.pt")))
    assert result.checkpoint.exists() and math.isfinite(result.metrics["train_loss"])


def test_absum_prox_in_training_zeroes_filter_sums(tmp_path) -> None:
    from robeval.models import load_checkpoint

    result = train(TrainSpec(dataset="digits", arch="small-cnn", epochs=1, n_train=200,
                             regularisers=("absum:lam=100",), device="cpu", out=str(tmp_path / "m.pt")))
    model, _ = load_checkpoint(result.checkpoint)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert torch.allclose(m.weight.sum((-2, -1)), torch.zeros(m.weight.shape[:2]), atol=1e-5)


def test_cli_train_with_regulariser(tmp_path) -> None:
    from typer.testing import CliRunner

    from robeval.cli import app

    out = tmp_path / "cli.pt"
    res = CliRunner().invoke(app, ["train", "--dataset", "digits", "--arch", "small-cnn", "--epochs", "1",
                                   "--n-train", "128", "--device", "cpu", "--quiet", "--out", str(out),
                                   "--regulariser", "smooth-kernel:lambda=10"])
    assert res.exit_code == 0, res.output
    assert out.exists()


def test_reg_is_the_regulariser_flag_and_every_regulariser_takes_lambda(tmp_path) -> None:
    """Issue 14.8: ``--reg`` (the training issue's name) beside ``--regulariser``, and
    ``lambda=`` on ``l1``/``l2`` as on ``smooth-kernel`` and ``absum``."""
    from typer.testing import CliRunner

    from robeval.cli import app

    for name in ("l1", "l2", "absum", "smooth-kernel"):
        assert get_regulariser(f"{name}:lambda=0.25") == get_regulariser(f"{name}:lam=0.25")
        assert get_regulariser(f"{name}:lambda=0.25").lam == 0.25
    with pytest.raises(RobevalError, match="name the same parameter"):
        get_regulariser("l1:lambda=1,lam=2")
    common = ["train", "--dataset", "digits", "--arch", "small-cnn", "--epochs", "1", "--n-train", "64",
              "--device", "cpu", "--quiet"]
    for flag in ("--reg", "--regulariser"):
        out = tmp_path / f"{flag.strip('-')}.pt"
        res = CliRunner().invoke(app, [*common, "--out", str(out), flag, "l2:lambda=0.5"])
        assert res.exit_code == 0, res.output
        from robeval.models.checkpoint import read_checkpoint

        regs = read_checkpoint(out)[1].train_spec["regularisers"]
        assert list(regs) == ["l2:lambda=0.5"], regs


@pytest.mark.parametrize("spec", ["absum:lam=-1", "absum:solver=adam", "absum:lamb=1", "snc:sigma=0",
                                  "snc:every=0", "snc:input_size=0", "l2:scope=some", "l1:lam=-1",
                                  "smooth-kernel:lambda=big"])
def test_bad_params(spec, tmp_path) -> None:
    with pytest.raises(RobevalError):
        get_regulariser(spec)
    with pytest.raises(RobevalError):
        train(TrainSpec(dataset="digits", arch="small-cnn", epochs=1, n_train=64, regularisers=(spec,),
                        device="cpu", out=str(tmp_path / "x.pt")))
