"""The ``autoattack`` attack: agreement with pyautoattack itself, the attack contract's
invariants, strength against PGD, determinism, parameter errors, a run end to end, the
library's sub-attack order and the record of which sub-attack broke each point."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from pyautoattack import AutoAttack as LibraryAutoAttack
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from torch import nn

import robeval
from robeval.attacks.base import perturbation_norms
from robeval.errors import RobevalError

EPS = 0.1


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def derived_seed(seed: int) -> int:
    """The library seed the attack draws from ``torch.Generator().manual_seed(seed)``."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(seed)))


def library_run(aa: LibraryAutoAttack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    level = aa.logger.level
    aa.logger.setLevel(logging.ERROR)  # its warnings are not what these tests check
    try:
        with torch.random.fork_rng(devices=[]):
            x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
    finally:
        aa.logger.setLevel(level)
    return x_adv


def test_apgd_ce_matches_the_library(digits_model, digits_test) -> None:
    x, y = digits_test
    ours = robeval.attacks.get("autoattack:version=custom,attacks=apgd-ce")(
        digits_model, x, y, eps=EPS, generator=torch.Generator().manual_seed(7))
    aa = LibraryAutoAttack(digits_model, attacks=["apgd-ce"], eps=EPS, norm="Linf", seed=derived_seed(7),
                           version="custom")
    reference = library_run(aa, x, y)
    assert torch.equal(ours, reference)
    assert accuracy(digits_model, ours, y) < accuracy(digits_model, x, y) - 0.2  # it did attack


def test_n_iter_matches_apgd_built_with_those_iterations(digits_model, digits_test) -> None:
    """``n_iter`` gives what the library's own APGD constructors give for that many
    iterations (step-size checkpoints included), for apgd-ce and apgd-t, in L2."""
    x, y = digits_test
    ours = robeval.attacks.get("autoattack:norm=l2,version=custom,attacks=apgd-ce+apgd-t,n_iter=8")(
        digits_model, x, y, eps=1.0, generator=torch.Generator().manual_seed(3))
    seed = derived_seed(3)
    aa = LibraryAutoAttack(digits_model, attacks=["apgd-ce", "apgd-t"], eps=1.0, norm="L2", seed=seed,
                           version="custom")
    common = {"n_iter": 8, "norm": "L2", "eps": 1.0, "seed": seed, "eot_iter": 1, "rho": 0.75, "device": "cpu",
              "logger": aa.logger}
    aa.apgd = APGDAttack(digits_model, n_restarts=5, **common)
    aa.apgd_targeted = APGDAttack_targeted(digits_model, n_restarts=1, n_target_classes=9, **common)
    assert torch.equal(ours, library_run(aa, x, y))
    default = robeval.attacks.get("autoattack:norm=l2,version=custom,attacks=apgd-ce+apgd-t")(
        digits_model, x, y, eps=1.0, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(ours, default)  # n_iter did change the run


def _tracer(frame, event, arg):  # a no-op global trace function (like a debugger's or coverage's)
    return None


@pytest.mark.parametrize(("norm", "eps"), [("linf", EPS), ("l2", 1.0)])
def test_invariants(norm: str, eps: float, digits_model, digits_test, caplog) -> None:
    """All six sub-attacks run; the box, the ball, the inputs, the model's mode and
    parameters, the global RNG, an installed tracer and the library's logger are respected."""
    x, y = (t[:48] for t in digits_test)
    x_copy, y_copy = x.clone(), y.clone()
    attack = robeval.attacks.get(f"autoattack:norm={norm},version=custom,"
                                 "attacks=apgd-ce+apgd-dlr+apgd-t+fab+fab-t+square,n_iter=4,n_queries=30,n_target_classes=2")
    library_records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = library_records.append  # type: ignore[method-assign]
    library_logger = logging.getLogger("auto-attack")
    library_logger.addHandler(handler)
    library_level, library_logger.level = library_logger.level, logging.DEBUG
    digits_model.zero_grad(set_to_none=True)
    caplog.set_level(logging.DEBUG, logger="robeval.attacks.autoattack")
    previous_tracer = sys.gettrace()
    try:
        for training in (True, False):
            digits_model.train(training)
            torch.manual_seed(11)
            rng = torch.random.get_rng_state()
            sys.settrace(_tracer)
            try:
                x_adv = attack(digits_model, x, y, eps=eps, generator=torch.Generator().manual_seed(0))
                assert sys.gettrace() is _tracer, "the caller's trace function was removed"
            finally:
                sys.settrace(previous_tracer)
            assert torch.equal(torch.random.get_rng_state(), rng), "global RNG state changed"
            assert [m.training for m in digits_model.modules()] == [training] * len(list(digits_model.modules()))
    finally:
        digits_model.eval()
        library_logger.removeHandler(handler)
        library_logger.setLevel(library_level)
    assert all(p.grad is None and p.requires_grad for p in digits_model.parameters())
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy)
    assert x_adv.dtype == x.dtype and x_adv.shape == x.shape
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float(perturbation_norms(x_adv - x, norm).max()) <= eps + 1e-6
    assert accuracy(digits_model, x_adv, y) < accuracy(digits_model, x, y)
    assert not library_records, "pyautoattack logged to its own logger"
    assert any("pyautoattack" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


def test_stronger_than_pgd(digits_model, digits_test) -> None:
    x, y = digits_test
    clean = accuracy(digits_model, x, y)
    pgd = accuracy(digits_model, robeval.attacks.get("pgd:steps=5")(
        digits_model, x, y, eps=EPS, generator=torch.Generator().manual_seed(0)), y)
    aa = robeval.attacks.get("autoattack:version=custom,attacks=apgd-ce+apgd-t,n_iter=20")
    robust = accuracy(digits_model, aa(digits_model, x, y, eps=EPS, generator=torch.Generator().manual_seed(0)), y)
    assert robust <= pgd, (robust, pgd)
    assert robust < clean - 0.2, (robust, clean)


def test_the_generator_alone_decides(digits_model, digits_test) -> None:
    x, y = (t[:64] for t in digits_test)
    attack = robeval.attacks.get("autoattack:version=custom,attacks=apgd-ce,n_iter=5")
    runs = []
    for global_seed, seed in ((1, 5), (999, 5), (1, 6)):
        torch.manual_seed(global_seed)
        runs.append(attack(digits_model, x, y, eps=EPS, generator=torch.Generator().manual_seed(seed)))
    assert torch.equal(runs[0], runs[1]), "same generator seed, different adversarials"
    assert not torch.equal(runs[0], runs[2]), "the generator's seed is ignored"


def test_eps_zero_and_no_target(digits_model, digits_test) -> None:
    x, y = (t[:8] for t in digits_test)
    attack = robeval.attacks.get("autoattack")
    assert torch.equal(attack(digits_model, x, y, eps=0.0), x)
    with pytest.raises(ValueError, match="untargeted"):
        attack(digits_model, x, y, eps=EPS, target=(y + 1) % 10)


def test_few_classes_cap_the_targets() -> None:
    """apgd-t's and fab-t's 9 default targets are capped at classes - 1 (4 classes: 3)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).eval()
    x = torch.rand(20, 1, 8, 8)
    y = model(x).argmax(1).detach()
    attack = robeval.attacks.get("autoattack:version=custom,attacks=apgd-t+fab-t,n_iter=5")
    x_adv = attack(model, x, y, eps=0.02)  # small: some points survive the first targets
    assert 0.0 < accuracy(model, x_adv, y) < 1.0
    assert float(perturbation_norms(x_adv - x, "linf").max()) <= 0.02 + 1e-6


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [("autoattack:version=strong", "use one of standard, plus, rand, custom"),
     ("autoattack:version=custom,attacks=apgd-ce+pgd", "unknown AutoAttack sub-attack.*'pgd'.*apgd-ce"),
     ("autoattack:version=custom", "needs attacks, e.g. attacks=apgd-ce"),
     ("autoattack:attacks=apgd-ce", "add version=custom"),
     ("autoattack:version=custom,attacks=apgd-ce,n_iter=0", "n_iter must be >= 1"),
     ("autoattack:norm=l1", "must be one of")],
)
def test_bad_parameters_name_the_fix(spec: str, fragment: str) -> None:
    with pytest.raises(RobevalError, match=fragment):
        robeval.attacks.get(spec)


def test_custom_attacks_parse_with_plus_or_semicolon() -> None:
    for sep in ("+", ";", " + "):
        attack = robeval.attacks.get(f"autoattack:version=custom,attacks=APGD-CE{sep}square")
        assert attack.sub_attacks() == ["apgd-ce", "square"]
    attack = robeval.attacks.get("autoattack:version=custom,attacks=apgd-ce+apgd-t,n_iter=5")
    assert robeval.attacks.get(robeval.attacks.canonical_name(attack)) == attack  # the name round-trips


def test_evaluate_end_to_end(digits_checkpoint, tmp_path) -> None:
    df = robeval.evaluate(models=[str(digits_checkpoint)], attacks=["autoattack:version=custom,attacks=apgd-ce,n_iter=5"],
                          eps="0,0.1", n=60, batch_size=30, device="cpu", out=str(tmp_path))
    rows = df[df["attack"].str.startswith("autoattack")]
    assert len(rows) == 2 and set(rows["eps"]) == {0.0, 0.1}
    clean = float(rows["clean_acc"].iloc[0])
    at_zero = float(rows.loc[rows["eps"] == 0.0, "robust_acc"].iloc[0])
    at_eps = float(rows.loc[rows["eps"] == 0.1, "robust_acc"].iloc[0])
    assert at_zero == clean and at_eps < clean - 0.1


@pytest.mark.parametrize("version", ["standard", "plus", "rand"])
def test_run_order_is_the_library_order(digits_model, version: str) -> None:
    aa = LibraryAutoAttack(digits_model, eps=EPS, norm="Linf", seed=0, version=version)
    assert robeval.attacks.get(f"autoattack:version={version}").run_order() == tuple(aa.attacks_to_run)
    custom = robeval.attacks.get("autoattack:version=custom,attacks=square+apgd-ce")
    assert custom.run_order() == ("square", "apgd-ce")


def test_recording_says_which_sub_attack_broke_each_point(digits_model, digits_test) -> None:
    """Recording changes nothing of the run; every point the adversarials break is
    attributed to one sub-attack, the others to none; a point broken by apgd-ce was
    never given to square, so its adversarial is apgd-ce's own."""
    from robeval.attacks.autoattack import recording

    x, y = (t[:40] for t in digits_test)
    attack = robeval.attacks.get("autoattack:version=custom,attacks=apgd-ce+square,n_iter=3,n_queries=20")
    plain = attack(digits_model, x, y, eps=EPS, generator=torch.Generator().manual_seed(2))
    with recording() as records:
        recorded = attack(digits_model, x, y, eps=EPS, generator=torch.Generator().manual_seed(2))
    assert torch.equal(plain, recorded)
    (record,) = records
    assert record.sub_attacks == ("apgd-ce", "square") and record.seed == 2
    with torch.no_grad():
        broken = ((digits_model(x).argmax(1) == y) & (digits_model(recorded).argmax(1) != y)).numpy()
    assert ((record.broken_by >= 0) == broken).all() and broken.any()
    assert set(record.names()[broken]) <= {"apgd-ce", "square"} and set(record.names()[~broken]) == {""}
    apgd_only = robeval.attacks.get("autoattack:version=custom,attacks=apgd-ce,n_iter=3")(
        digits_model, x, y, eps=EPS, generator=torch.Generator().manual_seed(2))
    by_apgd = record.broken_by == 0
    assert torch.equal(recorded[by_apgd], apgd_only[by_apgd])
