"""benchmarks/gpu_check.py: the ``--smoke`` run on the CPU, its report, and its checks."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SECTIONS = ("environment", "settings", "models", "throughput", "ray_scaling", "checks", "skipped")


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    return load_script()


@pytest.fixture(scope="module")
def smoke(request: pytest.FixtureRequest, gpu_check: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One ``main(["--smoke", "--device", "cpu", ...])`` run, in this process; with Ray
    installed, on the session's local Ray (conftest's ``ray_local``), which it reuses."""
    if importlib.util.find_spec("ray") is not None:
        with contextlib.suppress(pytest.FixtureLookupError):  # without it the script starts its own Ray
            request.getfixturevalue("ray_local")
    out = tmp_path_factory.mktemp("gpu_check")
    threads = torch.get_num_threads()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = gpu_check.main(["--smoke", "--device", "cpu", "--out", str(out)])
    assert torch.get_num_threads() == threads  # the smoke run's 1 thread does not leak
    assert status == 0, printed.getvalue()
    report = json.loads((out / "gpu_check.json").read_text())
    with open(out / "gpu_check.csv", newline="") as handle:
        report["_csv"] = list(csv.DictReader(handle))
    report["_stdout"] = printed.getvalue()
    return report


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_report_has_every_section_and_model(smoke: dict[str, Any]) -> None:
    assert all(section in smoke for section in SECTIONS)
    assert smoke["settings"]["smoke"] is True and smoke["environment"]["device"] == "cpu"
    assert [m["name"] for m in smoke["models"]] == ["wrn-10-1", "resnet50-w4"]
    assert all(m["params"] > 0 and m["batch"] == 4 for m in smoke["models"])
    assert "checks:" in smoke["_stdout"] and "| wrn-10-1 | fp32 | 4 | robeval_pgd10 |" in smoke["_stdout"]


@pytest.mark.slow
def test_throughputs_positive_and_ratios_finite(smoke: dict[str, Any]) -> None:
    rows = {(r["model"], r["variant"], r["measure"]): r for r in smoke["throughput"]}
    for model in ("wrn-10-1", "resnet50-w4"):
        for variant in ("fp32", "bf16"):  # bf16 runs on the CPU in smoke mode only to exercise it
            roof, ours = rows[model, variant, "fwd_bwd"], rows[model, variant, "robeval_pgd10"]
            assert roof["status"] == ours["status"] == "ok"
            assert positive(roof["images_per_s"]) and positive(ours["images_per_s"])
            assert math.isclose(roof["ideal_pgd10_images_per_s"], roof["images_per_s"] / 11)
            assert positive(ours["vs_ideal"])
            theirs = rows[model, variant, "torchattacks_pgd10"]
            if theirs["status"] == "ok":
                assert positive(theirs["images_per_s"]) and positive(ours["vs_torchattacks"])
            else:
                assert theirs["status"] == "skipped" and theirs["why"]
    if importlib.util.find_spec("torchattacks") is None:
        assert "not installed" in rows["wrn-10-1", "fp32", "torchattacks_pgd10"]["why"]
    assert len(smoke["_csv"]) == len(smoke["throughput"]) + len(smoke["ray_scaling"]["rows"])


@pytest.mark.slow
def test_every_check_passed_and_the_ball_was_checked(smoke: dict[str, Any]) -> None:
    failed = [c for c in smoke["checks"] if not c["passed"]]
    assert not failed, failed
    names = [c["name"] for c in smoke["checks"]]
    for model in ("wrn-10-1", "resnet50-w4"):
        for variant in ("fp32", "bf16"):
            assert f"{model} {variant} robeval: eps-ball and [0,1]" in names
            assert f"{model} {variant} robeval: loss rises" in names
    assert {"report has every section", "every skip names its reason"} <= set(names)
    assert all(s["why"] for s in smoke["skipped"])


