"""The smooth-kernel regulariser's two forms (smooth-kernels paper, section 3):
``form=paper`` = exp(R0 - sum w^2) (the default, unchanged) and ``form=ratio`` = R0 / sum w^2
(the paper's second heuristic), R0 the sum of squared differences over unordered
neighbour pairs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from robeval.errors import RobevalError
from robeval.train.reg_smooth import SmoothKernel, smooth_kernel_ratio
from robeval.train.regularisers import get_regulariser


def _pairs(k: int, neighbourhood: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Every unordered pair of neighbouring positions of a k x k grid, by enumeration."""
    cells = list(itertools.product(range(k), range(k)))
    near = (lambda a, b: abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1) if neighbourhood == 4 else \
        (lambda a, b: max(abs(a[0] - b[0]), abs(a[1] - b[1])) == 1)
    return [(a, b) for a, b in itertools.combinations(cells, 2) if near(a, b)]


def _r0(w: list[list[float]], neighbourhood: int) -> float:
    return sum((w[a][b] - w[c][d]) ** 2 for (a, b), (c, d) in _pairs(len(w), neighbourhood))


def _energy(w: list[list[float]]) -> float:
    return sum(v * v for row in w for v in row)


HAND = [  # hand-made kernels: a 3x3, a 5x5 ramp plus a spike, a checkerboard
    [[0.1, -0.2, 0.3], [0.0, 0.5, -0.1], [0.2, 0.1, -0.4]],
    [[0.1 * (i + j) + (0.7 if (i, j) == (2, 3) else 0.0) for j in range(5)] for i in range(5)],
    [[(-1.0) ** (i + j) for j in range(3)] for i in range(3)],
]


def _model(kernels: list[list[list[float]]]) -> nn.Module:
    """One conv layer per kernel size, each kernel in its own (out, in) slot."""
    layers = []
    for k in sorted({len(w) for w in kernels}):
        same = [w for w in kernels if len(w) == k]
        conv = nn.Conv2d(1, len(same), k, bias=False)
        with torch.no_grad():
            for o, w in enumerate(same):
                conv.weight[o, 0] = torch.tensor(w)
        layers.append(conv)
    return nn.ModuleList(layers)


def _penalty(spec: str, model: nn.Module) -> float:
    logits = torch.zeros(1, 3)
    return float(get_regulariser(spec).penalty(model, torch.zeros(1, 1, 5, 5), torch.zeros(1), logits).detach())


@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_ratio_matches_closed_form(neighbourhood) -> None:
    assert len(_pairs(3, 4)) == 12 and len(_pairs(3, 8)) == 20 and len(_pairs(5, 8)) == 72
    for w in HAND:
        value = float(smooth_kernel_ratio(torch.tensor(w, dtype=torch.float64), neighbourhood))
        assert value == pytest.approx(_r0(w, neighbourhood) / _energy(w), rel=1e-12)
    expected = 2.5 * sum(_r0(w, neighbourhood) / _energy(w) for w in HAND)
    spec = f"smooth-kernel:lambda=2.5,form=ratio,neighbourhood={neighbourhood}"
    assert _penalty(spec, _model(HAND)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_paper_form_unchanged(neighbourhood) -> None:
    """The default form is still exp(R0 - sum w^2), per kernel, summed (and the default)."""
    expected = 2.5 * sum(math.exp(_r0(w, neighbourhood) - _energy(w)) for w in HAND)
    for spec in (f"smooth-kernel:lambda=2.5,neighbourhood={neighbourhood}",
                 f"smooth-kernel:lambda=2.5,neighbourhood={neighbourhood},form=paper"):
        assert _penalty(spec, _model(HAND)) == pytest.approx(expected, rel=1e-5)
    assert get_regulariser("smooth-kernel").form == "paper"


def test_ratio_gradient_matches_finite_differences() -> None:
    torch.manual_seed(0)
    for shape, neighbourhood in (((2, 1, 5, 5), 8), ((1, 2, 3, 3), 4)):
        w = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda v, k=neighbourhood: smooth_kernel_ratio(v, k), (w,))


def test_ratio_is_scale_invariant_and_its_gradient_orthogonal() -> None:
    """Degree-0 homogeneity: R(c w) = R(w), hence <w, grad R(w)> = 0 (Euler) and
    grad R(c w) = grad R(w) / c; the paper form is not scale-invariant."""
    torch.manual_seed(1)
    w = torch.randn(4, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    ratio = smooth_kernel_ratio(w, 8)
    for c in (0.01, 3.0, -7.0):
        torch.testing.assert_close(smooth_kernel_ratio(c * w.detach(), 8), ratio.detach(), rtol=1e-12, atol=0)
    (grad,) = torch.autograd.grad(ratio.sum(), w)
    inner = (grad * w).sum((-2, -1))
    assert inner.abs().max() < 1e-12 * grad.abs().max()
    scaled = (3.0 * w.detach()).requires_grad_(True)
    (grad3,) = torch.autograd.grad(smooth_kernel_ratio(scaled, 8).sum(), scaled)
    torch.testing.assert_close(grad3, grad / 3.0)
    paper = SmoothKernel(form="paper").kernel_values(w.detach())
    assert not torch.allclose(SmoothKernel(form="paper").kernel_values(2 * w.detach()), paper)


def test_ratio_zero_for_constant_and_zero_kernels() -> None:
    flat = torch.full((2, 1, 5, 5), -0.3, dtype=torch.float64, requires_grad=True)
    assert float(smooth_kernel_ratio(flat, 8).detach().abs().max()) == 0.0
    zero = torch.zeros(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    value = smooth_kernel_ratio(zero, 8)
    (grad,) = torch.autograd.grad(value.sum(), zero)
    assert float(value.detach()) == 0.0 and torch.isfinite(grad).all() and float(grad.abs().max()) == 0.0
    # positive on anything non-constant
    assert min(float(smooth_kernel_ratio(torch.tensor(w, dtype=torch.float64), 8)) for w in HAND) > 0


def test_paper_form_rewards_growing_smooth_kernels_ratio_does_not() -> None:
    """Why ``form=ratio`` exists: for a kernel shape whose R0 / sum w^2 is below 1 (the
    constant kernel plus a little ramp), the paper form's exponent (R0 - sum w^2) =
    (ratio - 1) sum w^2 falls without bound as the kernel is scaled up, so lambda > 0
    rewards growth; the ratio is the same at every scale."""
    shape = torch.tensor([[1.0 + 0.02 * (i - j) for j in range(5)] for i in range(5)], dtype=torch.float64)
    ratio = float(smooth_kernel_ratio(shape, 8))
    assert 0 < ratio < 1
    paper = [float(SmoothKernel(form="paper").kernel_values(c * shape)) for c in (1.0, 2.0, 4.0)]
    for c, value in zip((1.0, 2.0, 4.0), paper, strict=True):
        assert value == pytest.approx(math.exp((ratio - 1) * c * c * float(shape.pow(2).sum())), rel=1e-9)
    assert paper[0] > paper[1] > paper[2]
    assert {round(float(smooth_kernel_ratio(c * shape, 8)), 12) for c in (1.0, 2.0, 4.0)} == {round(ratio, 12)}


def test_bad_form_is_one_line_error() -> None:
    for make in (lambda: get_regulariser("smooth-kernel:form=ratios"), lambda: SmoothKernel(form="exp")):
        with pytest.raises(RobevalError, match="paper, ratio") as info:
            make()
        assert "\n" not in str(info.value)
