"""BPDA with the identity (Athalye et al. 2018, Sec. 4.1): robeval.models.bpda and the
``"bpda"`` key of ``file.py:factory`` models."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import robeval
from robeval.errors import RobevalError
from robeval.eval.counting import PassCounter
from robeval.models import load_model
from robeval.models.bpda import IdentityBackward, apply_bpda, declared_bpda
from robeval.models.normalize import Normalize


class Round(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(7 * x) / 7


def quantized_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        quantize=Round(),
        net=nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
    ))


def input_gradient(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    xr = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xr), torch.arange(len(x)) % 10, reduction="sum")
    (grad,) = torch.autograd.grad(loss, xr)
    return grad


def test_forward_is_unchanged_bit_for_bit_and_the_gradient_becomes_the_identity() -> None:
    model = quantized_net()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    before = model(x)
    assert torch.count_nonzero(input_gradient(model, x)) == 0  # round() has a zero derivative
    assert apply_bpda(model, ["quantize"]) == ["quantize"]
    assert isinstance(model.quantize, IdentityBackward)
    assert torch.equal(model(x), before)
    with torch.no_grad():
        assert torch.equal(model(x), before)
    grad = input_gradient(model, x)
    assert bool((grad != 0).all())
    # The identity: the gradient is that of the rest of the net at the quantised input.
    xq = Round()(x)
    xq.requires_grad_(True)
    loss = nn.functional.cross_entropy(model.net(xq), torch.arange(len(x)) % 10, reduction="sum")
    (expected,) = torch.autograd.grad(loss, xq)
    assert torch.equal(grad, expected)


def test_identity_backward_passes_the_upstream_gradient_unchanged() -> None:
    wrapped = IdentityBackward(Round())
    x = torch.rand(3, 5, requires_grad=True)
    upstream = torch.randn(3, 5)
    out = wrapped(x)
    assert torch.equal(out, torch.round(7 * x.detach()) / 7)
    (grad,) = torch.autograd.grad(out, x, upstream)
    assert torch.equal(grad, upstream)


def test_a_module_that_changes_the_shape_is_refused_by_name() -> None:
    model = quantized_net()
    apply_bpda(model, ["net"])  # Flatten + Linear: (N, 1, 8, 8) -> (N, 10)
    with pytest.raises(RobevalError, match=r"'net'.*input's shape"):
        model(torch.rand(2, 1, 8, 8))
    with pytest.raises(RobevalError, match=r"BPDA with the identity.*'Linear'"):
        IdentityBackward(nn.Linear(4, 3))(torch.rand(2, 4))


def test_unknown_names_get_a_suggestion_and_change_nothing() -> None:
    model = quantized_net()
    with pytest.raises(RobevalError, match=r"unknown module 'quantise'; did you mean 'quantize'"):
        apply_bpda(model, ["net", "quantise"])
    assert not any(isinstance(m, IdentityBackward) for m in model.modules())
    with pytest.raises(RobevalError, match=r"^BPDA: unknown module 'zzz' \(the model's modules: quantize, net, net\.0, net\.1\)$"):
        apply_bpda(model, ["zzz"])
    with pytest.raises(RobevalError, match="empty name"):
        apply_bpda(model, [""])


def test_names_are_found_through_wrappers_and_wrapping_twice_changes_nothing() -> None:
    model = PassCounter(Normalize(quantized_net(), 0.5, 0.25))
    x = torch.rand(4, 1, 8, 8)
    before = model(x)
    assert apply_bpda(model, ["quantize", "net.1"]) == ["model.model.quantize", "model.model.net.1"]
    assert apply_bpda(model, ["quantize", "model.model.quantize"]) == ["model.model.quantize"]
    inner = model.model.model
    assert isinstance(inner.quantize, IdentityBackward)
    assert not isinstance(inner.quantize.module, IdentityBackward)
    assert isinstance(inner.net[1], IdentityBackward)  # wrapped as asked, though it changes the shape
    assert apply_bpda(model, "quantize") == ["model.model.quantize"]
    with pytest.raises(RobevalError, match="input's shape"):
        model(x)
    inner.net._modules["1"] = inner.net._modules["1"].module
    assert torch.equal(model(x), before)
    assert apply_bpda(model, ["net", "net.0"]) == ["model.model.net", "model.model.net.0"]  # nested: both
    assert isinstance(inner.net, IdentityBackward) and isinstance(inner.net.module[0], IdentityBackward)


def test_declared_names_are_read_from_the_model_or_an_inner_wrapped_one() -> None:
    net = quantized_net()
    assert declared_bpda(net) == ()
    net.bpda_modules = ("quantize",)
    wrapped = Normalize(net, 0.5, 0.5)
    assert declared_bpda(wrapped) == ("quantize",)
    wrapped.bpda_modules = ["net", "quantize"]
    assert declared_bpda(PassCounter(wrapped)) == ("net", "quantize")
    net.bpda_modules = 3
    with pytest.raises(RobevalError, match="bpda_modules must be a list"):
        declared_bpda(wrapped)


FACTORY = '''
import torch
from torch import nn

class Quantized(nn.Module):
    def __init__(self):
        super().__init__()
        self.quantize = Round()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.quantize(x).flatten(1))

class Round(nn.Module):
    def forward(self, x):
        return torch.round(7 * x) / 7

def factory(bpda="quantize"):
    torch.manual_seed(0)
    names = [n for n in bpda.split("+") if n]
    return Quantized(), {"mean": 0.5, "std": 0.5, "bpda": names}

def plain():
    return Quantized()
'''


def test_factory_declared_names_reach_the_loaded_model(tmp_path: Path) -> None:
    path = tmp_path / "defence.py"
    path.write_text(FACTORY)
    loaded = load_model(f"{path}:factory")
    assert loaded.bpda == ("quantize",)
    assert loaded.model.bpda_modules == ("quantize",)
    assert load_model(f"{path}:plain").bpda == ()
    module = robeval.load_model(f"{path}:factory")
    assert declared_bpda(module) == ("quantize",)
    x = torch.rand(8, 1, 8, 8)
    before = module(x)
    assert apply_bpda(module, declared_bpda(module)) == ["model.quantize"]  # under Normalize
    assert torch.equal(module(x), before)
    assert torch.count_nonzero(input_gradient(module, x)) > 0


def test_factory_bpda_names_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "defence.py"
    path.write_text(FACTORY)
    with pytest.raises(RobevalError, match=r"defence\.py:factory's info 'bpda'.*did you mean 'quantize'"):
        load_model(f"{path}:factory:bpda=quantise")
    bad = tmp_path / "bad.py"
    bad.write_text("from torch import nn\ndef factory():\n    return nn.Identity(), {'bpda': [1]}\n")
    with pytest.raises(RobevalError, match=r"info 'bpda' must be a list of dotted module names"):
        load_model(f"{bad}:factory")
