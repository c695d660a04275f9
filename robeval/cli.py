"""The ``robeval`` command line: parse flags, build a spec, call one library function,
print a table. No logic lives here."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from robeval.cli_help import App
from robeval.cli_output import err_console, out_console, setup_output, state, user_errors
from robeval.cli_tables import print_pivot

__all__ = ["app", "err_console", "main", "out_console", "user_errors"]

app = App(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Adversarial-robustness evaluation and robust training for image classifiers.",
)
#: Commands that compute nothing heavy: they neither join the run registry nor set torch's threads.
LIGHT_COMMANDS = frozenset({"ls", "leaderboard", "report"})


@app.callback()
def _setup(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details; tracebacks of unexpected errors.")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="Torch CPU threads (also ROBEVAL_THREADS); default: the cores shared with other robeval processes.")] = None,
) -> None:
    setup_output(verbose)
    state.computes = ctx.invoked_subcommand not in LIGHT_COMMANDS
    state.command = ctx.invoked_subcommand
    state.threads_pending = state.computes
    state.threads = threads
    state.interrupt_reported = False


@app.command()
def train(
    dataset: Annotated[str | None, typer.Option(help="Data set (see `robeval ls datasets`); default mnist-mini.")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture, optionally NAME:key=value, e.g. resnet18:activation=gelu (default mnist-cnn).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Default 5.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default 64.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default 1e-3).")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam (default) or sgd (with --momentum).")] = None,
    momentum: Annotated[float | None, typer.Option()] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    schedule: Annotated[str | None, typer.Option(help="constant (default), step or cosine.")] = None,
    milestones: Annotated[str | None, typer.Option(help="Epochs where the step schedule multiplies lr by --lr-decay, e.g. 50,75.")] = None,
    lr_decay: Annotated[float | None, typer.Option(help="Step-schedule factor (default 0.1).")] = None,
    warmup_epochs: Annotated[int | None, typer.Option(help="Linear warm-up epochs (default 0).")] = None,
    augment: Annotated[str | None, typer.Option(help="none (default) or crop-flip.")] = None,
    crop_padding: Annotated[int | None, typer.Option(help="Zero padding for crop-flip (default 4).")] = None,
    objective: Annotated[str | None, typer.Option(help="Base objective NAME:key=value (see `robeval ls objectives`; default ce).")] = None,
    regulariser: Annotated[list[str] | None, typer.Option("--regulariser", "--reg", "--regularizer", help="Regulariser NAME:key=value; repeatable (--reg is the same flag).")] = None,
    n_train: Annotated[int | None, typer.Option(help="Use a seeded subset of this many training images.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    data_root: Annotated[str | None, typer.Option(help="Folder holding local data sets (mnist, cifar10, ...).")] = None,
    out: Annotated[Path | None, typer.Option(help="Checkpoint file to write (default results/model.pt); with --seeds/--sweep the folder of the checkpoints and sweep.csv (default results/sweep).")] = None,
    recipe: Annotated[Path | None, typer.Option(help="YAML recipe (see recipes/); flags given here override it.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Sweep: one checkpoint per seed, e.g. 0,1,2,3,4.")] = None,
    sweep: Annotated[list[str] | None, typer.Option(help="Sweep: one checkpoint per value of a setting, KEY=V1|V2|..., e.g. regulariser=absum:lambda=0.01|0.1|1; repeatable (every combination).")] = None,
    workers: Annotated[int | None, typer.Option(help="Train a sweep's combinations as tasks of a local Ray with N CPUs (needs robeval[ray]); same checkpoints as in-process.")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Train a sweep's combinations on a running Ray cluster: auto (reads RAY_ADDRESS) or HOST:PORT; --out must be on a file system every node shares.")] = None,
    gpus_per_task: Annotated[float | None, typer.Option(help="GPUs each Ray task asks for; fractions allowed (0.5: two trainings per GPU).")] = None,
    cpus_per_task: Annotated[float | None, typer.Option(help="CPUs each Ray task asks for (default: the torch threads per combination, 1).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a model and write a checkpoint that `robeval run` reads back.

    A run killed after an epoch continues from it when started again with the same settings.
    With --seeds and/or --sweep, one checkpoint per combination goes into the --out folder
    (named after it, e.g. absum-lambda=0.1_seed=3.pt) with sweep.csv listing them; finished
    ones are kept when the same command runs again.
    """
    with user_errors():
        from robeval.params import parse_number
        from robeval.train import TrainSpec
        from robeval.train import train as train_model

        flags = {
            "dataset": dataset, "arch": arch, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "optimizer": optimizer.lower() if optimizer else None, "momentum": momentum,
            "weight_decay": weight_decay, "schedule": schedule, "lr_decay": lr_decay,
            "milestones": tuple(int(parse_number(m, what="milestone")) for m in milestones.split(",") if m.strip())
            if milestones is not None else None,
            "warmup_epochs": warmup_epochs, "augment": augment, "crop_padding": crop_padding,
            "objective": objective, "regularisers": tuple(regulariser) if regulariser else None,
            "n_train": n_train, "seed": seed, "device": device, "data_root": data_root,
            "out": str(out) if out is not None else None,
        }
        if recipe is not None:
            spec = TrainSpec.from_yaml(recipe, **flags)
        else:
            spec = TrainSpec.from_dict({k: v for k, v in flags.items() if v is not None})
        from robeval.train.sweep_run import CSV_NAME, run_sweep, sweep_from_flags

        sweep_spec = sweep_from_flags(
            spec, seeds=seeds, sweeps=sweep, given=[k for k, v in flags.items() if v is not None], out=flags["out"],
            threads=state.threads, progress=not quiet, workers=workers, ray_address=ray_address,
            gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task,
        )
        if sweep_spec is not None:
            frame = run_sweep(sweep_spec, on_row=lambda row: out_console.print(row.describe(), highlight=False))
            out_console.print(f"wrote {sweep_spec.folder / CSV_NAME} ({len(frame)} checkpoints)", highlight=False)
            return
        result = train_model(spec.replace(progress=not quiet))
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
        out_console.print(f"wrote {result.checkpoint} ({metrics})", highlight=False)


