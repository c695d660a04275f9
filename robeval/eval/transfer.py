"""Transfer grids: adversarials made on each *source* model, evaluated on every *target*.

The SGR paper's Tables 1 and 4 (Roth et al.): rows are target models, columns source
models, entries the targets' accuracy on PGD adversarials of the sources; the diagonal is
the white-box attack. Absum's "transferred PGD" (a substitute trained with another seed)
is one off-diagonal entry. Any untargeted attack of the battery can be the source attack.

For every (source, attack, eps) the adversarials of every test point are made once per
batch (each point seeded by itself, as in ``robeval run``) and shown to every target;
each target's predictions are stored in the run's SQLite store batch by batch, so an
interrupted grid resumes, and adding a target later only evaluates that target. Unlike
``robeval run``, every point is attacked at every eps independently (the source's own
mistakes included): a transfer adversarial is whatever the source attack produced, not
the target's worst case. Minimal-norm attacks run their search once (unbounded) and each
eps keeps the adversarials inside its ball. Targets may be black boxes (no gradients):
that is what transfer attacks are for; sources need gradients unless the attack is
gradient-free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from robeval.attacks.presets import stable_params
from robeval.attacks import canonical_name
from robeval.attacks import get as get_attack
from robeval.attacks.base import all_norms, is_minimal, perturbation_norms
from robeval.cluster.options import ClusterOptions
from robeval.data import dataset_info
from robeval.device import resolve_device
from robeval.errors import RobevalError
from robeval.eval.cells import BatchSeeds, Cell
from robeval.eval.checks import attack_norms
from robeval.eval.counting import PassCounter
from robeval.eval.device_batch import in_device_batches, undone_on_error
from robeval.eval.precision import device_model, to_layout, use_channels_last
from robeval.eval.progress import progress_bar, silent_bar
from robeval.eval.runner import eval_mode, predict
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
from robeval.results.run_folder import check_reuse, remove_stale_tables, run_folder
from robeval.results.store import BatchResult, Cost, ResultStore
from robeval.spec import (
    FLAG_FIELDS,
    PLACE_FIELDS,
    check_execution,
    plain_dict,
    portable_paths,
    read_with_overrides,
    same_setting,
    spec_values,
)

log = logging.getLogger(__name__)
STORE_NAME = "store.sqlite"


@dataclass(frozen=True)
class TransferSpec:
    """Everything that determines a transfer grid. ``targets`` are evaluated in addition
    to the sources (every source is also a target, giving the white-box diagonal)."""

    sources: tuple[str, ...]
    targets: tuple[str, ...] = ()
    attacks: tuple[str, ...] = ("pgd",)
    eps: tuple[float, ...] | None = None
    dataset: str | None = None
    n: int = 500
    seed: int = 0
    batch_size: int = 250
    device: str = "auto"
    out: str = "results/transfer"
    data_root: str | None = None
    threat_model: str | None = None
    model_dir: str | None = None
    amp: str = "off"  # "bf16": model passes under CUDA autocast (changes numbers: part of the grid)
    progress: bool = field(default=False, compare=False)
    #: Write into an --out that holds the tables of a different grid (they are replaced).
    overwrite: bool = field(default=False, compare=False)
    #: Where the batches are computed (robeval.cluster): never changes a number.
    workers: int | None = field(default=None, compare=False)
    ray_address: str | None = field(default=None, compare=False)
    gpus_per_task: float | None = field(default=None, compare=False)
    cpus_per_task: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.sources:
            raise RobevalError("no source model given; pass checkpoints (robeval transfer a.pt b.pt) or list them "
                               "under `sources:` in the --spec file")
        if not self.attacks:
            raise RobevalError("no attack given; pass e.g. --attack pgd:steps=40")
        if self.n < 1 or self.batch_size < 1:
            raise RobevalError("--n and --batch-size must be >= 1")
        check_execution(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferSpec:
        """Build from plain values (keywords or YAML); lists become tuples, eps may be text."""
        values = spec_values(cls, {"sources": (), **data}, what="transfer", model_keys=("sources", "targets"))
        if values.get("overwrite") is None:
            values.pop("overwrite", None)
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TransferSpec:
        """A YAML spec (``sources: [...]``, ``targets``, ``attacks``, ``eps``, ...); non-None
        ``overrides`` (CLI flags) win over the file. A written ``spec.yaml`` reads back."""
        return cls.from_dict(read_with_overrides(path, overrides, what="spec file", flag="--spec",
                                                 example="sources: [a.pt, b.pt]"))

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``spec.yaml`` (without the ``progress`` and ``overwrite`` flags)."""
        return plain_dict(self)

    def portable(self, cwd: str | Path | None = None) -> TransferSpec:
        """The spec with its local files as absolute paths (see :meth:`RunSpec.portable`)."""
        return dataclasses.replace(self, **portable_paths(self, ("sources", "targets"), cwd))


