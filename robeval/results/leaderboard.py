"""A leaderboard across runs: one row per model x data set x threat model x eps, ranked
by the per-sample worst case over every attack that was run.

Sources are run directories (``results.csv`` + ``samples.csv``), bare results CSV files,
or RobustBench ``model_info`` JSON files (see :mod:`robeval.results.robustbench_json`).
Every results.csv and samples.csv is read by :mod:`robeval.results.read_results`: a
damaged one (cut off, rows missing against its run's spec.yaml, a cell that is not a
number, a samples.csv whose point counts disagree with results.csv) is refused with the
line and the fix, never read in part.

Threat models. Attacks of a ball norm (:data:`robeval.attacks.base.BALL_NORMS`: ``linf``,
``l2``, ``l0``) share their threat model: eps bounds the same ball for all of them, so
their worst case is taken together and ``threat`` is the norm. For any other norm eps
means something different for every attack (``scale``: a noise's std, a filter ignores
it; ``field``: a deformation's size), so each attack -- by its canonical name, parameters
included -- is a threat model of its own, ``threat = "<norm> (<attack>)"``, e.g.
``"scale (gaussian)"``, ``"scale (lowpass:radius=1.5)"``, ``"field (adef)"``: never merged
with another attack into one worst case, and ranked on its own.

Worst case. A point counts as robust at (threat, eps) only if it is classified correctly
(``adv_pred == label``) under *every* attack of that threat model and eps. This is computed from
``samples.csv`` by joining the attacks on ``(model, split_index)``; all attacks must cover
the same set of points with the same labels. Where that is impossible (a bare results CSV,
missing samples, or attacks run on different point sets) the worst case falls back to the
minimum over attacks of ``robust_acc`` -- an upper bound on the true worst case -- and
``worst_case_from`` says so and why, e.g. ``"min over attacks: samples.csv missing"``.
Rows imported from JSON say ``"external"`` (their worst case is the published
``autoattack_acc``).

Runs. Rows of runs on different points are never merged: a leaderboard row is one
(model, dataset, threat model, eps) *and* one evaluation subset, ``n`` points drawn with
``seed`` (the seeded subset of a data set is a function of both), so a model evaluated
with n=500 and with n=1000, or with two seeds, gets one row per run, each naming its
``n`` and ``seed``, ranked side by side -- never clean accuracy from one run and worst
case from another. A results.csv from before the ``seed`` column has an unknown seed
(``seed`` empty): its rows are kept apart from every run with a known seed.

Merging. Sources are read in a canonical order (sorted by path) and every choice below
depends only on the content, so the leaderboard does not depend on the order the sources
are given in. When the same (model, dataset, norm, eps, attack, n, seed) appears in
several sources, the lower (more conservative) ``robust_acc`` wins, then the lower
``clean_acc``, then the smaller ``cell_key``/version, then a source with samples.csv, and
finally the smaller source path. A computed row beats an imported (JSON) row for the same
(model, dataset, threat model, eps); among imported rows the larger ``n`` wins, then the
canonical JSON text.

AutoAttack. ``autoattack_acc`` is filled only by the standard AutoAttack
(:mod:`robeval.results.autoattack_standard`: ``autoattack`` or ``autoattack:norm=l2``
with the standard budgets). A custom or reduced one (``version=custom``, fewer
iterations, targets or queries) is an attack like any other: its own ``acc:`` column and
part of the worst case, never ``autoattack_acc``.

Unreliable. A row's worst case is ``unreliable`` when it had to be the minimum over several
attacks (not per sample); when it rests on one attack of a ball norm that is not a whole
AutoAttack ensemble (standard, plus, rand; not a custom subset or a reduced budget; a
non-ball threat model *is* its one attack, so this rule does not apply there); or when an
attack-failure indicator fired for any attack row it is built from (``robeval run``'s
``unreliable`` and ``indicators`` columns). ``indicators`` lists what fired,
``"<attack>: <name>;<name>"`` per flagged attack (attacks sorted, names in the order
results.csv gives them) joined by ``" | "``. ``checked`` says whether every attack row says
whether an indicator fired: results.csv files from before the checks lack the columns,
and ``--checks off`` leaves ``unreliable`` empty; such rows count as not flagged, but not
as checked either.

Ranking. Rows are grouped by threat model (dataset, norm, threat, eps, in sorted order) and ranked
inside each group by ``worst_case_acc`` descending, ties broken by ``clean_acc``
descending and then model name, so the order is deterministic; ``rank`` is 1-based
within the group.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from robeval.attacks.base import BALL_NORMS
from robeval.errors import RobevalError
from robeval.results.autoattack_standard import is_autoattack_ensemble, is_standard_autoattack
from robeval.results.read_results import read_results, read_run, read_spec
from robeval.results.tables import format_eps

KEY_COLUMNS = ["model", "dataset", "norm", "threat", "eps"]
RUN_COLUMNS = ["n", "seed"]  # one evaluation subset: rows of different runs are never merged
GROUP_COLUMNS = ["dataset", "norm", "threat", "eps"]  # one ranking per threat model and eps
HEAD_COLUMNS = ["rank", *KEY_COLUMNS, "clean_acc"]
TAIL_COLUMNS = [
    "worst_case_acc", "worst_case_from", "autoattack_acc", "unreliable", "indicators", "checked", "attacks", "n",
    "seed", "training", "robeval_version", "model_info",
]
ACC_PREFIX = "acc:"
FROM_SAMPLES = "samples"
FROM_MIN = "min over attacks"
FROM_EXTERNAL = "external"
NO_SAMPLES = "samples.csv missing"
BARE_CSV = "a results CSV alone, no samples.csv"


def _untargeted(frame: pd.DataFrame) -> pd.DataFrame:
    if "target" not in frame.columns:
        return frame
    target = frame["target"]
    return frame[target.isna() | (target.astype(str).str.strip() == "")]


def _load(source: Path) -> tuple[pd.DataFrame, pd.DataFrame | None, list[dict]]:
    """(results rows, samples or None, imported leaderboard rows) of one source."""
    source = Path(source)
    if not source.exists():
        raise RobevalError(f"leaderboard source {source} does not exist; pass run directories, results CSVs or model_info JSONs")
    if source.is_dir():
        results_path = source / "results.csv"
        entries = sorted(source.rglob("*.json"))
        if not results_path.is_file() and entries:  # a folder of model_info JSONs (RobustBench's layout)
            return pd.DataFrame(), None, [row for entry in entries for row in _load(entry)[2]]
        if not results_path.is_file():
            raise RobevalError(f"{source} holds no results.csv (nor model_info JSONs); pass a directory written "
                               "by `robeval run`")
        tables = read_run(source)
        return tables.results, tables.samples, []
    if source.suffix.lower() == ".json":
        from robeval.results.robustbench_json import (
            from_model_info,
            norm_from_path,
            read_model_info,
        )

        return pd.DataFrame(), None, [from_model_info(read_model_info(source), norm=norm_from_path(source))]
    if source.suffix.lower() == ".csv":
        run_dir = source.parent if source.name == "results.csv" else None  # checked against its spec.yaml
        spec = read_spec(run_dir)[0] if run_dir is not None else {}
        return read_results(source, spec=spec, run_dir=run_dir), None, []
    raise RobevalError(f"cannot use {source} as a leaderboard source; pass a run directory, a .csv or a .json file")


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def seed_text(value) -> str:
    """A seed cell as text: ``"0"`` for 0, 0.0 or ``"0"``; ``""`` when unknown."""
    text = _text(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if math.isfinite(number) and number == int(number) else text


def threat_model(norm, attack=None) -> str:
    """The threat model a row of ``attack`` in ``norm`` belongs to (module docstring): the
    norm for a ball norm (or where no attack is known), else ``"<norm> (<attack>)"``."""
    norm, attack = _text(norm), _text(attack)
    if norm in BALL_NORMS or not attack:
        return norm
    return f"{norm} ({attack})"


def flag(value) -> bool:
    """A boolean cell of a CSV or JSON (``True``, ``"True"``, ``"true"``, ``1``); missing or
    empty is ``False``."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = _text(value).strip().lower()
    return text in ("true", "1", "1.0", "yes")


