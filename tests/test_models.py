"""Architectures, build_model/resolve_arch and the Normalize wrapper."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robeval.errors import RobevalError
from robeval.models import (
    ACTIVATIONS,
    Normalize,
    arch_defaults,
    architectures,
    build_model,
    make_activation,
    resolve_arch,
)
from robeval.models.sgr import SGR_PARAMS

#: A size every architecture accepts (mnist-cnn and sgr-cnn need at least 16).
SIZE = 32


def fast_args(arch: str) -> dict[str, int]:
    """Shrink wide and deep nets (any arch with a ``width`` or ``depth`` arg) so the
    loop tests stay fast (WRN-10-1 instead of WRN-28-10)."""
    defaults = arch_defaults(arch)
    if "depth" in defaults:
        return {"depth": 10, "width": 1}
    return {"width": 8} if "width" in defaults else {}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", architectures.names())
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_architecture_builds_and_backprops(arch: str, activation: str, channels: int) -> None:
    torch.manual_seed(0)
    model = build_model(
        arch,
        in_channels=channels,
        num_classes=7,
        input_size=SIZE,
        activation=activation,
        **fast_args(arch),
    ).eval()
    x = torch.rand(2, channels, SIZE, SIZE, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 7)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch", architectures.names())
def test_train_mode_forward(arch: str) -> None:
    model = build_model(arch, in_channels=3, num_classes=4, input_size=SIZE, **fast_args(arch))
    model.train()
    assert model(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 4)


def test_activation_is_used() -> None:
    model = build_model("mnist-cnn:activation=gelu", in_channels=1, num_classes=10, input_size=28)
    kinds = {type(m) for m in model.modules()}
    assert nn.GELU in kinds and nn.ReLU not in kinds
    assert isinstance(make_activation("SiLU"), nn.SiLU)


def test_resnet18_cifar_parameter_count() -> None:
    model = build_model("resnet18", in_channels=3, num_classes=10, input_size=32)
    assert isinstance(model.maxpool, nn.Identity) and model.conv1.kernel_size == (3, 3)
    assert n_params(model) == 11_173_962


def test_resnet_stem_auto_by_input_size() -> None:
    big = build_model("resnet18", in_channels=3, num_classes=10, input_size=224)
    assert big.conv1.kernel_size == (7, 7) and isinstance(big.maxpool, nn.MaxPool2d)
    narrow = build_model("resnet18:width=16", in_channels=3, num_classes=10, input_size=32)
    assert narrow.fc.in_features == 128


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_imagenet_matches_torchvision(depth: int) -> None:
    torchvision = pytest.importorskip("torchvision")
    ours = build_model(
        f"resnet{depth}:stem=imagenet", in_channels=3, num_classes=1000, input_size=224
    ).eval()
    theirs = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    if depth == 50:
        assert n_params(ours) == 25_557_032
    ours.load_state_dict(theirs.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_mnist_cnn_layout() -> None:
    model = build_model("mnist-cnn", in_channels=1, num_classes=10, input_size=28)
    assert (model.conv1.out_channels, model.conv2.out_channels) == (10, 20)
    assert model.conv1.kernel_size == (5, 5) and model.conv1.padding == (0, 0)
    assert (model.fc1.in_features, model.fc1.out_features) == (320, 50)
    assert model.fc2.out_features == 10
    assert model.dropout.p == 0.5 and model.conv2_drop.p == 0.5
    small = build_model("mnist-cnn", in_channels=1, num_classes=10, input_size=16)
    assert small.fc1.in_features == 20 and small(torch.rand(1, 1, 16, 16)).shape == (1, 10)


def test_mnist_cnn_too_small_names_minimum() -> None:
    with pytest.raises(RobevalError, match="at least 16x16"):
        build_model("mnist-cnn", in_channels=1, num_classes=10, input_size=8)
    padded = build_model("mnist-cnn:padding=2", in_channels=1, num_classes=10, input_size=8)
    assert padded(torch.rand(1, 1, 8, 8)).shape == (1, 10)


def test_small_cnn_on_8x8_digits() -> None:
    model = build_model("small-cnn", in_channels=1, num_classes=10, input_size=8)
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 10)


@pytest.mark.parametrize(("params", "channels"), [("mnist", 1), ("cifar", 3)])
def test_sgr_cnn_widths(params: str, channels: int) -> None:
    for spec in (f"sgr-cnn:params={params}", "sgr-cnn"):  # "auto" picks by channels
        model = build_model(spec, in_channels=channels, num_classes=10, input_size=32)
        convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
        fcs = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
        assert tuple(convs + fcs) == (*SGR_PARAMS[params], 10)
    assert SGR_PARAMS["mnist"] == (32, 32, 64, 64, 200, 200)
    assert SGR_PARAMS["cifar"] == (64, 64, 128, 128, 256, 256)
    mnist = build_model("sgr-cnn", in_channels=1, num_classes=10, input_size=28)
    assert mnist.classifier[0].in_features == 64 * 4 * 4  # 28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4


def test_resolve_arch_fills_defaults() -> None:
    name, args = resolve_arch("MNIST-CNN:activation=GELU,hidden=100")
    assert name == "mnist-cnn"
    assert args == {
        "activation": "gelu",
        "c1": 10,
        "c2": 20,
        "hidden": 100,
        "dropout": 0.5,
        "padding": 0,
    }
    assert resolve_arch("sgr-cnn:dropout=0")[1]["dropout"] == 0.0
    assert resolve_arch("resnet18", width=32)[1] == {
        "activation": "relu",
        "stem": "auto",
        "width": 32,
    }


def test_build_model_overrides_win() -> None:
    model = build_model(
        "mnist-cnn:hidden=100", in_channels=1, num_classes=10, input_size=28, hidden=30
    )
    assert model.fc1.out_features == 30


@pytest.mark.parametrize(
    ("arch", "match"),
    [
        ("mnst-cnn", "did you mean 'mnist-cnn'"),
        ("mnist-cnn:activation=tanh", "unknown activation 'tanh'.*relu"),
        ("mnist-cnn:activation=rellu", "did you mean 'relu'"),
        ("mnist-cnn:hiden=3", "no arch arg 'hiden'; did you mean 'hidden'.*accepted"),
        ("resnet18:depth=3", "no arch arg 'depth'.*stem=auto, width=64"),
        ("mnist-cnn:hidden=big", "hidden .* must be an integer"),
        ("mnist-cnn:dropout=1.5", r"dropout .* must be in \[0, 1\)"),
        ("sgr-cnn:params=imagenet", "auto, mnist or cifar"),
        ("resnet50:stem=tiny", "auto, cifar or imagenet"),
    ],
)
def test_bad_arch_specs_raise_with_hint(arch: str, match: str) -> None:
    with pytest.raises(RobevalError, match=match):
        build_model(arch, in_channels=1, num_classes=10, input_size=28)


def test_bad_data_args() -> None:
    with pytest.raises(RobevalError, match="num_classes must be a positive integer"):
        build_model("small-cnn", in_channels=1, num_classes=0, input_size=28)


def test_normalize_matches_manual_normalisation() -> None:
    torch.manual_seed(0)
    net = build_model("small-cnn", in_channels=3, num_classes=5, input_size=8).eval()
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    wrapped = Normalize(net, mean, std)
    assert wrapped.model is net
    assert wrapped.mean.shape == (1, 3, 1, 1) and wrapped.std.shape == (1, 3, 1, 1)
    x = torch.rand(4, 3, 8, 8)
    manual = net((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    torch.testing.assert_close(wrapped(x), manual)
    # The buffers are not persistent: the wrapper's state is exactly the inner net's.
    assert set(wrapped.state_dict()) == {f"model.{k}" for k in net.state_dict()}


def test_normalize_scalar_and_bad_stats() -> None:
    net = nn.Identity()
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(Normalize(net, 0.5, 0.25)(x), (x - 0.5) / 0.25)
    with pytest.raises(RobevalError, match="std must be > 0"):
        Normalize(net, (0.5,), (0.0,))
    with pytest.raises(RobevalError, match="one value per channel"):
        Normalize(net, (0.5, 0.5), (1.0, 1.0, 1.0))