#: The spec.yaml settings that tell two transfer grids apart.
TRANSFER_KEYS = tuple(k for k in TransferSpec.__dataclass_fields__ if k not in (*FLAG_FIELDS, *PLACE_FIELDS))


@dataclass(frozen=True)
class TransferCell:
    """The target's predictions on one source's adversarials at one eps."""

    source: Cell  # how the adversarials were made (model = the source)
    target: str
    target_identity: str

    @property
    def key(self) -> str:
        text = f"transfer:{self.source.key}:{self.target_identity}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def description(self) -> dict[str, Any]:
        return {"source": self.source.description(), "target": self.target, "target_identity": self.target_identity}


def transfer(spec: TransferSpec | dict[str, Any] | None = None, **kwargs: Any) -> pd.DataFrame:
    """Run a transfer grid like ``robeval transfer``; return ``transfer.csv`` as a frame
    (``df.attrs["out"]`` is the output folder; a temporary one unless ``out`` is given)."""
    if isinstance(spec, TransferSpec):
        spec = dataclasses.replace(spec, **kwargs) if kwargs else spec
    else:
        data = {**(spec or {}), **kwargs}
        if data.get("out") is None:  # only now: a given folder leaves no empty temporary one behind
            data["out"] = tempfile.mkdtemp(prefix="robeval-transfer-")
        spec = TransferSpec.from_dict(data)
    return run_transfer(spec)


def run_transfer(spec: TransferSpec) -> pd.DataFrame:
    """Fill the store for every source x attack x eps x target and write the tables.

    The output folder is checked writable and locked before any model is loaded; a
    folder that holds the tables of a different grid is refused unless ``spec.overwrite``.
    """
    device = resolve_device(spec.device)
    attacks_ = [get_attack(text) for text in spec.attacks]
    with run_folder(spec.out, flag="--out") as out:
        portable = spec.portable()
        written_attacks = tuple(dict.fromkeys(canonical_name(a) for a in attacks_))
        unknown = ("n", *(k for k in ("dataset", "eps") if getattr(spec, k) is None))
        check_reuse(out, dataclasses.replace(portable, attacks=written_attacks).to_dict(),
                    keys=[k for k in TRANSFER_KEYS if k not in unknown], overwrite=spec.overwrite, kind="sources",
                    same=same_setting)
        return _run_transfer(spec, portable, attacks_, out, device)