WORKERS_HELP = ("Spread the batches over N local Ray workers (robeval starts and stops Ray; needs robeval[ray]); "
                "same numbers as in-process.")
RAY_ADDRESS_HELP = "Run the batches on a running Ray cluster: auto (reads RAY_ADDRESS) or HOST:PORT."
GPUS_HELP = "GPUs each Ray task asks for; fractions allowed (0.25: four tasks per GPU)."
CPUS_HELP = "CPUs each Ray task asks for (default 1)."
AMP_HELP = "off (default) or bf16: model passes under bfloat16 autocast on CUDA (changes numbers; see README)."
OVERWRITE_HELP = ("Replace the tables of a different earlier run in --out; stored batches are kept and reused "
                  "where they match.")


@app.command()
def run(
    models: Annotated[list[str] | None, typer.Argument(help="Checkpoints (or other model sources) to evaluate.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Data set; default: the one recorded in the checkpoints.")] = None,
    attack: Annotated[list[str] | None, typer.Option(help="Attack NAME or NAME:key=value; repeatable (default fgsm, pgd).")] = None,
    eps: Annotated[str | None, typer.Option(help="Budgets, e.g. 0,2/255,8/255,unbounded (default: the data set's grid).")] = None,
    n: Annotated[int | None, typer.Option(help="Seeded test subset size (default 500).")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    out: Annotated[str | None, typer.Option(help="Output folder (default results/run).")] = None,
    spec: Annotated[Path | None, typer.Option(help="YAML run spec; flags given here override it.")] = None,
    data_root: Annotated[str | None, typer.Option(help="Folder holding local data sets.")] = None,
    target: Annotated[str | None, typer.Option(help="`all`: targeted attacks towards every other class (grid CSV + PNG).")] = None,
    threat_model: Annotated[str | None, typer.Option(help="robustbench: sources: Linf, L2 or corruptions (default Linf).")] = None,
    model_dir: Annotated[str | None, typer.Option(help="robustbench: sources: MODEL_DIR/<dataset>/<threat>/<NAME>.pt (default ./models).")] = None,
    checks: Annotated[str | None, typer.Option(help="Attack-failure indicators: off, fast (default) or full; written to checks.json.")] = None,
    check_samples: Annotated[int | None, typer.Option(help="Clean-correct points per model the indicators probe (default 64).")] = None,
    worst_case: Annotated[bool | None, typer.Option("--worst-case/--no-worst-case", help="Run the attacks as a cascade (in the order given, each on the points still robust) and add `worst-case` rows.")] = None,
    bpda: Annotated[list[str] | None, typer.Option(help="Module of the model (dotted name) whose backward becomes the identity (BPDA); repeatable.")] = None,
    workers: Annotated[int | None, typer.Option(help=WORKERS_HELP)] = None,
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
    gpus_per_task: Annotated[float | None, typer.Option(help=GPUS_HELP)] = None,
    cpus_per_task: Annotated[float | None, typer.Option(help=CPUS_HELP)] = None,
    amp: Annotated[str | None, typer.Option(help=AMP_HELP)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Evaluate models with an attack battery and write accuracy-epsilon tables."""
    with user_errors():
        from robeval.eval.evaluate import run as run_spec
        from robeval.params import parse_eps_list
        from robeval.results.tables import accuracy_eps_table
        from robeval.spec import RunSpec

        flags = {
            "models": tuple(models) if models else None, "dataset": dataset,
            "attacks": tuple(attack) if attack else None,
            "eps": parse_eps_list(eps) if eps is not None else None, "n": n, "seed": seed,
            "batch_size": batch_size, "device": device, "out": out, "data_root": data_root,
            "target": target, "threat_model": threat_model, "model_dir": model_dir,
            "checks": checks.lower() if checks else None, "check_samples": check_samples,
            "worst_case": worst_case, "bpda": tuple(bpda) if bpda else None,
            "overwrite": True if overwrite else None,
            "workers": workers, "ray_address": ray_address, "gpus_per_task": gpus_per_task,
            "cpus_per_task": cpus_per_task, "amp": amp.lower() if amp else None,
        }
        if spec is not None:
            run_spec_obj = RunSpec.from_yaml(spec, **flags)
        else:
            run_spec_obj = RunSpec.from_dict({k: v for k, v in flags.items() if v is not None})
        frame = run_spec(run_spec_obj.replace(progress=not quiet))
        _print_table(accuracy_eps_table(frame), title=f"robust accuracy (%), n={int(frame['n'].max())}")
        from robeval.eval.indicators import summary_lines

        lines = summary_lines(frame.attrs["checks"], frame.attrs["checks_seconds"], frame.attrs["checks_level"])
        style = "bold red" if any(f.fired for f in frame.attrs["checks"]) else "green"
        out_console.print(f"[{style}]{escape(lines[0])}[/]", highlight=False)
        for line in lines[1:]:
            out_console.print(escape(line), highlight=False)
        out_console.print(f"tables written to {frame.attrs['out']}/", highlight=False)


@app.command()
def transfer(
    sources: Annotated[list[str] | None, typer.Argument(help="Source models: adversarials are made on each (also targets).")] = None,
    target: Annotated[list[str] | None, typer.Option(help="Extra target model; repeatable.")] = None,
    attack: Annotated[list[str] | None, typer.Option(help="Source attack NAME[:k=v]; repeatable (default pgd).")] = None,
    eps: Annotated[str | None, typer.Option(help="Budgets, e.g. 0,0.1,0.3 (default: the data set's grid).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Data set; default: the one recorded in the checkpoints.")] = None,
    n: Annotated[int | None, typer.Option(help="Seeded test subset size (default 500).")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    out: Annotated[str | None, typer.Option(help="Output folder (default results/transfer).")] = None,
    data_root: Annotated[str | None, typer.Option(help="Folder holding local data sets.")] = None,
    spec: Annotated[Path | None, typer.Option(help="YAML transfer spec (e.g. a spec.yaml it wrote); flags override it.")] = None,
    workers: Annotated[int | None, typer.Option(help=WORKERS_HELP)] = None,
    ray_address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
    gpus_per_task: Annotated[float | None, typer.Option(help=GPUS_HELP)] = None,
    cpus_per_task: Annotated[float | None, typer.Option(help=CPUS_HELP)] = None,
    amp: Annotated[str | None, typer.Option(help=AMP_HELP)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Transfer grid: each source's adversarials evaluated on every target (SGR Tables 1, 4)."""
    with user_errors():
        import dataclasses

        from robeval.eval.transfer import TransferSpec, run_transfer
        from robeval.params import parse_eps_list
        from robeval.results.tables import format_eps
        from robeval.results.transfer_tables import transfer_grids

        flags = {
            "sources": tuple(sources) if sources else None, "targets": tuple(target) if target else None,
            "attacks": tuple(attack) if attack else None,
            "eps": parse_eps_list(eps) if eps is not None else None, "dataset": dataset, "n": n, "seed": seed,
            "batch_size": batch_size, "device": device, "out": out, "data_root": data_root,
            "overwrite": True if overwrite else None,
            "workers": workers, "ray_address": ray_address, "gpus_per_task": gpus_per_task,
            "cpus_per_task": cpus_per_task, "amp": amp.lower() if amp else None,
        }
        if spec is not None:
            transfer_spec = TransferSpec.from_yaml(spec, **flags)
        else:
            transfer_spec = TransferSpec.from_dict({k: v for k, v in flags.items() if v is not None})
        frame = run_transfer(dataclasses.replace(transfer_spec, progress=not quiet))
        for (name, value), grid in transfer_grids(frame).items():
            if value > 0:
                grid.index.name, grid.columns.name = "target \\ source", None
                _print_table(grid, title=f"robust accuracy (%), {name}, eps {format_eps(value)}")
        out_console.print(f"tables written to {frame.attrs['out']}/", highlight=False)


@app.command("ls")
def ls(
    kind: Annotated[str, typer.Argument(help="attacks, models, datasets, objectives, regularisers or indicators")],
    name: Annotated[str | None, typer.Argument(help="One entry: its whole description and every parameter.")] = None,
) -> None:
    """List attacks, models, data sets, objectives, regularisers or indicators, with parameters.

    Each entry shows a one-line summary and its parameters with their defaults;
    `robeval ls attacks pgd` describes one entry in full.
    """
    with user_errors():
        from robeval.cli_tables import print_entries, print_entry
        from robeval.listing import entries, entry

        if name is not None:
            print_entry(out_console, entry(kind, name))
        else:
            print_entries(out_console, kind.lower(), entries(kind))


def _print_table(frame, *, title: str) -> None:
    print_pivot(out_console, frame, title=title)


# The analysis and figure commands register on `app` when imported.
from robeval import cli_analysis, cli_figures  # noqa: F401  isort: skip


def main() -> None:
    """Console-script entry point (see :mod:`robeval.entry`)."""
    from robeval.entry import main as entry_main

    entry_main()


@app.command()
def leaderboard(
    sources: Annotated[list[Path], typer.Argument(help="Run directories, results CSVs or RobustBench model_info JSONs.")],
    out: Annotated[Path, typer.Option(help="Leaderboard CSV to write.")] = Path("leaderboard.csv"),
    markdown: Annotated[Path | None, typer.Option(help="Markdown file (default: the CSV path with .md).")] = None,
    model_info_dir: Annotated[Path | None, typer.Option(help="Write one RobustBench model_info JSON per row here.")] = None,
) -> None:
    """Rank models across runs by the per-sample worst case over all attacks."""
    with user_errors():
        import pandas as pd

        from robeval.results.leaderboard_files import write_leaderboard
        from robeval.results.tables import format_eps

        files = write_leaderboard(list(sources), out, markdown=markdown, model_info_dir=model_info_dir)
        frame = files.frame
        table = Table(title="leaderboard (accuracy %, * = unreliable)")
        columns = ("#", "model", "dataset", "threat model", "eps", "clean", "worst case", "autoattack", "n", "seed", "from")
        for name in columns:
            table.add_column(name, justify="left" if name in ("model", "dataset", "threat model", "from") else "right")

        def pct(v) -> str:
            return "" if v is None or math.isnan(float(v)) else f"{100 * float(v):.2f}"

        for row in frame.to_dict("records"):
            seed = row.get("seed")
            table.add_row(
                str(row["rank"]), escape(str(row["model"])), escape(str(row["dataset"])),
                escape(str(row.get("threat") or row["norm"])),
                "" if math.isnan(float(row["eps"])) else format_eps(float(row["eps"])), pct(row["clean_acc"]),
                pct(row["worst_case_acc"]) + ("*" if row["unreliable"] else ""), pct(row["autoattack_acc"]),
                "" if pd.isna(row["n"]) else str(int(row["n"])),
                "" if seed is None or (isinstance(seed, float) and math.isnan(seed)) else escape(str(seed)),
                escape(str(row["worst_case_from"])),
            )
        out_console.print(table)
        written = files.written
        out_console.print(f"wrote {', '.join(written)}", highlight=False)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (holds results.csv and spec.yaml).")],
    out: Annotated[Path, typer.Option(help="Report to write: report.html or report.md (images go to report_files/ beside it).")] = Path("report.html"),
    examples: Annotated[int, typer.Option(help="Example images per attack row (0: none).")] = 8,
) -> None:
    """Write an HTML or Markdown report of a run: curves, tables, figures, spec, examples."""
    with user_errors():
        from robeval.results.report import write_report

        path = write_report(run_dir, out, examples=examples)
        out_console.print(f"report written to {path}", highlight=False)


if __name__ == "__main__":
    main()