def indicator_names(value) -> list[str]:
    """The fired indicators of a ``;``-separated cell, in its order (``robeval run`` writes
    the indicators' catalogue order), without repeats."""
    return list(dict.fromkeys(name.strip() for name in _text(value).split(";") if name.strip()))


def _indicators(group: pd.DataFrame) -> str:
    """``"<attack>: <name>;<name> | ..."`` for the flagged attack rows of ``group``."""
    parts = []
    for attack, fired, names in sorted(zip(group["attack"], group["_flagged"], group["_indicators"], strict=True)):
        if fired:
            parts.append(f"{attack}: {names or 'flagged'}")
    return " | ".join(parts)


def _known(value) -> bool:
    """A cell that holds something (not None, NaN, ``pd.NA`` or blank)."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return False
    return str(value).strip() != ""


def _with_checks(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with ``_checked`` (the row says whether an indicator fired: an
    ``unreliable`` cell that is not empty; older files lack the column and ``--checks off``
    leaves it empty), ``_flagged`` and ``_indicators`` (normalised) per row."""
    missing = pd.Series(None, index=results.index, dtype=object)
    unreliable = results["unreliable"] if "unreliable" in results.columns else missing
    names = results["indicators"] if "indicators" in results.columns else missing
    names = names.map(lambda v: ";".join(indicator_names(v)))
    return results.assign(
        _checked=[_known(u) or bool(n) for u, n in zip(unreliable, names, strict=True)],
        _indicators=names, _flagged=[flag(u) or bool(n) for u, n in zip(unreliable, names, strict=True)])


