"""Where an evaluation's batches are computed: in this process, a local Ray, or a cluster.

``--workers N`` starts a local Ray with ``N`` CPUs (robeval starts and stops it);
``--ray-address auto|HOST:PORT`` joins a running cluster (``auto`` reads ``RAY_ADDRESS``,
as ``ray.init`` does). ``--cpus-per-task`` and ``--gpus-per-task`` (fractions allowed,
e.g. 0.25 puts four tasks on one GPU) are the resources each task asks Ray for. None of
these change a number: they are not written to ``spec.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from robeval.errors import RobevalError


@dataclass(frozen=True)
class ClusterOptions:
    """The cluster flags of ``robeval run``/``transfer``/``train``; all ``None``: in-process."""

    workers: int | None = None
    address: str | None = None
    gpus_per_task: float | None = None
    cpus_per_task: float | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise RobevalError(f"--workers must be >= 1, got {self.workers!r}")
        if self.address is not None and not str(self.address).strip():
            raise RobevalError("--ray-address is empty; pass `auto` (reads RAY_ADDRESS) or HOST:PORT")
        if self.workers is not None and self.address is not None:
            raise RobevalError("give --workers (robeval starts a local Ray) or --ray-address (an existing "
                               "cluster), not both")
        if self.gpus_per_task is not None and not self.gpus_per_task >= 0:
            raise RobevalError(f"--gpus-per-task must be >= 0, got {self.gpus_per_task!r}")
        if self.gpus_per_task is not None and self.gpus_per_task > 1 and self.gpus_per_task != int(self.gpus_per_task):
            raise RobevalError(f"--gpus-per-task above 1 must be a whole number (Ray's rule), got {self.gpus_per_task}")
        if self.cpus_per_task is not None and not self.cpus_per_task > 0:
            raise RobevalError(f"--cpus-per-task must be > 0, got {self.cpus_per_task!r}")
        if not self.enabled and (self.gpus_per_task is not None or self.cpus_per_task is not None):
            raise RobevalError("--gpus-per-task and --cpus-per-task need --workers N or --ray-address ADDRESS")

    @property
    def enabled(self) -> bool:
        """Whether batches go to Ray tasks (else the in-process path, unchanged)."""
        return self.workers is not None or self.address is not None

    @property
    def num_cpus(self) -> float:
        return 1.0 if self.cpus_per_task is None else float(self.cpus_per_task)

    @property
    def num_gpus(self) -> float:
        return 0.0 if self.gpus_per_task is None else float(self.gpus_per_task)

    def worker_device(self, device: str) -> str:
        """The device a task computes on: ``cuda`` when it asks Ray for a GPU (Ray sets
        ``CUDA_VISIBLE_DEVICES`` per task), else the CPU. A run that asks for CUDA
        without ``--gpus-per-task`` is refused: its tasks would see no GPU."""
        if self.num_gpus > 0:
            return "cuda"
        if str(device).startswith("cuda"):
            raise RobevalError(f"--device {device} with Ray tasks needs --gpus-per-task (e.g. 1, or 0.5 for two "
                               "tasks per GPU); tasks that ask for no GPU see none")
        return "cpu"

    @classmethod
    def from_spec(cls, spec: Any) -> ClusterOptions:
        """The options of a run, transfer or train spec (fields ``workers``,
        ``ray_address``, ``gpus_per_task``, ``cpus_per_task``)."""
        return cls(
            workers=getattr(spec, "workers", None), address=getattr(spec, "ray_address", None),
            gpus_per_task=getattr(spec, "gpus_per_task", None), cpus_per_task=getattr(spec, "cpus_per_task", None),
        )
