"""Example adversarials for the targeted grid picture (smooth-kernels appendix C)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robeval.attacks import Attack
from robeval.eval.checks import check_adversarials


def targeted_examples(
    model: nn.Module, attack: Attack, x: Tensor, y: Tensor, clean_pred: Tensor, *, eps: float,
    n_classes: int, device: torch.device, seed: int, name: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """The first clean-correct image of each class in the subset, attacked towards every
    class.

    Returns ``images[target, original]`` (the clean image on the diagonal; NaN where a
    class has no clean-correct example), ``success[target, original]`` and
    ``present[original]``. The attack runs directly at ``eps`` (no reuse across eps).
    """
    shape = tuple(x.shape[1:])
    images = torch.full((n_classes, n_classes, *shape), float("nan"))
    success = torch.zeros(n_classes, n_classes, dtype=torch.bool)
    present = torch.zeros(n_classes, dtype=torch.bool)
    correct = (clean_pred == y).nonzero().flatten()
    for original in range(n_classes):
        hits = correct[y[correct] == original]
        if len(hits) == 0:
            continue
        present[original] = True
        image = x[hits[0]]
        images[original, original] = image
        targets = torch.tensor([t for t in range(n_classes) if t != original])
        x_in = image.unsqueeze(0).repeat(len(targets), *([1] * len(shape))).to(device)
        y_in = torch.full((len(targets),), original, device=device)
        generator = torch.Generator().manual_seed(seed * 1000 + original)
        x_adv = attack(model, x_in, y_in, eps=eps, generator=generator, target=targets.to(device))
        check_adversarials(x_in, x_adv, eps=eps, norm=attack.norm, attack=name)
        with torch.no_grad():
            pred = model(x_adv.detach()).argmax(1).cpu()
        images[targets, original] = x_adv.detach().cpu()
        success[targets, original] = pred == targets
    return images, success, present
