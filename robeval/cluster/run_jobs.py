"""``robeval run --workers/--ray-address``: the run's jobs, planned from its spec and the
loaded models, computed as Ray tasks into the driver's store
(:func:`robeval.cluster.run_tasks.fill_store`). The in-process pass of
:func:`robeval.eval.evaluate` then finds every batch stored and only reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from robeval.cluster.models import ModelRef
from robeval.cluster.options import ClusterOptions
from robeval.cluster.run_tasks import Job, fill_store
from robeval.eval.cascade import plan_cascade
from robeval.eval.runner import attack_cells, eval_mode, predict
from robeval.models.sources import SourceContext
from robeval.results.cascade_tables import WORST_CASE
from robeval.results.store import ResultStore
from robeval.spec import RunSpec

if TYPE_CHECKING:
    from robeval.eval.evaluate import Prepared


def fill_with_ray(
    store: ResultStore, spec: RunSpec, resolved: RunSpec, prepared: Prepared, device: torch.device, bar: Any,
) -> None:
    """``--workers``/``--ray-address``: every missing batch of every model x attack (or
    cascade) computed by Ray tasks into ``store`` (:mod:`robeval.cluster.run_tasks`)."""
    options = ClusterOptions.from_spec(spec)
    worker_device = options.worker_device(str(device))
    context = SourceContext(dataset=spec.dataset, threat_model=spec.threat_model, model_dir=resolved.model_dir)
    x, y, n_classes = prepared.x, prepared.y, len(prepared.info.classes)
    jobs: list[Job] = []
    clean_preds = []
    for i, (item, name, source) in enumerate(zip(prepared.loaded, prepared.names, resolved.models, strict=True)):
        with eval_mode(item.model) as model:
            clean_preds.append(predict(model, x, spec.batch_size, device, amp=spec.amp))
        ref = ModelRef(source=source, identity=item.identity, name=name, context=context, bpda=item.bpda,
                       device=worker_device)
        if spec.worst_case:
            _, cascade = plan_cascade(
                model=name, identity=item.identity, dataset=prepared.dataset, attack_specs=spec.attacks,
                eps_grid=prepared.eps_grid, n=len(x), seed=spec.seed, batch_size=spec.batch_size, amp=spec.amp,
            )
            cells = tuple(cell for eps in cascade.walked for cell in cascade.cells[eps])
            if cells:
                jobs.append(Job(i, ref, tuple(spec.attacks), True, cells, tuple(c.key for c in cells),
                                f"{name} · {WORST_CASE}"))
            continue
        for attack_spec in spec.attacks:
            _, cells_ = attack_cells(
                model=name, identity=item.identity, dataset=prepared.dataset, attack_spec=attack_spec,
                eps_grid=prepared.eps_grid, n=len(x), seed=spec.seed, batch_size=spec.batch_size, target=spec.target,
                amp=spec.amp,
            )
            if cells_:
                keys = tuple(dict.fromkeys(c.store_key for c in cells_))
                jobs.append(Job(i, ref, (attack_spec,), False, tuple(cells_), keys, f"{name} · {cells_[0].attack}"))
    fill_store(store, jobs, x=x, y=y, clean_preds=clean_preds, dataset=prepared.dataset, eps_grid=prepared.eps_grid,
               seed=spec.seed, batch_size=spec.batch_size, n_classes=n_classes, options=options, bar=bar)
