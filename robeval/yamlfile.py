"""Reading the YAML files users write (run specs, training recipes) with one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from robeval.errors import RobevalError


def read_mapping(path: str | Path, *, what: str, flag: str, example: str) -> dict[str, Any]:
    """The mapping in YAML file ``path``; a missing file, bad YAML or a non-mapping gives
    one :class:`RobevalError` naming ``flag`` (e.g. ``--spec``) or the fix."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise RobevalError(f"{what} {path} does not exist; check the {flag} path") from None
    except yaml.YAMLError as exc:
        raise RobevalError(f"{what} {path} is not valid YAML ({exc}); fix its syntax") from None
    if not isinstance(data, dict):
        raise RobevalError(f"{what} {path} must hold a mapping of settings, e.g. `{example}`")
    return data
