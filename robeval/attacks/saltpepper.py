"""Salt-and-pepper noise (foolbox 3's ``SaltAndPepperNoiseAttack``, and Foolbox 2.4's as
``preset=foolbox2``), a gradient-free minimal-L0 search."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from robeval.attacks import rng
from robeval.attacks.base import BALL_NORMS, perturbation_norms, restrict_to_ball
from robeval.attacks.presets import FOOLBOX2, Preset, with_presets
from robeval.attacks.registry import attacks
from robeval.attacks.rng import PointGenerator

# A PointGenerator's points draw up to this many steps' noise per call, at most this many
# entries at once: fixed by the image size alone, never by the batch.
_POINT_BLOCK = 16
_POINT_ELEMENTS = 1 << 16
#: Foolbox 2.4.0's ``SaltAndPepperNoiseAttack.as_generator(a, epsilons=100, repetitions=10)``
#: (``foolbox/attacks/saltandpepper.py`` line 14); its ``epsilons`` (noise probabilities
#: per repetition) is robeval's ``steps``.
FOOLBOX2_DEFAULTS = {"steps": 100, "repetitions": 10}
#: The preset-only field and its value under ``preset=robeval`` (left out of cache keys).
NEUTRAL = {"repetitions": None}


@attacks.register("salt-and-pepper")
@with_presets({FOOLBOX2: FOOLBOX2_DEFAULTS}, neutral=NEUTRAL)
@dataclass(frozen=True, kw_only=True)
class SaltAndPepper:
    """Minimal-norm attack: raise the amount of salt-and-pepper noise until the model errs.

    The algorithm of foolbox 3's ``SaltAndPepperNoiseAttack`` (Rauber et al., foolbox,
    ``attacks/saltandpepper.py``; salt-and-pepper noise as a decision-based attack goes
    back to Rauber, Brendel and Bethge, "Foolbox", 2017). Per sample it keeps a noise
    probability ``p`` in ``[min_p, max_p]`` (initially ``[0, 1]``) and a step size
    ``s = 1 / steps``; ``p`` starts at ``s``. Each of ``steps`` iterations draws
    ``u ~ U[0, 1)`` of the input's shape (one value per pixel, shared across the
    channels when ``across_channels``) and sets an entry to 1 (salt) where
    ``u >= 1 - p/2`` and to 0 (pepper) where ``u < p/2``, the rest staying ``x``. When
    the noisy image is misclassified (prediction != ``y``) and better than the best
    adversarial so far, it becomes the best, and the search narrows around it:
    ``min_p = p/2``, ``max_p = min(1.2 p, 1)``, ``s = (max_p - min_p) / remaining
    steps`` and ``p`` restarts from ``min_p``; ``p`` also restarts from ``min_p`` once it
    reached ``max_p``; then ``p = min(p + s, max_p)``.

    Differences from foolbox:

    * *Better* means fewer changed entries: the L0 count (entries moved by more than
      :data:`robeval.attacks.base.L0_TOL`, as :func:`perturbation_norms` counts them),
      ties broken by the smaller L2 norm. Foolbox ranks by L2 alone. Whatever ``norm``
      is, the returned adversarial is the one with the minimal recorded count; ``norm``
      only says in which norm ``eps`` bounds the answer.
    * Samples leave the search (an active set) when they are misclassified to begin
      with (returned unchanged, as foolbox does) or when their best count is 1, which
      cannot improve (a sample with no change is not adversarial). Foolbox keeps every
      sample for all ``steps``.
    * Only the noisy images that would beat the best so far are classified (foolbox
      classifies all of them and then discards the rest), which spares most forward
      passes once a small adversarial is known.
    * All randomness is drawn on the CPU from ``generator`` (the global RNG when
      ``None``) and moved to the input's device, so a seed gives the same result on
      every device. The draws for a step cover only the active samples; with a
      :class:`~robeval.attacks.rng.PointGenerator` each sample draws from its own stream,
      so its search does not depend on the other samples of the call.

    Defaults as foolbox 3: ``steps=1000``, ``across_channels=True``; ``channel_axis=1``
    (robeval's images are NCHW; foolbox infers it from the model, 1 for PyTorch). The
    noise is shared across channels only for inputs with more than two dimensions, as in
    foolbox. ``norm="l0"``: ``eps`` bounds the number of changed entries.

    A minimal-norm attack (see :mod:`robeval.attacks.base`): with ``eps=inf`` it
    returns the best adversarial found for every sample where the search succeeded and
    ``x`` where it failed; with a finite ``eps`` only those whose ``norm`` distance to
    ``x`` is at most ``eps``, ``x`` elsewhere. Untargeted only; gradient-free.
    """

    name: ClassVar[str] = "salt-and-pepper"
    minimal: ClassVar[bool] = True
    targeted: ClassVar[bool] = False
    nested: ClassVar[bool] = True  # minimal-norm: an adversarial within eps is within every larger eps
    gradient_free: ClassVar[bool] = True  # model queries only: runs on black-box models
    norm: Literal["l0", "l2", "linf"] = "l0"
    steps: int = 1000
    across_channels: bool = True
    channel_axis: int = 1
    preset: Preset = "robeval"
    repetitions: int | None = None

    def __post_init__(self) -> None:
        if self.norm not in BALL_NORMS:
            raise ValueError(f"norm must be one of {', '.join(BALL_NORMS)}; got {self.norm!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1; got {self.steps}")
        if self.preset != FOOLBOX2 and self.repetitions is not None:
            raise ValueError("repetitions sets Foolbox 2.4's repeated scans: use it with preset=foolbox2")
        if self.preset == FOOLBOX2 and (self.repetitions is None or self.repetitions < 1):
            raise ValueError(f"repetitions must be >= 1 with preset=foolbox2; got {self.repetitions!r}")

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float = math.inf,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        if target is not None:
            raise ValueError("salt-and-pepper has no targeted mode")
        x0 = x.detach()
        if eps == 0 or len(x0) == 0:
            return x0.clone()
        search = self.search_foolbox2 if self.preset == FOOLBOX2 else self.search
        with torch.no_grad():
            x_adv = search(model, x0, y.detach(), generator)
        return restrict_to_ball(x0, x_adv, eps, self.norm)

    def noise_shape(self, x: Tensor) -> list[int]:
        """The shape of the uniform draws: ``x``'s, with the channel axis 1 when shared."""
        shape = list(x.shape)
        if self.across_channels and x.dim() > 2:
            axis = self.channel_axis % x.dim()
            if axis == 0:
                raise ValueError("channel_axis must not be the batch axis (0)")
            shape[axis] = 1
        return shape

    def search(
        self, model: nn.Module, x0: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """The unbounded search: per sample the best adversarial found, or ``x0``."""
        n = len(x0)
        view = (-1, *([1] * (x0.dim() - 1)))
        x_out = x0.clone()  # x0 where the search fails
        is_adv = model(x0).argmax(dim=-1) != y
        # The active set: clean-correct samples whose best count can still improve.
        idx = torch.arange(n, device=x0.device)[~is_adv]
        x0a, ya = x0[~is_adv], y[~is_adv]
        m = len(idx)
        min_p = x0.new_zeros(m)
        max_p = x0.new_ones(m)
        stepsizes = max_p / self.steps
        p = stepsizes
        best_l0 = x0.new_full((m,), math.inf)
        best_l2 = x0.new_full((m,), math.inf)
        shape = self.noise_shape(x0)
        one, zero = x0.new_ones(()), x0.new_zeros(())
        # A PointGenerator: each active sample's draws for the next `block` steps come from one call
        # on its own stream (the samples step in lockstep, so one buffer serves them all).
        points = generator if isinstance(generator, PointGenerator) else None
        block = max(1, min(_POINT_BLOCK, _POINT_ELEMENTS // max(1, math.prod(shape[1:]))))
        buffer = x0.new_zeros(0)

        for step in range(self.steps):
            if len(idx) == 0:
                break
            shape[0] = len(idx)
            if points is not None:
                if step % block == 0:
                    buffer = torch.stack([torch.rand((block, *shape[1:]), generator=points.rows[i], dtype=x0.dtype)
                                          for i in idx.tolist()]).to(x0.device)
                u = buffer[:, step % block]
            else:
                u = torch.rand(shape, generator=generator, dtype=x0.dtype).to(x0.device)
            p_ = p.view(view)
            xs = torch.where(u >= 1 - p_ / 2, one, torch.where(u < p_ / 2, zero, x0a))

            delta = xs - x0a
            l0 = perturbation_norms(delta, "l0")
            l2 = perturbation_norms(delta, "l2")
            better = (l0 < best_l0) | ((l0 == best_l0) & (l2 < best_l2))
            # Only candidates that would improve are shown to the model (foolbox's TODO).
            is_best = better.clone()
            if better.any():
                is_best[better] = model(xs[better]).argmax(dim=-1) != ya[better]

            if is_best.any():
                x_out[idx[is_best]] = xs[is_best]
                best_l0 = torch.where(is_best, l0, best_l0)
                best_l2 = torch.where(is_best, l2, best_l2)
            min_p = torch.where(is_best, 0.5 * p, min_p)
            # foolbox: "max_probability a bit higher than p because the relationship
            # between p and norms is not strictly monotonic"
            max_p = torch.where(is_best, torch.clamp(p * 1.2, max=1.0), max_p)
            stepsizes = torch.where(is_best, (max_p - min_p) / (self.steps - step), stepsizes)
            reset = p == max_p
            p = torch.where(is_best | reset, min_p, p)
            p = torch.minimum(p + stepsizes, max_p)

            done = best_l0 <= 1  # one changed entry: the count cannot improve
            if done.any():
                keep = ~done
                idx, x0a, ya, p, min_p, max_p, stepsizes, best_l0, best_l2 = (
                    t[keep] for t in (idx, x0a, ya, p, min_p, max_p, stepsizes, best_l0, best_l2)
                )
                buffer = buffer[keep] if points is not None else buffer
        return x_out

    def search_foolbox2(
        self, model: nn.Module, x0: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Foolbox 2.4's unbounded search (``preset=foolbox2``, lines 37-72 of its
        saltandpepper.py): per sample the closest adversarial found (mean squared
        distance), or ``x0``. The samples scan in lockstep; each draws from its own stream
        when ``generator`` is a :class:`~robeval.attacks.rng.PointGenerator`."""
        assert self.repetitions is not None
        x_out = x0.clone()
        idx = (model(x0).argmax(dim=-1) == y).nonzero().flatten()  # Foolbox attacks these only
        shape = self.noise_shape(x0)
        n_p = min(self.steps, math.prod(shape[1:]))  # line 46: epsilons = min(epsilons, pixels)
        m = len(idx)
        best_d = torch.full((m,), math.inf, dtype=torch.float64)
        max_p = torch.ones(m, dtype=torch.float64)
        x0s, ys, gen = x0[idx], y[idx], rng.take(generator, idx)
        view = (-1, *([1] * (x0.dim() - 1)))
        for _ in range(self.repetitions):
            scanning = torch.arange(m)  # the samples whose scan has not met an adversarial yet
            for k in range(1, n_p + 1):
                if len(scanning) == 0:
                    break
                # np.linspace(0, max_p, n_p + 1)[k]: k * (max_p / n_p), the last exactly max_p
                p = max_p[scanning] if k == n_p else k * (max_p[scanning] / n_p)
                shape[0] = len(scanning)
                u = rng.rand(shape, rng.take(gen, scanning), torch.float64).to(x0.device)
                p_ = p.to(x0.device).view(view)
                salt, pepper = (u >= 1 - p_ / 2).to(x0.dtype), (u < p_ / 2).to(x0.dtype)
                xs = (x0s[scanning] + salt - pepper).clamp(0.0, 1.0)
                dist = (xs - x0s[scanning]).flatten(1).double().square().mean(dim=1).cpu()
                query = dist < best_d[scanning]  # line 62: a draw no closer than the best is not tried
                if not bool(query.any()):
                    continue
                hit = torch.zeros_like(query)
                hit[query] = (model(xs[query]).argmax(dim=-1) != ys[scanning[query]]).cpu()
                rows = scanning[hit]
                x_out[idx[rows]] = xs[hit]
                best_d[rows] = dist[hit]
                max_p[rows] = torch.clamp(p[hit] * 1.2, max=1.0)
                scanning = scanning[~hit]
        return x_out
