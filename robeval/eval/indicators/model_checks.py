"""Indicators that probe the model itself on a sample of clean-correct points:
unavailable-gradients, unstable-predictions and probability-outputs (one finding per
attack they apply to, so every results row carries its own verdict)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robeval.attacks.base import is_gradient_free
from robeval.eval.indicators.base import Finding
from robeval.eval.indicators.catalog import JUMP_SHARE, LOGIT_RTOL_TEXT, ZERO_GRADIENT_SHARE
from robeval.eval.indicators.probes import (
    LOGIT_RTOL,
    PROBABILITY_SHARE,
    GradientProbe,
    gradient_probe,
    output_probe,
    stability_probe,
)


def attack_loss(attack: object) -> str:
    """The loss an attack's gradients come from (``ce`` unless it says otherwise)."""
    loss = str(getattr(attack, "loss", "ce") or "ce").lower()
    return loss if loss in ("ce", "margin", "dlr") else "ce"


def uses_cross_entropy(attack: object) -> bool:
    return not is_gradient_free(attack) and attack_loss(attack) == "ce"


def model_findings(
    model: nn.Module, model_name: str, attacks: list[tuple[str, object]], x: Tensor, y: Tensor, seed: int,
) -> list[Finding]:
    """The model-level indicators for every ``(display name, attack)`` of one model, on the
    clean-correct sample ``x, y`` (already on the model's device)."""
    if len(x) == 0:
        return []
    generator = torch.Generator().manual_seed(seed)
    findings: list[Finding] = []
    probes: dict[str, GradientProbe] = {}
    for _, attack in attacks:
        if not is_gradient_free(attack):
            loss = attack_loss(attack)
            if loss not in probes:
                probes[loss] = gradient_probe(model, x, y, loss)
    ce_probe = probes.get("ce") or gradient_probe(model, x, y, "ce")
    stability = stability_probe(model, x, y, ce_probe, generator)
    outputs = output_probe(model, x)
    n = len(x)
    for name, attack in attacks:
        if not is_gradient_free(attack):
            findings.append(_gradients(model_name, name, probes[attack_loss(attack)], attack_loss(attack), n))
        findings.append(_stability(model_name, name, stability, n))
        if uses_cross_entropy(attack):
            findings.append(_outputs(model_name, name, outputs, n))
    return findings


def _gradients(model: str, attack: str, probe: GradientProbe, loss: str, n: int) -> Finding:
    share = float(probe.unusable.float().mean())
    fired = share > ZERO_GRADIENT_SHARE
    where = f" (it stops in {', '.join(repr(b) for b in probe.blocking)})" if probe.blocking else ""
    bpda = f"--bpda {probe.blocking[0]}" if probe.blocking else "--bpda MODULE"
    if not fired:
        detail = f"the {loss} input gradient is usable on {1 - share:.0%} of the sample points."
    elif probe.missing.any():
        detail = (f"the input gradient does not reach the input{where}: a detach, no_grad, a numpy round trip or "
                  f"another non-differentiable step cuts the graph, so gradient attacks are blind; run BPDA "
                  f"({bpda}: that module's backward becomes the identity) or a gradient-free attack "
                  "(autoattack:version=custom,attacks=square).")
    elif probe.nonfinite.any() and not probe.zero.any():
        detail = ("the input gradient is NaN or inf on some points: the model is numerically unstable there; "
                  "run a gradient-free attack (autoattack:version=custom,attacks=square) and check the model.")
    elif probe.blocking:
        detail = (f"the {loss} input gradient is exactly zero on {share:.0%} of the points{where}: a "
                  f"piecewise-constant step (rounding, quantisation, a saturated softmax) hides the loss; run "
                  f"BPDA ({bpda}: that module's backward becomes the identity).")
    else:
        detail = (f"the {loss} input gradient is exactly zero on {share:.0%} of the points: the loss saturates "
                  "(huge logits, a softmax at high temperature); run pgd:loss=margin or pgd:loss=dlr, whose "
                  "gradients do not vanish with the logits' scale.")
    return Finding(model, attack, None, "unavailable-gradients", fired, share, ZERO_GRADIENT_SHARE, detail, n)


def _stability(model: str, attack: str, probe, n: int) -> Finding:
    random = probe.flips > 0 or probe.logit_change > LOGIT_RTOL
    jumps = probe.jumps if probe.jumps == probe.jumps else 0.0  # NaN: no usable gradient to compare with
    fired = random or jumps > JUMP_SHARE
    if random:
        value = max(probe.flips, probe.logit_change)
        threshold = LOGIT_RTOL
        detail = (f"two forwards of the same input disagree ({probe.flips:.0%} of predictions flip, logits move by "
                  f"up to {probe.logit_change:.1%}): a randomised defence, whose gradients and success checks are "
                  "single draws; run pgd:eot=10 (EOT: 10 gradients averaged per step) and report accuracy over "
                  "several draws.")
    elif fired:
        value, threshold = jumps, JUMP_SHARE
        detail = (f"the loss of {jumps:.0%} of the points jumps under L-inf noise of size 1e-3, far more than its "
                  "gradient allows: shattered gradients (a discontinuous activation or preprocessing); run BPDA on "
                  "the discontinuous module (--bpda MODULE), pgd:eot=10, or a gradient-free attack "
                  "(autoattack:version=custom,attacks=square).")
    else:
        value, threshold = jumps, JUMP_SHARE
        detail = f"predictions are deterministic and the loss is smooth at scale 1e-3 ({LOGIT_RTOL_TEXT})."
    return Finding(model, attack, None, "unstable-predictions", fired, value, threshold, detail, n)


def _outputs(model: str, attack: str, probe, n: int) -> Finding:
    fired = probe.probabilities and not probe.softmax_under_bpda
    if fired:
        where = f"--bpda {probe.softmax_module}" if probe.softmax_module else "--bpda MODULE (its softmax)"
        detail = ("the model outputs probabilities (rows >= 0 summing to 1), so the cross-entropy applies a second "
                  "softmax and its gradient vanishes where the model is confident; attack the logits: declare the "
                  f"softmax with {where} (its backward becomes the identity), or run pgd:loss=margin.")
    elif probe.probabilities:
        detail = "the model outputs probabilities, but its softmax is under BPDA: the attack's gradient sees logits."
    else:
        detail = "the outputs are not probabilities (logits), as the cross-entropy expects."
    return Finding(model, attack, None, "probability-outputs", fired, probe.share, PROBABILITY_SHARE, detail, n)
