"""``robeval run`` as a library call: resolve the spec, evaluate, write the tables."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from robeval.analysis.sfa_grid import plot_sfa_grid, sfa_grid, sfa_summary
from robeval.atomic import atomic_write_text
from robeval.attacks import attacks, canonical_name
from robeval.attacks import get as get_attack
from robeval.attacks.base import is_minimal, is_targeted
from robeval.cluster.options import ClusterOptions
from robeval.data import DatasetInfo, dataset_info
from robeval.device import resolve_device
from robeval.errors import RobevalError
from robeval.eval.cascade import Cascade, breakdown_store, check_worst_case, run_cascade, with_worst_case
from robeval.eval.cells import Cell
from robeval.eval.examples import targeted_examples
from robeval.eval.indicators import (
    apply_flags,
    consistency_findings,
    nested_attacks,
    run_model_checks,
    write_checks,
)
from robeval.eval.nonfinite import counting_store, nonfinite_findings
from robeval.eval.progress import progress_bar, silent_bar
from robeval.eval.runner import attack_cells, eval_mode, predict, run_attack
from robeval.eval.setup import (
    check_black_box,
    check_forward,
    check_input_shape,
    display_names,
    load_subset,
    resolve_dataset,
)
from robeval.models import LoadedModel, load_model
from robeval.models.sources import SourceContext
from robeval.params import large_eps_warnings
from robeval.results.cascade_tables import WORST_CASE, write_tables
from robeval.results.outputs import write_outputs
from robeval.results.plots import plot_targeted_grid
from robeval.results.run_folder import check_reuse, remove_stale_tables, run_folder
from robeval.results.store import ResultStore
from robeval.results.tables import (
    format_eps,
    norm_curves_frame,
    read_cells,
    results_frame,
    samples_frame,
    targeted_grid_frame,
)
from robeval.spec import FLAG_FIELDS, PLACE_FIELDS, RunSpec, same_setting

log = logging.getLogger(__name__)
STORE_NAME = "store.sqlite"
#: The spec.yaml settings that tell two runs apart (a folder holds the tables of one of them).
RUN_KEYS = tuple(k for k in RunSpec.__dataclass_fields__ if k not in (*FLAG_FIELDS, *PLACE_FIELDS))
NOTHING_TO_EVALUATE = (
    "nothing to evaluate: budgeted attacks have no `unbounded` eps; add finite eps to --eps "
    "or a minimal-norm attack (cw, deepfool)"
)


def evaluate(spec: RunSpec | dict[str, Any] | None = None, **kwargs: Any) -> pd.DataFrame:
    """Run the attack battery like ``robeval run`` and return ``results.csv`` as a DataFrame.

    Pass a :class:`RunSpec`, a dict of its fields, or keywords, e.g.
    ``evaluate(models=["model.pt"], attacks=["pgd", "deepfool"], eps="0,0.1,0.3,unbounded",
    n=200)``; ``target="all"`` for the targeted grid. Without ``out`` the files go to a
    temporary directory (see ``df.attrs["out"]``); an ``out`` holding the tables of a
    different run is refused unless ``overwrite=True``.
    """
    if isinstance(spec, RunSpec):
        spec = spec.replace(**kwargs) if kwargs else spec
    else:
        data = {**(spec or {}), **kwargs}
        if data.get("out") is None:
            data["out"] = tempfile.mkdtemp(prefix="robeval-")
        spec = RunSpec.from_dict(data)
    return run(spec)


@dataclass(frozen=True)
class Prepared:
    """What every model of a run is evaluated on: the loaded models and their display
    names, the data set, its eps grid and the seeded test subset."""

    loaded: list[LoadedModel]
    names: list[str]
    dataset: str
    info: DatasetInfo
    eps_grid: tuple[float, ...]
    x: Tensor
    y: Tensor
    split_index: Tensor


def run(spec: RunSpec) -> pd.DataFrame:
    """Evaluate every model x attack x eps of ``spec``; resumes from ``out/store.sqlite``.

    The output folder is checked writable and locked before any model is loaded; a
    folder that holds the tables of a different run is refused unless ``spec.overwrite``.
    """
    device = resolve_device(spec.device)
    for attack_spec in spec.attacks:  # reject bad attack specs before any loading
        _check_attack(get_attack(attack_spec), attack_spec, spec)
    if spec.worst_case:
        check_worst_case(spec.attacks, spec.target)
    with run_folder(spec.out, flag="--out") as out:
        portable = spec.portable()
        if spec.eps is not None:  # what is known before loading: refuse a different run at once
            portable = portable.replace(attacks=_written_attacks(spec, spec.eps))
        unknown = {"n", *(k for k in ("dataset", "eps") if getattr(spec, k) is None)}
        if spec.eps is None:
            unknown.add("attacks")  # which budgeted attacks make cells depends on the grid
        check_reuse(out, portable.to_dict(), keys=[k for k in RUN_KEYS if k not in unknown], overwrite=spec.overwrite,
                    kind="models", same=same_setting)
        prepared = _prepare(spec, device)
        resolved = portable.replace(dataset=prepared.dataset, eps=prepared.eps_grid, n=len(prepared.x),
                                    attacks=_written_attacks(spec, prepared.eps_grid))
        check_reuse(out, resolved.to_dict(), keys=RUN_KEYS, overwrite=spec.overwrite, kind="models",
                    same=same_setting)
        norms = [get_attack(text).norm for text in spec.attacks]
        for line in large_eps_warnings(prepared.eps_grid, norms, tuple(prepared.info.input_shape)):
            warnings.warn(line, stacklevel=2)
        return _evaluate(spec, resolved, prepared, out, device)


def _prepare(spec: RunSpec, device: torch.device) -> Prepared:
    """Load the models and the seeded test subset, and check that they fit each other."""
    context = SourceContext(dataset=spec.dataset, threat_model=spec.threat_model, model_dir=spec.model_dir)
    loaded = [load_model(source, device=device, context=context) for source in spec.models]
    loaded = with_bpda(loaded, spec.bpda)
    names = display_names(loaded)
    for item, name in zip(loaded, names, strict=True):
        check_black_box(item, name, spec.attacks)
    dataset = resolve_dataset(spec.dataset, loaded)
    info = dataset_info(dataset, root=spec.data_root)
    eps_grid = tuple(spec.eps if spec.eps is not None else info.default_eps)
    for item, name in zip(loaded, names, strict=True):
        check_input_shape(item, name, info.input_shape)
    x, y, split_index = load_subset(dataset, spec.n, spec.seed, spec.data_root)
    for item, name in zip(loaded, names, strict=True):
        check_forward(item, name, x, len(info.classes), device, batch_size=spec.batch_size)
    return Prepared(loaded, names, dataset, info, eps_grid, x, y, split_index)


def _written_attacks(spec: RunSpec, eps_grid: tuple[float, ...]) -> tuple[str, ...]:
    """The attacks as the tables name them (canonical text), without budgeted attacks
    when the grid has no finite eps (they make no cells; a cascade keeps every stage).
    A grid on which no attack makes a cell is refused here, before any work."""
    finite = any(math.isfinite(e) for e in eps_grid)
    attacks_ = [get_attack(text) for text in spec.attacks]
    kept = [a for a in attacks_ if finite or is_minimal(a)]
    if not kept or (spec.worst_case and len(kept) < len(attacks_)):
        raise RobevalError(NOTHING_TO_EVALUATE)
    return tuple(dict.fromkeys(canonical_name(a) for a in attacks_ if spec.worst_case or a in kept))


def _evaluate(spec: RunSpec, resolved: RunSpec, prepared: Prepared, out: Path, device: torch.device) -> pd.DataFrame:
    """Attack every model (resuming from the store), run the indicators, write the tables."""
    loaded, names, dataset, info = prepared.loaded, prepared.names, prepared.dataset, prepared.info
    eps_grid, x, y, split_index = prepared.eps_grid, prepared.x, prepared.y, prepared.split_index
    n_classes = len(info.classes)
    all_cells: list[Cell] = []
    cascades: list[Cascade] = []  # --worst-case: one cascade of the attacks per model
    findings: list = []
    checks_seconds = 0.0
    nested: dict[str, bool] = {}
    written: list[Path] = []  # pictures and tables written so far
    sfa_rows: list[pd.DataFrame] = []
    with ResultStore(out / STORE_NAME) as store, progress_bar(enabled=spec.progress) as bar:
        if ClusterOptions.from_spec(spec).enabled:  # the batches as Ray tasks; the pass below then only reads
            from robeval.cluster.run_jobs import fill_with_ray

            fill_with_ray(store, spec, resolved, prepared, device, bar)
            bar = silent_bar()
        for item, name in zip(loaded, names, strict=True):
            with eval_mode(item.model) as model:
                clean_pred = predict(model, x, spec.batch_size, device, amp=spec.amp)
                _warn_if_near_chance(name, float((clean_pred == y).float().mean()), n_classes)
                if spec.worst_case:  # the attacks as one cascade: `worst-case` rows, no standalone ones
                    with counting_store(store, model) as counted:
                        cascades.append(run_cascade(
                            counted, model, name=name, identity=item.identity, dataset=dataset,
                            attack_specs=spec.attacks, eps_grid=eps_grid, x=x, y=y, clean_pred=clean_pred,
                            seed=spec.seed, batch_size=spec.batch_size, device=device, n_classes=n_classes, bar=bar,
                            amp=spec.amp,
                        ))
                model_cells: list[tuple[object, list[Cell]]] = []
                for attack_spec in () if spec.worst_case else spec.attacks:
                    attack, cells = attack_cells(
                        model=name, identity=item.identity, dataset=dataset, attack_spec=attack_spec,
                        eps_grid=eps_grid, n=len(x), seed=spec.seed, batch_size=spec.batch_size,
                        target=spec.target, amp=spec.amp,
                    )
                    if not cells:
                        continue
                    n_batches = -(-len(x) // spec.batch_size)
                    task = bar.add_task(f"{name} · {cells[0].attack}", total=n_batches * len(cells))
                    with counting_store(store, model) as counted, breakdown_store(counted, attack, cells) as cell_store:
                        run_attack(  # AutoAttack: its breakdown per sub-attack too
                            cell_store, model, attack, cells, x, y, clean_pred, batch_size=spec.batch_size,
                            device=device, n_classes=n_classes, advance=lambda task=task: bar.advance(task),
                        )
                    all_cells.extend(cells)
                    model_cells.append((attack, cells))
                    if spec.target is not None:
                        written.append(_targeted_picture(
                            out, model, attack, cells[-1], x, y, clean_pred, info.classes, device
                        ))
                    if _is_sfa_grid(attack):
                        sfa_rows += _sfa_grids(out, model, cells, x, y, spec.batch_size, device, written,
                                               scale=getattr(attack, "scale", "peak"))
                nested.update(nested_attacks(model_cells))
                check_cells = _stage_cells(cascades[-1]) if spec.worst_case else model_cells
                model_findings, seconds = run_model_checks(
                    store, model, model_name=name, identity=item.identity, attack_cells=check_cells,
                    stored=read_cells(store, [c for _, cs in check_cells for c in cs]), x=x, y=y,
                    clean_pred=clean_pred, level=spec.checks, samples=spec.check_samples, seed=spec.seed,
                    device=device,
                )
                model_findings += nonfinite_findings(store, name, check_cells)
                findings += _as_worst_case(model_findings) if spec.worst_case else model_findings
                checks_seconds += seconds
        if not all_cells and not any(c.eps for c in cascades):
            raise RobevalError(NOTHING_TO_EVALUATE)
        stored = read_cells(store, all_cells)
        training = {name: _training(item) for item, name in zip(loaded, names, strict=True)}
        results = results_frame(store, all_cells, stored, training)
        samples = samples_frame(all_cells, stored, split_index=split_index.numpy())
        curves = norm_curves_frame(all_cells, stored)
        grid = targeted_grid_frame(all_cells, stored)
        results, samples, extra_tables = with_worst_case(
            store, cascades, all_cells, results, samples, training, split_index.numpy())
    if spec.checks != "off":
        findings += consistency_findings(results, samples, nested)
        written.append(write_checks(out, findings))
    results = apply_flags(results, findings, checked=spec.checks != "off")
    written += write_outputs(out, resolved.to_dict(), results, samples, curves=curves, grid=grid).values()
    written += write_tables(out, extra_tables).values()  # worst_case.csv, autoattack_breakdown.csv
    if sfa_rows:
        written += _write_sfa_tables(out, pd.concat(sfa_rows, ignore_index=True))
    remove_stale_tables(out, written)  # an earlier run's tables this one did not write
    results.attrs["out"] = str(out)
    results.attrs["checks"] = findings
    results.attrs["checks_seconds"] = checks_seconds
    results.attrs["checks_level"] = spec.checks
    return results


def _stage_cells(cascade: Cascade) -> list[tuple[object, list[Cell]]]:
    """A cascade's stages as (attack, cells along the eps grid) for the indicators: each
    stage is checked on the points that reached it."""
    return [
        (get_attack(stage), [cascade.cells[eps][k] for eps in cascade.walked])
        for k, stage in enumerate(cascade.stages) if cascade.walked
    ]


def _as_worst_case(findings: list) -> list:
    """Stage findings reported on the ``worst-case`` rows, naming their stage."""
    return [dataclasses.replace(f, attack=WORST_CASE, detail=f"stage {f.attack}: {f.detail}") for f in findings]


def with_bpda(loaded: list[LoadedModel], requested: tuple[str, ...]) -> list[LoadedModel]:
    """Apply BPDA (Athalye et al. 2018, Sec. 4.1: the module's backward becomes the
    identity) to the modules each model declares (``file.py:factory`` info ``bpda``, a
    ``bpda_modules`` attribute) and to those named by ``--bpda`` in every model that has
    them; a ``--bpda`` name no model has is an error. The modules go into the model's
    identity, so results with and without BPDA are cached apart."""
    from robeval.models.bpda import apply_bpda, declared_bpda, resolve_module_name

    found = set()
    out = []
    for item in loaded:
        wanted = list(dict.fromkeys([*item.bpda, *declared_bpda(item.model)]))
        for name in requested:
            try:
                resolve_module_name(item.model, name)
            except RobevalError:
                continue
            found.add(name)
            wanted.append(name)
        applied = apply_bpda(item.model, wanted) if wanted else []
        identity = f"{item.identity}+bpda:{','.join(sorted(applied))}" if applied else item.identity
        out.append(dataclasses.replace(item, identity=identity, bpda=tuple(applied)))
    missing = [name for name in requested if name not in found]
    if missing and loaded:
        resolve_module_name(loaded[0].model, missing[0])  # raises with the model's module names
    return out


def _warn_if_near_chance(name: str, clean_acc: float, n_classes: int) -> None:
    """The usual sign of a third-party model given the wrong normalisation or input range:
    clean accuracy below twice chance. Warned, not refused (weak models are evaluated too)."""
    chance = 1 / n_classes
    if clean_acc < 2 * chance:
        log.warning(
            "model %r: clean accuracy %.1f%% is near chance (%.1f%%); check its mean/std or input range "
            "(robeval gives models [0, 1] images)", name, 100 * clean_acc, 100 * chance,
        )


def _training(item: LoadedModel) -> str:
    """How a checkpoint was trained, from its recorded spec: objective, regularisers,
    epochs (e.g. ``pgd-at:eps=0.3 + absum:lambda=0.001, 100 epochs``)."""
    spec = item.meta.train_spec if item.meta is not None else None
    if not spec:
        return ""
    parts = [str(spec.get("objective", "ce")), *map(str, spec.get("regularisers") or [])]
    return " + ".join(parts) + (f", {spec['epochs']} epochs" if "epochs" in spec else "")


def _check_attack(attack: Any, text: str, spec: RunSpec) -> None:
    """Targeted mode needs attacks that have one."""
    if spec.target is not None and not is_targeted(attack):
        with_target = sorted(n for n, cls in attacks.items() if is_targeted(cls))
        raise RobevalError(
            f"attack {text!r} has no targeted mode; with --target use one of {', '.join(with_target)}"
        )


def _targeted_picture(
    out: Path, model: torch.nn.Module, attack: Any, cell: Cell, x: Tensor, y: Tensor,
    clean_pred: Tensor, classes: list[str], device: torch.device,
) -> Path:
    """``targeted_MODEL_ATTACK.png``: one example per class attacked towards every class
    at the cell's eps (the largest of the grid)."""
    images, success, present = targeted_examples(
        model, attack, x, y, clean_pred, eps=cell.eps, n_classes=len(classes), device=device,
        seed=cell.seed, name=cell.attack,
    )
    title = f"{cell.model} · {cell.attack} · targeted, eps={format_eps(cell.eps)}"
    path = out / f"targeted_{_slug(cell.model)}_{_slug(cell.attack)}.png"
    return plot_targeted_grid(images, success, present, [str(c) for c in classes], title, path)


