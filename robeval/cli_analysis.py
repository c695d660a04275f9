"""The analysis commands of the CLI: ``robeval spectrum``, ``frequency``, ``gradients``
and ``responses`` (registered on :data:`robeval.cli.app`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from robeval.cli import app, out_console, user_errors
from robeval.errors import RobevalError


@app.command()
def spectrum(
    model: Annotated[str, typer.Argument(help="Checkpoint (or other model source) to attack.")],
    eps: Annotated[str, typer.Option(help="One budget, e.g. 8/255.")],
    attack: Annotated[str, typer.Option(help="Attack NAME or NAME:key=value.")] = "pgd",
    dataset: Annotated[str | None, typer.Option(help="Data set; default: the one recorded in the checkpoint.")] = None,
    n: Annotated[int, typer.Option(help="Seeded test subset size.")] = 500,
    seed: Annotated[int, typer.Option()] = 0,
    batch_size: Annotated[int, typer.Option()] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    data_root: Annotated[str | None, typer.Option(help="Folder holding local data sets.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/spectrum"),
) -> None:
    """Log-amplitude spectra of natural and adversarial images, and their difference.

    Also the perturbations' power spectrum; writes spectrum.png and spectrum.npz.
    """
    with user_errors():
        from robeval.analysis.inputs import model_and_subset, single_eps
        from robeval.analysis.spectrum import spectrum_analysis, write_spectrum
        from robeval.attacks import get as get_attack
        from robeval.attacks.base import is_gradient_free
        from robeval.device import resolve_device

        budget = single_eps(eps)
        attack_obj = get_attack(attack)
        resolved = resolve_device(device)
        loaded, x, y = model_and_subset(model, dataset=dataset, n=n, seed=seed, data_root=data_root, device=resolved,
                                        needs_gradients=not is_gradient_free(attack_obj))
        result = spectrum_analysis(loaded.model, x, y, attack_obj, budget, batch_size=batch_size,
                                   device=resolved, seed=seed)
        png, npz = write_spectrum(result, out)
        out_console.print(
            f"{result.attack} eps={result.eps:g}, n={result.n}: accuracy {100 * result.clean_accuracy:.1f}% clean, "
            f"{100 * result.adversarial_accuracy:.1f}% adversarial", highlight=False,
        )
        out_console.print(f"wrote {png} and {npz}", highlight=False)


@app.command()
def frequency(
    model: Annotated[str, typer.Argument(help="Checkpoint (or other model source) to attack.")],
    eps: Annotated[str, typer.Option(help="One budget, e.g. 8/255.")],
    attack: Annotated[str, typer.Option(help="Attack NAME or NAME:key=value.")] = "pgd",
    radii: Annotated[str | None, typer.Option(help="Comma-separated radii >= 0; default 0, 1, ..., ceil(half-diagonal).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Data set; default: the one recorded in the checkpoint.")] = None,
    n: Annotated[int, typer.Option(help="Seeded test subset size.")] = 500,
    seed: Annotated[int, typer.Option()] = 0,
    batch_size: Annotated[int, typer.Option()] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    data_root: Annotated[str | None, typer.Option(help="Folder holding local data sets.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/frequency"),
    clip: Annotated[bool, typer.Option(
        "--clip/--no-clip",
        help="Clamp the filtered and swapped images to [0, 1] before the model sees them (default: no, as in "
             "the paper; a high-pass image is zero-mean, and clamping zeroes about half of it).")] = False,
) -> None:
    """Accuracy against the filter radius for low-/high-pass filtered images.

    Natural and adversarial images, and the frequency swaps of both; writes frequency.csv
    and frequency.png. The images are fed unclipped unless --clip is given.
    """
    with user_errors():
        from robeval.analysis.frequency import (
            accuracy,
            default_radii,
            frequency_sweep,
            make_adversarials,
            write_frequency,
        )
        from robeval.analysis.inputs import model_and_subset, single_eps
        from robeval.attacks import get as get_attack
        from robeval.attacks.base import is_gradient_free
        from robeval.device import resolve_device

        budget = single_eps(eps)
        radius_list: list[float] | None = None
        if radii is not None:
            try:
                radius_list = [float(part) for part in radii.split(",") if part.strip()]
            except ValueError:
                raise RobevalError(f"--radii takes comma-separated numbers >= 0, not {radii!r}") from None
            if not radius_list or any(not r >= 0 or math.isinf(r) for r in radius_list):
                raise RobevalError(f"--radii takes comma-separated finite numbers >= 0, not {radii!r}")
        attack_obj = get_attack(attack)
        resolved = resolve_device(device)
        loaded, x, y = model_and_subset(model, dataset=dataset, n=n, seed=seed, data_root=data_root, device=resolved,
                                        needs_gradients=not is_gradient_free(attack_obj))
        if radius_list is None:
            radius_list = default_radii(*x.shape[-2:])
        x_adv = make_adversarials(loaded.model, x, y, attack_obj, budget, batch_size=batch_size,
                                  device=resolved, seed=seed)
        frame = frequency_sweep(loaded.model, x, y, x_adv, radius_list, batch_size=batch_size, device=resolved,
                                clip=clip)
        csv, png = write_frequency(out, frame, title=f"{attack} eps={budget:g}, n={len(x)}{', clipped' if clip else ''}")
        clean_acc = accuracy(loaded.model, x, y, batch_size=batch_size, device=resolved)
        adv_acc = accuracy(loaded.model, x_adv, y, batch_size=batch_size, device=resolved)
        out_console.print(
            f"{attack} eps={budget:g}, n={len(x)}: accuracy {100 * clean_acc:.1f}% clean, "
            f"{100 * adv_acc:.1f}% adversarial; accuracy vs frequency radius:", highlight=False,
        )
        out_console.print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"), highlight=False)
        out_console.print(f"wrote {csv} and {png}", highlight=False)


@app.command()
def gradients(
    models: Annotated[list[str], typer.Argument(help="Checkpoints (or other model sources) to compare.")],
    dataset: Annotated[str | None, typer.Option(help="Data set; default: the one recorded in the checkpoints.")] = None,
    eps: Annotated[str, typer.Option(help="Budget of the conditioning attack and the linearity error.")] = "4/255",
    attack: Annotated[str, typer.Option(help="Attack that splits points into fooled / not fooled.")] = "pgd",
    n: Annotated[int, typer.Option(help="Seeded test subset size.")] = 500,
    seed: Annotated[int, typer.Option()] = 0,
    batch_size: Annotated[int, typer.Option()] = 128,
    power_iters: Annotated[int, typer.Option(help="Power iterations for the Hessian spectral norm.")] = 10,
    linearity_samples: Annotated[int, typer.Option(help="Draws per point for the local linearity error.")] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    data_root: Annotated[str | None, typer.Option(help="Folder holding local data sets.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/gradients"),
) -> None:
    """Gradient norms (conditioned on attack success), curvature, linearity, saliency-edge correlation."""
    with user_errors():
        from robeval.analysis.geometry import GeometryConfig
        from robeval.analysis.geometry_report import (
            gradient_statistics,
            write_gradient_outputs,
        )
        from robeval.analysis.inputs import models_and_subset, single_eps
        from robeval.attacks import canonical_name
        from robeval.attacks import get as get_attack
        from robeval.device import resolve_device

        budget = single_eps(eps)
        attack_obj = get_attack(attack)
        if power_iters < 1 or linearity_samples < 1:
            raise RobevalError("--power-iters and --linearity-samples must be >= 1")
        resolved = resolve_device(device)
        loaded, names, x, y = models_and_subset(models, dataset=dataset, n=n, seed=seed, data_root=data_root,
                                                device=resolved)
        config = GeometryConfig(eps=budget, power_iters=power_iters, linearity_samples=linearity_samples, seed=seed)
        samples = gradient_statistics(list(zip(loaded, names, strict=True)), x, y, attack_obj,
                                      canonical_name(attack_obj), config, batch_size=batch_size, device=resolved)
        files = write_gradient_outputs(out, samples, attack=canonical_name(attack_obj), eps=budget)
        out_console.print(files["markdown"].read_text(), highlight=False)
        out_console.print(f"wrote {', '.join(str(p) for p in files.values())}", highlight=False)


@app.command()
def responses(
    models: Annotated[list[str], typer.Argument(help="Checkpoints (or other model sources) to compare.")],
    eps: Annotated[str, typer.Option(help="One budget, e.g. 8/255.")],
    attack: Annotated[str, typer.Option(help="Attack NAME or NAME:key=value.")] = "pgd",
    transfer_from: Annotated[str | None, typer.Option(help="Also show adversarials made on this model.")] = None,
    layers: Annotated[str, typer.Option(help="auto (ResNet stages, else every conv) or a,b,c module names.")] = "auto",
    dataset: Annotated[str | None, typer.Option(help="Data set; default: the one recorded in the checkpoints.")] = None,
    n: Annotated[int, typer.Option(help="Seeded test subset size.")] = 500,
    seed: Annotated[int, typer.Option()] = 0,
    batch_size: Annotated[int, typer.Option()] = 128,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    data_root: Annotated[str | None, typer.Option(help="Folder holding local data sets.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/responses"),
) -> None:
    """Local response differences between natural and adversarial images, layer by layer."""
    with user_errors():
        import pandas as pd

        from robeval.analysis.inputs import (
            make_adversarials,
            models_and_subset,
            single_eps,
        )
        from robeval.analysis.responses import (
            resolve_layers,
            response_samples,
            write_response_outputs,
        )
        from robeval.attacks import canonical_name
        from robeval.attacks import get as get_attack
        from robeval.device import resolve_device
        from robeval.eval.runner import eval_mode

        budget = single_eps(eps)
        attack_obj = get_attack(attack)
        resolved = resolve_device(device)
        sources = [*models, *([transfer_from] if transfer_from else [])]
        loaded, names, x, y = models_and_subset(sources, dataset=dataset, n=n, seed=seed, data_root=data_root,
                                                device=resolved)

        def adversarials(index: int):
            return make_adversarials(loaded[index].model, attack_obj, x, y, eps=budget, batch_size=batch_size,
                                     device=resolved, seed=seed, key=f"responses:{loaded[index].identity}")

        transferred = adversarials(len(models)) if transfer_from else None
        frames = []
        for i in range(len(models)):
            chosen = resolve_layers(loaded[i].model, layers)
            own = adversarials(i)
            with eval_mode(loaded[i].model) as model:
                for origin, x_adv in (("own", own), (f"from {names[-1]}", transferred)):
                    if x_adv is None:
                        continue
                    for start in range(0, len(x), batch_size):
                        part = response_samples(model, chosen, x[start:start + batch_size].to(resolved),
                                                y[start:start + batch_size], x_adv[start:start + batch_size].to(resolved),
                                                origin=origin)
                        part.insert(0, "index", start + part.groupby("layer").cumcount())
                        part.insert(0, "model", names[i])
                        frames.append(part)
        files = write_response_outputs(out, pd.concat(frames, ignore_index=True),
                                       attack=canonical_name(attack_obj), eps=budget)
        out_console.print(files["markdown"].read_text(), highlight=False)
        out_console.print(f"wrote {', '.join(str(p) for p in files.values())}", highlight=False)