@pytest.mark.slow
def test_ray_section(smoke: dict[str, Any]) -> None:
    section = smoke["ray_scaling"]
    if importlib.util.find_spec("ray") is None:
        assert section["status"] == "skipped" and "not installed" in section["why"]
    pytest.importorskip("ray")
    assert section["status"] == "ok", section
    assert section["actors"] == 2 and section["num_cpus_per_actor"] == 1.0
    for model in ("wrn-10-1", "resnet50-w4"):
        rows = {r["tasks"]: r for r in section["rows"] if r["model"] == model}
        assert sorted(rows) == [1, 2]
        for row in rows.values():
            assert row["status"] == "ok", row
            assert positive(row["images_per_s"]) and positive(row["speedup_vs_1"])
            assert len(row["per_task_images_per_s"]) == row["tasks"] and 0 <= row["overlap"] <= 1
        assert rows[1]["speedup_vs_1"] == 1.0


# --- the pieces that only run on a GPU, and the checks, in-process --------------------


def test_find_batch_stops_at_plateau_and_out_of_memory(gpu_check: ModuleType) -> None:
    rates = {64: 100.0, 128: 190.0, 256: 300.0, 512: 310.0, 1024: 400.0}
    batch, trials = gpu_check.find_batch(lambda b: rates[b], 64, 4096)
    assert batch == 256 and [t["batch"] for t in trials] == [64, 128, 256, 512]
    assert "3.3 %" in trials[-1]["stop"]

    def oom_above_128(b: int) -> float:
        if b > 128:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return float(b)

    batch, trials = gpu_check.find_batch(oom_above_128, 64, 4096)
    assert batch == 128 and trials[-1] == {"batch": 256, "images_per_s": None, "stop": "out of memory"}
    cudnn = RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")
    batch, _ = gpu_check.find_batch(lambda b: float(b) if b < 256 else (_ for _ in ()).throw(cudnn), 64, 4096)
    assert batch == 128
    batch, trials = gpu_check.find_batch(float, 64, 256)
    assert batch == 256 and trials[-1]["stop"] == "reached --max-batch 256"
    with pytest.raises(RuntimeError, match="already at batch 256"):
        gpu_check.find_batch(oom_above_128, 256, 4096)
    with pytest.raises(RuntimeError, match="a real bug"):  # only out-of-memory ends the search quietly
        gpu_check.find_batch(lambda b: (_ for _ in ()).throw(RuntimeError("a real bug")), 64, 4096)


def test_checks_catch_a_broken_attack(gpu_check: ModuleType) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    x, y = torch.rand(5, 3, 2, 2) * 0.5 + 0.25, torch.tensor([0, 1, 2, 0, 1])
    report = gpu_check.Report({}, {})
    gpu_check.check_adversarial(report, "too far", model, x, y, x + 2 * gpu_check.EPS)
    gpu_check.check_adversarial(report, "no-op", model, x, y, x.clone())
    passed = {c["name"]: c["passed"] for c in report.checks}
    assert passed["too far: eps-ball and [0,1]"] is False
    assert passed["no-op: eps-ball and [0,1]"] is True and passed["no-op: loss rises"] is False


def test_final_checks_flag_an_unnamed_skip_and_a_missing_section(gpu_check: ModuleType) -> None:
    report = gpu_check.Report({"device": "cpu"}, {"smoke": True})
    report.throughput.append({"model": "m", "measure": "fwd_bwd", "status": "skipped", "why": ""})
    gpu_check.final_checks(report)
    passed = {c["name"]: c["passed"] for c in report.checks}
    assert passed == {"report has every section": False, "every skip names its reason": False,
                      "throughputs and ratios finite and > 0": False}


def test_ray_section_is_skipped_with_its_reason_without_ray(gpu_check: ModuleType,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    settings, _ = gpu_check.parse_settings(["--smoke", "--device", "cpu"])
    report = gpu_check.Report({}, {})
    gpu_check.ray_scaling(report, {}, settings, torch.device("cpu"))
    assert report.ray_scaling["status"] == "skipped" and "ray not installed" in report.ray_scaling["why"]
    assert report.skipped == [{"what": "ray scaling", "why": report.ray_scaling["why"]}]
