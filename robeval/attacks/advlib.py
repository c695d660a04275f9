"""adv-lib (Jérôme Rony's adversarial library, PyPI ``adv-lib``, BSD-3) as a dependency:
importing it without ``visdom``, seeding it, and the norms its attacks minimise.

adv-lib's ``adv_lib.attacks`` package imports every attack at import time, and some of
them (DDN, ALMA, C&W, PGD) import ``adv_lib.utils.visdom_logger``, which imports
``visdom`` for an optional live-plotting callback that robeval never passes. ``visdom``
0.2.4 does not build on current setuptools (its ``setup.py`` imports ``pkg_resources``),
so robeval installs adv-lib with ``--no-deps`` (its real runtime needs, torch,
torchvision and tqdm, are robeval's own) and imports it through :func:`attacks_module`:
where ``visdom`` is importable it is used as is; where it is not, a stand-in module sits
in ``sys.modules["visdom"]`` only while ``adv_lib.attacks`` is imported and is removed
right after, so ``import visdom`` in the user's process still fails as it should. The
stand-in stays reachable only as ``adv_lib.utils.visdom_logger.visdom``, and constructing
adv-lib's ``VisdomLogger`` then raises a :class:`RobevalError` that says to install
visdom.

adv-lib's attacks draw from torch's global random generators (APGD's random start, DDN's
direction for a zero gradient, ALMA's learning-rate probe). :func:`seeded` runs them
with those generators seeded from the attack's ``generator`` (one seed per call, drawn
as :mod:`robeval.attacks.autoattack` draws it) and restores the caller's state after.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import threading
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from robeval.attacks.base import perturbation_norms
from robeval.errors import RobevalError

INSTALL = "pip install --no-deps adv-lib==0.2.8"
LP = {"l0": 0.0, "l1": 1.0, "l2": 2.0, "linf": math.inf}  # robeval's norm names -> adv-lib's p
_IMPORT_LOCK = threading.Lock()


def _visdom_stand_in() -> types.ModuleType:
    """What ``adv_lib.utils.visdom_logger`` sees as ``visdom`` when it is not installed."""
    module = types.ModuleType("visdom", "robeval's stand-in: visdom is not installed")

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise RobevalError("adv-lib's VisdomLogger needs the visdom package; run pip install visdom, "
                           "or call the attack without callback=")

    module.Visdom = missing  # type: ignore[attr-defined]
    return module


def attacks_module() -> types.ModuleType:
    """``adv_lib.attacks``, imported without needing ``visdom`` (see the module docstring);
    a :class:`RobevalError` naming the install command when adv-lib is missing."""
    loaded = sys.modules.get("adv_lib.attacks")
    if loaded is not None:
        return loaded
    if importlib.util.find_spec("adv_lib") is None:
        raise RobevalError(f"the ddn, fmn, alma and apgd attacks need adv-lib; run {INSTALL} "
                           "(make install does)")
    with _IMPORT_LOCK, warnings.catch_warnings():
        # adv-lib 0.2.8 compares torch versions with distutils' LooseVersion (deprecated).
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*distutils.*")
        if importlib.util.find_spec("visdom") is not None:
            return importlib.import_module("adv_lib.attacks")
        stand_in = _visdom_stand_in()
        sys.modules["visdom"] = stand_in
        try:
            return importlib.import_module("adv_lib.attacks")
        finally:
            if sys.modules.get("visdom") is stand_in:
                del sys.modules["visdom"]


def library(name: str, module: str = "attacks") -> Any:
    """One function of adv-lib: ``library("ddn")`` (from ``adv_lib.attacks``),
    ``library("l2_projection_", "attacks.fast_minimum_norm")``,
    ``library("difference_of_logits", "utils.losses")``."""
    attacks_module()
    return getattr(importlib.import_module(f"adv_lib.{module}"), name)


def library_seed(generator: torch.Generator | None) -> int:
    """The seed of the global generators for one call: drawn from ``generator`` (0 without one)."""
    if generator is None:
        return 0
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's global CPU (and ``device``'s CUDA) generator seeded with
    ``seed``; the caller's generator states are restored afterwards."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def lp_norms(delta: Tensor, norm: str) -> Tensor:
    """Per-sample ``||delta||`` in ``norm``: ``l0``, ``l1``, ``l2`` or ``linf`` (``l0``
    counts the entries that moved, :data:`robeval.attacks.base.L0_TOL`)."""
    if norm == "l1":
        return delta.flatten(1).abs().sum(dim=1)
    return perturbation_norms(delta, norm)


def restrict(x: Tensor, x_adv: Tensor, eps: float, norm: str) -> Tensor:
    """``x_adv`` where ``||x_adv - x|| <= eps`` in ``norm`` (also ``l1``), ``x`` elsewhere
    (:func:`robeval.attacks.base.restrict_to_ball`, compared in float64 as the runner does)."""
    if math.isinf(eps):
        return x_adv
    inside = lp_norms(x_adv - x, norm).double() <= eps
    return torch.where(inside.view(-1, *([1] * (x.dim() - 1))), x_adv, x)


def is_adversarial(logits: Tensor, classes: Tensor, *, targeted: bool) -> Tensor:
    """Per row: the prediction is ``classes`` (targeted) or is not (untargeted)."""
    pred = logits.argmax(dim=1)
    return pred == classes if targeted else pred != classes


def check_images(x: Tensor, name: str) -> None:
    """adv-lib's attacks take images in [0, 1]: refuse others with one clear line."""
    if len(x) and (float(x.min()) < 0 or float(x.max()) > 1):
        raise RobevalError(f"{name} attacks images in [0, 1]; got values in [{float(x.min()):g}, "
                           f"{float(x.max()):g}]: move normalisation into the model wrapper")


def classes_for(x: Tensor, y: Tensor, target: Tensor | None, name: str) -> Tensor:
    """The labels adv-lib is given: ``y`` untargeted, ``target`` targeted (checked shape)."""
    classes = y if target is None else target
    if classes.shape != (len(x),):
        what = "labels" if target is None else "target"
        raise RobevalError(f"{name} needs {what} of shape ({len(x)},), got {tuple(classes.shape)}; "
                           "give one class per image")
    return classes.to(x.device)


__all__ = ["INSTALL", "LP", "attacks_module", "check_images", "classes_for", "is_adversarial", "library",
           "library_seed", "lp_norms", "restrict", "seeded"]
