"""Third-party model sources: torchvision, TorchScript, Python factories, plug-ins, and the
clean-accuracy sanity check that catches wrong normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import robeval
from robeval.errors import RobevalError
from robeval.listing import listing
from robeval.models import Normalize, load_model
from robeval.models.third_party import IMAGENET_MEAN, IMAGENET_STD, clean_accuracy_check

FACTORY_FILE = """
import torch
from torch import nn

def make(width=4, info=True):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(width * 64, 10))
    if not info:
        return net
    return net, {"mean": [0.3], "std": [0.4], "dataset": "digits", "input_shape": (1, 8, 8),
                 "classes": [str(i) for i in range(10)]}
"""


def _reference(width: int = 4) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(width * 64, 10))
    return Normalize(net, [0.3], [0.4]).eval()


def test_torchvision_state_dict_matches(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.get_model("resnet18", weights=None, num_classes=10).eval()
    weights = tmp_path / "r18.pt"
    torch.save(net.state_dict(), weights)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = Normalize(net, IMAGENET_MEAN, IMAGENET_STD)(x)
        loaded = load_model(f"torchvision:resnet18:weights={weights},num_classes=10")
        assert torch.allclose(loaded.model(x), expected, atol=1e-5)
        custom = load_model(f"torchvision:resnet18:weights={weights},num_classes=10,mean=0.5;0.5;0.5,std=0.5;0.5;0.5")
        assert torch.allclose(custom.model(x), Normalize(net, 0.5, 0.5)(x), atol=1e-5)
    assert loaded.identity.startswith("torchvision:resnet18:sha256:") and loaded.meta is None
    assert custom.identity != loaded.identity  # other normalisation, other cached results
    resized = load_model(f"torchvision:resnet18:weights={weights},num_classes=10,input_size=64")
    with torch.no_grad():
        big = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
        assert torch.allclose(resized.model(x), Normalize(net, IMAGENET_MEAN, IMAGENET_STD)(big), atol=1e-5)
    assert len({loaded.identity, custom.identity, resized.identity}) == 3
    with pytest.warns(UserWarning, match="randomly initialised"):
        load_model("torchvision:resnet18:num_classes=10")
    with pytest.raises(RobevalError, match="does not fit"):
        load_model(f"torchvision:resnet18:weights={weights}")  # 1000 classes by default


def test_torchscript_matches(tmp_path: Path) -> None:
    ref = _reference()
    path = tmp_path / "cnn.ts"
    torch.jit.script(ref.model).save(str(path))
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        raw = load_model(f"torchscript:{path}")
        assert torch.allclose(raw.model(x), ref.model(x), atol=1e-6)  # no normalisation by default
        normed = load_model(f"torchscript:{path}:mean=0.3,std=0.4")
        assert torch.allclose(normed.model(x), ref(x), atol=1e-6)
    assert raw.identity.startswith("sha256:") and raw.name == "cnn" and normed.identity != raw.identity


def test_python_factory_file_and_evaluate(tmp_path: Path) -> None:
    path = tmp_path / "my_model.py"
    path.write_text(FACTORY_FILE)
    x = torch.rand(3, 1, 8, 8)
    ref = _reference(width=6)
    with torch.no_grad():
        for source in (f"file:{path}:make:width=6", f"{path}:make:width=6"):
            loaded = load_model(source)
            assert torch.allclose(loaded.model(x), ref(x), atol=1e-6), source
            assert loaded.meta is not None and loaded.meta.dataset == "digits"
        plain = load_model(f"{path}:make:width=6,info=false")
        assert torch.allclose(plain.model(x), ref.model(x), atol=1e-6) and plain.meta is None
    # the data set comes from the factory's info dict
    df = robeval.evaluate(models=[f"{path}:make"], attacks=["fgsm"], eps="0.1", n=20, device="cpu",
                          out=str(tmp_path / "run"))
    assert len(df) == 1 and (df["dataset"] == "digits").all() and (df["n"] == 20).all()
    with pytest.raises(RobevalError, match="no function 'nope'"):
        load_model(f"{path}:nope")


def test_plugin_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fake_robeval_plugin.py").write_text(FACTORY_FILE)
    dist = tmp_path / "fake_robeval_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-robeval-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[robeval.models]\ntinycnn = fake_robeval_plugin:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = dict(listing("models"))
    assert "tinycnn" in rows["source: plugin"]
    loaded = load_model("plugin:tinycnn:width=5")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), _reference(width=5)(x), atol=1e-6)
    assert loaded.identity.startswith("plugin:tinycnn:fake-robeval-plugin==0.1")
    with pytest.raises(RobevalError, match="unknown model plug-in"):
        load_model("plugin:tinycnm")


@pytest.mark.parametrize("source", ["torchscript:{p}/missing.ts", "torchvision:resnet18:weights={p}/missing.pt",
                                    "file:{p}/missing.py:make", "{p}/missing.py:make"])
def test_missing_files_name_the_path(tmp_path: Path, source: str) -> None:
    with pytest.raises(RobevalError, match="missing") as info:
        load_model(source.format(p=tmp_path))
    assert str(tmp_path) in str(info.value) and "does not exist" in str(info.value)


class _ExpectsPixelScale(nn.Module):
    """A model trained on 0..255 pixel values (caffe style): it needs mean 0, std 1/255."""

    def __init__(self, trained: Normalize) -> None:
        super().__init__()
        self.trained = trained

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.trained(z / 255.0)


def test_clean_accuracy_check_catches_wrong_normalisation(digits_model, digits_test) -> None:
    x, y = digits_test
    assert isinstance(digits_model, Normalize)
    inner = _ExpectsPixelScale(digits_model).eval()
    right = Normalize(inner, 0.0, 1 / 255)
    assert clean_accuracy_check(right, x, y, chance=0.1) > 0.8
    wrong = Normalize(inner, IMAGENET_MEAN[:1], IMAGENET_STD[:1])  # the [0,1]-ImageNet convention
    with pytest.raises(RobevalError, match="near chance.*mean/std or input range"):
        clean_accuracy_check(wrong, x, y, chance=0.1)
    with pytest.raises(RobevalError, match="near chance"):
        clean_accuracy_check(inner, x, y, chance=0.1)  # not wrapped at all


def test_run_warns_when_clean_accuracy_is_near_chance(tmp_path, caplog) -> None:
    """A wrongly wrapped third-party model shows up as chance-level clean accuracy."""
    factory = tmp_path / "const.py"
    factory.write_text(
        "import torch\n"
        "class Const(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return 0 * x.flatten(1)[:, :1] + torch.arange(10.0, device=x.device)\n"
        "def make():\n"
        "    return Const(), {'dataset': 'digits', 'input_shape': (1, 8, 8), 'classes': [str(i) for i in range(10)]}\n"
    )
    import logging

    with caplog.at_level(logging.WARNING, logger="robeval.eval.evaluate"):
        robeval.evaluate(models=[f"{factory}:make"], attacks=["fgsm"], eps="0.1", n=40, out=str(tmp_path / "o"),
                         device="cpu")
    assert "near chance" in caplog.text


def test_normalize_refuses_images_with_other_channels() -> None:
    """A 3-channel mean must not broadcast a grey image into three channels silently."""
    net = Normalize(nn.Conv2d(3, 2, 3), [0.5, 0.4, 0.3], [0.2, 0.2, 0.2])
    net(torch.rand(1, 3, 8, 8))
    with pytest.raises(RobevalError, match="normalises 3 channels but got images with 1"):
        net(torch.rand(1, 1, 8, 8))
    grey = Normalize(nn.Conv2d(3, 2, 3), 0.5, 0.25)  # one value for all channels: no check
    assert grey(torch.rand(1, 3, 8, 8)).shape == (1, 2, 6, 6)
