"""Every paper script of ``make reproduce`` (issue 14) plans its whole run at both scales:
``--dry-run`` builds and checks each training spec, attack and data set name, so the
``--scale paper`` recipes (GPU-sized, never run here) are proven to parse and build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("smooth_kernels", "absum", "structured_gradient_regularization", "local_response_differences",
           "gradient_norm")

# One interpreter for all ten plans (torch imports once): each script runs as __main__
# with its own argv; a failure prints the script, the scale and the traceback.
DRIVER = """
import runpy, sys, traceback
out, failures = sys.argv[1], []
for script in sys.argv[2:]:
    for scale in ("cpu", "paper"):
        sys.argv = [script, "--scale", scale, "--dry-run", "--out", f"{out}/{scale}"]
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as stop:
            if stop.code not in (0, None):
                failures.append(f"{script} --scale {scale}: exit {stop.code}")
        except Exception:
            failures.append(f"{script} --scale {scale}: " + traceback.format_exc())
print("FAILURES:" if failures else "ALL PLANNED", *failures, sep="\\n")
sys.exit(1 if failures else 0)
"""


def test_every_paper_script_plans_both_scales(tmp_path: Path) -> None:
    scripts = [str(ROOT / "benchmarks" / "papers" / f"{name}.py") for name in SCRIPTS]
    makefile = (ROOT / "Makefile").read_text()
    assert all(name in makefile for name in SCRIPTS), "make reproduce runs every script"
    done = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path), *scripts], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "ALL PLANNED" in done.stdout
    # A dry run writes no report: results/papers/ stays what the last real run wrote.
    assert not list(tmp_path.rglob("*.md"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_committed_report_has_the_side_by_side_columns(name: str) -> None:
    """The committed report of each paper: the issue's columns, and a real run's header."""
    reports = {"smooth_kernels": "smooth-kernels", "absum": "absum",
               "structured_gradient_regularization": "structured-gradient-regularization",
               "local_response_differences": "local-response-differences",
               "gradient_norm": "gradient-norm-without-perturbations"}
    text = (ROOT / "results" / "papers" / f"{reports[name]}.md").read_text()
    assert f"benchmarks/papers/{name}.py --scale cpu" in text and "wall time" in text
    header = next(line for line in text.splitlines() if line.startswith("| "))
    assert header == "| table and row | setting | paper | robeval | what differs |"
    assert len([line for line in text.splitlines() if line.startswith("| ")]) > 5, "rows, not just a header"
