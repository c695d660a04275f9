"""Leaderboard rows as RobustBench ``model_info`` JSON entries and back.

RobustBench keeps one JSON per model with the keys in :data:`MODEL_INFO_KEYS`;
accuracies are strings of percentages with two decimals (``"86.04"``) and ``eps`` a
string such as ``"8/255"``. Fields robeval does not know (link, authors, venue, ...) are
empty strings unless given as overrides. What RobustBench has no field for (our model
name, the norm and threat model, the per-attack accuracies, the per-sample worst case,
the attack-failure indicators that fired, n, seed, training, version) goes under the
extra key ``"robeval"``, which RobustBench ignores.

``"autoattack_acc"`` is RobustBench's standard AutoAttack and nothing else: an entry of
ours fills it only when one of the row's attacks is the standard AutoAttack
(:func:`robeval.results.autoattack_standard.is_standard_autoattack`), whatever the row,
a stored entry or an override says; a custom or reduced AutoAttack stays in
``"robeval"``'s ``attacks`` and the footnote under its own name.

``"unreliable"`` is never ``false`` for a row the leaderboard flags (a fallback worst
case, one attack that is not a full AutoAttack, or an attack-failure indicator that
fired): not even a stored entry's own field or an override can clear it, and the
``footnote`` then names the indicators.

An entry without a ``"robeval"`` key (a published one) imports as an *external* row whose
worst case is the lower of its ``autoattack_acc`` and ``external`` (RobustBench's field
for a stronger evaluation). Our own entries say ``number_forward_passes`` 1,
``additional_data`` false and put robeval's per-sample worst case over all attacks in
``external``, unless overridden. Every imported row keeps the entry's own fields in
its ``model_info`` column, so export -> import -> export gives the identical entry.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from robeval.atomic import atomic_write_text
from robeval.errors import RobevalError
from robeval.results.autoattack_standard import is_standard_autoattack
from robeval.results.leaderboard import ACC_PREFIX, FROM_EXTERNAL, FROM_SAMPLES, flag, seed_text, threat_model
from robeval.results.tables import format_eps

MODEL_INFO_KEYS = (
    "link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue", "architecture",
    "eps", "clean_acc", "reported", "autoattack_acc", "unreliable", "footnote",
)
EXTRA_KEY = "robeval"


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(math.isnan(float(value)))
    except (TypeError, ValueError):
        return False


def _pct(value: Any) -> str:
    return "" if _missing(value) or value == "" else f"{100 * float(value):.2f}"


def _from_pct(text: Any) -> float:
    if text is None or str(text).strip() == "":
        return math.nan
    try:
        return float(text) / 100
    except ValueError:
        raise RobevalError(f"model_info accuracy {text!r} is not a percentage like \"86.04\"") from None


def _parse_eps(text: Any) -> float:
    if text is None or str(text).strip() == "":
        return math.nan
    from robeval.params import parse_eps_list

    return float(parse_eps_list(str(text))[0])


def _text(value: Any) -> str:
    return "" if value is None or _missing(value) else str(value)


def _num(value: Any) -> float | None:
    return None if _missing(value) or value == "" else float(value)


def _seed(value: Any) -> int | str | None:
    """The run's seed for JSON: an int, the text as given when it is not one, None when
    unknown."""
    text = seed_text(value)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def to_model_info(row: dict, **overrides: Any) -> dict:
    """One leaderboard row as a RobustBench ``model_info`` dict; ``overrides`` set any
    field (e.g. ``link=..., authors=..., venue=...``)."""
    row = dict(row)
    eps = _num(row.get("eps"))
    attacks = {k[len(ACC_PREFIX):]: _num(v) for k, v in sorted(row.items())
               if k.startswith(ACC_PREFIX) and _num(v) is not None}
    source = str(row.get("worst_case_from") or "")
    indicators = _text(row.get("indicators"))
    unreliable = flag(row.get("unreliable")) or bool(indicators)
    standard = source == FROM_EXTERNAL or any(is_standard_autoattack(a) for a in attacks)
    auto = row.get("autoattack_acc") if standard else None  # only the standard AutoAttack is autoattack_acc
    info: dict[str, Any] = {key: "" for key in MODEL_INFO_KEYS}
    info.update({
        "name": str(row.get("model", "")), "dataset": str(row.get("dataset", "")),
        "eps": "" if eps is None else format_eps(eps), "clean_acc": _pct(row.get("clean_acc")),
        "autoattack_acc": _pct(auto), "unreliable": unreliable,
    })
    if source != FROM_EXTERNAL:
        # robeval's models are deterministic and trained on the data set alone; the worst
        # case over all attacks is what RobustBench calls an external evaluation.
        info.update({"number_forward_passes": 1, "additional_data": False,
                     "external": _pct(row.get("worst_case_acc"))})
        how = "per sample" if source == FROM_SAMPLES else source
        info["footnote"] = (f"robeval worst case over {', '.join(attacks) or 'no attacks'} ({how}): "
                            f"{_pct(row.get('worst_case_acc'))}%"
                            + (f"; attack-failure indicators fired: {indicators}" if indicators else ""))
    blob = row.get("model_info")
    if isinstance(blob, str) and blob.strip():
        info.update(json.loads(blob))
    info.update(overrides)
    if unreliable:
        info["unreliable"] = True
    if not standard:  # not even a stored entry or an override makes a custom AutoAttack autoattack_acc
        info["autoattack_acc"] = ""
    if source != FROM_EXTERNAL:
        n = _num(row.get("n"))
        norm = _text(row.get("norm"))
        info[EXTRA_KEY] = {
            "model": str(row.get("model", "")), "norm": norm,
            "threat": _text(row.get("threat")) or threat_model(norm, next(iter(attacks)) if len(attacks) == 1 else ""),
            "eps": eps, "clean_acc": _num(row.get("clean_acc")), "attacks": attacks,
            "worst_case_acc": _num(row.get("worst_case_acc")), "worst_case_from": source,
            "autoattack_acc": _num(auto), "unreliable": flag(info["unreliable"]),
            "indicators": indicators, "checked": flag(row.get("checked")),
            "n": None if n is None else int(n), "seed": _seed(row.get("seed")),
            "training": str(row.get("training") or ""),
            "robeval_version": str(row.get("robeval_version") or ""),
        }
    ordered = {k: info[k] for k in MODEL_INFO_KEYS}
    ordered.update({k: v for k, v in info.items() if k not in ordered and k != EXTRA_KEY})
    if EXTRA_KEY in info:
        ordered[EXTRA_KEY] = info[EXTRA_KEY]
    return ordered


def model_info_filename(row: dict) -> str:
    """A file name for the entry of a leaderboard row, distinct for every (model, data set,
    threat model, eps): ``<model>_<dataset>_<threat>_<eps>.json`` with ``/`` in eps as
    ``_`` and any other character that is not alphanumeric, ``-``, ``_`` or ``.`` as ``_``
    (a ball norm's threat model is its norm, so those names are ``..._linf_8_255.json``)."""
    eps = _num(row.get("eps"))
    parts = (_text(row.get("model")), _text(row.get("dataset")), _text(row.get("threat")) or _text(row.get("norm")),
             "" if eps is None else format_eps(eps).replace("/", "_"))
    stem = "_".join(p for p in parts if p)
    return ("".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "model") + ".json"


def model_info_filenames(rows: list[dict]) -> list[str]:
    """:func:`model_info_filename` of every row, made distinct: rows of several runs of one
    model (other ``n`` or ``seed``, which the leaderboard never merges) get
    ``_n<n>_seed<seed>`` before ``.json``, so no entry overwrites another."""
    names = [model_info_filename(row) for row in rows]
    counts = Counter(names)
    taken: set[str] = set()
    out = []
    for row, name in zip(rows, names, strict=True):
        if counts[name] > 1:
            n, seed = _num(row.get("n")), seed_text(row.get("seed")) or "unknown"
            name = f"{name[:-len('.json')]}_n{'' if n is None else int(n)}_seed{seed}.json"
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        stem, k = name[:-len(".json")], 2
        while name in taken:
            name, k = f"{stem}_{k}.json", k + 1
        taken.add(name)
        out.append(name)
    return out


def norm_from_path(path: Path) -> str:
    """The norm implied by RobustBench's repository layout
    ``model_info/<dataset>/<threat>/<name>.json`` (``Linf`` -> ``linf``, ``L2`` -> ``l2``),
    or ``""`` when the folder is not a threat model."""
    threat = Path(path).parent.name.lower()
    return {"linf": "linf", "l2": "l2", "corruptions": "corruptions"}.get(threat, "")


def from_model_info(info: dict, *, norm: str = "") -> dict:
    """A ``model_info`` dict as a leaderboard row. Our own exports come back exactly from
    the ``"robeval"`` key; published entries become external rows (worst case =
    ``autoattack_acc``; norm from the entry's ``"norm"``, else ``norm``, e.g. from
    :func:`norm_from_path`)."""
    if not isinstance(info, dict):
        raise RobevalError("a RobustBench model_info entry must be a JSON object")
    fields = {k: v for k, v in info.items() if k != EXTRA_KEY}
    extra = info.get(EXTRA_KEY)
    blob = json.dumps(fields)
    if isinstance(extra, dict):
        nan = math.nan
        attacks = extra.get("attacks", {})
        only = next(iter(attacks)) if len(attacks) == 1 else ""
        row = {
            "model": extra.get("model", ""), "dataset": str(info.get("dataset", "")), "norm": extra.get("norm", ""),
            "threat": extra.get("threat") or threat_model(extra.get("norm", ""), only),
            "eps": nan if extra.get("eps") is None else float(extra["eps"]),
            "clean_acc": nan if extra.get("clean_acc") is None else float(extra["clean_acc"]),
            **{f"{ACC_PREFIX}{a}": float(v) for a, v in extra.get("attacks", {}).items()},
            "worst_case_acc": nan if extra.get("worst_case_acc") is None else float(extra["worst_case_acc"]),
            "worst_case_from": extra.get("worst_case_from", ""),
            "autoattack_acc": nan if extra.get("autoattack_acc") is None or not any(
                is_standard_autoattack(a) for a in attacks) else float(extra["autoattack_acc"]),
            "unreliable": flag(extra.get("unreliable")) or flag(info.get("unreliable")),
            "indicators": str(extra.get("indicators") or ""), "checked": flag(extra.get("checked")),
            "attacks": len(attacks),
            "n": extra.get("n"), "seed": seed_text(extra.get("seed")), "training": extra.get("training", ""),
            "robeval_version": extra.get("robeval_version", ""), "model_info": blob,
        }
        return row
    auto = _from_pct(info.get("autoattack_acc"))
    external = _from_pct(info.get("external"))
    worst = np.nanmin([auto, external]) if not (math.isnan(auto) and math.isnan(external)) else math.nan
    return {
        "model": str(info.get("name", "")), "dataset": str(info.get("dataset", "")),
        "norm": str(info.get("norm") or norm), "threat": threat_model(info.get("norm") or norm),
        "eps": _parse_eps(info.get("eps")), "clean_acc": _from_pct(info.get("clean_acc")),
        "worst_case_acc": float(worst), "worst_case_from": FROM_EXTERNAL, "autoattack_acc": auto,
        "unreliable": flag(info.get("unreliable")), "indicators": "", "checked": False, "attacks": 0, "n": None,
        "seed": "", "training": "",
        "robeval_version": "", "model_info": blob,
    }


def write_model_info(path: Path, info: dict) -> Path:
    """Write one entry as indented JSON (atomically); return the path."""
    atomic_write_text(Path(path), json.dumps(info, indent=2) + "\n")
    return Path(path)


def read_model_info(path: Path) -> dict:
    """Read one entry; a missing or malformed file is a :class:`RobevalError`."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RobevalError(f"cannot read RobustBench model_info {path}: {exc}") from None
    if not isinstance(info, dict):
        raise RobevalError(f"{path} is not a RobustBench model_info entry (expected a JSON object)")
    return info
