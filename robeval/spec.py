"""Validated run specifications, from CLI flags, Python keywords or a YAML file.

The *resolved* spec (data set and eps grid filled in, attacks in canonical form, local
files as absolute paths) is written as ``spec.yaml`` next to the results, so every table
says how it was made and ``--spec DIR/spec.yaml`` remakes it from any working directory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robeval.errors import RobevalError
from robeval.params import format_named, parse_eps_list
from robeval.source_paths import absolute_path, absolute_source
from robeval.yamlfile import read_mapping

DEFAULT_ATTACKS: tuple[str, ...] = ("fgsm", "pgd")
TARGET_MODES = (None, "all")
CHECK_LEVELS = ("off", "fast", "full")
NO_MODELS = (
    "no model given; pass a checkpoint (robeval run path/to/model.pt) or list them under "
    "`models:` in the --spec file"
)


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines the tables of ``robeval run``.

    ``dataset=None`` takes the data set recorded in the checkpoints; ``eps=None`` takes
    the data set's default grid (``inf`` in it means unbounded). ``target="all"`` runs
    every attack that has a targeted mode against each class other than the label
    (smooth-kernels appendix C).
    """

    models: tuple[str, ...]
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    eps: tuple[float, ...] | None = None
    dataset: str | None = None
    n: int = 500
    seed: int = 0
    batch_size: int = 250
    device: str = "auto"
    out: str = "results/run"
    data_root: str | None = None
    target: str | None = None
    threat_model: str | None = None  # RobustBench sources: threat model of the zoo entry
    model_dir: str | None = None  # RobustBench sources: MODEL_DIR/<dataset>/<threat>/<NAME>.pt
    checks: str = "fast"  # attack-failure indicators: off, fast or full (robeval.eval.indicators)
    check_samples: int = 64  # clean-correct points per model the indicators probe
    worst_case: bool = False  # run the attacks as a cascade and add `worst-case` rows
    bpda: tuple[str, ...] = ()  # modules (dotted names) whose backward becomes the identity
    amp: str = "off"  # "bf16": model passes under CUDA autocast (changes numbers: part of the run)
    progress: bool = field(default=False, compare=False)
    #: Write into an --out that holds the tables of a different run (they are replaced).
    overwrite: bool = field(default=False, compare=False)
    #: Where the batches are computed (robeval.cluster): never changes a number.
    workers: int | None = field(default=None, compare=False)
    ray_address: str | None = field(default=None, compare=False)
    gpus_per_task: float | None = field(default=None, compare=False)
    cpus_per_task: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.models:
            raise RobevalError(NO_MODELS)
        if not self.attacks:
            raise RobevalError("no attack given; pass e.g. --attack pgd (see `robeval ls attacks`)")
        if self.n < 1:
            raise RobevalError(f"--n must be >= 1, got {self.n}")
        if self.batch_size < 1:
            raise RobevalError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.target not in TARGET_MODES:
            raise RobevalError(f"--target must be `all` (or left out for untargeted attacks), got {self.target!r}")
        if self.checks not in CHECK_LEVELS:
            raise RobevalError(f"--checks must be one of {', '.join(CHECK_LEVELS)}, got {self.checks!r}")
        if self.check_samples < 1:
            raise RobevalError(f"--check-samples must be >= 1, got {self.check_samples}")
        check_execution(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Build from plain values (YAML or keywords); lists become tuples, eps may be text."""
        values = spec_values(cls, data, what="run", model_keys=("models",))
        if values.get("overwrite") is None:
            values.pop("overwrite", None)
        if not values.get("models"):
            raise RobevalError(NO_MODELS)
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> RunSpec:
        """Read a YAML spec; ``overrides`` (non-None CLI flags) win over the file."""
        return cls.from_dict(read_with_overrides(path, overrides, what="spec file", flag="--spec",
                                                 example="models: [...]"))

    def to_dict(self) -> dict[str, Any]:
        """Plain values, ready for YAML (the ``progress`` and ``overwrite`` flags, which
        do not change the tables, are left out)."""
        return plain_dict(self)

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)

    def portable(self, cwd: str | Path | None = None) -> RunSpec:
        """The spec with its local files (model sources, data and model folders) as
        absolute paths, resolved against ``cwd`` (default: the working directory)."""
        return self.replace(**portable_paths(self, ("models",), cwd))


#: How an evaluation is spread over processes (:mod:`robeval.cluster`): never changes a number.
CLUSTER_FIELDS = ("workers", "ray_address", "gpus_per_task", "cpus_per_task")
#: Fields that never change a run's tables: not written to spec.yaml.
FLAG_FIELDS = ("progress", "overwrite", *CLUSTER_FIELDS)
AMP_MODES = ("off", "bf16")


def check_execution(spec: Any) -> None:
    """The ``--amp`` mode and the cluster flags of a run or transfer spec."""
    if getattr(spec, "amp", "off") not in AMP_MODES:
        raise RobevalError(f"--amp must be one of {', '.join(AMP_MODES)}, got {spec.amp!r}")
    from robeval.cluster.options import ClusterOptions

    ClusterOptions.from_spec(spec)  # raises on bad values
#: Fields of spec.yaml that do not tell two runs apart (where and on what they ran).
PLACE_FIELDS = ("device", "out")
#: Settings that name models (run: ``models``; transfer: ``sources``, ``targets``).
MODEL_KEYS = ("models", "sources", "targets")


def same_setting(key: str, old: Any, new: Any, cwd: str | Path | None = None) -> bool:
    """Whether two values of the spec setting ``key`` (as spec.yaml holds them) describe
    the same run: lists and tuples alike, numbers by value, local paths once absolute
    (a spec.yaml written with relative paths is read from ``cwd``)."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    if key in MODEL_KEYS:
        old = [absolute_source(str(s), base) for s in as_list(old or [])]
        new = [absolute_source(str(s), base) for s in as_list(new or [])]
    elif key in ("data_root", "model_dir"):
        old = None if old is None else absolute_path(str(old), base)
        new = None if new is None else absolute_path(str(new), base)
    return _plain(old) == _plain(new)


def _plain(value: Any) -> Any:
    """Lists and tuples alike, numbers as floats: how a value reads back from YAML."""
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def plain_dict(spec: Any) -> dict[str, Any]:
    """A spec dataclass as plain values for YAML, without the :data:`FLAG_FIELDS`."""
    data = dataclasses.asdict(spec)
    for name in FLAG_FIELDS:
        data.pop(name, None)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def portable_paths(spec: Any, model_fields: tuple[str, ...], cwd: str | Path | None = None) -> dict[str, Any]:
    """The values of ``model_fields``, ``data_root`` and ``model_dir`` of ``spec`` with
    local paths made absolute against ``cwd`` (see :func:`absolute_source`)."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    values: dict[str, Any] = {name: tuple(absolute_source(s, base) for s in getattr(spec, name))
                              for name in model_fields}
    for name in ("data_root", "model_dir"):
        if getattr(spec, name) is not None:
            values[name] = absolute_path(str(getattr(spec, name)), base)
    return values


def check_settings(cls: type, data: Mapping[str, Any], what: str) -> None:
    """One error naming every key of ``data`` that is no field of the spec class ``cls``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RobevalError(f"unknown {what} setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")


def spec_values(cls: type, data: Mapping[str, Any], *, what: str, model_keys: tuple[str, ...]) -> dict[str, Any]:
    """Plain values (YAML or keywords) of an evaluation spec, checked against ``cls`` and
    normalised: model lists and attack entries become tuples, eps text is parsed, and the
    counts ``n``, ``seed``, ``batch_size`` must be integers."""
    check_settings(cls, data, what)
    values = dict(data)
    for key in model_keys:
        if key in values:
            values[key] = tuple(str(m) for m in as_list(values[key]))
    if "attacks" in values:
        values["attacks"] = tuple(attack_text(a) for a in as_list(values["attacks"]))
    if values.get("bpda") is not None:
        values["bpda"] = tuple(str(m) for m in as_list(values["bpda"]))
    if values.get("eps") is not None:
        values["eps"] = parse_eps_list(values["eps"])
    for key in ("n", "seed", "batch_size", "check_samples", "workers"):
        if key in values and values[key] is not None and not isinstance(values[key], int):
            raise RobevalError(f"{what} setting {key} must be an integer, got {values[key]!r}")
    return values


def read_with_overrides(path: str | Path, overrides: Mapping[str, Any], **where: str) -> dict[str, Any]:
    """A YAML mapping (``read_mapping(path, **where)``) with the non-None ``overrides``
    (CLI flags) winning over the file."""
    data = read_mapping(path, **where)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return data


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def attack_text(item: Any) -> str:
    """Accept ``"pgd:steps=40"`` or a YAML mapping ``{name: pgd, steps: 40}``."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and "name" in item:
        params = {k: v for k, v in item.items() if k != "name"}
        return format_named(str(item["name"]), params)
    raise RobevalError(f"cannot read attack entry {item!r}; write `pgd:steps=40` or {{name: pgd, steps: 40}}")
