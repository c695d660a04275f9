"""The one validated reader of a run's ``results.csv`` and ``samples.csv``, used by the
leaderboard and the report, so that a damaged file is refused with one sentence instead
of giving a traceback or, worse, a number that silently leaves rows out.

A file is *damaged* (and refused, naming the line and the fix) when it

* is not UTF-8 text (binary, NUL bytes) or is empty;
* does not end with a newline: ``robeval run`` writes whole files atomically, so a last
  line without one was cut off (a copy that stopped, a disk that filled up);
* has a line with more or fewer fields than the header;
* has a cell of a numeric column that does not parse as a number (``'abc'``), or is empty
  where a value is required (``eps``, ``n``, ``label``, ``adv_pred``...; ``clean_acc`` and
  ``robust_acc`` may be empty only where ``n`` is 0), or lies outside its range
  (accuracies in [0, 1], ``n`` a count, ``eps`` >= 0);
* misses rows that the run's ``spec.yaml`` (when present beside it) says it must have:
  every model of the spec, as many attacks per model as the spec lists (``worst-case``
  alone with ``worst_case: true``), and every finite eps of the grid for each of them
  (rows cut off at a line boundary leave no other trace);
* (``samples.csv``) holds, for a (model, attack, eps), another number of points than the
  ``n`` of its results row.

Columns that are not there (older files) are not required unless named in
:data:`RESULT_REQUIRED` / :data:`SAMPLE_REQUIRED`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from robeval.errors import RobevalError
from robeval.params import parse_eps_list
from robeval.results.tables import format_eps

RESULT_REQUIRED = {"model", "dataset", "attack", "norm", "eps", "n", "clean_acc", "robust_acc"}
SAMPLE_REQUIRED = {"model", "attack", "eps", "split_index", "label", "adv_pred"}
RESULT_NUMERIC = {  # column: (required, kind) with kind "acc" in [0, 1], "count" an integer >= 0, "eps" >= 0
    "eps": (True, "eps"), "n": (True, "count"), "clean_acc": (True, "acc"), "robust_acc": (True, "acc"),
    "target_success": (False, "acc"), "mean_rel_perturbation": (False, "any"), "forward_passes": (False, "count"),
    "backward_passes": (False, "count"), "seconds": (False, "any"), "seed": (False, "int"),
}
SAMPLE_NUMERIC = {
    "eps": (True, "eps"), "split_index": (True, "count"), "label": (True, "int"), "adv_pred": (True, "int"),
    "index": (False, "count"), "target": (False, "int"), "clean_pred": (False, "int"),
    "perturbation_norm": (False, "any"), "l0": (False, "any"), "l2": (False, "any"), "linf": (False, "any"),
}
_BLANK = {"", "nan", "NaN", "NA", "N/A", "null", "None"}


@dataclass(frozen=True)
class RunTables:
    """A run directory's validated tables: ``samples`` is None without samples.csv,
    ``spec`` an empty dict (and ``spec_text`` empty) without spec.yaml."""

    results: pd.DataFrame
    samples: pd.DataFrame | None
    spec: dict
    spec_text: str


def rerun_hint(run_dir: Path | None) -> str:
    """How to get an intact file back: re-run the spec (the store recomputes nothing)."""
    if run_dir is not None and (Path(run_dir) / "spec.yaml").is_file():
        return f"re-run `robeval run --spec {Path(run_dir) / 'spec.yaml'} --out {run_dir}` to rewrite it from the store"
    return "re-run the `robeval run` that wrote it (its store recomputes nothing) or pass an intact copy"


def damaged(path: Path, detail: str, run_dir: Path | None) -> RobevalError:
    """The one-sentence refusal of a damaged table."""
    return RobevalError(f"{path} is damaged ({detail}); {rerun_hint(run_dir)}")


def _read(path: Path, run_dir: Path | None) -> tuple[bytes, str]:
    """The file's bytes and text, refusing what cannot be a CSV that ``robeval run``
    wrote whole."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RobevalError(f"cannot read {path} ({exc.strerror or exc}); check the path and its permissions") from None
    if not data.strip():
        raise damaged(path, "it is empty", run_dir)
    try:
        if b"\x00" in data:
            raise UnicodeDecodeError("utf-8", data, data.index(b"\x00"), data.index(b"\x00") + 1, "NUL byte")
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise damaged(path, f"not a text file: byte {data[exc.start]:#04x} at offset {exc.start}", run_dir) from None
    if not text.endswith("\n"):
        raise damaged(path, f"its last line, line {text.count(chr(10)) + 1}, is cut off", run_dir)
    return data, text


