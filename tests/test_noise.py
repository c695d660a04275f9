"""The noise attacks (uniform / RAND, gaussian, LRC): samplers against their target
distributions, the worst-of-K contract, and the attack contract."""

from __future__ import annotations

import math

import pytest
import torch

import robeval.attacks.lrc_sampling as lrc_sampling
import robeval.attacks.noise as nz
from robeval.attacks import canonical_name, get
from robeval.attacks.base import is_nested, perturbation_norms

NAMES = ("uniform", "gaussian", "lrc")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _empirical_cov(sampler, n: int, chunk: int = 2500) -> torch.Tensor:
    """Raw second moments (the mean is 0) of ``n`` flattened draws, in float64."""
    total, acc = 0, None
    while total < n:
        s = sampler(min(chunk, n - total)).flatten(1).double()
        acc = s.T @ s if acc is None else acc + s.T @ s
        total += s.shape[0]
    return acc / n


def _fooled(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) != y


# --- the LRC covariance and its samplers -------------------------------------------------


def test_dense_covariance_is_the_papers_covariance_function() -> None:
    zeta = 3.0
    cov = nz.dense_covariance((2, 3, 4), zeta).view(2, 3, 4, 2, 3, 4)
    for c, i, j, c2, i2, j2 in [(0, 0, 0, 0, 2, 3), (1, 1, 2, 1, 0, 0), (0, 2, 1, 1, 0, 3), (1, 0, 0, 0, 0, 0)]:
        r = math.hypot(i - i2, j - j2)  # exact, not rounded
        want = math.exp(-r / zeta) * (1.0 if c == c2 else 0.5)
        assert float(cov[c, i, j, c2, i2, j2]) == pytest.approx(want, abs=1e-12)
    flat = nz.dense_covariance((2, 3, 4), zeta)
    assert torch.allclose(flat, flat.T)
    assert float(torch.linalg.eigvalsh(flat).min()) > 0


@pytest.mark.parametrize(
    ("shape", "zeta", "method"),
    [((3, 6, 6), 2.0, "fft"), ((1, 8, 8), 8.0, "fft"), ((3, 6, 6), 8.0, "dense")],
)
def test_lrc_sampler_matches_the_dense_covariance(shape, zeta, method) -> None:
    """Each entry of the empirical second-moment matrix of n draws has std
    sqrt((S_ii S_jj + S_ij^2) / n) <= sqrt(2 / n) = 0.010 for n = 20000 (unit variances);
    0.05 is 5 of those, far above the max over a few thousand entries (~4 sd)."""
    n, g = 20000, _gen(1)
    emp = _empirical_cov(lambda k: nz.lrc_sample(shape, k, zeta, g, method=method), n)
    target = nz.dense_covariance(shape, zeta)
    err = (emp - target).abs()
    assert float(err.max()) < 0.05, float(err.max())
    if shape[0] > 1:  # intra- and inter-channel blocks separately
        d = shape[1] * shape[2]
        assert float(err[:d, :d].max()) < 0.05 and float(err[:d, d:2 * d].max()) < 0.05
        assert float(emp[:d, d:2 * d].diagonal().mean()) == pytest.approx(0.5, abs=0.02)


def test_dense_reference_sampler_agrees_with_the_target() -> None:
    shape, zeta, n = (2, 5, 5), 4.0, 20000
    samples = nz.dense_sample(shape, zeta, n, _gen(2))
    assert samples.shape == (n, *shape)
    emp = _empirical_cov(lambda k: samples[:k], n, chunk=n)
    assert float((emp - nz.dense_covariance(shape, zeta)).abs().max()) < 0.05


@pytest.mark.parametrize("zeta", [1.0, 2.0, 4.0, 8.0, 16.0])
@pytest.mark.parametrize("side", [6, 32])
def test_circulant_embedding_is_exact_after_growing_the_torus(side: int, zeta: float) -> None:
    assert nz.circulant_embedding_error(side, side, zeta) < 1e-10


def test_lrc_large_image_needs_no_dense_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("built a dense covariance")

    monkeypatch.setattr(lrc_sampling, "spatial_covariance", boom)  # where the sampler looks them up
    monkeypatch.setattr(lrc_sampling, "dense_covariance", boom)
    s = nz.lrc_sample((3, 224, 224), 4, 8.0, _gen(3))
    assert s.shape == (4, 3, 224, 224) and torch.isfinite(s).all()
    assert float(s.var()) == pytest.approx(1.0, abs=0.15)
    # neighbours are strongly correlated (exp(-1/8) = 0.88), channels at about 0.5
    near = float((s[..., :-1] * s[..., 1:]).mean())
    cross = float((s[:, 0] * s[:, 1]).mean())
    assert near == pytest.approx(math.exp(-1 / 8), abs=0.1)
    assert cross == pytest.approx(0.5, abs=0.15)
    assert nz.circulant_embedding_error(224, 224, 8.0) < 1e-10


