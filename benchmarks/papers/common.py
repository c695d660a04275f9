"""Shared by the paper-reproduction scripts in ``benchmarks/papers/`` (issue 14).

Each script trains its paper's model variants, runs the headline evaluation and writes
``results/papers/<paper>.md``: one row per reproduced number, with the paper's number and
robeval's side by side and what differs in scale or setting, then its figures (PNG, same
folder) and notes. ``--scale cpu`` (default) runs in at most 10 minutes on 2 cores;
``--scale paper`` runs the paper's recipe at full size (a GPU, the real data sets under
``--data-root``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "results" / "papers"
SCALES = ("cpu", "paper")


@dataclass(frozen=True)
class Row:
    """One reproduced number: where it is in the paper, under what setting, the
    published value and robeval's (as text, with units), and what differs."""

    table: str  # "Table 1, row VR"
    setting: str  # "FGSM, unbounded, preset=foolbox2"
    paper: str  # the published number, "-" where the paper has none
    robeval: str  # the measured number
    differs: str = ""  # scale or setting differences, the likely reason a number does not match


def parse_args(doc: str | None, argv: Sequence[str] | None = None,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """``--scale cpu|paper``, ``--out DIR`` (default results/papers), ``--device``,
    ``--data-root`` (the papers' data sets at ``--scale paper``), ``--seed``."""
    parser = parser or argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    parser.add_argument("--scale", choices=SCALES, default="cpu",
                        help="cpu: small models and data, at most 10 minutes on 2 cores; paper: the paper's recipe")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of <paper>.md and the figures")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--data-root", default=None, help="folder of the real data sets (--scale paper)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the cores, shared with other robeval processes)")
    args = parser.parse_args(argv)
    share_cores(args.threads)
    return args


def share_cores(threads: int | None = None) -> None:
    """Register this script as a computing robeval process, as the CLI's commands are:
    torch gets ``cores // k`` threads while k robeval processes run (two torch
    processes with a thread per core each on the same cores run many times slower), or
    ``threads`` when given. The thread count does not change evaluation numbers, but CPU
    training rounds differently on different counts (last bits of the weights), so give
    ``--threads`` for a bit-exact rerun on a shared machine."""
    from robeval.threads import configure_threads

    configure_threads(threads)


def pct(value: float, digits: int = 1) -> str:
    """A fraction as a percentage string: ``0.9312 -> '93.1 %'``."""
    return f"{100 * value:.{digits}f} %"


def markdown_table(rows: Sequence[Row]) -> str:
    header = ["table and row", "setting", "paper", "robeval", "what differs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(c).replace("|", "\\|").replace("\n", " ") for c in astuple(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    paper: str, title: str, rows: Sequence[Row], *, out: Path, scale: str, wall_s: float,
    figures: Sequence[Path] = (), notes: Sequence[str] = (), extra: str = "",
) -> Path:
    """Write ``out/<paper>.md`` (and ``out/<paper>.csv`` with the same rows); ``paper``
    is the paper's file stem in ``shared/papers`` (``smooth-kernels``, ``absum``,
    ``structured-gradient-regularization``, ``local-response-differences``,
    ``gradient-norm-without-perturbations``)."""
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{paper}.md"
    head = [
        f"# {title}",
        "",
        f"Written by `python benchmarks/papers/{Path(sys.argv[0]).name} --scale {scale}` on "
        f"{_dt.date.today().isoformat()} ({platform.machine()}, Python {platform.python_version()}); "
        f"wall time {wall_s / 60:.1f} min. Columns: where the number is in the paper, the setting, the "
        "published number, robeval's, and what differs in scale or setting (a number that does not "
        "reproduce is reported as measured, with the most likely reason).",
        "",
        markdown_table(rows),
        "",
    ]
    if extra:
        head += [extra.rstrip(), ""]
    if notes:
        head += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    if figures:
        head += ["## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures] + [""]
    md.write_text("\n".join(head))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([f.name for f in fields(Row)])
    writer.writerows(astuple(r) for r in rows)
    (out / f"{paper}.csv").write_text(buffer.getvalue())
    return md


class Timer:
    """Wall time since construction (``Timer().seconds``)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def log(message: str) -> None:
    """Progress to stderr, flushed (the scripts run for minutes)."""
    print(message, file=sys.stderr, flush=True)
