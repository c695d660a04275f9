"""Epoch checkpoints that let a killed training run continue where it stopped.

After every epoch the loop writes ``OUT.resume`` (atomically): weights, optimiser
state, the training generator's and torch's RNG states, the epoch log and the spec. A
new run with the same spec finds it, says so in a warning and continues from the next
epoch, ending with the same weights as an uninterrupted run; the file is removed once
the final checkpoint is written. It is read with ``weights_only=True`` like every
checkpoint.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robeval.atomic import atomic_open
from robeval.models.pickle_scan import code_globals

log = logging.getLogger(__name__)
FORMAT = 2
IGNORED = ("device",)  # settings that do not change the result


@dataclass
class ResumeState:
    epoch: int  # epochs completed
    model: dict[str, Any]
    optimizer: dict[str, Any]
    generator: torch.Tensor
    torch_rng: torch.Tensor
    log: list[dict[str, float]]
    seconds: float
    regularisers: list[dict[str, Any]]  # each regulariser's state_dict() (e.g. SNC's step counter)


def resume_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".resume")


def save_resume(path: Path, spec: dict[str, Any], state: ResumeState) -> None:
    payload = {"format": FORMAT, "spec": _comparable(spec), **state.__dict__}
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)


def load_resume(path: Path, spec: dict[str, Any]) -> ResumeState | None:
    """The saved state if ``path`` holds one for this very spec, else ``None`` (a stale
    or unreadable file is ignored with a warning and overwritten after the next epoch).

    Resuming is announced with a warning (shown without ``--verbose``): "resuming from
    epoch k of N (PATH); delete it to start afresh"."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is just not resumable
        forbidden = code_globals(path)
        if forbidden:
            log.warning("ignoring resume file %s: it imports %s, which could run code; it is not loaded and is "
                        "overwritten after the next epoch", path, ", ".join(forbidden[:3]))
        else:
            lines = str(exc).strip().splitlines()
            log.warning("ignoring unreadable resume file %s (%s: %s)", path, type(exc).__name__,
                        lines[0] if lines else "")
        return None
    fields = ResumeState.__dataclass_fields__
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("spec") != _comparable(spec):
        log.warning("ignoring %s: it belongs to another training spec", path)
        return None
    if any(key not in payload for key in fields) or not isinstance(payload["epoch"], int):
        log.warning("ignoring %s: it lacks some of the saved state", path)
        return None
    warnings.warn(
        f"resuming from epoch {payload['epoch']} of {spec.get('epochs', '?')} ({path}); delete it to start afresh",
        stacklevel=2,
    )
    return ResumeState(**{k: payload[k] for k in fields})


def _comparable(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in IGNORED}
