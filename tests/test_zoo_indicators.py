"""The zoo of broken defences (tests/broken_defences.py) through `robeval run`: each fires
the indicator that catches it, the adaptive attack its finding names brings its accuracy
down to about the undefended network's, and plainly and adversarially trained models
raise no indicator over several seeds (false alarms are bugs as much as misses)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import robeval
from tests.fixture_seed import fixture_seed

FACTORY = Path(__file__).with_name("zoo_factory.py")
EPS = 0.2
RUN = dict(eps=f"0,{EPS}", n=96, batch_size=96, device="cpu", seed=0, check_samples=48)

# defence: (the indicator that must fire, what its detail must name, the adaptive run's settings)
ZOO = {
    "quantized": ("unavailable-gradients", "--bpda quantize", {"bpda": ("quantize",)}),
    "jpeg_like": ("unavailable-gradients", "--bpda jpeg", {"bpda": ("jpeg",)}),
    "detached": ("unavailable-gradients", "--bpda detach", {"bpda": ("detach",)}),
    "saturated_softmax": ("probability-outputs", "--bpda softmax", {"bpda": ("softmax",)}),
    "random_resize_pad": ("unstable-predictions", "pgd:eot=10", {"attacks": ["pgd:steps=20,eot=10"]}),
}


def _source(kind: str, checkpoint: Path) -> str:
    return f"{FACTORY}:make:kind={kind},ckpt={checkpoint}"


def _run(source: str, out: Path, **extra) -> tuple[float, dict[str, list]]:
    """Robust accuracy at EPS and the fired findings by indicator."""
    settings = {"attacks": ["pgd:steps=20"], **RUN, **extra}
    frame = robeval.evaluate(models=[source], out=str(out), **settings)
    fired: dict[str, list] = {}
    for finding in frame.attrs["checks"]:
        if finding.fired:
            fired.setdefault(finding.indicator, []).append(finding)
    return float(frame.loc[frame["eps"] == EPS, "robust_acc"].iloc[0]), fired


@pytest.fixture(scope="module")
def base_accuracy(digits_checkpoint: Path, tmp_path_factory) -> float:
    acc, fired = _run(_source("base", digits_checkpoint), tmp_path_factory.mktemp("base"))
    assert not fired, fired
    return acc


# How close to the undefended accuracy the adaptive attack must come: a randomised defence
# is judged by one random forward per point, so its accuracy itself varies by ~0.05.
TOLERANCE = {"random_resize_pad": 0.15}


@pytest.mark.parametrize("kind", sorted(ZOO))
def test_broken_defence_is_caught_and_broken(kind, digits_checkpoint, base_accuracy, tmp_path) -> None:
    torch.manual_seed(0)  # the randomised defence draws from the global generator
    indicator, names, adaptive = ZOO[kind]
    masked, fired = _run(_source(kind, digits_checkpoint), tmp_path / "plain")
    assert masked > base_accuracy + 0.3, f"{kind} should fool plain PGD ({masked:.2f} vs {base_accuracy:.2f})"
    assert indicator in fired, f"{kind}: {sorted(fired)}"
    assert any(names in f.detail for f in fired[indicator]), [f.detail for f in fired[indicator]]
    broken, _ = _run(_source(kind, digits_checkpoint), tmp_path / "adaptive", **adaptive)
    limit = base_accuracy + TOLERANCE.get(kind, 0.10)
    assert broken <= limit, f"{kind}: adaptive {broken:.2f} vs undefended {base_accuracy:.2f}"


def test_gradient_free_attack_beats_masked_gradients(digits_checkpoint, tmp_path) -> None:
    _, fired = _run(_source("quantized", digits_checkpoint), tmp_path / "noise", attacks=["pgd:steps=20", "uniform"])
    assert any(f.attack == "pgd:steps=20" for f in fired.get("gradient-free-beats-gradient", []))
    # AutoAttack's own Square, after its APGD failed on the zero gradients (from its stored breakdown)
    autoattack = "autoattack:version=custom,attacks=apgd-ce+square,n_iter=5,n_queries=200"
    _, fired = _run(_source("quantized", digits_checkpoint), tmp_path / "aa", attacks=[autoattack])
    (square,) = [f for f in fired.get("gradient-free-beats-gradient", []) if "Square broke" in f.detail]
    assert square.value > 0.1
    _, quiet = _run(_source("base", digits_checkpoint), tmp_path / "base", attacks=[autoattack])
    assert "gradient-free-beats-gradient" not in quiet


def test_kwta_does_not_mask_here_and_raises_nothing(digits_checkpoint, base_accuracy, tmp_path) -> None:
    """The k-WTA activation of the zoo is discontinuous but, on this small network, does
    not hide the gradient: plain PGD breaks it, and no indicator may claim otherwise."""
    acc, fired = _run(_source("kwta", digits_checkpoint), tmp_path)
    assert acc <= base_accuracy + 0.10
    assert not fired, {k: [f.detail for f in v] for k, v in fired.items()}


SOUND = ["fgsm", "pgd:steps=50", "deepfool", "uniform"]


@pytest.fixture(scope="module")
def adversarially_trained(tmp_path_factory) -> Path:
    from robeval.train import TrainSpec, train

    out = tmp_path_factory.mktemp("at") / "digits_at.pt"
    result = train(TrainSpec(dataset="digits", arch="small-cnn", epochs=10, batch_size=32, lr=3e-3,
                             seed=fixture_seed(), device="cpu", objective="pgd-at:eps=0.15,steps=5,step_size=0.05", out=str(out)))
    assert result.metrics["test_acc"] > 0.9, result.metrics
    return result.checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("which", ["plain", "pgd-at"])
def test_sound_models_raise_no_indicator(which, seed, digits_checkpoint, adversarially_trained, tmp_path) -> None:
    checkpoint = digits_checkpoint if which == "plain" else adversarially_trained
    frame = robeval.evaluate(models=[str(checkpoint)], attacks=SOUND, eps="0,0.05,0.1,0.2,unbounded", n=128,
                             batch_size=128, device="cpu", seed=seed, check_samples=64, out=str(tmp_path))
    fired = [(f.attack, f.eps, f.indicator, f.detail) for f in frame.attrs["checks"] if f.fired]
    assert not fired, fired
    assert not frame["unreliable"].any()
