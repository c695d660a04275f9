"""The on-average most deceptive adversarial examples (smooth-kernels paper, Fig. 2 and
appendix D): for each class, the test image whose adversarials the models misclassify
with the highest confidence on average, shown as the original (row ``O``) and each
model's own adversarial of it (one row per model).

Deception of one adversarial = the highest softmax probability the model gives a wrong
class on it, 0 where the model still predicts the label; an image's score is the mean of
its adversarials' deception over the models (Fig. 2: "the models predict incorrectly with
the highest confidence"). The paper uses FGSM (Fig. 2) and ADef (appendix D) adversarials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from robeval.results.plots import save_figure, show_image


@dataclass(frozen=True)
class Deception:
    """One model's adversarials of every test image and how deceptive each is."""

    x_adv: Tensor  # (N, C, H, W)
    predicted: Tensor  # (N,) class predicted on the adversarial
    confidence: Tensor  # (N,) wrong-class probability (0 where not fooled)


@torch.no_grad()
def deception(
    model: nn.Module, x_adv: Tensor, y: Tensor, batch_size: int = 256, *, clean_pred: Tensor | None = None
) -> Deception:
    """Predictions on ``x_adv`` and the probability of the most likely wrong class, 0
    where the model is not fooled, and (given ``clean_pred``) where it already misclassifies
    the clean image: that is no adversarial success."""
    probs = torch.cat([torch.softmax(model(x_adv[i:i + batch_size]), dim=1).cpu()
                       for i in range(0, len(x_adv), batch_size)])
    predicted = probs.argmax(1)
    wrong = probs.scatter(1, y.cpu().view(-1, 1), 0.0).amax(1)
    fooled = predicted != y.cpu()
    if clean_pred is not None:
        fooled &= clean_pred.cpu() == y.cpu()
    confidence = torch.where(fooled, wrong, torch.zeros_like(wrong))
    return Deception(x_adv=x_adv.cpu(), predicted=predicted, confidence=confidence)


def most_deceptive(y: Tensor, deceptions: Sequence[Deception], n_classes: int) -> list[int | None]:
    """Per class, the index of the image with the highest mean deception over models
    (``None`` for a class without a fooling adversarial in any model)."""
    score = torch.stack([d.confidence for d in deceptions]).mean(0)
    chosen: list[int | None] = []
    for k in range(n_classes):
        members = (y.cpu() == k).nonzero().flatten()
        if len(members) == 0 or float(score[members].max()) <= 0:
            chosen.append(None)
            continue
        chosen.append(int(members[score[members].argmax()]))
    return chosen


def plot_deceptive(
    x: Tensor, chosen: Sequence[int | None], rows: Sequence[tuple[str, Deception]], class_names: Sequence[str],
    path: Path, *, title: str = "",
) -> Path:
    """Row ``O``: the originals; then one row per model with its adversarial, titled with
    the predicted class and its probability."""
    cols = [k for k, i in enumerate(chosen) if i is not None]
    if not cols:
        raise ValueError("no adversarial fooled any model; nothing to show")
    fig, axes = plt.subplots(len(rows) + 1, len(cols), figsize=(1.3 * len(cols) + 1.4, 1.5 * (len(rows) + 1) + 0.4),
                             squeeze=False)
    for c, k in enumerate(cols):
        index = chosen[k]
        show_image(axes[0][c], x[index], f"{class_names[k]}")
        for r, (_, d) in enumerate(rows, start=1):
            fooled = float(d.confidence[index]) > 0
            label = f"{class_names[int(d.predicted[index])]} {100 * float(d.confidence[index]):.0f}%" if fooled else "not fooled"
            show_image(axes[r][c], d.x_adv[index], label, colour="red" if fooled else "black")
    axes[0][0].set_ylabel("O", rotation=0, ha="right", va="center", fontsize=9)
    for r, (name, _) in enumerate(rows, start=1):
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, Path(path))