def _is_sfa_grid(attack: Any) -> bool:
    """The grid form of the Single Fourier Attack (no single ``(l, m)`` given)."""
    return getattr(attack, "name", None) == "sfa" and getattr(attack, "l", None) is None


def _sfa_grids(
    out: Path, model: torch.nn.Module, cells: list[Cell], x: Tensor, y: Tensor, batch_size: int,
    device: torch.device, written: list[Path], scale: str = "peak",
) -> list[pd.DataFrame]:
    """Absum Table 1 / Fig. 4: accuracy for every ``(l, m)`` at each eps of the grid, with
    a heat map per eps (``sfa_MODEL_EPS.png``, appended to ``written``). The results.csv
    row of ``sfa`` is the per-sample worst case over the grid, which is stronger than the
    Min reported here. ``scale``: the attack's mode scaling (``peak`` or ``eq6``)."""
    frames = []
    for cell in cells:
        if cell.eps == 0 or math.isinf(cell.eps):
            continue
        frame = sfa_grid(model, x, y, eps=cell.eps, batch_size=batch_size, device=device, scale=scale)
        written.append(plot_sfa_grid(frame, out / f"sfa_{_slug(cell.model)}_{_slug(format_eps(cell.eps))}.png"))
        frames.append(frame.assign(model=cell.model, eps=cell.eps))
    return frames


def _write_sfa_tables(out: Path, grids: pd.DataFrame) -> list[Path]:
    """``sfa_grid.csv`` (model, eps, l, m, accuracy) and ``sfa_summary.csv`` (Avg and Min
    over ``(l, m)`` and where the minimum is, per model and eps); returns their paths."""
    rows = []
    for (model, eps), frame in grids.groupby(["model", "eps"], sort=False):
        summary = sfa_summary(frame)
        rows.append({"model": model, "eps": eps, "avg_acc": summary["avg"], "min_acc": summary["min"],
                     "min_l": summary["argmin"][0], "min_m": summary["argmin"][1], "max_acc": summary["max"]})
    columns = ["model", "eps", "l", "m", "accuracy"]
    atomic_write_text(out / "sfa_grid.csv", grids[columns].to_csv(index=False))
    atomic_write_text(out / "sfa_summary.csv", pd.DataFrame(rows).to_csv(index=False))
    return [out / "sfa_grid.csv", out / "sfa_summary.csv"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=_-]+", "-", text).strip("-")
