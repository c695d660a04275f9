"""The per-sample best of several minimal-norm attacks, run as a cascade."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from robeval.attacks import advlib, rng
from robeval.attacks.base import is_minimal
from robeval.attacks.registry import attacks
from robeval.attacks.trace import tracing
from robeval.errors import RobevalError
from robeval.params import parse_value

MEMBER_SEPARATOR, PARAM_SEPARATOR = "+", "/"


@attacks.register("ensemble")
@dataclass(frozen=True, kw_only=True)
class Ensemble:
    """The smallest adversarial per sample over several minimal-norm attacks, the
    per-sample best curve that AttackBench's optimality measures attacks against (Cinà,
    Rony, Pintor et al., "AttackBench: Evaluating Gradient-based Attacks for Adversarial
    Examples", AAAI 2025).

    ``members``: minimal-norm attacks joined by ``+``, each a name or a name with its
    parameters joined by ``/`` (``deepfool+ddn+fmn/steps=1000``); ``norm`` is given to
    every member that has a ``norm`` parameter and all must minimise it. The members run
    in the order given, each on the points it can still improve: with a finite ``eps``
    (``robeval run --worst-case`` calls its stages so) only the points no earlier member
    broke inside the eps-ball, with ``eps=inf`` (one search for the whole curve) every
    point the model classified correctly. Per point, the member's answer replaces the
    best so far where it is adversarial (checked here with one forward pass) and smaller
    in ``norm``. A member thus runs on exactly the points it would run on alone, and the
    ensemble's norm of every point is at most each member's: its curve is never above any
    member's. Each member gets the subset's share of ``generator``
    (:func:`robeval.attacks.rng.take`), in turn.

    ``warm_start=true`` starts members that can start from an adversarial (``fmn``, FMN's
    warm start) from the best so far, where there is one: it then only searches below
    that bound (a bisection on the segment to it, then shrinking), which lets a short FMN
    finish what DeepFool began: ``members=deepfool+fmn/steps=25/alpha_init=10`` is the
    README's fast curve (about 47 forward passes per point), ``.../steps=100/alpha_init=30``
    its tight one (``benchmarks/attack_optimality.py``). Such a member no longer runs as
    it would alone, so the guarantee then covers the other members and the bound it
    started from, not the member run from scratch.

    A minimal-norm attack: with ``eps=inf`` the smallest adversarial per sample (``x``
    where no member found one), with a finite ``eps`` only those inside the ball.
    Untargeted. Its passes are the members' plus one forward pass per member and point.
    """

    name: ClassVar[str] = "ensemble"
    minimal: ClassVar[bool] = True
    targeted: ClassVar[bool] = False
    nested: ClassVar[bool] = True  # minimal-norm: one unbounded search answers every eps
    members: str = "deepfool+ddn+fmn"
    norm: Literal["l0", "l1", "l2", "linf"] = "l2"
    warm_start: bool = False

    def __post_init__(self) -> None:
        if self.norm not in advlib.LP:
            raise RobevalError(f"ensemble's norm is l0, l1, l2 or linf (got {self.norm}); e.g. ensemble:norm=linf")
        built(self.members, self.norm)

    def member_attacks(self) -> tuple[Any, ...]:
        """The members, built (their ``norm`` set to the ensemble's where they take one)."""
        return built(self.members, self.norm)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float = math.inf,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        if target is not None:
            raise RobevalError("the ensemble is untargeted; drop the target (or run its members one by one)")
        x0 = x.detach()
        if eps == 0 or len(x0) == 0:
            return x0.clone()
        best, _ = self.search(model, x0, y.detach().to(x0.device), eps=eps, generator=generator)
        return advlib.restrict(x0, best, eps, self.norm)

    def search(self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float = math.inf,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Per point the smallest adversarial of the members and its norm (``x`` and
        ``inf`` where none was found; ``x`` and 0 where ``x`` is misclassified)."""
        with torch.no_grad():
            wrong = model(x).argmax(dim=1) != y
        best = x.clone()
        best_norm = torch.where(wrong, 0.0, math.inf).to(device=x.device, dtype=torch.float64)
        bound = eps if math.isfinite(eps) else 0.0  # a point is done once its best is within it
        for member in self.member_attacks():
            rows = (best_norm > bound).nonzero().flatten()
            if len(rows) == 0:
                break
            found = self._run_member(member, model, x[rows], y[rows], best[rows], best_norm[rows],
                                     rng.take(generator, rows.cpu()))
            with torch.no_grad():
                adversarial = model(found).argmax(dim=1) != y[rows]
            norms = advlib.lp_norms(found - x[rows], self.norm).double()
            better = adversarial & (norms < best_norm[rows])
            best[rows[better]] = found[better]
            best_norm[rows[better]] = norms[better]
        return best, best_norm

    def _run_member(self, member: Any, model: nn.Module, x: Tensor, y: Tensor, best: Tensor, best_norm: Tensor,
                    generator: torch.Generator | None) -> Tensor:
        """One member's unbounded answer on ``x`` (its own path trace kept apart, so that
        rows of a subset are not read as the runner's rows)."""
        with tracing(len(x)):
            has_start = torch.isfinite(best_norm) & (best_norm > 0)
            if self.warm_start and hasattr(member, "search") and _takes_start(member) and bool(has_start.any()):
                return member.search(model, x, y, start=best, has_start=has_start).detach()
            return member(model, x, y, eps=math.inf, generator=generator).detach()


def _takes_start(member: Any) -> bool:
    import inspect

    return "start" in inspect.signature(member.search).parameters


def parse_members(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``"deepfool+fmn/steps=1000"`` -> ``[("deepfool", {}), ("fmn", {"steps": 1000})]``."""
    out = []
    for part in (p.strip() for p in str(text).split(MEMBER_SEPARATOR)):
        if not part:
            raise RobevalError(f"ensemble members {text!r} have an empty entry; join names by '+', "
                               "e.g. members=deepfool+ddn+fmn")
        name, *settings = part.split(PARAM_SEPARATOR)
        params: dict[str, Any] = {}
        for setting in settings:
            key, eq, value = setting.partition("=")
            if not eq or not key.strip():
                raise RobevalError(f"cannot read {setting!r} in ensemble member {part!r}; write "
                                   f"{name}/key=value, e.g. fmn/steps=1000")
            params[key.strip().replace("-", "_")] = parse_value(value)
        out.append((name.strip(), params))
    return out


@functools.lru_cache(maxsize=128)
def built(members: str, norm: str) -> tuple[Any, ...]:
    """The member attacks of ``members`` in ``norm`` (checked: minimal-norm, one norm)."""
    from robeval.attacks.registry import get

    out = []
    for name, params in parse_members(members):
        cls = attacks.get(name)
        if cls is Ensemble:
            raise RobevalError("an ensemble cannot be a member of an ensemble; list its members instead")
        if "norm" in {f.name for f in fields(cls)}:
            params = {"norm": norm, **params}
        member = get(name, **params)
        if not is_minimal(member):
            raise RobevalError(f"ensemble member {name!r} is a budgeted attack; members must be minimal-norm "
                               "attacks (deepfool, cw, ddn, fmn, alma); run budgeted ones with --worst-case")
        if member.norm != norm:
            raise RobevalError(f"ensemble member {name!r} minimises {member.norm}, not {norm}; "
                               f"give ensemble:norm={member.norm} or drop {name}")
        out.append(member)
    if not out:
        raise RobevalError("an ensemble needs at least one member, e.g. members=deepfool+ddn+fmn")
    return tuple(out)
