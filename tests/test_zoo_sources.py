"""timm, RobustBench and ONNX model sources: each loads a model the test writes in that
format, and the loaded model's logits equal the original's."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import robeval
from robeval.errors import RobevalError
from robeval.listing import listing
from robeval.models import Normalize, load_model
from robeval.models.sources import SourceContext

timm = pytest.importorskip("timm", reason="timm comes with robeval[zoo]")


def test_timm_checkpoint_matches_with_its_own_normalisation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=10).eval()
    path = tmp_path / "r10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    config = timm.data.resolve_data_config({}, model=net)
    x = torch.rand(2, 3, 32, 32)
    loaded = load_model(f"timm:resnet10t:checkpoint={path},num_classes=10")
    with torch.no_grad():
        expected = Normalize(net, config["mean"], config["std"])(x)
        assert torch.allclose(loaded.model(x), expected, atol=1e-5)
    assert loaded.identity.startswith("timm:resnet10t:sha256:")
    with pytest.raises(RobevalError, match="does not fit"):
        load_model(f"timm:resnet10t:checkpoint={path}")  # 1000 classes by default
    with pytest.raises(RobevalError, match="unknown timm model"):
        load_model("timm:resnet10q")
    with pytest.warns(UserWarning, match="randomly initialised"):
        load_model("timm:resnet10t:num_classes=10")


def test_timm_fixed_input_size_is_resized_inside_the_model(tmp_path: Path) -> None:
    """A ViT made for 224 x 224 takes 32 x 32 images: they are resized (bilinearly,
    differentiably) to the model's size, so attack budgets stay in the data set's pixels."""
    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, depth=2).eval()
    path = tmp_path / "vit.pt"
    torch.save(net.state_dict(), path)
    with pytest.raises(RobevalError, match="does not fit"):  # 12 blocks by default, the file has 2
        load_model(f"timm:vit_tiny_patch16_224:checkpoint={path},num_classes=10")
    net12 = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10).eval()
    torch.save(net12.state_dict(), path)
    loaded = load_model(f"timm:vit_tiny_patch16_224:checkpoint={path},num_classes=10")
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    big = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    expected = net12((big - 0.5) / 0.5)
    got = loaded.model(x)
    assert torch.allclose(got, expected, atol=1e-4)
    (g,) = torch.autograd.grad(got.sum(), x)
    assert g.shape == x.shape and g.abs().sum() > 0
    plain = load_model(f"timm:vit_tiny_patch16_224:checkpoint={path},num_classes=10,input_size=none")
    with torch.no_grad(), pytest.raises((AssertionError, RuntimeError)):
        plain.model(x)  # without the resize the ViT refuses 32 x 32 inputs


def _robustbench_entry() -> nn.Module:
    """RobustBench's own constructor of the cifar10/Linf entry Ding2020MMA (WRN-28-4)."""
    from robeval.models.zoo import import_robustbench

    _, zoo, enums = import_robustbench()
    entry = zoo[enums.BenchmarkDataset("cifar10")][enums.ThreatModel("Linf")]["Ding2020MMA"]
    torch.manual_seed(0)
    return entry["model"]().eval()


def test_robustbench_loads_its_layout_without_downloading(tmp_path: Path, monkeypatch) -> None:
    if importlib.util.find_spec("robustbench") is None:  # it does not import without our shim
        pytest.skip("robustbench comes with robeval[zoo]")
    net = _robustbench_entry()
    folder = tmp_path / "zoo" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, folder / "Ding2020MMA.pt")
    x = torch.rand(2, 3, 32, 32)
    sources = [f"robustbench:Ding2020MMA:model_dir={tmp_path / 'zoo'}",
               "robustbench:Ding2020MMA:dataset=cifar10,threat_model=linf"]
    contexts = [SourceContext(), SourceContext(dataset="cifar10", threat_model="Linf", model_dir=str(tmp_path / "zoo"))]
    for source, context in zip(sources, contexts, strict=True):
        loaded = load_model(source, context=context)
        with torch.no_grad():
            assert torch.allclose(loaded.model(x), net(x), atol=1e-5), source
        assert loaded.meta is not None and loaded.meta.dataset == "cifar10" and loaded.meta.input_shape == (3, 32, 32)
        assert loaded.identity.startswith("robustbench:cifar10/Linf/Ding2020MMA:sha256:")
    # the shim made robustbench importable; `autoattack` is pyautoattack
    assert sys.modules["autoattack"].__name__ == "pyautoattack"

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    import robustbench.utils

    monkeypatch.setattr(robustbench.utils, "download_gdrive_new", no_download)
    expected = tmp_path / "empty" / "cifar10" / "L2" / "Ding2020MMA.pt"
    with pytest.raises(RobevalError, match="does not exist") as info:
        load_model(f"robustbench:Ding2020MMA:threat_model=L2,model_dir={tmp_path / 'empty'}")
    assert str(expected) in str(info.value)
    with pytest.raises(RobevalError, match="unknown RobustBench cifar10/Linf model"):
        load_model(f"robustbench:Ding2020MM:model_dir={tmp_path / 'zoo'}")
    with pytest.raises(RobevalError, match="no threat model"):
        load_model("robustbench:Ding2020MMA:threat_model=l1")