def _data_lines(path: Path, data: bytes, run_dir: Path | None) -> np.ndarray:
    """The line number of every data row (blank lines skipped, as pandas does); refuses
    rows whose field count differs from the header's. Vectorised over the bytes (a
    separator or a line end counts outside double quotes only), so a samples.csv of a
    million rows takes about a second."""
    raw = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(raw == ord("\n"))
    commas = np.flatnonzero(raw == ord(","))
    quotes = np.flatnonzero(raw == ord('"'))
    ends = newlines
    if len(quotes):  # outside quotes: an even number of quote characters before it
        ends = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
        commas = commas[np.searchsorted(quotes, commas) % 2 == 0]
    if len(ends) == 0 or ends[-1] != len(raw) - 1:
        raise damaged(path, "a quoted field is never closed", run_dir)
    starts = np.concatenate([[0], ends[:-1] + 1])
    fields = np.diff(np.concatenate([[0], np.searchsorted(commas, ends)])) + 1
    blank = (ends == starts) | ((ends - starts == 1) & (raw[np.maximum(ends - 1, 0)] == ord("\r")))
    line_of = np.searchsorted(newlines, starts) + 1
    first = int(np.flatnonzero(~blank)[0])  # the header: the first line that is not blank
    header = int(fields[first])
    rows = ~blank
    rows[: first + 1] = False
    wrong = rows & (fields != header)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise damaged(path, f"line {line_of[i]} has {fields[i]} fields, the header has {header}", run_dir)
    return line_of[rows]


def _numeric(frame: pd.DataFrame, column: str, required: bool, kind: str,
             where: Callable[[int, str], RobevalError]) -> pd.Series:
    """``column`` as floats; refuses unparsable, missing-but-required or out-of-range cells
    (``where(i, detail)`` builds the error for row ``i``)."""
    raw = frame[column]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        values = raw.astype(float)
        blank = values.isna()
    else:
        cells = raw.astype(str).str.strip()
        blank = raw.isna() | cells.isin(_BLANK)
        values = pd.to_numeric(cells.where(~blank, None), errors="coerce").astype(float)
        bad = ~blank & values.isna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise where(i, f"{column!r} is {cells.iloc[i]!r}, not a number")
    if required and blank.any():
        missing = blank.to_numpy()
        if kind == "acc" and "n" in frame.columns:  # no accuracy of zero points
            missing = missing & (pd.to_numeric(frame["n"], errors="coerce").to_numpy() != 0)
        if missing.any():
            raise where(int(np.flatnonzero(missing)[0]), f"{column!r} is empty")
    finite = values.to_numpy()
    ok = np.isnan(finite)
    if kind == "acc":
        ok |= (finite >= 0) & (finite <= 1)
    elif kind == "eps":
        ok |= finite >= 0
    elif kind in ("count", "int"):
        whole = np.isfinite(finite) & (np.mod(np.where(np.isfinite(finite), finite, 0), 1) == 0)
        ok |= whole & ((finite >= 0) if kind == "count" else True)
    else:
        ok |= ~np.isnan(finite)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        expected = {"acc": "an accuracy in [0, 1]", "eps": "an eps >= 0", "count": "a count",
                    "int": "an integer"}[kind]
        raise where(i, f"{column!r} is {finite[i]:g}, not {expected}")
    return values


