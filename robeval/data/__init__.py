"""Offline data sets for robeval: built-in (``mnist-mini``, ``digits``, ``shapes``) and
read from local files in their standard formats (``mnist``, ``fashion-mnist``,
``cifar10``, ``cifar100``, ``svhn``, ``imagefolder:PATH``). Nothing is ever downloaded.

    x, y = load_dataset("mnist-mini", split="test", n=200, seed=0)
    info = dataset_info("shapes:size=32,channels=3")
"""

from __future__ import annotations

from robeval.data import builtin, cifar, idx, imagefolder, shapes, svhn  # noqa: F401  (registration)
from robeval.data.base import (
    DatasetInfo,
    DataSource,
    dataset_info,
    datasets,
    get_source,
    load_dataset,
    subset_indices,
)

__all__ = ["DataSource", "DatasetInfo", "dataset_info", "datasets", "get_source", "load_dataset",
           "subset_indices"]
