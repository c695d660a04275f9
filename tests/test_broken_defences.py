"""The zoo of broken defences (tests/broken_defences.py), model by model: each keeps the
base's clean accuracy and really obfuscates its gradients, and each names the submodule
its adaptive attack needs. No attacks run here."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robeval.models.bpda import IdentityBackward, apply_bpda
from tests.broken_defences import ADAPTIVE, KWTA, MASKS_GRADIENTS, build_zoo


@pytest.fixture(scope="module")
def zoo(digits_model: nn.Module) -> dict[str, nn.Module]:
    return build_zoo(digits_model)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    torch.manual_seed(0)
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def ce_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    return grad


def test_every_defence_keeps_the_clean_accuracy(zoo, digits_model, digits_test) -> None:
    x, y = digits_test
    base = accuracy(digits_model, x, y)
    assert set(zoo) == set(ADAPTIVE)
    for name, model in zoo.items():
        assert not model.training, name
        assert all(p.device.type == "cpu" for p in model.parameters()), name
        assert accuracy(model, x, y) >= base - 0.10, name


@pytest.mark.parametrize("name", ["quantized", "jpeg_like", "detached"])
def test_zero_gradient_defences_give_exactly_zero_and_bpda_restores_it(zoo, digits_test, name) -> None:
    x, y = digits_test
    model = zoo[name]
    assert torch.count_nonzero(ce_gradient(model, x, y)) == 0
    adaptive = copy.deepcopy(model)
    kind, module = ADAPTIVE[name]
    assert kind == "bpda" and apply_bpda(adaptive, [module]) == [module]
    with torch.no_grad():
        assert torch.equal(adaptive(x), model(x))
    grad = ce_gradient(adaptive, x, y)
    assert bool((grad.flatten(1).abs().sum(1) > 0).all())


def test_the_random_defence_draws_fresh_transformations_from_the_global_rng(zoo, digits_test) -> None:
    model = zoo["random_resize_pad"]
    x, y = digits_test
    with torch.no_grad():
        first, second = model(x[:32]), model(x[:32])
        torch.manual_seed(3)
        again = model(x[:32])
        torch.manual_seed(3)
        assert torch.equal(model(x[:32]), again)
    assert bool((first - second).abs().amax(1).gt(1e-3).float().mean() > 0.5)
    grad = ce_gradient(model, x[:32], y[:32])  # differentiable, but each draw is another function
    assert bool((grad.flatten(1).abs().sum(1) > 0).all())
    assert ADAPTIVE["random_resize_pad"][0] == "eot"


def test_the_saturated_softmax_outputs_probabilities_with_vanishing_gradients(zoo, digits_test) -> None:
    model = zoo["saturated_softmax"]
    x, y = digits_test
    with torch.no_grad():
        out = model(x)
    assert bool((out >= 0).all()) and torch.allclose(out.sum(1), torch.ones(len(x)))
    grad = ce_gradient(model, x, y)
    zero = grad.flatten(1).abs().sum(1) == 0
    assert float(zero.float().mean()) > 0.8
    adaptive = copy.deepcopy(model)
    apply_bpda(adaptive, ["softmax"])
    assert bool((ce_gradient(adaptive, x, y).flatten(1).abs().sum(1) > 0).all())


def test_kwta_keeps_only_the_winners(zoo, digits_test) -> None:
    model = copy.deepcopy(zoo["kwta"])
    assert isinstance(model.kwta, KWTA)
    x, _ = digits_test
    seen = {}
    model.kwta.register_forward_hook(lambda m, i, o: seen.update(out=o))
    with torch.no_grad():
        model(x[:16])
    flat = seen["out"].flatten(1)
    k = round(model.kwta.ratio * flat.shape[1])
    assert bool(((flat != 0).sum(1) <= k).all())
    assert "kwta" not in MASKS_GRADIENTS  # on this small net it does not fool PGD (tests/broken_defences.py)
    wrapped = copy.deepcopy(model)
    assert apply_bpda(wrapped, ["kwta"]) == ["kwta"] and isinstance(wrapped.kwta, IdentityBackward)