def _run_transfer(
    spec: TransferSpec, portable: TransferSpec, attacks_: list[Any], out: Path, device: torch.device,
) -> pd.DataFrame:
    """Load, check, fill the store and write the tables of :func:`run_transfer` into the
    (locked) folder ``out``; ``portable`` is the spec as spec.yaml records it."""
    from robeval.results.transfer_tables import (
        transfer_frame,
        transfer_samples,
        write_transfer_outputs,
    )

    context = SourceContext(dataset=spec.dataset, threat_model=spec.threat_model, model_dir=spec.model_dir)
    texts = list(dict.fromkeys(spec.sources + spec.targets))
    models = [load_model(text, device=device, context=context) for text in texts]
    names = display_names(models)
    sources = [(m, nm) for m, nm, t in zip(models, names, texts, strict=True) if t in spec.sources]
    for item, name in sources:
        check_black_box(item, name, spec.attacks)
    dataset = resolve_dataset(spec.dataset, models)
    info = dataset_info(dataset, root=spec.data_root)
    for item, name in zip(models, names, strict=True):
        check_input_shape(item, name, info.input_shape)
    x, y, split_index = load_subset(dataset, spec.n, spec.seed, spec.data_root)
    for item, name in zip(models, names, strict=True):
        check_forward(item, name, x, len(info.classes), device, batch_size=spec.batch_size)
    grid = sorted(spec.eps if spec.eps is not None else info.default_eps)
    resolved = dataclasses.replace(portable, dataset=dataset, eps=tuple(grid), n=len(x),
                                   attacks=tuple(dict.fromkeys(canonical_name(a) for a in attacks_)))
    check_reuse(out, resolved.to_dict(), keys=TRANSFER_KEYS, overwrite=spec.overwrite, kind="sources",
                same=same_setting)
    for line in large_eps_warnings(tuple(grid), [a.norm for a in attacks_], tuple(info.input_shape)):
        warnings.warn(line, stacklevel=3)
    cells: list[TransferCell] = []
    with contextlib.ExitStack() as stack, ResultStore(out / STORE_NAME) as store:
        evals = [stack.enter_context(eval_mode(item.model)) for item in models]
        clean = {name: predict(model, x, spec.batch_size, device, amp=spec.amp)
                 for model, name in zip(evals, names, strict=True)}
        targets = list(zip(models, names, strict=True))
        bar = stack.enter_context(progress_bar(enabled=spec.progress))
        jobs = []  # (source, its display name, attack, cells: one row of targets per eps)
        for source, source_name in sources:
            for attack in attacks_:
                eps_grid = [e for e in grid if is_minimal(attack) or math.isfinite(e)]
                source_cells = [_source_cell(source, source_name, dataset, attack, e, spec) for e in eps_grid]
                grid_cells = [[TransferCell(c, name, item.identity) for item, name in targets] for c in source_cells]
                jobs.append((source, source_name, attack, grid_cells))
        options = ClusterOptions.from_spec(spec)
        if options.enabled:  # the batches as Ray tasks; the pass below then only reads
            from robeval.cluster.transfer_tasks import fill_transfer_store

            fill_transfer_store(store, jobs, models=models, names=names, portable=portable, clean=clean, x=x, y=y,
                                batch_size=spec.batch_size, device=str(device), options=options, bar=bar)
            bar = silent_bar()
        for source, source_name, attack, grid_cells in jobs:
            task = bar.add_task(f"{source_name} · {canonical_name(attack)} → {len(targets)} targets",
                                total=-(-len(x) // spec.batch_size) * len(grid_cells))
            _fill(store, source.model, attack, grid_cells, [m.model for m, _ in targets], x, y, clean,
                  spec.batch_size, device, advance=lambda task=task: bar.advance(task))
            cells += [cell for row in grid_cells for cell in row]
        frame = transfer_frame(store, cells)
        samples = transfer_samples(store, cells, split_index.numpy())
    written = write_transfer_outputs(out, resolved.to_dict(), frame, samples)
    remove_stale_tables(out, written.values())  # an earlier run's tables this one did not write
    frame.attrs["out"] = str(out)
    return frame


def _source_cell(source: LoadedModel, name: str, dataset: str, attack: Any, eps: float, spec: TransferSpec) -> Cell:
    minimal = is_minimal(attack)
    return Cell(model=name, model_identity=source.identity, dataset=dataset, attack=canonical_name(attack),
                attack_params=tuple(sorted(stable_params(attack).items())), norm=attack.norm, eps=eps, n=spec.n,
                seed=spec.seed, batch_size=spec.batch_size, minimal=minimal, nested=False, amp=spec.amp)


def _fill(
    store: ResultStore, source: nn.Module, attack: Any, grid_cells: list[list[TransferCell]],
    targets: list[nn.Module], x: Tensor, y: Tensor, clean: dict[str, Tensor], batch_size: int,
    device: torch.device, advance: Any, batches: range | None = None,
) -> None:
    """Make the source's adversarials batch by batch and store every target's predictions
    on them, skipping (eps, target) pairs already stored (of the batches in ``batches``
    only, when given: one Ray task's share)."""
    for row in grid_cells:
        for cell in row:
            store.register_cell(cell.key, cell.description())
    done = {cell.key: store.done_batches(cell.key) for row in grid_cells for cell in row}
    for batch, start in enumerate(range(0, len(x), batch_size)):
        if batches is not None and batch not in batches:
            continue
        stop = min(start + batch_size, len(x))
        xb, yb = x[start:stop].to(device), y[start:stop].to(device)
        search: tuple[Tensor, Tensor, Cost, int | None] | None = None  # a minimal-norm search, shared by all eps
        for row in grid_cells:
            todo = [(cell, model) for cell, model in zip(row, targets, strict=True) if batch not in done[cell.key]]
            if todo:
                source_cell = row[0].source
                if source_cell.minimal and source_cell.eps > 0:
                    if search is None:
                        search = _make(source, attack, source_cell.search(), xb, yb, start, batch)
                    inside = search[1].double() <= source_cell.eps  # the search's answer, where it fits the ball
                    x_adv = torch.where(inside.view(-1, *([1] * (xb.dim() - 1))).to(xb.device), search[0], xb)
                    own, cost, used = torch.where(inside, search[1], torch.zeros_like(search[1])), *search[2:]
                else:
                    x_adv, own, cost, used = _make(source, attack, source_cell, xb, yb, start, batch)
                _store_targets(store, todo, x_adv, own, xb, yb, clean, start, batch, cost, device_batch=used)
            advance()


def _make(
    source: nn.Module, attack: Any, cell: Cell, xb: Tensor, yb: Tensor, start: int, batch: int
) -> tuple[Tensor, Tensor, Cost, int | None]:
    """The source attack's adversarials for one batch (samples ``start`` on, on the
    device), checked as ``robeval run`` checks them, each point's size in the attack's
    own measure, what they cost and the device batch used: as in ``robeval run``, in
    device batches halved on out-of-memory, each point drawing from its own stream."""
    if cell.eps == 0:
        return xb, torch.zeros(len(xb), dtype=torch.float64), Cost(), None
    tic = time.perf_counter()
    counter = PassCounter(source)
    net = device_model(counter, cell.amp, xb.device)
    xd = to_layout(xb, use_channels_last(source, xb))
    seeds = BatchSeeds.of(cell, batch, torch.arange(start, start + len(xb)), torch.full((len(xb),), -1))
    x_adv, own = xb.clone(), torch.zeros(len(xb), dtype=torch.float64)

    def attempt(chunk: Tensor) -> None:
        generator, rows = seeds.generator(chunk), chunk.to(xb.device)
        with undone_on_error(counter):
            result = attack(net, xd[rows], yb[rows], eps=cell.eps, generator=generator)
            found, size = attack_norms(xd[rows], result, eps=cell.eps, norm=cell.norm, attack=cell.attack)
        seeds.advance(generator)
        x_adv[rows], own[chunk] = found.detach().to(x_adv.dtype), size.detach().double().cpu()

    _, used = in_device_batches(source, torch.arange(len(xb)), len(xb), attempt)
    cost = Cost(time.perf_counter() - tic, counter.counts.forward, counter.counts.backward)
    return x_adv, own, cost, used


def _store_targets(
    store: ResultStore, todo: list[tuple[TransferCell, nn.Module]], x_adv: Tensor, own: Tensor, xb: Tensor,
    yb: Tensor, clean: dict[str, Tensor], start: int, batch: int, cost: Cost, *, device_batch: int | None = None,
) -> None:
    """Every pending target's predictions on one batch of adversarials (in device
    batches, under the source cell's ``amp``), one store batch each, stored with the
    device batch the adversarials were made in."""
    norms = {k: v.double().cpu().numpy() for k, v in all_norms(x_adv - xb).items()}
    attack_norm = own.cpu().numpy()
    x_norm = perturbation_norms(xb, "l2").double().cpu().numpy()
    idx = np.arange(start, start + len(xb))
    for cell, model in todo:
        adv_pred = predict(model, x_adv, len(x_adv), x_adv.device, amp=cell.source.amp).numpy()
        result = BatchResult(
            idx=idx, target=np.full(len(idx), -1), label=yb.cpu().numpy(),
            clean_pred=clean[cell.target][start:start + len(xb)].numpy(), adv_pred=adv_pred,
            l0=norms["l0"], l2=norms["l2"], linf=norms["linf"], attack_norm=attack_norm, x_norm=x_norm,
        )
        store.write_batch(cell.key, batch, cost, result, device_batch=device_batch)
