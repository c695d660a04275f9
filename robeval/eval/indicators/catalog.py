"""The indicators robeval runs: what each catches, when it fires, what it costs
(``robeval ls indicators`` and the README's table). Thresholds live here as constants."""

from __future__ import annotations

from robeval.eval.indicators.base import IndicatorInfo, describe

ZERO_GRADIENT_SHARE = 0.05  # unavailable-gradients: share of sample points with no usable gradient
JUMP_SHARE = 0.10  # unstable-predictions: share of sample points whose loss jumps under tiny noise
UNCONSTRAINED_FAILURES = 0.01  # unconstrained-failure: share of a minimal-norm search's failures over the run
UNCONSTRAINED_SAMPLE_FAILURES = 0.05  # ... and of the sample a budgeted attack fails on at eps = the whole box
GRADIENT_FREE_SHARE = 0.01  # gradient-free-beats-gradient: share of clean-correct points
SILENT_SHARE = 0.0  # silent-success: any point
RISING_TREND = 0.10  # incomplete-optimization: a failed point's loss still rising by this much ...
RISING_SHARE = 0.50  # ... for more than this share of the failed points, and when
LONGER_RUN_STEPS = 4  # ... the attack with 4x the steps on the failed sample points
LONGER_RUN_GAIN = 0.05  # ... fools more than this share of the sample (and at least 2 points)
CURVE_ATOL = 1e-9  # inconsistent-results: tolerance on accuracies recomputed from the points
LOGIT_RTOL_TEXT = "two forwards agree within 0.1%"

UNAVAILABLE_GRADIENTS = describe(IndicatorInfo(
    name="unavailable-gradients",
    catches="input gradients that are NaN/inf, exactly zero (quantisation, saturated softmax) or missing "
            "(detach, no_grad, a numpy round trip); names the module where the gradient stops",
    fires_when=f"more than {ZERO_GRADIENT_SHARE:.0%} of the sample points have no usable gradient of the "
               "attack's loss",
    cost="one forward+backward pass on the sample per model and loss",
))
UNSTABLE_PREDICTIONS = describe(IndicatorInfo(
    name="unstable-predictions",
    catches="randomised defences (two forwards of the same input disagree) and shattered gradients (the loss "
            "jumps under noise far smaller than eps, e.g. k-WTA, quantisation)",
    fires_when="any prediction flips or a logit moves by more than 0.1% between two forwards, or more than "
               f"{JUMP_SHARE:.0%} of the points' loss moves by more than 10x its first-order bound under "
               "L-inf noise of size 1e-3",
    cost="six forward passes on the sample per model",
))
SILENT_SUCCESS = describe(IndicatorInfo(
    name="silent-success",
    catches="an attack that passed an adversarial on its path but returned a later, non-adversarial iterate",
    fires_when="any attacked point had an adversarial iterate that was not returned",
    cost="free: recorded from the passes the attack makes anyway (iterative attacks that report their path)",
))
INCOMPLETE_OPTIMIZATION = describe(IndicatorInfo(
    name="incomplete-optimization",
    catches="too few steps: the loss of the points the attack failed on was still rising at the end",
    fires_when=f"for more than {RISING_SHARE:.0%} of the failed points, the mean loss of the last quarter of "
               f"the steps exceeds that of the quarter before by more than {RISING_TREND:.0%} of the loss's range, "
               f"and (attacks with `steps`) the attack with {LONGER_RUN_STEPS}x the steps, run on the sample points it "
               f"failed on, fools more than {LONGER_RUN_GAIN:.0%} of the sample (and at least 2 points)",
    cost="free from the attack's own path; one longer run on the failed sample points where the path says so",
))
UNCONSTRAINED_FAILURE = describe(IndicatorInfo(
    name="unconstrained-failure",
    catches="an attack that cannot fool points even with no bound, which any input can: a failed search "
            "(too few steps) or obfuscated gradients",
    fires_when=f"a minimal-norm search failed on more than {UNCONSTRAINED_FAILURES:.0%} of the run's clean-correct "
               f"points; a budgeted attack run at eps = the whole box (L-inf 1, L2 sqrt(d), L0 d) failed on more "
               f"than {UNCONSTRAINED_SAMPLE_FAILURES:.0%} of the sample (not run for budgeted gradient-free attacks: "
               f"uniform noise and Fourier modes draw from a fixed family, they do not search)",
    cost="free for minimal-norm searches; one run of the attack on the sample for budgeted attacks",
))
GRADIENT_FREE_BEATS_GRADIENT = describe(IndicatorInfo(
    name="gradient-free-beats-gradient",
    catches="gradient masking: a gradient-free attack (noise, salt and pepper, Square) fools points that none "
            "of the run's gradient attacks of the same norm fooled at the same eps",
    fires_when=f"it fools more than {GRADIENT_FREE_SHARE:.0%} of the clean-correct points the gradient attacks "
               "missed (the run's own gradient-free attacks; AutoAttack's Square after its APGD/FAB, from its "
               "breakdown; with --checks full also a Square probe on the sample, where at least 2 points must differ)",
    cost="free from the run's points and AutoAttack's breakdown; full: one Square run (1000 queries) on the "
         "sample per norm, at the largest eps",
))
PROBABILITY_OUTPUTS = describe(IndicatorInfo(
    name="probability-outputs",
    catches="models whose outputs are probabilities, so the attack's cross-entropy applies a second softmax",
    fires_when="more than 99% of the sample's output rows are non-negative and sum to 1 (within 1e-3), for "
               "attacks on the cross-entropy, unless the softmax is under BPDA",
    cost="one forward pass on the sample per model",
))
INCONSISTENT_RESULTS = describe(IndicatorInfo(
    name="inconsistent-results",
    catches="tables that disagree with the per-point results they come from, and nested attacks whose "
            "accuracy rises with eps",
    fires_when="a reported accuracy differs from the recount over the stored points, or a nested attack's "
               "accuracy at a larger eps is higher than at a smaller one",
    cost="free: from the stored points",
))
NON_FINITE_OUTPUTS = describe(IndicatorInfo(
    name="non-finite-outputs",
    catches="models whose logits turn NaN or inf on the inputs an attack tries (argmax of NaN is arbitrary and "
            "its gradients are NaN); NaN or inf on the clean test images is refused before any attack",
    fires_when="the model returned a NaN or inf logit on any input the attack tried (its iterates or adversarials)",
    cost="free: a forward hook counts them while the attack runs (also with --checks off)",
))
