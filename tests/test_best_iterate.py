"""PGD's ``keep`` (best iterate vs last iterate) and its path trace.

``keep=best`` keeps, per point, the first iterate found adversarial by the forward pass
each step makes anyway, and stops iterating that point; ``keep=last`` is foolbox's loop
(tests/test_pgd_reference.py). On the same seed both walk the same path until a point is
found, so keep=best can only fool more points, with fewer passes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import robeval
from robeval.attacks.base import perturbation_norms
from robeval.attacks.losses import is_adversarial, objective
from robeval.attacks.pgd import PGD
from robeval.attacks.trace import tracing
from robeval.eval.counting import PassCounter

TOL = 1e-5


def fooled(model, x_adv, y, target=None) -> torch.Tensor:
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    return pred != y if target is None else pred == target


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_in_ball_and_box(x_adv, x, eps: float, norm: str) -> None:
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float(perturbation_norms(x_adv - x, norm).max()) <= eps * (1 + TOL) + TOL


@pytest.mark.parametrize(
    ("norm", "eps", "restarts", "targeted"),
    [("linf", 0.1, 1, False), ("linf", 0.15, 3, False), ("l2", 0.75, 1, False), ("l2", 1.0, 2, False),
     ("linf", 0.1, 1, True), ("l2", 1.0, 1, True)],
)
def test_keep_best_fools_at_least_as_many_as_keep_last(digits_model, digits_test, norm, eps, restarts,
                                                       targeted) -> None:
    """Same seed: keep=best's accuracy (target hit rate) is never worse for the attacker, both
    stay in the eps-ball and the box, and every point keep=best leaves unfooled was never
    adversarial along its path."""
    x, y = digits_test
    target = (y + 1) % 10 if targeted else None
    result = {}
    for keep in ("last", "best"):
        attack = PGD(norm=norm, keep=keep, restarts=restarts)
        with tracing(len(x)) as trace:
            x_adv = attack(digits_model, x, y, eps=eps, generator=gen(3), target=target)
        assert_in_ball_and_box(x_adv, x, eps, norm)
        result[keep] = (fooled(digits_model, x_adv, y, target), torch.from_numpy(trace.seen_adversarial()))
    (last, _), (best, seen_best) = result["last"], result["best"]
    assert 0 < int(best.sum()) < len(x), "a comparison point where PGD neither always nor never succeeds"
    assert int(best.sum()) >= int(last.sum()), f"keep=best fooled {int(best.sum())} < keep=last {int(last.sum())}"
    # Returned unfooled => never adversarial along the path (the last iterate, never checked
    # in the loop, may fool a point the path did not).
    assert not bool((seen_best & ~best).any()), "keep=best returned a non-adversarial point it had seen fooled"


def test_without_restarts_every_point_keep_last_fools_keep_best_fools(digits_model, digits_test) -> None:
    """Without restarts the paths coincide until a point is found, so the inclusion holds per
    point, and the unfound points end at the very same last iterate."""
    x, y = digits_test
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        last = PGD(norm=norm, keep="last")(digits_model, x, y, eps=eps, generator=gen(0))
        best = PGD(norm=norm, keep="best")(digits_model, x, y, eps=eps, generator=gen(0))
        f_last, f_best = fooled(digits_model, last, y), fooled(digits_model, best, y)
        assert not bool((f_last & ~f_best).any())
        assert torch.allclose(best[~f_best], last[~f_best], atol=1e-6)


def test_keep_best_costs_fewer_passes(digits_model, digits_test) -> None:
    """keep=last: exactly steps x n forward and backward passes; keep=best drops the points it
    has found, so clearly fewer at an eps where PGD fools most points."""
    x, y = digits_test
    counts = {}
    for keep in ("last", "best"):
        counter = PassCounter(digits_model)
        PGD(keep=keep, steps=10)(counter, x, y, eps=0.2, generator=gen(1))
        counts[keep] = counter.counts
    assert counts["last"].forward == counts["last"].backward == 10 * len(x)
    assert counts["best"].backward == counts["best"].forward
    assert counts["best"].backward < 0.6 * counts["last"].backward, counts


def test_keep_last_shows_silent_successes_keep_best_has_none(digits_model, digits_test) -> None:
    """A step twice the budget makes the sign iterates jump between corners of the ball: some
    points are adversarial midway and not at the end under keep=last (a silent success the
    trace records). keep=best returns exactly those iterates, and has none."""
    x, y = digits_test
    eps = 0.15
    silent = {}
    for keep in ("last", "best"):
        attack = PGD(keep=keep, steps=10, abs_stepsize=2 * eps, random_start=False)
        with tracing(len(x)) as trace:
            x_adv = attack(digits_model, x, y, eps=eps)
        seen = torch.from_numpy(trace.seen_adversarial())
        silent[keep] = seen & ~fooled(digits_model, x_adv, y)
        if keep == "best":
            assert bool(fooled(digits_model, x_adv, y)[silent["last"]].all()), "keep=best keeps what last lost"
    assert int(silent["last"].sum()) >= 1, "the oscillating setting must produce a silent success"
    assert int(silent["best"].sum()) == 0


def test_trace_reports_the_objective_per_step_and_costs_nothing(digits_model, digits_test) -> None:
    """The recorded loss is the ascended objective at the iterate (first step, no random
    start: at x itself), rows shrink under keep=best, one run per restart, and tracing
    changes neither the result nor the pass counts."""
    x, y = digits_test
    t = (y + 3) % 10
    with torch.no_grad():
        logits = digits_model(x)
    for loss in ("ce", "margin", "dlr"):
        for target in (None, t):
            with tracing(len(x)) as trace:
                PGD(loss=loss, steps=3, random_start=False, keep="last")(digits_model, x, y, eps=0.1, target=target)
            rows, values, adversarial, run = trace.steps[0]
            assert len(trace.steps) == 3 and trace.runs == 1 and run == 1
            assert rows.tolist() == list(range(len(x)))
            expected = objective(loss)(logits, y, target)
            assert torch.allclose(torch.from_numpy(values).float(), expected, atol=1e-5), (loss, target)
            assert (adversarial == is_adversarial(logits, y, target).numpy()).all()
    # by hand: targeted ce is minus the target's cross-entropy, untargeted ce the label's
    for target, expected in ((t, -F.cross_entropy(logits, t, reduction="none")),
                             (None, F.cross_entropy(logits, y, reduction="none"))):
        with tracing(len(x)) as trace:
            PGD(steps=1, random_start=False)(digits_model, x, y, eps=0.1, target=target)
        assert torch.allclose(torch.from_numpy(trace.steps[0][1]).float(), expected, atol=1e-5)

    counts, outputs = [], []
    for traced in (False, True):
        counter = PassCounter(digits_model)
        attack = PGD(restarts=3, steps=5)
        if traced:
            with tracing(len(x)) as trace:
                outputs.append(attack(counter, x, y, eps=0.1, generator=gen(2)))
        else:
            outputs.append(attack(counter, x, y, eps=0.1, generator=gen(2)))
        counts.append(counter.counts)
    assert counts[0] == counts[1] and torch.equal(outputs[0], outputs[1])
    assert trace.runs == 3
    sizes = [len(rows) for rows, *_ in trace.steps]
    assert sizes[0] == len(x)
    assert sum(sizes) == counts[1].backward, "one trace row per gradient computed"
    second_run = [rows for rows, _, _, run in trace.steps if run == 2]
    assert second_run and set(second_run[0]) <= set(range(len(x)))
    assert len(second_run[0]) < len(x), "a restart attacks only the points not yet fooled"


def test_cw_linf_is_traced(digits_model, digits_test) -> None:
    """C&W L-inf reports every Adam step (one run); it keeps the best adversarial it saw, so a
    point seen adversarial is returned adversarial."""
    x, y = digits_test
    x, y = x[:32], y[:32]
    attack = robeval.attacks.get("cw:norm=linf,steps=30,binary_search_steps=2")
    counter = PassCounter(digits_model)
    with tracing(len(x)) as trace:
        x_adv = attack(counter, x, y, eps=float("inf"))
    assert trace.runs == 1 and trace.steps
    assert sum(len(rows) for rows, *_ in trace.steps) == counter.counts.backward
    seen = torch.from_numpy(trace.seen_adversarial())
    assert seen.any()
    assert bool(fooled(digits_model, x_adv, y)[seen].all())
    assert all(len(c) > 0 for c in trace.loss_curves())


def test_runner_counts_fewer_passes_for_keep_best(digits_checkpoint, tmp_path) -> None:
    """Through the runner (PassCounter around the model, eps grid walked upwards): keep=best
    spends fewer backward passes than keep=last at every eps, and, both walking the same
    paths without random start, its robust accuracy is never higher. (With random starts
    the two cells draw different starts -- the batch seed hashes the attack's parameters --
    so their accuracies may differ by chance either way; benchmarks/best_iterate.py.)"""
    df = robeval.evaluate(models=[str(digits_checkpoint)], dataset="digits", eps="0.1,0.2", n=64, seed=0,
                          attacks=["pgd:keep=last,random_start=false", "pgd:random_start=false"],
                          out=str(tmp_path / "run"))
    last = df[df.attack.str.contains("keep=last")].set_index("eps")
    best = df[~df.attack.str.contains("keep=last")].set_index("eps")
    assert len(last) == len(best) == 2
    assert (best.backward_passes < last.backward_passes).all(), df
    assert (best.robust_acc <= last.robust_acc).all(), df
