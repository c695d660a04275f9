"""The GPU path of ``robeval run``, on the CPU: per-point random streams (the numbers do
not depend on the batch size), the device batch halved on out-of-memory, and ``--amp``.

The models here compute every sample alone (:class:`PerSample`), so their outputs are
bitwise independent of the batch they come in: neither mnist-cnn nor the digits CNN is
on this CPU (their fully connected layers' GEMM rounds differently for 5 rows than for
8, by ~1e-8), and what is tested is robeval's part, not the BLAS library's.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import Tensor, nn

import robeval
from robeval.attacks import get as get_attack
from robeval.attacks import rng
from robeval.attacks.rng import PointGenerator
from robeval.errors import RobevalError
from robeval.eval import cells as cells_module
from robeval.eval.cells import Cell
from robeval.eval.device_batch import device_batch
from robeval.eval.precision import Autocast, model_autocast
from robeval.eval.runner import attack_cells, predict, run_attack
from robeval.results.store import ResultStore
from robeval.results.store_rows import batch_tables
from robeval.results.tables import read_cells, results_frame, samples_frame

OOM_ABOVE = "ROBEVAL_TEST_OOM_ABOVE"  # the test model runs out of memory on gradient passes above this many
RUN = dict(attacks=["pgd:steps=3,restarts=2"], eps="0,0.1,0.2", n=24, device="cpu", checks="off")
VARYING = ["seconds", "batch_size_used"]  # results.csv columns allowed to differ between equivalent runs


class PerSample(nn.Module):
    """``model`` applied to one sample at a time; with ``ROBEVAL_TEST_OOM_ABOVE=k`` a
    gradient pass on more than ``k`` samples raises CUDA's out-of-memory error (as a
    backward pass that needs more memory than the device has)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        limit = int(os.environ.get(OOM_ABOVE, "0"))
        if limit and torch.is_grad_enabled() and x.requires_grad and len(x) > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (test: {len(x)} > {limit} samples)")
        return torch.cat([self.model(row) for row in x.split(1)])


def make(ckpt: str) -> tuple[nn.Module, dict]:
    """The ``file.py:factory`` source of the runs here: the digits CNN, per sample."""
    return PerSample(robeval.load_model(ckpt)).eval(), {"dataset": "digits", "input_shape": (1, 8, 8)}


def source(ckpt: Path) -> str:
    return f"{Path(__file__).resolve()}:make:ckpt={ckpt}"


def tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(out / "results.csv"), pd.read_csv(out / "samples.csv")


