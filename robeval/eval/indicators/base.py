"""What an attack-failure indicator reports, and the registry of the indicators.

An indicator looks at one model and attack (and, for some, one eps) and says whether
the attack's number can be trusted: ``fired`` when it cannot, with the measured
``value``, the ``threshold`` it was compared with and one ``detail`` sentence naming the
adaptive attack to run instead. The checks follow Carlini et al. 2019 ("On Evaluating
Adversarial Robustness", Sec. 5), Athalye et al. 2018 ("Obfuscated Gradients Give a
False Sense of Security", Sec. 3), Tramer et al. 2020 ("On Adaptive Attacks") and Pintor
et al. 2022 ("Indicators of Attack Failure", Sec. 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from robeval.registry import Registry

LEVELS = ("off", "fast", "full")


@dataclass(frozen=True)
class Finding:
    """One indicator's verdict on one model and attack (``eps`` None when it does not apply
    to a single eps). ``points`` is how many points the indicator looked at."""

    model: str
    attack: str
    eps: float | None
    indicator: str
    fired: bool
    value: float | None
    threshold: float | None
    detail: str
    points: int = 0

    def to_json(self) -> dict[str, Any]:
        def number(v: float | None) -> float | str | None:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return None
            return "inf" if math.isinf(v) else float(v)

        return {
            "model": self.model, "attack": self.attack, "eps": number(self.eps), "indicator": self.indicator,
            "fired": bool(self.fired), "value": number(self.value), "threshold": number(self.threshold),
            "detail": self.detail, "points": int(self.points),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        def number(v: Any) -> float | None:
            return None if v is None else float(v)

        return cls(model=str(data["model"]), attack=str(data["attack"]), eps=number(data["eps"]),
                   indicator=str(data["indicator"]), fired=bool(data["fired"]), value=number(data["value"]),
                   threshold=number(data["threshold"]), detail=str(data["detail"]), points=int(data.get("points", 0)))


@dataclass(frozen=True)
class IndicatorInfo:
    """What the README and ``robeval ls indicators`` say of an indicator: what it catches,
    when it fires and what it costs; ``level`` is the cheapest ``--checks`` level that
    runs it (``fast`` or ``full``)."""

    name: str
    catches: str
    fires_when: str
    cost: str
    level: str = "fast"


indicators: Registry[IndicatorInfo] = Registry("indicator")


def describe(info: IndicatorInfo) -> IndicatorInfo:
    """Register ``info`` under its name (one registry entry per indicator)."""
    indicators.register(info.name)(info)
    return info
