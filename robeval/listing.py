"""What `robeval ls KIND` shows: every registry entry with the first line of its docstring."""

from __future__ import annotations

from robeval.errors import RobevalError
from robeval.registry import Registry, unknown_name_message


def _summary(obj: object) -> str:
    summary = getattr(obj, "summary", None)
    if isinstance(summary, str) and summary:
        return summary
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return " ".join(doc.split("\n\n")[0].split()) if doc else ""


def _attack_summary(obj: object) -> str:
    """An attack's first docstring paragraph, tagged with its kind."""
    from robeval.attacks.base import is_gradient_free, is_minimal, is_targeted

    tags = ["minimal-norm" if is_minimal(obj) else "budgeted"] + (["targeted"] if is_targeted(obj) else [])
    tags += ["gradient-free"] if is_gradient_free(obj) else []
    return f"[{', '.join(tags)}] {_summary(obj)}"


def _rows(registry: Registry, prefix: str = "") -> list[tuple[str, str]]:
    return [(prefix + name, _summary(obj)) for name, obj in registry.items()]


def listing(kind: str) -> list[tuple[str, str]]:
    """(name, one-line description) rows for ``attacks``, ``models``, ``datasets``,
    ``objectives``, ``regularisers`` or ``indicators``."""
    key = kind.lower().rstrip("s")
    if key == "attack":
        from robeval.attacks import attacks

        return [(name, _attack_summary(cls)) for name, cls in attacks.items()]
    if key in ("model", "architecture", "arch"):
        from robeval.models import architectures, model_sources

        return _rows(architectures) + _rows(model_sources, prefix="source: ")
    if key == "dataset":
        from robeval.data import datasets

        return _rows(datasets)
    if key == "objective":
        from robeval.train import objectives

        return _rows(objectives)
    if key in ("regulariser", "regularizer"):
        from robeval.train import regularisers

        return _rows(regularisers)
    if key == "indicator":
        from robeval.eval.indicators import indicators

        return [(name, f"[{info.level}] {info.catches}; fires when {info.fires_when}; cost: {info.cost}")
                for name, info in indicators.items()]
    known = ["attacks", "models", "datasets", "objectives", "regularisers", "indicators"]
    raise RobevalError(unknown_name_message("list", kind, known, see_also=False))
