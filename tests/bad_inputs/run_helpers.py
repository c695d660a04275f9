"""What the bad-input tests of ``robeval run`` / ``robeval transfer`` share: the command
line in-process, the one-line-error check, a tiny fast run and table comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from typer.testing import CliRunner

from robeval.cli import app

cli = CliRunner()
#: A run of a second or so: 16 digits, FGSM at two budgets, no indicators.
FAST_TRANSFER = ["--attack", "fgsm", "--eps", "0,0.1", "--n", "16", "--device", "cpu", "--quiet"]
FAST = [*FAST_TRANSFER, "--checks", "off"]
FACTORY = Path(__file__).with_name("nonfinite_factory.py")


def invoke(*args: str) -> Any:
    """``robeval ARGS...`` in this process (Typer's test runner)."""
    return cli.invoke(app, [str(a) for a in args])


def assert_one_error(result: Any, *fragments: str) -> str:
    """Exit code 2, exactly one ``error:`` line holding every fragment, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_ok(result: Any) -> None:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def same_tables(a: Path, b: Path) -> None:
    """The tables of two run folders agree: byte for byte, except the measured seconds."""
    for name in ("accuracy_eps.csv", "accuracy_eps.md", "samples.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    pd.testing.assert_frame_equal(pd.read_csv(a / "results.csv").drop(columns=["seconds"]),
                                  pd.read_csv(b / "results.csv").drop(columns=["seconds"]))