@pytest.fixture(scope="module")
def reference(digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run the others are compared with: --batch-size 8, no out-of-memory, fp32."""
    out = tmp_path_factory.mktemp("reference")
    robeval.evaluate(models=[source(digits_checkpoint)], batch_size=8, out=str(out), **RUN)
    return out


# -- per-point streams ---------------------------------------------------------------------


def test_each_row_draws_from_its_own_stream() -> None:
    seeds = [11, 22, 33]
    gen = PointGenerator(seeds, base_seed=5)
    drawn = rng.rand((3, 4), gen)
    for row, seed in zip(drawn, seeds, strict=True):
        assert torch.equal(row, torch.rand(4, generator=torch.Generator().manual_seed(seed)))
    again = rng.randn((2, 4), gen[torch.tensor([2, 0])])  # a subset continues the same streams
    alone = torch.Generator().manual_seed(33)
    torch.rand(4, generator=alone)
    assert torch.equal(again[0], torch.randn(4, generator=alone))
    assert gen.initial_seed() == 5 and isinstance(gen, torch.Generator)  # whole-batch code still works
    with pytest.raises(ValueError, match="number of points"):
        rng.rand((2, 4), gen)


def test_plain_generators_draw_as_torch_does() -> None:
    ours = rng.randn((3, 2, 5), torch.Generator().manual_seed(0))
    assert torch.equal(ours, torch.randn((3, 2, 5), generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("spec", [
    "pgd:steps=3,restarts=3", "pgd:norm=l2,steps=3", "uniform:samples=6", "gaussian:samples=6", "lrc:samples=4",
    "salt-and-pepper:steps=40",
])
def test_random_attacks_do_not_depend_on_the_device_batch(digits_model, digits_test, spec) -> None:
    model = PerSample(digits_model).eval()
    x, y = digits_test[0][:10], digits_test[1][:10]
    seeds = list(range(100, 110))
    attack = get_attack(spec)
    eps = {"pgd:norm=l2,steps=3": 1.0, "salt-and-pepper:steps=40": math.inf}.get(spec, 0.3)
    whole = attack(model, x, y, eps=eps, generator=PointGenerator(seeds, 7))
    split = torch.cat([attack(model, x[s], y[s], eps=eps, generator=PointGenerator(seeds[s], 7))
                       for s in (slice(0, 4), slice(4, 7), slice(7, 10))])
    assert torch.equal(whole, split)
    assert not torch.equal(whole, x)  # the attack did draw something


def test_one_generator_per_batch_would_depend_on_it(digits_model, digits_test) -> None:
    """What the per-point streams fix: with one stream, a point's start depends on its batch."""
    model, attack = PerSample(digits_model).eval(), get_attack("pgd:steps=1")
    x, y = digits_test[0][:10], digits_test[1][:10]
    whole = attack(model, x, y, eps=0.3, generator=torch.Generator().manual_seed(0))
    split = torch.cat([attack(model, x[s], y[s], eps=0.3, generator=torch.Generator().manual_seed(0))
                       for s in (slice(0, 5), slice(5, 10))])
    assert not torch.equal(whole, split)


def test_cell_keys_name_the_seeding_and_precision(monkeypatch) -> None:
    cell = Cell(model="m", model_identity="id", dataset="digits", attack="pgd", attack_params=(), norm="linf",
                eps=0.1, n=10, seed=0, batch_size=8)
    other_batch = Cell(**{**cell.__dict__, "batch_size": 5})
    assert other_batch.key != cell.key and other_batch.rng_key == cell.rng_key  # same streams, other store batches
    bf16 = Cell(**{**cell.__dict__, "amp": "bf16"})
    assert bf16.key != cell.key and bf16.rng_key == cell.rng_key  # keyed apart, paired draws
    before = cell.key
    monkeypatch.setattr(cells_module, "RNG", "per-batch")
    assert cell.key != before  # numbers of another seeding are never read back as these


def test_run_numbers_do_not_depend_on_the_batch_size(digits_checkpoint, reference, tmp_path) -> None:
    robeval.evaluate(models=[source(digits_checkpoint)], batch_size=5, out=str(tmp_path), **RUN)
    (results, samples), (ref_results, ref_samples) = tables(tmp_path), tables(reference)
    pd.testing.assert_frame_equal(samples, ref_samples)  # predictions and perturbation norms, point by point
    different = [*VARYING, "cell_key"]  # the store batches differ, so do the keys
    pd.testing.assert_frame_equal(results.drop(columns=different), ref_results.drop(columns=different))
    assert (results["robust_acc"] < results["clean_acc"]).any()


# -- the device batch ----------------------------------------------------------------------


def test_out_of_memory_halves_the_device_batch_and_changes_no_number(
    digits_checkpoint, reference, tmp_path, monkeypatch, caplog,
) -> None:
    monkeypatch.setenv(OOM_ABOVE, "3")
    robeval.evaluate(models=[source(digits_checkpoint)], batch_size=8, out=str(tmp_path), **RUN)
    (results, samples), (ref_results, ref_samples) = tables(tmp_path), tables(reference)
    pd.testing.assert_frame_equal(samples, ref_samples)
    pd.testing.assert_frame_equal(results.drop(columns=VARYING), ref_results.drop(columns=VARYING))
    attacked = results["eps"] > 0
    assert (results.loc[attacked, "batch_size_used"] == 2).all()  # 8 -> 4 -> 2
    assert (results.loc[~attacked, "batch_size_used"] == 8).all() and (ref_results["batch_size_used"] == 8).all()
    assert "out of device memory with 8 points at once; continuing with 4" in caplog.text
    with ResultStore(tmp_path / "store.sqlite") as store:
        assert "device_batches" in batch_tables(store)  # shipped back from Ray tasks with the batch


def test_transfer_halves_on_out_of_memory_and_says_so(digits_checkpoint, tmp_path, monkeypatch) -> None:
    """transfer.csv's ``batch_size_used`` is the halved device batch, and no number moves."""
    grid = dict(sources=[source(digits_checkpoint)], targets=[str(digits_checkpoint)], attacks=["fgsm"],
                eps="0,0.2", n=16, batch_size=8, device="cpu")
    plain = robeval.transfer(**grid, out=str(tmp_path / "plain"))
    monkeypatch.setenv(OOM_ABOVE, "3")
    halved = robeval.transfer(**grid, out=str(tmp_path / "halved"))
    numbers = ["robust_acc", "adv_acc", "clean_acc", "transfer_rate"]
    pd.testing.assert_frame_equal(halved[numbers], plain[numbers])
    attacked = halved["eps"] > 0
    assert (halved.loc[attacked, "batch_size_used"] == 2).all()  # 8 -> 4 -> 2
    assert (plain["batch_size_used"] == 8).all() and (halved.loc[~attacked, "batch_size_used"] == 8).all()
    written = pd.read_csv(tmp_path / "halved" / "transfer.csv")
    assert list(written["batch_size_used"]) == list(halved["batch_size_used"])


def test_predict_halves_on_out_of_memory_and_gives_up_at_one(digits_model, digits_test) -> None:
    x = digits_test[0][:20]

    class Limited(nn.Module):
        def __init__(self, limit: int) -> None:
            super().__init__()
            self.limit, self.inner = limit, PerSample(digits_model)

        def forward(self, x: Tensor) -> Tensor:
            if len(x) > self.limit:
                raise RuntimeError("CUDA error: out of memory")  # the older form of the error
            return self.inner(x)

    limited = Limited(5)
    assert torch.equal(predict(limited, x, 16, torch.device("cpu")), predict(digits_model, x, 1, torch.device("cpu")))
    assert device_batch(limited).limit == 4  # 16 -> 8 -> 4, kept for the model's later calls
    with pytest.raises(RobevalError, match="--batch-size"):
        predict(Limited(0), x, 16, torch.device("cpu"))


def test_the_clean_nonfinite_check_halves_on_out_of_memory(digits_model, digits_test) -> None:
    """The check run before any attack (NaN/inf logits on clean images) takes the same
    halving path as the attacks, so a large --batch-size cannot fail it on a GPU."""
    from robeval.eval.setup import nonfinite_images

    x = digits_test[0][:20].clone()
    x[[2, 7, 11]] = float("nan")

    class Limited(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = digits_model

        def forward(self, x: Tensor) -> Tensor:
            if len(x) > 5:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
            return self.inner(x)

    limited = Limited()
    assert nonfinite_images(limited, x, 16, torch.device("cpu")) == 3
    assert device_batch(limited).limit == 4  # 16 -> 8 -> 4


# -- --amp ---------------------------------------------------------------------------------


def attack_tables(model: nn.Module, x: Tensor, y: Tensor, out: Path, amp: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """results and samples of PGD with random starts at two eps, through the runner."""
    cpu = torch.device("cpu")
    attack, cells = attack_cells(model="m", identity="id", dataset="digits", attack_spec="pgd:steps=3",
                                 eps_grid=(0.1, 0.2), n=len(x), seed=0, batch_size=8, amp=amp)
    with ResultStore(out / "store.sqlite") as store:
        run_attack(store, model, attack, cells, x, y, predict(model, x, 8, cpu, amp=amp), batch_size=8, device=cpu,
                   n_classes=10)
        stored = read_cells(store, cells)
        return results_frame(store, cells, stored), samples_frame(cells, stored)


def test_amp_on_the_cpu_warns_runs_float32_and_is_keyed_apart(digits_model, digits_test, tmp_path) -> None:
    x, y = digits_test[0][:24], digits_test[1][:24]
    results, samples = attack_tables(digits_model, x, y, tmp_path / "fp32", "off")
    with pytest.warns(UserWarning, match="needs a CUDA device"):
        amp_results, amp_samples = attack_tables(digits_model, x, y, tmp_path / "bf16", "bf16")
    pd.testing.assert_frame_equal(amp_samples, samples)
    assert (amp_results["robust_acc"] == results["robust_acc"]).all() and (results["robust_acc"] < 1).all()
    assert not set(amp_results["cell_key"]) & set(results["cell_key"])


def test_autocast_only_on_cuda_and_float32_logits() -> None:
    assert isinstance(model_autocast("bf16", torch.device("cpu")), contextlib.nullcontext)
    assert isinstance(model_autocast("off", torch.device("cuda")), contextlib.nullcontext)
    with warnings.catch_warnings():  # torch warns when it has no CUDA; constructing it needs none
        warnings.simplefilter("ignore")
        assert isinstance(model_autocast("bf16", torch.device("cuda")), torch.autocast)
    half = nn.Linear(3, 2).to(torch.bfloat16)
    out = Autocast(half, "bf16", torch.device("cpu"))(torch.ones(1, 3, dtype=torch.bfloat16))
    assert out.dtype == torch.float32


def test_bad_amp_modes_are_refused(digits_checkpoint, tmp_path) -> None:
    with pytest.raises(RobevalError, match="--amp must be one of"):
        robeval.evaluate(models=[str(digits_checkpoint)], amp="fp8", out=str(tmp_path), **RUN)
    assert not (tmp_path / "store.sqlite").exists()
