"""``robeval leaderboard``'s files: check every output path, build the leaderboard, then
write the CSV, the Markdown and (optionally) one RobustBench ``model_info`` JSON per row.

The paths are checked before any source is read, so a read-only ``--out`` or a
``--markdown`` that is a folder fails at once with one sentence, not after the work (or
with a traceback)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from robeval.atomic import atomic_write_text
from robeval.errors import RobevalError
from robeval.results.leaderboard import leaderboard, leaderboard_markdown
from robeval.results.output_paths import check_output_dir, check_output_file
from robeval.results.robustbench_json import model_info_filenames, to_model_info, write_model_info


@dataclass(frozen=True)
class LeaderboardFiles:
    """The leaderboard and what was written: ``written`` is one phrase per output."""

    frame: pd.DataFrame
    markdown: Path
    written: list[str]


def check_leaderboard_outputs(out: Path, markdown: Path | None = None, model_info_dir: Path | None = None) -> Path:
    """Raise a :class:`RobevalError` unless every output can be written; returns the
    Markdown path (``out`` with ``.md`` unless given)."""
    out = Path(out)
    md_path = Path(markdown) if markdown is not None else out.with_suffix(".md")
    check_output_file(out, "--out", example="leaderboard.csv")
    if md_path.resolve() == out.resolve():
        raise RobevalError(f"--markdown {md_path} is the --out file itself; give --out a .csv name or pass "
                           "another --markdown")
    check_output_file(md_path, "--markdown", example="leaderboard.md")
    if model_info_dir is not None:
        check_output_dir(model_info_dir, "--model-info-dir")
    return md_path


def _write(path: Path, text: str, flag: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise RobevalError(f"cannot write {flag} {path} ({exc.strerror or exc}); free some space or pass "
                           "another path") from None


def write_leaderboard(sources: list[Path], out: Path, *, markdown: Path | None = None,
                      model_info_dir: Path | None = None) -> LeaderboardFiles:
    """Check the outputs, build the leaderboard of ``sources``
    (:func:`robeval.results.leaderboard.leaderboard`) and write ``out`` (CSV), the Markdown
    and, with ``model_info_dir``, one ``model_info`` JSON per row (names made distinct by
    :func:`robeval.results.robustbench_json.model_info_filenames`)."""
    out = Path(out)
    md_path = check_leaderboard_outputs(out, markdown, model_info_dir)
    frame = leaderboard(list(sources))
    _write(out, frame.to_csv(index=False), "--out")
    _write(md_path, leaderboard_markdown(frame), "--markdown")
    written = [str(out), str(md_path)]
    if model_info_dir is not None:
        rows = frame.to_dict("records")
        for row, name in zip(rows, model_info_filenames(rows), strict=True):
            try:
                write_model_info(Path(model_info_dir) / name, to_model_info(row))
            except OSError as exc:
                raise RobevalError(f"cannot write --model-info-dir {model_info_dir}/{name} "
                                   f"({exc.strerror or exc}); free some space or pass another folder") from None
        written.append(f"{len(frame)} model_info files in {model_info_dir}/")
    return LeaderboardFiles(frame, md_path, written)
