"""robeval: adversarial-robustness evaluation and robust training for image classifiers.

The public API for notebooks and scripts::

    import robeval
    model = robeval.load_model("results/demo/mnist_cnn.pt")     # eval mode, [0,1] inputs
    x, y = robeval.load_dataset("mnist-mini", split="test", n=200, seed=0)
    pgd = robeval.attacks.get("pgd", steps=20)                   # or "pgd:norm=l2,steps=20"
    x_adv = pgd(model, x, y, eps=0.1)
    df = robeval.evaluate(models=["results/demo/mnist_cnn.pt"], attacks=["pgd"], eps="0,0.1,0.2")

``robeval.attacks`` and ``robeval.load_dataset`` are imported on first use, so importing
``robeval`` (and starting the ``robeval`` command) does not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from robeval.errors import RobevalError
from robeval.version import __version__

if TYPE_CHECKING:
    from torch import nn

    from robeval import attacks
    from robeval.data import load_dataset


def __getattr__(name: str) -> Any:
    """The lazily imported parts of the API: ``attacks`` and ``load_dataset``."""
    if name == "attacks":
        return importlib.import_module("robeval.attacks")
    if name == "load_dataset":
        return importlib.import_module("robeval.data").load_dataset
    raise AttributeError(f"module 'robeval' has no attribute {name!r}")


def load_model(source: str, device: str = "cpu") -> nn.Module:
    """An eval-mode ``nn.Module`` taking [0, 1] images, from a checkpoint path or other source."""
    from robeval.device import resolve_device
    from robeval.models import load_model as _load

    return _load(source, device=resolve_device(device)).model


def transfer(spec: Any = None, **kwargs: Any):  # -> pandas.DataFrame
    """Run a transfer grid like ``robeval transfer`` and return ``transfer.csv`` as a
    DataFrame (see :func:`robeval.eval.transfer.transfer`), e.g.
    ``transfer(sources=["a.pt", "b.pt"], attacks=["pgd"], eps="0.1,0.3", n=200)``."""
    from robeval.eval.transfer import transfer as _transfer

    return _transfer(spec, **kwargs)


def evaluate(spec: Any = None, **kwargs: Any):  # -> pandas.DataFrame
    """Run like ``robeval run`` and return the results rows as a DataFrame (see
    :func:`robeval.eval.evaluate.evaluate`)."""
    from robeval.eval.evaluate import evaluate as _evaluate

    return _evaluate(spec, **kwargs)


__all__ = ["RobevalError", "__version__", "attacks", "evaluate", "load_dataset", "load_model", "transfer"]
