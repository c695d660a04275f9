"""What a model considers each class to be: activation maximisation (smooth-kernels paper,
Sec. 4.3, Figs. 3-6; Erhan et al. 2009, Simonyan et al. 2013, Engstrom et al. 2019).

"With an input image of Gaussian noise, we apply projected gradient descent 10000
iterations with learning rate 0.001 to update the input image", maximising the logit of
one class; the result is sample-independent. Robust and smooth-kernel models give images
a person recognises; vulnerable ones give noise-like patterns.

Choices the paper leaves open, made here: the starting image is ``0.5 + 0.25 N(0, 1)``
clipped to [0, 1], the same draw for every class (seeded), shown as the input column
``I``; each step moves by ``lr`` per pixel in root-mean-square terms along the logit's
gradient (``x += lr * g / rms(g)``, Engstrom et al.'s normalised L2 step, so ``lr`` does
not depend on the model's gradient scale) and projects back onto the [0, 1] box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from robeval.eval.runner import eval_mode
from robeval.results.plots import save_figure, show_image

PAPER_STEPS = 10_000
PAPER_LR = 1e-3


def start_image(shape: Sequence[int], seed: int) -> Tensor:
    """The seeded Gaussian-noise input ``clip(0.5 + 0.25 N(0, 1), 0, 1)`` of ``shape`` (C, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    return (0.5 + 0.25 * torch.randn(tuple(shape), generator=generator)).clamp(0, 1)


def maximise_classes(
    model: nn.Module, shape: Sequence[int], classes: Sequence[int], *, steps: int = PAPER_STEPS,
    lr: float = PAPER_LR, seed: int = 0, device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """``(start, images)``: the noise input (C, H, W) and, for each class, the image
    ``steps`` normalised gradient-ascent steps of size ``lr`` on that class's logit make
    from it, kept in [0, 1] (``(len(classes), C, H, W)``, on the CPU)."""
    if steps < 0 or lr <= 0:
        raise ValueError("steps must be >= 0 and lr > 0")
    start = start_image(shape, seed)
    index = torch.as_tensor(list(classes), dtype=torch.long, device=device)
    x = start.to(device).unsqueeze(0).repeat(len(index), *([1] * len(shape))).contiguous()
    dims = math.prod(shape)
    with eval_mode(model) as frozen:
        for _ in range(steps):
            with torch.enable_grad():
                leaf = x.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(frozen(leaf).gather(1, index.view(-1, 1)).sum(), leaf)
            rms = grad.flatten(1).norm(dim=1).clamp_min(1e-12) / math.sqrt(dims)
            x = (x + lr * grad / rms.view(-1, *([1] * len(shape)))).clamp(0, 1).detach()
    return start, x.cpu()


def plot_class_images(
    rows: Sequence[tuple[str, Tensor, Tensor]], class_names: Sequence[str], path: Path, *, title: str = ""
) -> Path:
    """One row per model: the input ``I`` then one image per class (Figs. 3-6)."""
    n_cols = len(class_names) + 1
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.25 * n_cols + 1.2, 1.35 * len(rows) + 0.5),
                             squeeze=False)
    for r, (model, start, images) in enumerate(rows):
        for c, (image, label) in enumerate(zip([start, *images], ["I", *class_names], strict=True)):
            show_image(axes[r][c], image, str(label) if r == 0 else "", fontsize=8)
        axes[r][0].set_ylabel(model, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, Path(path))