def test_lrc_sampler_is_deterministic_and_rejects_bad_input() -> None:
    a = nz.lrc_sample((3, 8, 8), 5, 4.0, _gen(7))
    assert torch.equal(a, nz.lrc_sample((3, 8, 8), 5, 4.0, _gen(7)))
    with pytest.raises(ValueError):
        nz.lrc_sample((3, 8, 8), 5, 4.0, _gen(7), method="cholesky")
    with pytest.raises(ValueError):
        nz.lrc_sample((8,), 5, 4.0, _gen(7))


# --- the other samplers --------------------------------------------------------------------


def test_gaussian_draw_has_std_eps_and_uniform_draw_is_in_the_box() -> None:
    like = torch.zeros(2000, 1, 8, 8)
    eps = 0.2
    gauss = nz.Gaussian().draw(like, eps, _gen(4))
    assert float(gauss.mean()) == pytest.approx(0.0, abs=0.005)
    assert float(gauss.std()) == pytest.approx(eps, rel=0.02)
    uni = nz.Uniform().draw(like, eps, _gen(4))
    assert float(uni.abs().max()) <= eps
    assert float(uni.std()) == pytest.approx(eps / math.sqrt(3), rel=0.02)
    lrc = nz.LRC(zeta=4.0).draw(like, eps, _gen(4))
    assert float(lrc.std()) == pytest.approx(eps, rel=0.05)


# --- the attacks ---------------------------------------------------------------------------


def test_registered_with_the_papers_defaults() -> None:
    lrc = get("lrc:zeta=8,samples=100")
    assert isinstance(lrc, nz.LRC) and lrc == nz.LRC()
    assert canonical_name(get("lrc:zeta=2")) == "lrc:zeta=2"
    for name in NAMES:
        attack = get(name)
        assert not attack.minimal and not attack.targeted and not is_nested(attack)
        assert attack.samples == 100
    assert get("uniform").norm == "linf"
    assert get("gaussian").norm == get("lrc").norm == "scale"


@pytest.mark.parametrize(
    "spec", ["uniform:samples=0", "gaussian:samples=-1", "lrc:zeta=0", "lrc:zeta=-2", "lrc:samples=0"]
)
def test_bad_params_raise(spec: str) -> None:
    with pytest.raises(Exception):  # noqa: B017  (RobevalError or ValueError)
        get(spec)


@pytest.mark.parametrize("name", NAMES)
def test_worst_of_k_never_helps_the_model(name, digits_model, digits_test) -> None:
    """Draw k is the same in every run of a seed, so a point fooled by the first draw is
    fooled, by that same image, when more draws are allowed."""
    x, y = digits_test
    eps = 0.3
    one = get(name, samples=1)(digits_model, x, y, eps=eps, generator=_gen(5))
    ten = get(name, samples=10)(digits_model, x, y, eps=eps, generator=_gen(5))
    f1, f10 = _fooled(digits_model, one, y), _fooled(digits_model, ten, y)
    assert bool((f1 <= f10).all())
    assert torch.equal(ten[f1], one[f1])
    assert int(f10.sum()) > int(f1.sum())  # and more draws do find more at this eps


@pytest.mark.parametrize("name", NAMES)
def test_attack_contract(name, digits_model, digits_test) -> None:
    x, y = digits_test[0][:64], digits_test[1][:64]
    attack = get(name, samples=5)
    x_copy = x.clone()
    eps = 0.25
    adv = attack(digits_model, x, y, eps=eps, generator=_gen(6))
    assert torch.equal(x, x_copy)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert not torch.equal(adv, x)
    if attack.norm == "linf":
        assert float(perturbation_norms(adv - x, "linf").max()) <= eps + 1e-6
    # deterministic per seed, whatever the global RNG; another seed differs
    torch.manual_seed(123)
    assert torch.equal(adv, attack(digits_model, x, y, eps=eps, generator=_gen(6)))
    assert not torch.equal(adv, attack(digits_model, x, y, eps=eps, generator=_gen(7)))
    # eps = 0: a copy of x
    same = attack(digits_model, x, y, eps=0.0, generator=_gen(6))
    assert torch.equal(same, x) and same is not x
    # mode and parameter gradients untouched
    digits_model.zero_grad(set_to_none=True)
    for training in (True, False):
        digits_model.train(training)
        attack(digits_model, x[:8], y[:8], eps=eps, generator=_gen(6))
        assert digits_model.training is training
    digits_model.eval()
    assert all(p.grad is None for p in digits_model.parameters())
    with pytest.raises(ValueError):
        attack(digits_model, x, y, eps=-0.1)
    with pytest.raises(ValueError):
        attack(digits_model, x, y, eps=math.inf)
    with pytest.raises(ValueError):
        attack(digits_model, x, y, eps=0.1, target=y)


