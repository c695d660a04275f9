"""``wrn``: the Wide ResNet of Zagoruyko & Komodakis (2016) in RobustBench's layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robeval.errors import RobevalError
from robeval.models import build_model, resolve_arch


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_wrn_28_10_parameter_count_and_layout() -> None:
    model = build_model("wrn:depth=28,width=10", in_channels=3, num_classes=10, input_size=32)
    assert n_params(model) == 36_479_194  # RobustBench's / TRADES's WRN-28-10
    assert [len(g.layer) for g in (model.block1, model.block2, model.block3)] == [4, 4, 4]
    assert model.block3.layer[0].conv1.out_channels == 640 and model.fc.in_features == 640
    assert resolve_arch("wrn") == ("wrn", {"activation": "relu", "depth": 28, "width": 10, "dropout": 0.0})


def test_wrn_output_shape_and_feature_map() -> None:
    model = build_model("wrn:depth=16,width=2", in_channels=3, num_classes=7, input_size=32).eval()
    seen: list[tuple[int, ...]] = []
    model.block3.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    with torch.no_grad():
        assert model(torch.rand(3, 3, 32, 32)).shape == (3, 7)
    assert seen == [(3, 128, 8, 8)]  # 64k channels, the paper's 8x8 map before pooling


def test_tiny_wrn_forward_backward() -> None:
    torch.manual_seed(0)
    model = build_model("wrn:depth=10,width=1", in_channels=1, num_classes=4, input_size=8)
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 4)
    F.cross_entropy(out, torch.tensor([0, 3])).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch", ["wrn:depth=27", "wrn:depth=4", "wrn:width=0", "wrn:dropout=1.0"])
def test_bad_arch_args_are_refused(arch: str) -> None:
    with pytest.raises(RobevalError, match="depth|width|dropout"):
        build_model(arch, in_channels=3, num_classes=10, input_size=32)


def test_dropout_only_in_train_mode() -> None:
    model = build_model("wrn:depth=10,width=1,dropout=0.5", in_channels=3, num_classes=10, input_size=16)
    x = torch.rand(4, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


# RobustBench's wide_resnet.py (after TRADES and the paper's code), copied as the reference:
# the same state_dict must load and give the same logits.
class _RefBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(
            in_planes, out_planes, 1, stride=stride, padding=0, bias=False) or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class _RefGroup(nn.Module):
    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            _RefBlock(i == 0 and in_planes or out_planes, out_planes, i == 0 and stride or 1) for i in range(nb_layers)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class _RefWideResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, widen_factor: int) -> None:
        super().__init__()
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = _RefGroup(n, ch[0], ch[1], 1)
        self.block2 = _RefGroup(n, ch[1], ch[2], 2)
        self.block3 = _RefGroup(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        self.nChannels = ch[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        return self.fc(out.view(-1, self.nChannels))


@pytest.mark.parametrize("width", [1, 2])  # width 1: block1's first block has no shortcut conv
def test_matches_robustbench_reference(width: int) -> None:
    torch.manual_seed(0)
    ours = build_model(f"wrn:depth=16,width={width}", in_channels=3, num_classes=10, input_size=32)
    ref = _RefWideResNet(16, 10, width)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ours.train()
    ours(torch.rand(8, 3, 32, 32))  # non-trivial BN running statistics
    ref.load_state_dict(ours.state_dict())
    ours.eval(), ref.eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))
