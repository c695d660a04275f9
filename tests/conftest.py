"""Shared fixtures: one small model trained once per session on real data (the
scikit-learn 8x8 digits), so every attack test runs against a model that has
something to lose."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.fixture_seed import fixture_seed

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the data cache of the tests away from the user's ~/.cache."""
    monkeypatch.setenv("ROBEVAL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained for a few seconds on digits (test accuracy ~0.95); its seed is
    0 or ``$ROBEVAL_TEST_SEED`` (tests/fixture_seed.py)."""
    from robeval.train import TrainSpec, train

    out = tmp_path_factory.mktemp("ckpt") / "digits_small.pt"
    result = train(TrainSpec(dataset="digits", arch="small-cnn", epochs=8, batch_size=32, lr=3e-3,
                             seed=fixture_seed(), device="cpu", out=str(out)))
    assert result.metrics["test_acc"] > 0.85, result.metrics
    return result.checkpoint


@pytest.fixture(scope="session")
def digits_model(digits_checkpoint: Path) -> torch.nn.Module:
    import robeval

    return robeval.load_model(str(digits_checkpoint))


@pytest.fixture(scope="session")
def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    """256 seeded test digits that the model mostly classifies correctly."""
    import robeval

    return robeval.load_dataset("digits", split="test", n=256, seed=0)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (2 CPUs, no dashboard): robeval's
    ``ray_session`` reuses an initialised Ray instead of starting its own (~6 s each)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()