def test_robustbench_through_the_cli_flags(tmp_path: Path) -> None:
    """`robeval run robustbench:NAME --dataset cifar10 --threat-model --model-dir` end to
    end, on a CIFAR-10 test batch the test writes in the python-pickle format."""
    if importlib.util.find_spec("robustbench") is None:
        pytest.skip("robustbench comes with robeval[zoo]")
    import pickle

    import numpy as np
    from typer.testing import CliRunner

    from robeval.cli import app

    net = _robustbench_entry()
    models = tmp_path / "zoo" / "cifar10" / "L2"
    models.mkdir(parents=True)
    torch.save(net.state_dict(), models / "Ding2020MMA.pt")
    data = tmp_path / "data" / "cifar-10-batches-py"
    data.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (6, 3072), dtype=np.uint8)
    (data / "test_batch").write_bytes(pickle.dumps({b"data": images, b"labels": [0, 1, 2, 3, 4, 5]}, protocol=2))
    (data / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}, protocol=2))
    out = tmp_path / "run"
    args = ["run", "robustbench:Ding2020MMA", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"),
            "--threat-model", "L2", "--model-dir", str(tmp_path / "zoo"), "--attack", "fgm", "--eps", "0,0.5",
            "--n", "6", "--out", str(out), "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    frame = __import__("pandas").read_csv(out / "results.csv")
    assert list(frame["eps"]) == [0.0, 0.5] and (frame["n"] == 6).all()
    x = torch.from_numpy(images.reshape(6, 3, 32, 32)).float() / 255
    with torch.no_grad():
        clean = float((net(x).argmax(1) == torch.arange(6)).float().mean())
    assert frame["clean_acc"].iloc[0] == pytest.approx(clean)  # the zoo model itself was evaluated
    other_out = [str(tmp_path / "run2") if a == str(out) else a for a in args[8:]]  # another run: another folder
    missing = CliRunner().invoke(app, [*args[:6], "--threat-model", "Linf", *other_out])
    assert missing.exit_code != 0 and str(tmp_path / "zoo" / "cifar10" / "Linf" / "Ding2020MMA.pt") in missing.output
    assert "Traceback" not in missing.output


def test_robustbench_imports_without_pkg_resources_and_autoattack() -> None:
    """What a fresh install has (setuptools >= 81, PyPI's pyautoattack): the stand-in and
    the alias let robustbench import, and the stand-in finds robustbench's data files."""
    if importlib.util.find_spec("robustbench") is None:
        pytest.skip("robustbench comes with robeval[zoo]")
    code = (
        "import sys; sys.modules['pkg_resources'] = None; sys.modules['autoattack'] = None\n"
        "from robeval.models.zoo import import_robustbench\n"
        "import_robustbench()\n"
        "import pathlib, robustbench.loaders as L, pkg_resources\n"
        "got = pkg_resources.resource_filename('robustbench.loaders', 'helper_files/x.txt')\n"
        "assert got == str(pathlib.Path(L.__file__).parent / 'helper_files/x.txt'), got\n"
        "assert sys.modules['autoattack'].__name__ == 'pyautoattack'\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def _onnx_file(tmp_path: Path) -> tuple[nn.Module, Path]:
    pytest.importorskip("onnx", reason="onnx comes with robeval[zoo]")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 10)).eval()
    path = tmp_path / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(2, 1, 8, 8),), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
    return net, path


def test_onnx_converted_and_runtime_backends_match(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx2torch")
    net, path = _onnx_file(tmp_path)
    x = torch.rand(5, 1, 8, 8, requires_grad=True)
    converted = load_model(f"onnx:{path}")
    runtime = load_model(f"onnx:{path}:backend=runtime")
    assert not converted.black_box and runtime.black_box
    with torch.no_grad():
        assert torch.allclose(converted.model(x), net(x), atol=1e-5)
        assert torch.allclose(runtime.model(x), net(x), atol=1e-5)
        normed = load_model(f"onnx:{path}:mean=0.3,std=0.4")
        assert torch.allclose(normed.model(x), Normalize(net, [0.3], [0.4])(x), atol=1e-5)
    # gradients flow through the conversion and equal the original's
    (g,) = torch.autograd.grad(converted.model(x).sum(), x)
    (g_ref,) = torch.autograd.grad(net(x).sum(), x)
    assert torch.allclose(g, g_ref, atol=1e-5)
    assert converted.identity == runtime.identity and converted.identity.startswith("onnx:sha256:")


def test_onnx_black_box_takes_only_gradient_free_attacks(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    _, path = _onnx_file(tmp_path)
    with pytest.raises(RobevalError, match="black box .*pgd.*gaussian"):
        robeval.evaluate(models=[f"onnx:{path}:backend=runtime"], attacks=["gaussian", "pgd"], eps="0.1",
                         dataset="digits", n=10, device="cpu", out=str(tmp_path / "bad"))
    df = robeval.evaluate(models=[f"onnx:{path}:backend=runtime"], attacks=["gaussian:samples=2"],
                          eps="0,0.3", dataset="digits", n=10, device="cpu", out=str(tmp_path / "run"),
                          )
    assert set(df["eps"]) == {0.0, 0.3} and (df["n"] == 10).all()
    tags = dict(listing("attacks"))
    assert "gradient-free" in tags["gaussian"] and "gradient-free" in tags["sfa"]
    assert not any("gradient-free" in tags[name] for name in ("pgd", "deepfool", "cw", "adef", "autoattack"))


def test_analyses_refuse_a_black_box_with_one_line(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from typer.testing import CliRunner

    from robeval.cli import app

    _, path = _onnx_file(tmp_path)
    box = f"onnx:{path}:backend=runtime"
    for args in (["gradients", box, "--dataset", "digits", "--n", "5"],
                 ["spectrum", box, "--dataset", "digits", "--eps", "0.1", "--n", "5"],
                 ["classes", box, "--dataset", "digits", "--steps", "2"]):
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / args[0])])
        assert result.exit_code != 0 and "black box" in result.output and "Traceback" not in result.output, args
