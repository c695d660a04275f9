"""The "Attack-failure checks" part of a run's report: which (model, attack) rows are
flagged (results.csv's ``unreliable`` / ``indicators`` columns, or a fired finding in
``checks.json``), the ``*`` they get in the accuracy table, and the section that renders
``checks.json``: fired findings first, each with its detail sentence (what it means,
which adaptive attack to run instead), then every finding in a table. A run directory
without ``checks.json`` says the checks were not run (runs from before them, or
``--checks off``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from robeval.errors import RobevalError
from robeval.results.leaderboard import flag, indicator_names
from robeval.results.tables import format_eps

CHECKS_FILE = "checks.json"
FLAG_MARK = " *"  # after the attack's name in the accuracy table: an indicator fired
CHECK_COLUMNS = ["model", "attack", "eps", "indicator", "fired", "value", "threshold"]


def flagged_pairs(results: pd.DataFrame, checks: list[dict] | None = None) -> dict[tuple[str, str], list[str]]:
    """``{(model, attack): fired indicator names}`` for every flagged model and attack: a
    results.csv row with ``unreliable`` true or ``indicators`` not empty, or a fired
    finding of ``checks``. Names in the order given, without repeats."""
    out: dict[tuple[str, str], list[str]] = {}
    if "unreliable" in results.columns or "indicators" in results.columns:
        unreliable = results["unreliable"] if "unreliable" in results.columns else [None] * len(results)
        names = results["indicators"] if "indicators" in results.columns else [None] * len(results)
        for model, attack, u, n in zip(results["model"], results["attack"], unreliable, names, strict=True):
            if flag(u) or indicator_names(n):
                pair = out.setdefault((str(model), str(attack)), [])
                pair += [x for x in indicator_names(n) if x not in pair]
    for finding in checks or []:
        if flag(finding.get("fired")):
            pair = out.setdefault((str(finding.get("model", "")), str(finding.get("attack", ""))), [])
            name = str(finding.get("indicator", ""))
            if name and name not in pair:
                pair.append(name)
    return out


def results_checked(results: pd.DataFrame) -> bool:
    """Whether results.csv says for some row if an indicator fired (older files have no
    ``unreliable`` column; ``--checks off`` leaves it empty)."""
    if "unreliable" not in results.columns:
        return False
    return bool(results["unreliable"].map(lambda v: not pd.isna(v) and str(v).strip() != "").any())


def read_checks(run_dir: Path) -> list[dict] | None:
    """The findings of ``run_dir/checks.json`` (a JSON list of objects), ``None`` when the
    file does not exist; a malformed file is a :class:`RobevalError`."""
    path = Path(run_dir) / CHECKS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RobevalError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(f, dict) for f in data):
        raise RobevalError(f"{path} is not a list of attack-failure findings (JSON objects)")
    return data


def _value_text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return f"{float(value):.4g}"  # inf and -inf as such
    return str(value)


def _eps_text(eps: object) -> str:
    if eps is None or (isinstance(eps, float) and math.isnan(eps)):
        return ""
    try:
        return format_eps(float(eps))  # numbers and "inf"
    except (TypeError, ValueError):
        return str(eps)


def checks_blocks(run_dir: Path, results: pd.DataFrame) -> list[tuple[str, object]]:
    """The "Attack-failure checks" section: what fired (with the detail sentences), then
    every finding, fired first; or a sentence saying the checks were not run."""
    blocks: list[tuple[str, object]] = [("h2", "Attack-failure checks")]
    try:
        checks = read_checks(run_dir)
    except RobevalError as exc:
        blocks.append(("text", f"The attack-failure checks could not be read: {exc}."))
        return blocks
    if checks is None:
        flagged = flagged_pairs(results)
        note = ("The attack-failure checks were not run for this run (no checks.json): nothing here says whether "
                "an attack failed silently (masked or obfuscated gradients, too few steps), so the robust accuracies "
                "are upper bounds of unknown quality. `robeval run --checks fast` (the default) runs them.")
        if flagged:
            note += f" results.csv nonetheless flags {len(flagged)} model x attack pairs (marked * above)."
        blocks.append(("text", note))
        return blocks
    ordered = sorted(checks, key=lambda f: not flag(f.get("fired")))  # fired first, else in the file's order
    fired = [f for f in ordered if flag(f.get("fired"))]
    pairs = {(str(f.get("model", "")), str(f.get("attack", ""))) for f in checks}
    flagged = {(str(f.get("model", "")), str(f.get("attack", ""))) for f in fired}
    if not checks:
        blocks.append(("text", "The attack-failure checks ran but found nothing to check (checks.json is empty)."))
        return blocks
    if not fired:
        blocks.append(("text", f"No indicator fired: {len(checks)} checks of {len(pairs)} model x attack pairs "
                               "found no sign of a failed attack."))
    else:
        blocks.append(("text", f"{len(fired)} of {len(checks)} checks fired, flagging {len(flagged)} of {len(pairs)} "
                               "model x attack pairs as unreliable (marked * in the table above): their robust "
                               "accuracy is likely too high. What fired and what to run instead:"))
        items = []
        for f in fired:
            eps = _eps_text(f.get("eps"))
            measured = _value_text(f.get("value"))
            threshold = _value_text(f.get("threshold"))
            numbers = f"value {measured}" + (f", threshold {threshold}" if threshold else "") if measured else ""
            head = " · ".join(str(f.get(k, "")) for k in ("model", "attack", "indicator"))
            where = ", ".join(p for p in (f"eps {eps}" if eps else "", numbers) if p)
            items.append(f"{head}" + (f" ({where})" if where else "") + f": {str(f.get('detail', '')).strip()}")
        blocks.append(("list", items))
    table = pd.DataFrame([{
        "model": str(f.get("model", "")), "attack": str(f.get("attack", "")), "eps": _eps_text(f.get("eps")),
        "indicator": str(f.get("indicator", "")), "fired": "yes" if flag(f.get("fired")) else "no",
        "value": _value_text(f.get("value")), "threshold": _value_text(f.get("threshold")),
    } for f in ordered], columns=CHECK_COLUMNS)
    blocks.append(("frame", table))
    return blocks


def mark_flagged(table: pd.DataFrame, flagged: dict[tuple[str, str], list[str]]) -> pd.DataFrame:
    """The accuracy-epsilon pivot with :data:`FLAG_MARK` after the attack of every
    flagged (model, attack) row."""
    if not flagged:
        return table
    marked = table.copy()
    marked.index = pd.MultiIndex.from_tuples(
        [(m, f"{a}{FLAG_MARK}" if (str(m), str(a)) in flagged else a) for m, a in table.index],
        names=table.index.names)
    return marked
