"""Carlini & Wagner's L2 and L-inf attacks (IEEE S&P 2017, Sections V and VI), as
foolbox 3 runs them and (``preset=foolbox2``, L2) as Foolbox 2.4 did."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from robeval.attacks.base import Norm, restrict_to_ball
from robeval.attacks.presets import FOOLBOX2, Preset, with_presets
from robeval.attacks.registry import attacks
from robeval.attacks.trace import new_run, record_step

# Adam's constants (Kingma & Ba), as foolbox's AdamOptimizer and C&W's TensorFlow code use.
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8
# foolbox squeezes [-1, 1] into (-1, 1) by this factor before arctanh (C&W's code: 1.999999 / 2).
_SQUEEZE = 0.999999
# C&W's L-inf reference code (li_attack.py): tau starts at the full range and the search
# ends once it is down to 1/256; a round succeeds once the loss is below 1e-4 * c.
_TAU_START, _TAU_MIN, _SUCCESS_TOL = 1.0, 1.0 / 256, 1e-4
#: Foolbox 2.4.0's ``CarliniWagnerL2Attack.as_generator`` (``foolbox/attacks/carlini_wagner.py``
#: lines 26-35): ``binary_search_steps=5, max_iterations=1000, confidence=0,
#: learning_rate=5e-3, initial_const=1e-2, abort_early=True``.
FOOLBOX2_DEFAULTS = {"binary_search_steps": 5, "steps": 1000, "stepsize": 5e-3, "initial_const": 1e-2,
                     "confidence": 0.0, "abort_early": True}


@attacks.register("cw")
@with_presets({FOOLBOX2: FOOLBOX2_DEFAULTS})
@dataclass(frozen=True, kw_only=True)
class CarliniWagner:
    """Carlini & Wagner's minimal-norm attacks (Carlini & Wagner, "Towards Evaluating the
    Robustness of Neural Networks", IEEE S&P 2017), L2 (default) and L-inf (``norm=linf``).

    Both use the margin loss ``f`` (the paper's ``f_6``, Section V-A) on the logits ``Z``
    and the change of variables ``x' = (tanh(w) + 1) / 2`` (Section V-B), so every iterate
    lies in [0, 1]. Untargeted (``target=None``) ``f = max(Z_y - max_{i!=y} Z_i + kappa, 0)``
    with ``y`` the label; targeted ``f = max(max_{i!=t} Z_i - Z_t + kappa, 0)``; ``kappa``
    is ``confidence``. (The paper writes ``max(., -kappa)``; the two differ by the constant
    ``kappa``.) A point counts as adversarial when its prediction, with ``kappa`` added to
    the logit of ``y`` (subtracted from that of ``t``), is not ``y`` (is ``t``).

    **L2** (Section VI-A): minimise ``||x' - x||_2^2 + c * f(x')`` over ``w`` with Adam
    (``steps`` steps of ``stepsize``, from ``w = arctanh(x)``), for each of
    ``binary_search_steps`` values of ``c``: starting at ``initial_const``, ``c`` grows
    x10 until some step was adversarial, then bisects between the largest failing and the
    smallest succeeding value (per sample). Mirrors foolbox 3's ``L2CarliniWagnerAttack``
    step for step -- its tanh transform with bounds (0, 1), Adam, the batch-wide
    ``abort_early`` rule (stop Adam when the batch's total loss fell by less than 0.01%
    over a tenth of ``steps``), the repeat of the last step at ``min(upper, 1e10)`` when
    ``binary_search_steps >= 10`` and its bookkeeping of the smallest adversarial seen at
    any step -- and its arctanh, ``(log1p(u) - log1p(-u)) / 2``, so the two agree on the
    same settings (bit for bit on CPU, as measured on digits and MNIST). Because the abort
    rule looks at the whole batch's loss, no sample can be dropped early without changing
    the others' results; each step is one forward and one backward pass of the batch, and
    parameter gradients are never computed. Worst case: ``binary_search_steps * steps``
    gradient steps.

    **L-inf** (Section VI-C): minimise ``c * f(x') + sum_i max(0, |x'_i - x_i| - tau)``.
    Per sample, a round runs Adam (reset each round, started from the last success) until
    the loss is below ``1e-4 * c`` with ``x'`` adversarial (success: ``tau <-
    tau_decrease * min(tau, ||x' - x||_inf)``, next round), or until ``c`` has run out.
    ``c`` starts at ``initial_const`` and is multiplied by ``const_factor`` after
    ``steps`` steps without success (or earlier with ``abort_early``: when the sample's
    loss fell by less than 0.01% over a tenth of ``steps``); it carries over between
    rounds, and a sample stops when ``c`` would reach ``max_const`` or ``tau`` is down to
    1/256 (``tau`` starts at 1, the full range). These are the rules of Carlini's reference
    code (``li_attack.py``: decrease factor 0.9, const factor 2, largest const 20, ``c``
    never lowered); its ``initial_const`` (1e-5) and learning rate (5e-3) are replaced by
    the shared fields. ``binary_search_steps`` has no binary search to count here: the
    L-inf attack stops after ``binary_search_steps * steps`` gradient steps (90,000 with
    the defaults), the L2 attack's worst case. Finished samples leave the batch. The last
    successful ``tau`` bounds the precision: on an affine classifier the result lies within
    about ``1 / tau_decrease`` of the exact distance, less with a smaller ``stepsize``.

    While the runner traces the attack (:mod:`robeval.attacks.trace`), every Adam step of
    the L-inf attack reports the samples still searching, minus their loss (the objective
    they descend, ``c * f + sum_i max(0, |x'_i - x_i| - tau)``, which jumps when ``c`` or
    ``tau`` change) and whether the iterate was adversarial, from the step's own forward
    pass; the whole search is one run. Tracing changes no number. Both attacks keep the
    smallest adversarial of every step, so neither can have a silent success; the L2
    loop, foolbox's step for step, is not traced.

    Both attacks return, per sample, the smallest (in ``norm``) adversarial met at any
    step, or ``x`` where none was found; a finite ``eps`` then keeps only those inside the
    eps-ball (:func:`~robeval.attacks.base.restrict_to_ball`).

    Defaults: foolbox 3.3.4's ``L2CarliniWagnerAttack`` (``binary_search_steps=9, steps=10000,
    stepsize=0.01, confidence=0, initial_const=1e-3, abort_early=True``:
    ``foolbox/attacks/carlini_wagner.py`` lines 51-56, the same since foolbox 3.0.0); L-inf
    extras from C&W's code. These are *not* the settings of
    smooth-kernels Table 1, whose "default parameters in Foolbox" are Foolbox 2's: use
    ``preset=foolbox2`` for those. These defaults (up to 90,000 gradient steps per batch)
    are sized for a GPU; on a CPU ``cw:steps=200,binary_search_steps=5`` (or
    ``norm=linf,...``) gives a far cheaper run.

    ``preset`` -- ``robeval`` (default: the above) or ``foolbox2``: Foolbox 2.4.0's
    ``CarliniWagnerL2Attack`` (``foolbox/attacks/carlini_wagner.py``; L2 only) with its
    defaults, ``binary_search_steps=5, steps=1000`` (its ``max_iterations``),
    ``stepsize=5e-3`` (its ``learning_rate``), ``initial_const=1e-2``, ``confidence=0``,
    ``abort_early=True``, and its per-sample loop: Foolbox 2 attacks one sample at a time,
    so the early abort looks at each sample's own loss (a sample stops when its loss fell
    by less than 0.01% over a tenth of ``steps``, lines 170-174, and the others go on),
    and a step's iterate counts (as the best adversarial and for the binary search)
    before the abort check (lines 144 and 165-173). Adam's moments are kept in float64,
    as Foolbox 2's numpy ``AdamOptimizer`` keeps them (lines 251-288).
    """

    name: ClassVar[str] = "cw"
    minimal: ClassVar[bool] = True
    targeted: ClassVar[bool] = True
    nested: ClassVar[bool] = True  # minimal-norm: one unbounded search answers every eps
    norm: Norm = "l2"
    binary_search_steps: int = 9
    steps: int = 10000
    stepsize: float = 0.01
    confidence: float = 0.0
    initial_const: float = 1e-3
    abort_early: bool = True
    tau_decrease: float = 0.9  # L-inf only
    const_factor: float = 2.0  # L-inf only
    max_const: float = 20.0  # L-inf only
    preset: Preset = "robeval"

    def __post_init__(self) -> None:
        if self.norm not in ("l2", "linf"):
            raise ValueError(f"norm must be l2 or linf, got {self.norm!r}")
        if self.binary_search_steps < 1:
            raise ValueError("binary_search_steps must be >= 1")
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if not self.stepsize > 0:
            raise ValueError("stepsize must be > 0")
        if not self.confidence >= 0:
            raise ValueError("confidence must be >= 0")
        if not self.initial_const > 0:
            raise ValueError("initial_const must be > 0")
        if not 0 < self.tau_decrease < 1:
            raise ValueError("tau_decrease must be in (0, 1)")
        if not self.const_factor > 1:
            raise ValueError("const_factor must be > 1")
        if not self.max_const > self.initial_const:
            raise ValueError("max_const must be > initial_const")
        if self.preset == FOOLBOX2 and self.norm != "l2":
            raise ValueError("preset=foolbox2 is Foolbox 2.4's CarliniWagnerL2Attack; it has no L-inf attack: use "
                             "norm=l2, or preset=robeval for L-inf")

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float = math.inf,
        generator: torch.Generator | None = None, target: Tensor | None = None,
    ) -> Tensor:
        x0 = x.detach()
        if eps == 0 or len(x0) == 0:
            return x0.clone()
        if float(x0.min()) < 0 or float(x0.max()) > 1:
            raise ValueError("C&W works on images in [0, 1]; got values outside")
        classes = y if target is None else target
        if classes.shape != (len(x0),):
            what = "labels" if target is None else "target"
            raise ValueError(f"expected {what} of shape ({len(x0)},), got {tuple(classes.shape)}")
        classes = classes.to(x0.device)
        if self.preset == FOOLBOX2:
            x_adv = self._l2_foolbox2(model, x0, classes, targeted=target is not None)
        elif self.norm == "l2":
            x_adv = self._l2(model, x0, classes, targeted=target is not None)
        else:
            x_adv = self._linf(model, x0, classes, targeted=target is not None)
        return restrict_to_ball(x0, x_adv, eps, self.norm)

    # --- L2: foolbox 3's L2CarliniWagnerAttack, in plain torch ---------------------------

    def _l2(self, model: nn.Module, x0: Tensor, classes: Tensor, *, targeted: bool) -> Tensor:
        n = len(x0)
        rows = torch.arange(n, device=x0.device)
        w0 = _to_tanh_space(x0)
        x_rec = _from_tanh_space(w0)  # x as the tanh space sees it (off by ~1e-6)
        consts = torch.full((n,), self.initial_const, dtype=torch.float64)
        lower = torch.zeros(n, dtype=torch.float64)
        upper = torch.full((n,), math.inf, dtype=torch.float64)
        best = x0.clone()
        best_norms = torch.full((n,), math.inf, dtype=x0.dtype, device=x0.device)
        check_every = math.ceil(self.steps / 10)

        for bs_step in range(self.binary_search_steps):
            if bs_step == self.binary_search_steps - 1 and self.binary_search_steps >= 10:
                consts = upper.clamp(max=1e10)  # the last step repeats the best const
            consts_ = consts.to(device=x0.device, dtype=x0.dtype)
            delta = torch.zeros_like(w0)
            m, v = torch.zeros_like(w0), torch.zeros_like(w0)
            found = torch.zeros(n, dtype=torch.bool, device=x0.device)
            loss_at_previous_check = math.inf
            for step in range(self.steps):
                x_adv, logits, loss, grad = self._l2_loss_and_grad(
                    model, w0, delta, x_rec, classes, consts_, rows, targeted=targeted)
                m = _BETA1 * m + (1 - _BETA1) * grad
                v = _BETA2 * v + (1 - _BETA2) * grad**2
                m_hat = m / (1 - _BETA1 ** (step + 1))
                v_hat = v / (1 - _BETA2 ** (step + 1))
                delta = delta - self.stepsize * m_hat / (torch.sqrt(v_hat) + _ADAM_EPS)

                if self.abort_early and step % check_every == 0:
                    if not bool(loss <= 0.9999 * loss_at_previous_check):
                        break  # no progress over the last tenth of the steps
                    loss_at_previous_check = loss.item()

                is_adv = self._is_adversarial(logits, classes, rows, targeted=targeted)
                found |= is_adv
                norms = (x_adv - x0).flatten(1).square().sum(dim=-1).sqrt()
                new_best = (norms < best_norms) & is_adv
                best = torch.where(new_best.view(-1, *[1] * (x0.dim() - 1)), x_adv, best)
                best_norms = torch.where(new_best, norms, best_norms)

            found_ = found.cpu()
            upper = torch.where(found_, consts, upper)
            lower = torch.where(found_, lower, consts)
            consts = torch.where(torch.isinf(upper), consts * 10, (lower + upper) / 2)
        return best

    def _l2_loss_and_grad(
        self, model: nn.Module, w0: Tensor, delta: Tensor, x_rec: Tensor, classes: Tensor,
        consts: Tensor, rows: Tensor, *, targeted: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """foolbox's loss ``sum_i c_i f(x'_i) + ||x'_i - x_i||^2``, its gradient in ``delta``,
        and the iterate ``x'`` and logits it was computed at (one forward, one backward)."""
        delta = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            x_adv = _from_tanh_space(w0 + delta)
            logits = model(x_adv)
            margin = _margin(logits, classes, rows, targeted=targeted)
            is_adv_loss = torch.maximum(margin + self.confidence, torch.zeros_like(margin))
            squared_norms = (x_adv - x_rec).flatten(1).square().sum(dim=-1)
            loss = (is_adv_loss * consts).sum() + squared_norms.sum()
            (grad,) = torch.autograd.grad(loss, delta)
        return x_adv.detach(), logits.detach(), loss.detach(), grad

    # --- L2 as Foolbox 2.4's CarliniWagnerL2Attack (preset=foolbox2) ----------------------

    def _l2_foolbox2(self, model: nn.Module, x0: Tensor, classes: Tensor, *, targeted: bool) -> Tensor:
        """Foolbox 2.4's per-sample loop (carlini_wagner.py lines 112-190) on the batch:
        samples whose Adam aborted leave the batch until the next binary-search step."""
        n = len(x0)
        w0 = _to_tanh_space(x0)
        x_rec = _from_tanh_space(w0)
        consts = torch.full((n,), self.initial_const, dtype=torch.float64)
        lower = torch.zeros(n, dtype=torch.float64)
        upper = torch.full((n,), math.inf, dtype=torch.float64)
        best, best_norms = x0.clone(), torch.full((n,), math.inf, dtype=torch.float64, device=x0.device)
        check_every = math.ceil(self.steps / 10)
        for bs_step in range(self.binary_search_steps):
            if bs_step == self.binary_search_steps - 1 and self.binary_search_steps >= 10:
                consts = upper.clamp(max=1e10)
            consts_ = consts.to(device=x0.device, dtype=x0.dtype)
            delta = torch.zeros_like(w0)
            m = torch.zeros_like(w0, dtype=torch.float64)
            v = torch.zeros_like(w0, dtype=torch.float64)
            found = torch.zeros(n, dtype=torch.bool, device=x0.device)
            previous = torch.full((n,), math.inf, dtype=x0.dtype, device=x0.device)
            act = torch.arange(n, device=x0.device)  # the samples whose Adam still runs
            for step in range(self.steps):
                rows = torch.arange(len(act), device=x0.device)
                x_adv, logits, losses, grad = self._l2_losses_and_grad(
                    model, w0[act], delta[act], x_rec[act], classes[act], consts_[act], rows, targeted=targeted)
                is_adv = self._is_adversarial(logits, classes[act], rows, targeted=targeted)
                norms = (x_adv - x0[act]).flatten(1).double().square().sum(dim=-1).sqrt()
                better = is_adv & (norms < best_norms[act])  # Foolbox's Adversarial: strictly closer
                best[act[better]], best_norms[act[better]] = x_adv[better], norms[better]
                # numpy 1.x rounds (1 - beta) * g and g ** 2 to g's float32 before adding to the
                # float64 moments (value-based casting), as Foolbox 2's optimizer ran
                m[act] = _BETA1 * m[act] + ((1 - _BETA1) * grad).double()
                v[act] = _BETA2 * v[act] + ((1 - _BETA2) * grad**2).double()
                m_hat, v_hat = m[act] / (1 - _BETA1 ** (step + 1)), v[act] / (1 - _BETA2 ** (step + 1))
                delta[act] = (delta[act].double() - self.stepsize * m_hat / (v_hat.sqrt() + _ADAM_EPS)).to(w0.dtype)
                found[act] |= is_adv
                if self.abort_early and step % check_every == 0:
                    go = losses <= 0.9999 * previous[act]  # no progress over a tenth of the steps: stop
                    previous[act] = losses
                    act = act[go]
                    if len(act) == 0:
                        break
            found_ = found.cpu()
            upper = torch.where(found_, consts, upper)
            lower = torch.where(found_, lower, consts)
            consts = torch.where(torch.isinf(upper), consts * 10, (lower + upper) / 2)
        return best

    def _l2_losses_and_grad(
        self, model: nn.Module, w0: Tensor, delta: Tensor, x_rec: Tensor, classes: Tensor,
        consts: Tensor, rows: Tensor, *, targeted: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per sample Foolbox 2's loss ``||x' - x||^2 + c f(x')`` (lines 193-230), the
        gradient of each sample's loss in ``delta``, the iterate and its logits."""
        delta = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            x_adv = _from_tanh_space(w0 + delta)
            logits = model(x_adv)
            margin = _margin(logits, classes, rows, targeted=targeted)
            is_adv_loss = torch.maximum(margin + self.confidence, torch.zeros_like(margin))
            losses = (x_adv - x_rec).flatten(1).square().sum(dim=-1) + consts * is_adv_loss
            (grad,) = torch.autograd.grad(losses.sum(), delta)
        return x_adv.detach(), logits.detach(), losses.detach(), grad

    # --- L-inf: C&W Section VI-C, batched with per-sample tau and c ----------------------

    def _linf(self, model: nn.Module, x0: Tensor, classes: Tensor, *, targeted: bool) -> Tensor:
        n, dtype = len(x0), x0.dtype
        view = (-1, *[1] * (x0.dim() - 1))
        best = x0.clone()
        w0 = _to_tanh_space(x0)
        # Per-sample state of the samples still searching, one row each; rows leave when done.
        s = {
            "idx": torch.arange(n, device=x0.device), "x0": x0, "cls": classes,
            "x_rec": _from_tanh_space(w0), "w": w0,
            "m": torch.zeros_like(w0), "v": torch.zeros_like(w0),
            "t": torch.zeros(n, dtype=torch.long, device=x0.device),  # Adam's clock
            "tau": torch.full((n,), _TAU_START, dtype=dtype, device=x0.device),
            "c": torch.full((n,), self.initial_const, dtype=torch.float64, device=x0.device),
            "level": torch.zeros(n, dtype=torch.long, device=x0.device),  # steps at this c
            "prev": torch.full((n,), math.inf, dtype=dtype, device=x0.device),  # last check
            "best": x0.clone(),
            "best_norm": torch.full((n,), math.inf, dtype=dtype, device=x0.device),
        }
        check_every = math.ceil(self.steps / 10)

        new_run()
        for _ in range(self.binary_search_steps * self.steps):
            rows = torch.arange(len(s["idx"]), device=x0.device)
            c = s["c"].to(dtype)
            w = s["w"].detach().requires_grad_(True)
            with torch.enable_grad():
                x_adv = _from_tanh_space(w)
                logits = model(x_adv)
                margin = _margin(logits, s["cls"], rows, targeted=targeted)
                f = torch.maximum(margin + self.confidence, torch.zeros_like(margin))
                excess = (x_adv - s["x_rec"]).abs() - s["tau"].view(view)
                losses = c * f + excess.clamp_min(0).flatten(1).sum(dim=1)
                (grad,) = torch.autograd.grad(losses.sum(), w)

            with torch.no_grad():
                x_adv, losses = x_adv.detach(), losses.detach()
                is_adv = self._is_adversarial(logits.detach(), s["cls"], rows, targeted=targeted)
                record_step(s["idx"], -losses, is_adv)
                norms = (x_adv - s["x0"]).flatten(1).abs().amax(dim=1)
                better = is_adv & (norms < s["best_norm"])
                s["best"] = torch.where(better.view(view), x_adv, s["best"])
                s["best_norm"] = torch.where(better, norms, s["best_norm"])

                # Success (all |delta_i| <= tau, up to C&W's 1e-4 * c, and adversarial): shrink
                # tau and start a new round from this point with a fresh Adam, the same c.
                success = is_adv & (losses < _SUCCESS_TOL * c)
                s["tau"] = torch.where(
                    success, self.tau_decrease * torch.minimum(s["tau"], norms), s["tau"])
                go = (~success).view(view)
                s["t"] = torch.where(success, 0, s["t"] + 1)
                t = s["t"].clamp_min(1).to(dtype).view(view)
                s["m"] = torch.where(go, _BETA1 * s["m"] + (1 - _BETA1) * grad, 0.0)
                s["v"] = torch.where(go, _BETA2 * s["v"] + (1 - _BETA2) * grad**2, 0.0)
                m_hat, v_hat = s["m"] / (1 - _BETA1**t), s["v"] / (1 - _BETA2**t)
                step = self.stepsize * m_hat / (torch.sqrt(v_hat) + _ADAM_EPS)
                s["w"] = torch.where(go, w.detach() - step, w.detach())

                # No success at this c within `steps` steps (or, with abort_early, no progress
                # over a tenth of them): c <- c * const_factor, keep going from here.
                give_up = ~success & (s["level"] + 1 >= self.steps)
                if self.abort_early:
                    check = ~success & (s["level"] % check_every == 0)
                    give_up |= check & ~(losses <= 0.9999 * s["prev"])
                    s["prev"] = torch.where(check, losses, s["prev"])
                s["c"] = torch.where(give_up, s["c"] * self.const_factor, s["c"])
                restart = success | give_up
                s["level"] = torch.where(restart, 0, s["level"] + 1)
                s["prev"] = torch.where(restart, math.inf, s["prev"])

                done = (s["c"] >= self.max_const) | (s["tau"] <= _TAU_MIN)
                if bool(done.any()):
                    best[s["idx"][done]] = s["best"][done]
                    s = {key: value[~done] for key, value in s.items()}
                    if len(s["idx"]) == 0:
                        break
        best[s["idx"]] = s["best"]
        return best

    # --- shared pieces ---------------------------------------------------------------------

    def _is_adversarial(self, logits: Tensor, classes: Tensor, rows: Tensor, *,
                        targeted: bool) -> Tensor:
        """foolbox's criterion with ``confidence`` added to the logit of ``y`` (untargeted)
        or subtracted from that of ``t`` (targeted) before the argmax."""
        if self.confidence != 0:
            logits = logits.clone()
            logits[rows, classes] += -self.confidence if targeted else self.confidence
        pred = logits.argmax(dim=-1)
        return pred == classes if targeted else pred != classes


def _margin(logits: Tensor, classes: Tensor, rows: Tensor, *, targeted: bool) -> Tensor:
    """``Z_y - max_{i!=y} Z_i`` (untargeted) or ``max_{i!=t} Z_i - Z_t`` (targeted)."""
    others = logits.detach().clone()
    others[rows, classes] = -math.inf
    best_other = others.argmax(dim=-1)
    if targeted:
        return logits[rows, best_other] - logits[rows, classes]
    return logits[rows, classes] - logits[rows, best_other]


def _to_tanh_space(x: Tensor) -> Tensor:
    """[0, 1] -> R as foolbox's ``_to_attack_space`` with bounds (0, 1), with eagerpy's
    ``arctanh(u) = (log1p(u) - log1p(-u)) / 2`` (``torch.atanh`` differs in the last bit)."""
    u = ((x - 0.5) / 0.5) * _SQUEEZE
    return 0.5 * (torch.log1p(u) - torch.log1p(-u))


def _from_tanh_space(w: Tensor) -> Tensor:
    """R -> (0, 1), foolbox's ``_to_model_space`` with bounds (0, 1)."""
    return w.tanh() * 0.5 + 0.5

