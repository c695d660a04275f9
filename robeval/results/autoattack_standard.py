"""Which AutoAttack a results row ran, read off its canonical attack name.

RobustBench's ``autoattack_acc`` means one thing: the *standard* AutoAttack of Croce &
Hein (ICML 2020) -- APGD-CE, APGD-T, FAB-T and Square with the library's standard
settings (100 iterations, 9 target classes, 5000 queries) in L-inf or L2. Only such a row
may fill the leaderboard's ``autoattack_acc`` and the exported entry's field. Everything
else that runs pyautoattack is reported under its own name (its ``acc:`` column, the
worst case), never as ``autoattack_acc``:

* ``"standard"``: ``autoattack`` / ``autoattack:norm=l2`` and explicit standard values;
* ``"full"``: a whole ensemble that is not the standard one: ``version=plus`` (stronger),
  ``version=rand`` (the protocol for randomized defenses), or larger budgets (more
  iterations, targets or queries): trusted as an ensemble for the ``unreliable`` rule,
  not reported as ``autoattack_acc``;
* ``"reduced"``: ``version=custom`` (a chosen subset), fewer iterations, targets or
  queries, another norm, or a parameter this module does not know;
* ``None``: not AutoAttack.
"""

from __future__ import annotations

from typing import Literal

from robeval.errors import RobevalError
from robeval.params import parse_named

AutoAttackKind = Literal["standard", "full", "reduced"]
NAME = "autoattack"
STANDARD_BUDGET = {"n_iter": 100, "n_target_classes": 9, "n_queries": 5000}  # pyautoattack's standard version
STANDARD_NORMS = ("linf", "l2")


def autoattack_kind(attack: object) -> AutoAttackKind | None:
    """``"standard"``, ``"full"``, ``"reduced"`` or ``None`` for a canonical attack name
    such as ``autoattack:version=custom,attacks=apgd-ce`` (module docstring)."""
    text = str(attack or "").strip()
    if text.split(":", 1)[0].strip().lower() != NAME:
        return None
    try:
        _, params = parse_named(text, kind="attack")
    except RobevalError:
        return "reduced"
    params = {k.lower(): v for k, v in params.items()}
    version = str(params.pop("version", "standard") or "standard").lower()
    norm = str(params.pop("norm", "linf") or "linf").lower()
    if version not in ("standard", "plus", "rand") or norm not in STANDARD_NORMS:
        return "reduced"
    kind: AutoAttackKind = "standard" if version == "standard" else "full"
    for key, standard in STANDARD_BUDGET.items():
        value = params.pop(key, None)
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            return "reduced"
        if number < standard:
            return "reduced"
        if number > standard:
            kind = "full"
    return "reduced" if params else kind


def is_standard_autoattack(attack: object) -> bool:
    """Whether ``attack`` is the standard AutoAttack, the one ``autoattack_acc`` means."""
    return autoattack_kind(attack) == "standard"


def is_autoattack_ensemble(attack: object) -> bool:
    """Whether ``attack`` is a whole AutoAttack ensemble (standard, plus, rand, or larger
    budgets): a reliable evaluation by itself. A custom subset or a reduced budget is not."""
    return autoattack_kind(attack) in ("standard", "full")