def _choose_rows(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, dataset, norm, eps, attack, n, seed): the tie-break documented
    in the module docstring."""
    frame = results.copy()
    for col in ("cell_key", "robeval_version", "training"):
        frame[col] = frame[col].map(_text) if col in frame.columns else ""
    frame["seed"] = frame["seed"].map(seed_text) if "seed" in frame.columns else ""
    frame = frame.sort_values(
        ["model", "dataset", "norm", "eps", "attack", "n", "seed", "robust_acc", "clean_acc", "cell_key",
         "robeval_version", "_no_samples", "_source"], kind="mergesort")
    return frame.drop_duplicates(["model", "dataset", "norm", "eps", "attack", "n", "seed"], keep="first")


def _per_sample(group: pd.DataFrame, samples: dict[str, pd.DataFrame | None]):
    """``((worst-case accuracy, clean accuracy, points), "")`` from the per-point outcomes,
    or ``(None, why)`` when the attacks cannot be joined point by point."""
    joined, first = None, ""
    for row in group.to_dict("records"):
        s = samples.get(row["_source"])
        if s is None:
            return None, BARE_CSV if str(row["_source"]).lower().endswith(".csv") else NO_SAMPLES
        attack = row["attack"]
        s = s[(s["model"] == row["model"]) & (s["attack"] == attack) & (s["eps"] == row["eps"])]
        if len(s) == 0:
            return None, f"samples.csv has no points of {attack}"
        if s["split_index"].duplicated().any():
            return None, f"samples.csv repeats points of {attack}"
        s = s.set_index("split_index")
        if joined is None:
            joined, first = pd.DataFrame({"label": s["label"], "robust": s["adv_pred"] == s["label"]}), attack
            if "clean_pred" in s.columns:
                joined["clean"] = s["clean_pred"] == s["label"]
            continue
        if set(s.index) != set(joined.index):
            return None, f"{first} and {attack} ran on different points"
        if not (s["label"].reindex(joined.index) == joined["label"]).all():
            return None, f"{first} and {attack} disagree on the labels"
        joined["robust"] &= (s["adv_pred"] == s["label"]).reindex(joined.index)
    clean = float(joined["clean"].mean()) if "clean" in joined.columns else None
    return (float(joined["robust"].mean()), clean, len(joined)), ""


def _computed_rows(results: pd.DataFrame, samples: dict[str, pd.DataFrame | None]) -> list[dict]:
    rows = []
    chosen = _choose_rows(results)
    chosen = chosen.assign(threat=[threat_model(n, a) for n, a in zip(chosen["norm"], chosen["attack"], strict=True)])
    for (model, dataset, norm, threat, eps, n, seed), group in chosen.groupby([*KEY_COLUMNS, *RUN_COLUMNS],
                                                                              sort=True):
        group = group.sort_values("attack")
        accs = {f"{ACC_PREFIX}{a}": float(v) for a, v in zip(group["attack"], group["robust_acc"], strict=True)}
        clean, n = float(group["clean_acc"].min()), int(n)
        joined, why = _per_sample(group, samples)
        if joined is not None:
            worst, sample_clean, n = joined
            clean = sample_clean if sample_clean is not None else clean
            source = FROM_SAMPLES
        else:
            worst, source = float(group["robust_acc"].min()), f"{FROM_MIN}: {why}"
        auto = group[group["attack"].map(is_standard_autoattack)]
        trainings = sorted({t for t in group["training"] if t})
        versions = sorted({v for v in group["robeval_version"] if v})
        indicators = _indicators(group)
        rows.append({
            "model": model, "dataset": dataset, "norm": norm, "threat": threat, "eps": float(eps), "clean_acc": clean,
            **accs, "worst_case_acc": worst, "worst_case_from": source,
            "autoattack_acc": float(auto["robust_acc"].min()) if len(auto) else np.nan,
            "unreliable": _unreliable(source, _effective_attacks(group), ball=norm in BALL_NORMS)
            or bool(group["_flagged"].any()),
            "indicators": indicators, "checked": bool(group["_checked"].all()), "attacks": len(group), "n": n,
            "seed": seed, "training": "; ".join(trainings), "robeval_version": ",".join(versions), "model_info": "",
        })
    return rows


def _effective_attacks(group: pd.DataFrame) -> list[str]:
    """The group's attacks, a ``worst-case`` cascade row counting as its whole AutoAttack
    stage when it has one (the cascade is at least as strong as its stages)."""
    stages = group["stages"].map(_text) if "stages" in group.columns else pd.Series("", index=group.index)
    out = []
    for attack, stage in zip(group["attack"], stages, strict=True):
        ensembles = [s.strip() for s in stage.split(" > ") if is_autoattack_ensemble(s.strip())]
        out.append(ensembles[0] if attack == "worst-case" and ensembles else attack)
    return out


def _unreliable(source: str, attacks: list[str], *, ball: bool = True) -> bool:
    """The worst case is unreliable when it had to be the minimum over several attacks
    (not per sample), or rests on one attack of a ball norm that is not a whole AutoAttack
    ensemble (a non-ball threat model is one attack by construction). Indicators that
    fired are added by the caller."""
    if len(attacks) > 1:
        return source != FROM_SAMPLES
    return ball and not is_autoattack_ensemble(attacks[0])


def _imported_rows(imported: list[dict], taken: set[tuple]) -> list[dict]:
    best: dict[tuple, dict] = {}
    imported = [{**row, "threat": row.get("threat") or threat_model(row.get("norm"))} for row in imported]
    for row in sorted(imported, key=lambda r: (-int(r.get("n") or 0), json.dumps(r, sort_keys=True, default=str))):
        key = tuple(row[k] for k in KEY_COLUMNS)
        if key not in taken and key not in best:
            best[key] = row
    return list(best.values())


def leaderboard(sources: list[Path]) -> pd.DataFrame:
    """The ranked leaderboard of ``sources`` (see the module docstring for every rule)."""
    if not sources:
        raise RobevalError("no leaderboard sources given; pass run directories, results CSVs or model_info JSONs")
    results_parts, samples, imported = [], {}, []
    for source in sorted({str(Path(s)) for s in sources}):
        results, sample_frame, rows = _load(Path(source))
        imported += rows
        if len(results):
            results = _with_checks(_untargeted(results))
            results = results[results["eps"].astype(float) != 0].assign(
                _source=source, _no_samples=sample_frame is None, eps=lambda f: f["eps"].astype(float))
            results_parts.append(results)
        if sample_frame is not None:
            sample_frame = _untargeted(sample_frame).assign(eps=lambda f: f["eps"].astype(float))
            samples[source] = sample_frame
    computed = _computed_rows(pd.concat(results_parts, ignore_index=True), samples) if results_parts else []
    taken = {tuple(r[k] for k in KEY_COLUMNS) for r in computed}
    return _rank(computed + _imported_rows(imported, taken))


def _rank(rows: list[dict]) -> pd.DataFrame:
    attack_cols = sorted({k for r in rows for k in r if k.startswith(ACC_PREFIX)})
    columns = [*HEAD_COLUMNS, *attack_cols, *TAIL_COLUMNS]
    frame = pd.DataFrame(rows, columns=[c for c in columns if c != "rank"])
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame["unreliable"] = frame["unreliable"].map(flag).astype(bool)
    frame["checked"] = frame["checked"].map(flag).astype(bool)
    frame["n"] = frame["n"].astype("Int64")
    for col in ("training", "robeval_version", "model_info", "norm", "threat", "worst_case_from", "indicators"):
        frame[col] = frame[col].map(_text)
    frame["seed"] = frame["seed"].map(seed_text)
    order = frame.assign(_w=frame["worst_case_acc"].fillna(-1.0), _c=frame["clean_acc"].fillna(-1.0))
    order = order.sort_values([*GROUP_COLUMNS, "_w", "_c", "model"],
                              ascending=[True, True, True, True, False, False, True], kind="mergesort")
    frame = order.drop(columns=["_w", "_c"]).reset_index(drop=True)
    frame.insert(0, "rank", frame.groupby(GROUP_COLUMNS, sort=False).cumcount() + 1)
    return frame[columns]


def _pct(value) -> str:
    return "" if value is None or pd.isna(value) else f"{100 * float(value):.2f}"


def unreliable_reasons(row: dict) -> list[str]:
    """Why a leaderboard row is ``unreliable``, one short phrase per reason (empty for a
    reliable row)."""
    if not flag(row.get("unreliable")):
        return []
    reasons = []
    attacks = [k[len(ACC_PREFIX):] for k, v in sorted(row.items()) if k.startswith(ACC_PREFIX) and not pd.isna(v)]
    source = _text(row.get("worst_case_from"))
    if source.startswith(FROM_MIN) and len(attacks) > 1:
        why = source[len(FROM_MIN):].lstrip(": ")
        reasons.append("worst case is the minimum over attacks, not per sample" + (f" ({why})" if why else ""))
    if (len(attacks) == 1 and _text(row.get("norm")) in BALL_NORMS and source != FROM_EXTERNAL
            and not is_autoattack_ensemble(attacks[0])):
        reasons.append(f"one attack only ({attacks[0]}), not a whole AutoAttack ensemble")
    if _text(row.get("indicators")):
        reasons.append(f"attack-failure indicators fired: {row['indicators']}")
    if not reasons:
        reasons.append("marked unreliable by its source" if source == FROM_EXTERNAL or not attacks
                       else "marked unreliable")
    return reasons


def _several_runs(frame: pd.DataFrame) -> list[str]:
    """``"m (digits, linf, eps 0.1): n=64 seed 1, n=32 seed 0"`` for every (model, data
    set, threat model, eps) with more than one run."""
    out: list[str] = []
    if frame.empty or "seed" not in frame.columns:
        return out
    computed = frame[frame["worst_case_from"] != FROM_EXTERNAL]
    for (model, dataset, threat, eps), rows in computed.groupby(["model", "dataset", "threat", "eps"], sort=True):
        if len(rows) > 1:
            runs = ", ".join(f"n={'' if pd.isna(n) else int(n)} seed {_text(seed) or 'unknown'}"
                             for n, seed in zip(rows["n"], rows["seed"], strict=True))
            out.append(f"{model} ({dataset}, {threat}, eps {format_eps(float(eps))}): {runs}")
    return out


def leaderboard_markdown(frame: pd.DataFrame) -> str:
    """GitHub Markdown: accuracies in % (2 decimals), eps as ``8/255``; ``*`` marks an
    unreliable worst case (a fallback, one attack that is not a whole AutoAttack, or an
    attack-failure indicator that fired), and a footnote lists the reasons per row. A model
    evaluated in several runs (other ``n`` or ``seed``) has one row per run, and a note
    says so."""
    attack_cols = [c for c in frame.columns if c.startswith(ACC_PREFIX)]
    header = ["#", "model", "dataset", "threat model", "eps", "clean", *[c[len(ACC_PREFIX):] for c in attack_cols],
              "worst case", "autoattack", "n", "seed", "worst case from"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    notes, unchecked = [], 0
    for row in frame.to_dict("records"):
        mark = "*" if row["unreliable"] else ""
        eps = "" if pd.isna(row["eps"]) else format_eps(float(row["eps"]))
        threat = _text(row.get("threat")) or _text(row["norm"])
        cells = [str(row["rank"]), str(row["model"]), str(row["dataset"]), threat, eps,
                 _pct(row["clean_acc"]), *[_pct(row[c]) for c in attack_cols],
                 _pct(row["worst_case_acc"]) + mark, _pct(row["autoattack_acc"]),
                 "" if pd.isna(row["n"]) else str(int(row["n"])), _text(row.get("seed")),
                 str(row["worst_case_from"])]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if mark:
            where = ", ".join(p for p in (str(row["dataset"]), threat, f"eps {eps}" if eps else "") if p)
            notes.append(f"- #{row['rank']} {row['model']} ({where}): {'; '.join(unreliable_reasons(row))}")
        if row["worst_case_from"] != FROM_EXTERNAL and not flag(row.get("checked", False)):
            unchecked += 1
    text = "\n".join(lines) + (
        "\n\n`*` unreliable: worst case not computed per sample, from one attack that is not a whole "
        "AutoAttack, or an attack-failure indicator fired. `autoattack`: the standard AutoAttack only (a custom "
        "or reduced one is an attack column of its own).\n"
    )
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    runs = _several_runs(frame)
    if runs:
        text += ("\nSeveral runs of one model (other n or seed: other points) are separate rows, never merged: "
                 + "; ".join(runs) + ".\n")
    if unchecked:
        text += (f"\nAttack-failure checks: not checked for {unchecked} of {len(frame)} rows (results.csv without "
                 "`unreliable`/`indicators` columns, from before the checks existed).\n")
    return text
