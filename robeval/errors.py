"""Errors a user can cause and fix.

Every :class:`RobevalError` carries one sentence that says what is wrong and how to fix
it. The CLI prints that sentence without a traceback and exits non-zero; library code
raises it for bad input (unknown names, malformed files, impossible settings).
"""

from __future__ import annotations


class RobevalError(Exception):
    """A problem with the user's input; the message names the fix."""


class AttackContractError(RobevalError):
    """An attack returned adversarials outside its budget, the [0,1] box, or with NaN."""