def read_table(path: Path, *, required: set[str], numeric: dict[str, tuple[bool, str]], what: str,
               run_dir: Path | None = None) -> pd.DataFrame:
    """A validated CSV (module docstring): the columns of ``required`` present and every
    one of them filled; the ``numeric`` columns present as floats. ``what`` names the kind
    of file for a file that lacks required columns."""
    path = Path(path)
    data, text = _read(path, run_dir)
    lines = _data_lines(path, data, run_dir)
    try:
        frame = pd.read_csv(io.BytesIO(data), low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise damaged(path, str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable", run_dir) from None
    missing = sorted(required - set(frame.columns))
    if missing:
        raise RobevalError(f"{path} is not a robeval {what} (missing columns {', '.join(missing)}); "
                           "pass a file written by `robeval run`")

    def where(i: int, detail: str) -> RobevalError:
        return damaged(path, f"line {lines[i]}: {detail}" if i < len(lines) else detail, run_dir)

    for column, (needed, kind) in numeric.items():
        if column in frame.columns:
            frame[column] = _numeric(frame, column, needed, kind, where)
    for column in sorted(required - set(numeric)):
        blank = frame[column].isna() | frame[column].astype(str).str.strip().eq("")
        if blank.any():
            raise where(int(np.flatnonzero(blank.to_numpy())[0]), f"{column!r} is empty")
    if "n" in frame.columns:
        frame["n"] = frame["n"].astype("int64")
    return frame


def read_spec(run_dir: Path) -> tuple[dict, str]:
    """``run_dir/spec.yaml`` as (dict, text); ``({}, "")`` when there is none."""
    path = Path(run_dir) / "spec.yaml"
    if not path.is_file():
        return {}, ""
    try:
        text = path.read_text(encoding="utf-8")
        spec = yaml.safe_load(text) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RobevalError(f"cannot read {path} ({type(exc).__name__}); restore it or delete it to go on "
                           "without it") from None
    if not isinstance(spec, dict):
        raise RobevalError(f"{path} is not a robeval run spec (a YAML mapping); restore it or delete it")
    return spec, text


def _spec_list(spec: dict, key: str) -> list:
    value = spec.get(key) or []
    return [value] if isinstance(value, str | int | float) else list(value)


def _spec_eps(spec: dict) -> list[float]:
    """The finite eps of the spec's grid (``8/255`` and ``unbounded`` understood); none
    when it cannot be read (then the grid is not checked)."""
    try:
        return [e for e in parse_eps_list(_spec_list(spec, "eps")) if math.isfinite(e)]
    except (RobevalError, TypeError, ValueError):
        return []


def check_complete(results: pd.DataFrame, spec: dict, path: Path, run_dir: Path | None) -> None:
    """Refuse ``results`` when it lacks rows that ``spec`` says the run wrote (module
    docstring); does nothing without a spec."""
    if not spec:
        return
    models = _spec_list(spec, "models")
    found = results["model"].astype(str).unique()
    if len(found) < len(models):
        raise damaged(path, f"rows missing: {len(found)} of the {len(models)} models of spec.yaml", run_dir)
    expected = 1 if spec.get("worst_case") else len(set(map(str, _spec_list(spec, "attacks"))))
    grid = _spec_eps(spec)
    for model, rows in results.groupby(results["model"].astype(str), sort=False):
        attacks = rows["attack"].astype(str).unique()
        if len(attacks) < expected:
            raise damaged(path, f"rows missing: {model} has {len(attacks)} of the {expected} attacks of spec.yaml",
                          run_dir)
        for attack, cells in rows.groupby(rows["attack"].astype(str), sort=False):
            have = cells["eps"].to_numpy(dtype=float)
            gone = [e for e in grid if not np.isclose(have, e, rtol=1e-9, atol=0).any()]
            if gone:
                raise damaged(path, f"rows missing: {model} · {attack} has no eps {format_eps(gone[0])}, "
                                    "which spec.yaml lists", run_dir)


def read_results(path: Path, *, spec: dict | None = None, run_dir: Path | None = None) -> pd.DataFrame:
    """A validated ``results.csv`` (module docstring), checked against ``spec`` when given."""
    frame = read_table(path, required=RESULT_REQUIRED, numeric=RESULT_NUMERIC, what="results file", run_dir=run_dir)
    check_complete(frame, spec or {}, Path(path), run_dir)
    return frame


def _targeted(frame: pd.DataFrame) -> np.ndarray:
    if "target" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    target = frame["target"]
    return (target.notna() & (target.astype(str).str.strip() != "")).to_numpy()


def read_samples(path: Path, results: pd.DataFrame, *, run_dir: Path | None = None) -> pd.DataFrame:
    """A validated ``samples.csv`` whose every (model, attack, eps) holds the ``n`` points
    of its ``results`` rows (targeted and untargeted counted apart)."""
    frame = read_table(path, required=SAMPLE_REQUIRED, numeric=SAMPLE_NUMERIC, what="samples file", run_dir=run_dir)
    keys = ["model", "attack", "eps", "_targeted"]
    have = frame.assign(_targeted=_targeted(frame)).groupby(keys, sort=False).size()
    want = results.assign(_targeted=_targeted(results)).groupby(keys, sort=False)["n"].sum()
    both = pd.concat([have.rename("have"), want.rename("want")], axis=1, join="inner")
    short = both[both["have"] != both["want"]]
    if len(short):
        (model, attack, eps, _), row = next(iter(short.iterrows()))
        raise damaged(Path(path), f"{model} · {attack} at eps {format_eps(float(eps))} has {int(row['have'])} "
                                  f"points, results.csv says {int(row['want'])}", run_dir)
    return frame


def read_run(run_dir: Path, *, samples: bool = True) -> RunTables:
    """A run directory's ``results.csv`` (checked against its ``spec.yaml``) and, with
    ``samples``, its ``samples.csv`` when there is one."""
    run_dir = Path(run_dir)
    spec, spec_text = read_spec(run_dir)
    results = read_results(run_dir / "results.csv", spec=spec, run_dir=run_dir)
    sample_path = run_dir / "samples.csv"
    sample_frame = read_samples(sample_path, results, run_dir=run_dir) if samples and sample_path.is_file() else None
    return RunTables(results, sample_frame, spec, spec_text)
