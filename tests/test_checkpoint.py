"""Checkpoint save/load, its failure modes (incl. malicious pickles) and load_model."""

from __future__ import annotations

import builtins
import dataclasses
import os
import pickle
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from robeval.errors import RobevalError
from robeval.models import (
    CheckpointMeta,
    LoadedModel,
    Normalize,
    build_model,
    checkpoint_sha256,
    load_checkpoint,
    load_model,
    resolve_arch,
    save_checkpoint,
)
from robeval.models import checkpoint as checkpoint_module
from robeval.models.checkpoint import weights_sha256
from robeval.version import __version__

Saved = tuple[Path, Normalize, CheckpointMeta]


def make_meta(
    arch: str = "small-cnn", channels: int = 1, size: int = 8, **changes: Any
) -> CheckpointMeta:
    name, args = resolve_arch(arch)
    meta = CheckpointMeta(
        arch=name,
        arch_args=args,
        dataset="digits",
        classes=tuple(str(i) for i in range(10)),
        input_shape=(channels, size, size),
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
        train_spec={"epochs": 1, "lr": 0.01, "objective": {"name": "ce", "eps": [0.1, 0.2]}},
        metrics={"test_acc": 0.97},
        robeval_version=__version__,
    )
    return dataclasses.replace(meta, **changes)


def make_model(meta: CheckpointMeta) -> Normalize:
    torch.manual_seed(0)
    channels, size, _ = meta.input_shape
    net = build_model(
        meta.arch,
        in_channels=channels,
        num_classes=len(meta.classes),
        input_size=size,
        **meta.arch_args,
    )
    return Normalize(net, meta.mean, meta.std)


@pytest.fixture
def saved(tmp_path: Path) -> Saved:
    meta = make_meta()
    model = make_model(meta)
    path = save_checkpoint(tmp_path / "runs" / "digits.pt", model, meta)
    return path, model, meta


@pytest.mark.parametrize(
    ("arch", "channels", "size"),
    [
        ("small-cnn", 1, 8),
        ("mnist-cnn:activation=gelu,hidden=32", 1, 28),
        ("resnet18:width=8", 3, 32),
    ],
)
def test_round_trip(tmp_path: Path, arch: str, channels: int, size: int) -> None:
    meta = make_meta(arch, channels, size)
    model = make_model(meta).eval()
    if arch.startswith("resnet"):  # make BatchNorm running stats non-trivial
        model.train()
        model(torch.rand(4, channels, size, size))
        model.eval()
    path = save_checkpoint(tmp_path / "m.pt", model, meta)
    loaded, loaded_meta = load_checkpoint(path)
    assert isinstance(loaded, Normalize)
    assert loaded_meta == meta
    assert not loaded.training and not any(m.training for m in loaded.modules())
    assert all(p.requires_grad for p in loaded.parameters())
    x = torch.rand(3, channels, size, size)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_saves_inner_net_state_and_plain_meta(saved: Saved) -> None:
    path, model, meta = saved
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "robeval.checkpoint" and raw["format_version"] == 1
    assert set(raw["state_dict"]) == set(model.model.state_dict())
    assert raw["meta"]["input_shape"] == [1, 8, 8]
    assert raw["meta"]["train_spec"]["objective"]["eps"] == [0.1, 0.2]
    # Saving the bare net gives the same weights.
    bare = save_checkpoint(path.with_name("bare.pt"), model.model, meta)
    assert set(torch.load(bare, weights_only=True)["state_dict"]) == set(raw["state_dict"])


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    meta = make_meta()
    model = make_model(meta)
    path = save_checkpoint(tmp_path / "a" / "b" / "m.pt", model, meta)
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.pt"]
    save_checkpoint(path, model, meta)  # overwriting works too
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.pt"]


