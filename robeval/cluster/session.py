"""A Ray session for one command, and the one loop that runs its tasks.

Ray is an optional extra (``pip install 'robeval[ray]'``), imported only here and only
when ``--workers`` or ``--ray-address`` is given. :func:`ray_session` starts a local Ray
(``--workers N``: ``N`` CPUs, no dashboard) and stops it afterwards, joins a running
cluster (``--ray-address``), or reuses a Ray this process already initialised (a
notebook, the test suite), which it leaves running.

:func:`run_tasks` submits one remote call per payload and hands each result to the
driver as it arrives (in completion order; the driver is the only writer of the result
store). A worker that dies (killed, out of memory) is retried by Ray (``max_retries``):
tasks are deterministic, so a retry gives the same rows. An exception raised inside a
task is not retried: a :class:`~robeval.errors.RobevalError` (a user's error: a missing
file, a bad spec) is raised again in the driver as the same one-line error the
in-process path gives, once, after cancelling the other tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from robeval.cluster.options import ClusterOptions
from robeval.errors import RobevalError

log = logging.getLogger(__name__)

#: How often Ray reruns a task whose worker died (Ray's own default for tasks).
MAX_RETRIES = 3
INSTALL_HINT = "pip install 'robeval[ray]'"


@dataclass(frozen=True)
class Session:
    """A connected Ray: the module, the options and how many tasks run at once."""

    ray: Any
    options: ClusterOptions
    slots: int


def import_ray() -> Any:
    """The ``ray`` module, or one error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise RobevalError(f"--workers and --ray-address need Ray, which is not installed; run {INSTALL_HINT}") \
            from None
    return ray


@contextmanager
def ray_session(options: ClusterOptions) -> Iterator[Session]:
    """Start, join or reuse a Ray for the duration of a command (see module doc)."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING, "configure_logging": False}
        if options.address is not None:
            kwargs["address"] = options.address
        else:
            kwargs["num_cpus"] = options.workers
            gpus = _local_gpus()
            if gpus:
                kwargs["num_gpus"] = gpus
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = options.address or "a local Ray"
            raise RobevalError(
                f"cannot start or reach {where} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                "for a cluster run `ray start --head` there and pass --ray-address HOST:PORT (or `auto` with "
                "RAY_ADDRESS set), with the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
            ) from None
        started = True
    try:
        yield Session(ray, options, _slots(ray, options))
    finally:
        if started:
            ray.shutdown()


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _slots(ray: Any, options: ClusterOptions) -> int:
    """How many tasks can run at once: the cluster's CPUs (or GPUs, for GPU tasks)
    divided by what one task asks for (``--workers N`` locally: ``N``)."""
    resources = ray.cluster_resources()
    by_cpu = int(resources.get("CPU", 1) // options.num_cpus)
    if options.num_gpus > 0:
        return max(1, min(by_cpu, int(resources.get("GPU", 0) // options.num_gpus)))
    if options.workers is not None:
        return max(1, min(by_cpu, options.workers))
    return max(1, by_cpu)


def check_fits(session: Session) -> None:
    """Refuse tasks that no node could run (Ray would wait for them forever): more CPUs
    or GPUs per task than the whole cluster has."""
    resources = session.ray.cluster_resources()
    for what, asked, flag in (("CPU", session.options.num_cpus, "--cpus-per-task (or --threads)"),
                              ("GPU", session.options.num_gpus, "--gpus-per-task")):
        have = float(resources.get(what, 0))
        if asked > have:
            raise RobevalError(f"each task asks Ray for {asked:g} {what}s but the Ray cluster has {have:g}; "
                               f"lower {flag} or give Ray more (--workers N starts N CPUs)")


def run_tasks(
    session: Session, fn: Callable[..., Any], payloads: Sequence[Any], *, shared: Sequence[Any] = (),
    on_result: Callable[[int, Any], None],
) -> None:
    """Run ``fn(payload, *shared)`` as one Ray task per payload and call
    ``on_result(i, value)`` in the driver as each finishes. ``shared`` values (the data
    subset) go into the object store once and reach every task by reference."""
    check_fits(session)
    ray = session.ray
    remote = ray.remote(fn).options(
        num_cpus=session.options.num_cpus, num_gpus=session.options.num_gpus, max_retries=MAX_RETRIES,
        retry_exceptions=False,
    )
    refs = [ray.put(value) for value in shared]
    submitted = {remote.remote(payload, *refs): i for i, payload in enumerate(payloads)}
    pending = list(submitted)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                on_result(submitted[ref], _get(ray, ref))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def _get(ray: Any, ref: Any) -> Any:
    """A task's value; an exception it raised comes back as that exception (a
    :class:`RobevalError` as the user's one-line error), not Ray's wrapper."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise
    except ray.exceptions.WorkerCrashedError as exc:
        raise RobevalError(f"a Ray worker died {MAX_RETRIES + 1} times on the same task ({exc}); the machine may be "
                           "out of memory: lower --batch-size or ask for more --cpus-per-task") from None