def test_returns_the_first_fooling_draw_else_the_last(digits_model, digits_test) -> None:
    x, y = digits_test[0][:32], digits_test[1][:32]
    attack, eps, k = nz.Gaussian(samples=4), 0.35, 4
    adv = attack(digits_model, x, y, eps=eps, generator=_gen(8))
    g = _gen(8)
    draws = [(x + attack.draw(x, eps, g)).clamp(0, 1) for _ in range(k)]
    fooled = torch.stack([_fooled(digits_model, d, y) for d in draws])
    for i in range(len(x)):
        hits = fooled[:, i].nonzero().flatten()
        want = draws[int(hits[0])][i] if len(hits) else draws[-1][i]
        assert torch.equal(adv[i], want)


def test_data_covariance_variant(digits_model, digits_test) -> None:
    x, y = digits_test
    cov = nz.estimate_covariance(x)
    assert cov.shape == (64, 64) and float(cov.diagonal().mean()) == pytest.approx(1.0)
    attack = nz.LRC.from_data(x, samples=10)
    g = _gen(9)
    draws = torch.cat([attack.draw(x, 1.0, g) for _ in range(40)]).flatten(1).double()
    emp = draws.T @ draws / len(draws)
    # entry (i, j) of the empirical second moments of n draws has sd
    # sqrt((S_ii S_jj + S_ij^2) / n); allow 5 of those
    var = cov.diagonal()
    sd = ((var[:, None] * var[None, :] + cov**2) / len(draws)).sqrt()
    assert float(((emp - cov).abs() - 5 * sd).max()) < 1e-9
    adv = attack(digits_model, x, y, eps=0.3, generator=_gen(9))
    assert adv.shape == x.shape and float(adv.min()) >= 0 and float(adv.max()) <= 1
    with pytest.raises(ValueError):
        nz.CovarianceNoise.from_covariance(cov, (1, 4, 4))
    with pytest.raises(ValueError):
        nz.CovarianceNoise(samples=3)(digits_model, x, y, eps=0.1)


def test_lrc_data_is_the_data_covariance_variant_from_a_spec(digits_model, digits_test, monkeypatch) -> None:
    """``lrc-data:dataset=NAME`` is ``LRC.from_data`` on NAME's training split (or its
    seeded subset of n), draw for draw; a wrong image shape, a missing data set and an
    image too large for a dense covariance are refused with the fix named."""
    import robeval
    from robeval.attacks import lrc_data
    from robeval.errors import RobevalError

    x, y = digits_test
    for spec, n in (("lrc-data:dataset=digits,samples=10", None), ("lrc-data:dataset=digits,n=300,samples=10", 300)):
        train, _ = robeval.load_dataset("digits", split="train", n=n, seed=0)
        reference = nz.LRC.from_data(train, samples=10)
        ours = get(spec)
        assert canonical_name(ours) == spec
        assert torch.equal(ours(digits_model, x, y, eps=0.3, generator=_gen(4)),
                           reference(digits_model, x, y, eps=0.3, generator=_gen(4)))
    assert not is_nested(get("lrc-data:dataset=digits"))
    with pytest.raises(RobevalError, match="dataset=NAME"):
        get("lrc-data")
    with pytest.raises(RobevalError, match="shape .*1, 8, 8.*name the data set the model was trained on"):
        get("lrc-data:dataset=digits")(digits_model, torch.zeros(2, 1, 4, 4), y[:2], eps=0.1)
    lrc_data.data_covariance_factor.cache_clear()
    monkeypatch.setattr(lrc_data, "DENSE_MAX_ENTRIES", 32)
    with pytest.raises(RobevalError, match="64 x 64.*lrc:zeta"):
        get("lrc-data:dataset=digits,n=100")
    lrc_data.data_covariance_factor.cache_clear()


def test_noise_lowers_accuracy_with_eps(digits_model, digits_test) -> None:
    x, y = digits_test
    clean = 1 - float(_fooled(digits_model, x, y).float().mean())
    for name in NAMES:
        adv = get(name, samples=20)(digits_model, x, y, eps=0.5, generator=_gen(10))
        assert 1 - float(_fooled(digits_model, adv, y).float().mean()) < clean
