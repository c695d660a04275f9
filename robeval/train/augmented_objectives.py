"""The SGR paper's augmented-training baselines (Roth et al. 2018, Sec. 4.1 and 4.3):
training on a mixture of clean and perturbed examples, the perturbation from FGSM, PGD
(against the model's own predictions: no label leaking) or LRC noise. Registered in
:data:`robeval.train.objectives.objectives` as ``fgsm-aug``, ``pgd-aug`` and ``lrc-aug``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robeval.attacks.fgsm import FGSM
from robeval.attacks.noise import LRC
from robeval.attacks.pgd import PGD
from robeval.train.objectives import _check_common, eval_mode, objectives


class _Augmented:
    """The SGR baselines' "adversarially augmented training, i.e. training the classifier
    on a mixture of clean and adversarial examples" (SGR, Sec. 4.1, (iii))::

        loss = (1 - alpha) * CE(f(x), y) + alpha * CE(f(x_adv), y)

    ``alpha = 0.5`` by default: equal weight, Goodfellow et al.'s (2015, Eq. 6) mixture
    (which names the clean weight alpha; at 0.5 the two agree); the SGR paper gives no
    weight. ``alpha = 0`` is exactly ``ce`` (no adversarials are generated).

    With ``own_labels`` (default) the adversarials are generated with the model's own
    predictions (argmax of the clean logits, eval mode, detached) as labels, "to avoid
    label leaking" (SGR, App. 7.2, citing Kurakin et al. 2017); the loss uses the true
    labels. Returned logits: the clean ones of the loss (caller's mode).
    """

    alpha: float
    own_labels: bool
    eps: float

    def _check_alpha(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1]; got {self.alpha}")

    def perturb(self, model: nn.Module, x: Tensor, labels: Tensor,
                generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def attack_labels(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The labels the attack uses: the model's eval-mode predictions or ``y``."""
        if not self.own_labels:
            return y
        with eval_mode(model), torch.no_grad():
            return model(x).argmax(1)

    def adversarial(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """The perturbed batch, generated in eval mode (mode restored)."""
        labels = self.attack_labels(model, x, y)
        with eval_mode(model):
            return self.perturb(model, x.detach(), labels, generator).detach()

    def loss_from(self, logits_clean: Tensor, logits_adv: Tensor | None, y: Tensor) -> Tensor:
        clean = F.cross_entropy(logits_clean, y)
        if logits_adv is None:
            return clean
        return (1 - self.alpha) * clean + self.alpha * F.cross_entropy(logits_adv, y)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        if self.alpha == 0:
            logits = model(x)
            return self.loss_from(logits, None, y), logits
        x_adv = self.adversarial(model, x, y, generator)
        logits = model(x)
        return self.loss_from(logits, model(x_adv), y), logits


@objectives.register("fgsm-aug")
@dataclass(frozen=True, kw_only=True)
class FGSMAugmented(_Augmented):
    """FGSM-augmented training (SGR's "FGSM" model): the clean/adversarial mixture of
    :class:`_Augmented` with ``x_adv = clip(x + eps * sign(grad_x CE(f(x), label)))``
    from robeval's :class:`~robeval.attacks.fgsm.FGSM`, ``label`` the model's own
    prediction (``own_labels``). Defaults: ``alpha=0.5``, ``eps=0.3`` (the MNIST bound of
    the smooth-kernels paper; SGR trains one model per eps, e.g. 32/255 on MNIST)."""

    name: ClassVar[str] = "fgsm-aug"
    alpha: float = 0.5
    eps: float = 0.3
    own_labels: bool = True

    def __post_init__(self) -> None:
        self._check_alpha()
        _check_common(self.eps)

    def perturb(self, model: nn.Module, x: Tensor, labels: Tensor,
                generator: torch.Generator | None) -> Tensor:
        return FGSM()(model, x, labels, eps=self.eps, generator=generator)


@objectives.register("pgd-aug")
@dataclass(frozen=True, kw_only=True)
class PGDAugmented(_Augmented):
    """PGD-augmented training (SGR's "PGD" model): the clean/adversarial mixture of
    :class:`_Augmented` with robeval's L-inf :class:`~robeval.attacks.pgd.PGD` against the
    model's own predictions (``own_labels``). Defaults follow SGR's Table 2: 10 steps of
    ``eps / 5`` (``step_size`` unset), random start (CleverHans' PGD), ``alpha=0.5``,
    ``eps=0.3`` (the MNIST bound of the smooth-kernels paper)."""

    name: ClassVar[str] = "pgd-aug"
    alpha: float = 0.5
    eps: float = 0.3
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    own_labels: bool = True

    def __post_init__(self) -> None:
        self._check_alpha()
        _check_common(self.eps, self.steps, self.step_size)

    @property
    def attack(self) -> PGD:
        return PGD(steps=self.steps, rel_stepsize=0.2, abs_stepsize=self.step_size,
                   random_start=self.random_start, keep="last")  # the papers' last iterate

    def perturb(self, model: nn.Module, x: Tensor, labels: Tensor,
                generator: torch.Generator | None) -> Tensor:
        return self.attack(model, x, labels, eps=self.eps, generator=generator)


@objectives.register("lrc-aug")
@dataclass(frozen=True, kw_only=True)
class LRCAugmented(_Augmented):
    """LRC-augmented training (SGR, Sec. 4.3: "we also trained a model on LRC-augmented
    input"): the clean/noisy mixture of :class:`_Augmented` with ``x_noisy = clip(x + eps *
    xi)``, ``xi`` long-range-correlated Gaussian noise from robeval's ``lrc`` attack with
    ``samples=1``: a **single** draw per image and step (plain noise augmentation), not the
    worst of K used to evaluate. The noise needs no label, so there is no ``own_labels``.
    Defaults: ``zeta=8`` (the paper's main decay length), ``eps=0.3`` (its Fig. 3 noise
    scale), ``alpha=0.5``."""

    name: ClassVar[str] = "lrc-aug"
    alpha: float = 0.5
    eps: float = 0.3
    zeta: float = 8.0
    own_labels: ClassVar[bool] = False  # type: ignore[misc]

    def __post_init__(self) -> None:
        self._check_alpha()
        _check_common(self.eps)
        self.attack  # noqa: B018  (validates zeta)

    @property
    def attack(self) -> LRC:
        return LRC(zeta=self.zeta, samples=1)

    def perturb(self, model: nn.Module, x: Tensor, labels: Tensor,
                generator: torch.Generator | None) -> Tensor:
        return self.attack(model, x, labels, eps=self.eps, generator=generator)