def test_crash_during_save_keeps_old_file(
    saved: Saved, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, model, meta = saved
    before = path.read_bytes()

    def crash(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, meta)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_meta_must_be_plain(tmp_path: Path) -> None:
    meta = make_meta(train_spec={"out": Path("x")})
    with pytest.raises(TypeError, match="train_spec.out is a .*Path"):
        save_checkpoint(tmp_path / "m.pt", make_model(meta), meta)
    assert not (tmp_path / "m.pt").exists()


def test_normalize_stats_must_match_meta(tmp_path: Path) -> None:
    meta = make_meta()
    model = Normalize(make_model(meta).model, (0.1,), (0.25,))
    with pytest.raises(ValueError, match="mean"):
        save_checkpoint(tmp_path / "m.pt", model, meta)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RobevalError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(RobevalError, match="not a file"):
        load_checkpoint(tmp_path)


def _corrupt(saved: Saved, kind: str) -> Path:
    path = saved[0]
    data = path.read_bytes()
    bad = path.with_name(f"{kind}.pt")
    contents = {
        "truncated": data[: len(data) // 2],
        "random": random.Random(0).randbytes(4096),
        "empty": b"",
        "text": b"hello, I am not a checkpoint\n",
        "zip-tail": data[len(data) // 2 :],
    }[kind]
    bad.write_bytes(contents)
    return bad


@pytest.mark.parametrize("kind", ["truncated", "random", "empty", "text", "zip-tail"])
def test_unreadable_files(saved: Saved, kind: str) -> None:
    bad = _corrupt(saved, kind)
    unreadable = "is not a readable robeval checkpoint .truncated or corrupt"
    with pytest.raises(RobevalError, match=unreadable):
        load_checkpoint(bad)


def test_plain_state_dict_is_rejected(tmp_path: Path) -> None:
    net = build_model("small-cnn", in_channels=1, num_classes=10, input_size=8)
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    no_format = "not a robeval checkpoint .no 'format' key.*third-party"
    with pytest.raises(RobevalError, match=no_format):
        load_checkpoint(tmp_path / "weights.pth")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(RobevalError, match="no 'format' key"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"format": "lightning"}, tmp_path / "other.pt")
    with pytest.raises(RobevalError, match="format 'lightning'"):
        load_checkpoint(tmp_path / "other.pt")


def _rewrite(path: Path, **changes: Any) -> Path:
    raw = torch.load(path, weights_only=True)
    raw.update(changes)
    out = path.with_name("edited.pt")
    torch.save(raw, out)
    return out


def test_future_format_version(saved: Saved) -> None:
    with pytest.raises(RobevalError, match="format_version 2, newer .*upgrade robeval"):
        load_checkpoint(_rewrite(saved[0], format_version=2))
    with pytest.raises(RobevalError, match="invalid format_version"):
        load_checkpoint(_rewrite(saved[0], format_version="one"))


def test_mismatched_state_dict(saved: Saved) -> None:
    path, _, _ = saved
    other = build_model("small-cnn:c1=8", in_channels=1, num_classes=10, input_size=8)
    with pytest.raises(RobevalError, match=r"do not match .*'small-cnn'.*shape mismatches"):
        load_checkpoint(_rewrite(path, state_dict=other.state_dict()))
    mnist = build_model("mnist-cnn", in_channels=1, num_classes=10, input_size=28)
    with pytest.raises(RobevalError, match=r"missing keys features.0.weight.*unexpected keys"):
        load_checkpoint(_rewrite(path, state_dict=mnist.state_dict()))


def test_bad_meta(saved: Saved) -> None:
    path, _, meta = saved
    broken = meta.to_dict()
    del broken["classes"]
    with pytest.raises(RobevalError, match="invalid metadata .meta lacks classes"):
        load_checkpoint(_rewrite(path, meta=broken))
    unknown_arch = {**meta.to_dict(), "arch": "vit-huge"}
    with pytest.raises(RobevalError, match="cannot rebuild .*unknown architecture 'vit-huge'"):
        load_checkpoint(_rewrite(path, meta=unknown_arch))


class _SystemCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _write_torch_zip(path: Path, payload: Any) -> None:
    torch.save(payload, path)


def _write_torch_p2(path: Path, payload: Any) -> None:
    torch.save(payload, path, pickle_protocol=2)


def _write_torch_legacy(path: Path, payload: Any) -> None:
    torch.save(payload, path, _use_new_zipfile_serialization=False)


def _write_pickle(path: Path, payload: Any) -> None:
    path.write_bytes(pickle.dumps(payload, protocol=2))


def _write_pickle_default(path: Path, payload: Any) -> None:
    path.write_bytes(pickle.dumps(payload))


@pytest.mark.parametrize("gadget", [_SystemCall, _Exec])
@pytest.mark.parametrize(
    "writer",
    [_write_torch_zip, _write_torch_p2, _write_torch_legacy, _write_pickle, _write_pickle_default],
)
def test_malicious_pickle_never_runs(
    tmp_path: Path, saved: Saved, gadget: type, writer: Any
) -> None:
    marker = tmp_path / "MARKER"
    raw = torch.load(saved[0], weights_only=True)
    raw["meta"] = gadget(marker)  # hidden inside an otherwise valid checkpoint
    evil = tmp_path / "evil.pt"
    writer(evil, raw)
    with pytest.raises(RobevalError) as info:
        load_checkpoint(evil)
    assert not marker.exists()
    if writer is not _write_pickle_default:  # protocol 5 framing is refused before any GLOBAL
        assert "refusing to load" in str(info.value)
        assert "weights_only=True" in str(info.value)
    with pytest.raises(RobevalError):
        load_model(str(evil))
    assert not marker.exists()


def test_checkpoint_sha256(saved: Saved) -> None:
    import hashlib

    path = saved[0]
    assert checkpoint_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert checkpoint_sha256(path, chunk_size=7) == checkpoint_sha256(path)


def test_load_model_from_checkpoint_path(saved: Saved) -> None:
    path, model, meta = saved
    for source in (str(path), f"checkpoint:{path}"):
        loaded = load_model(source)
        assert isinstance(loaded, LoadedModel)
        assert loaded.name == "digits" and loaded.source == source and loaded.meta == meta
        assert loaded.identity == f"weights-sha256:{weights_sha256(model)}"
        assert not loaded.model.training
        x = torch.rand(2, 1, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(loaded.model(x), model.eval()(x))
    # Any existing file counts as a checkpoint path, whatever its suffix.
    odd = path.with_name("digits.weights")
    odd.write_bytes(path.read_bytes())
    odd_loaded = load_model(str(odd))
    assert odd_loaded.identity == f"weights-sha256:{weights_sha256(odd_loaded.model)}" == load_model(str(path)).identity


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(RobevalError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"))
    typo = "unknown model source 'checkpiont'; did you mean 'checkpoint'"
    with pytest.raises(RobevalError, match=typo):
        load_model("checkpiont:x.pt.gz")
    with pytest.raises(RobevalError, match="unknown model source 'tim'"):
        load_model("tim:resnet50")
    with pytest.raises(RobevalError, match="neither an existing file nor PREFIX:NAME"):
        load_model("resnet50")
    with pytest.raises(RobevalError, match="does not exist"):
        load_model(f"checkpoint:{tmp_path / 'missing.pt'}")
    with pytest.raises(RobevalError, match="unknown device"):
        load_model(str(tmp_path / "missing.pt"), device="gpu0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_load_model_on_cuda(saved: Saved) -> None:
    loaded = load_model(str(saved[0]), device="cuda")
    assert all(p.is_cuda for p in loaded.model.parameters())
    assert loaded.model.mean.is_cuda
    assert loaded.model(torch.rand(2, 1, 8, 8, device="cuda")).shape == (2, 10)


def test_identity_follows_the_weights_not_the_file(tmp_path) -> None:
    """Retraining with the same seed gives the same identity (so the same result-cache keys
    and attack seeds) although the files differ (the metadata records the training time)."""
    from robeval.models import load_model
    from robeval.train import TrainSpec, train

    spec = {"dataset": "digits", "arch": "small-cnn", "epochs": 1, "n_train": 100, "device": "cpu"}
    a = train(TrainSpec(**spec, seed=1, out=str(tmp_path / "a.pt"))).checkpoint
    b = train(TrainSpec(**spec, seed=1, out=str(tmp_path / "b.pt"))).checkpoint
    c = train(TrainSpec(**spec, seed=2, out=str(tmp_path / "c.pt"))).checkpoint
    assert a.read_bytes() != b.read_bytes()
    assert load_model(str(a)).identity == load_model(str(b)).identity != load_model(str(c)).identity
