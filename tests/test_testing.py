"""asymalign.testing: the strategies draw what they promise, the references are
independent and agree with brute force, and docs/testing.md's worked example
runs (the true bound holds, the false equality is refuted by hypothesis)."""

import math
import pathlib
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import asymalign as aa
from asymalign.testing import (
    abs_continuous,
    budgets,
    lattice_rewards,
    model_budgets,
    models,
    probs,
    reward_laws,
)
from asymalign.testing import reference as ref

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "testing.md"


def _doc_blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


# ---------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------


@given(probs())
def test_probs_are_probability_vectors(p):
    assert p.ndim == 1 and np.all(p >= 0) and abs(p.sum() - 1.0) < 1e-12 and np.any(p > 0)


@given(models(nonconstant=True))
def test_nonconstant_models_vary_on_the_support(model):
    p, r = model
    assert p.shape == r.shape and np.ptp(r[p > 0]) > 0


@given(st.data())
def test_lattice_rewards_lie_on_a_lattice(data):
    r = data.draw(lattice_rewards(4))
    d = (r - r[0]) / 0.25  # every step the strategy uses is a multiple of 1/4
    np.testing.assert_allclose(d, np.round(d), atol=1e-9)


@given(model_budgets(saturate=True))
def test_budgets_cover_zero_to_beyond_max_kl(pr_delta):
    p, r, delta = pr_delta
    dmax = ref.max_kl(p, r)
    assert 0.0 <= delta <= 3.0 * dmax + 1e-300


@given(st.data())
def test_unsaturated_budgets_stay_below_max_kl(data):
    p, r = data.draw(models())
    delta = data.draw(budgets(p, r, saturate=False))
    assert 0.0 <= delta <= ref.max_kl(p, r)


@given(st.data())
def test_abs_continuous_support(data):
    p = data.draw(probs())
    q = data.draw(abs_continuous(p))
    assert abs(q.sum() - 1.0) < 1e-12 and np.all(q[p == 0] == 0)


@given(reward_laws(n=(1, 2, 3), lattice=False))
def test_reward_laws_are_the_exact_laws(model):
    p, r, law = model
    levels, logp = ref.brute_force_law(p, r, law.n)
    np.testing.assert_allclose(np.asarray(law.levels), levels, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(np.asarray(law.log_prob), logp, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------
# references: independent of the package, and right
# ---------------------------------------------------------------------------


def test_reference_twins_agree_with_closed_forms():
    # Bernoulli(q) with r = identity: K(λ) and I(x) are binary KLs.
    q = 0.3
    p, r = np.array([1 - q, q]), np.array([0.0, 1.0])
    x = 0.55
    binary_kl = x * math.log(x / q) + (1 - x) * math.log((1 - x) / (1 - q))
    assert ref.rate_function(p, r, x) == pytest.approx(binary_kl, rel=1e-9)
    lam = ref.solve_lambda(p, r, binary_kl)
    assert ref.tilt(p, r, lam) @ r == pytest.approx(x, rel=1e-9)
    assert ref.max_kl(p, r) == pytest.approx(-math.log(q), rel=1e-15)
    # types law = brute force, and the binomial law
    levels, logp = ref.types_law(p, r, 5)
    np.testing.assert_allclose(np.exp(logp), [math.comb(5, j) * q**j * (1 - q) ** (5 - j) for j in range(6)])
    np.testing.assert_allclose(ref.brute_force_law(p, r, 5)[1], logp, rtol=1e-12)


def test_reference_best_of_n_matches_cdf_powers():
    logp = np.log(np.array([0.2, 0.5, 0.3]))
    n_samples = 7
    cdf = np.cumsum(np.exp(logp))
    exact = cdf**n_samples - np.concatenate([[0.0], cdf[:-1]]) ** n_samples
    np.testing.assert_allclose(np.exp(ref.bon_level_log_law(logp, math.log(n_samples))), exact, rtol=1e-12)


def test_reference_twins_reject_a_wrong_package_answer():
    """The comparison has teeth: a λ* off by 1e-6 relative is caught."""
    p, r = np.array([0.7, 0.2, 0.1]), np.array([0.0, 1.0, 2.0])
    lam = float(aa.solve_lambda(p, r, 0.1))
    assert lam == pytest.approx(ref.solve_lambda(p, r, 0.1), rel=1e-10)
    assert lam * (1 + 1e-6) != pytest.approx(ref.solve_lambda(p, r, 0.1), rel=1e-10)


# ---------------------------------------------------------------------------
# docs/testing.md
# ---------------------------------------------------------------------------


def test_docs_worked_example_runs_and_refutes_the_false_equality():
    blocks = _doc_blocks()
    assert len(blocks) == 2, "docs/testing.md should hold the bound check and the false-equality check"
    ns: dict = {}
    exec(compile(blocks[0], str(DOC), "exec"), ns)  # the true bound: must pass
    exec(compile(blocks[1], str(DOC), "exec"), ns)  # asserts that hypothesis refuted the equality
    assert ns["refuted"] is True


def test_constant_reward_is_a_counterexample_to_the_equality():
    """The counterexample the doc describes, checked directly."""
    law = aa.reward_law([0.5, 0.3, 0.2], [1.0, 1.0, 1.0], 3)
    log_num_samples = math.log(10.0)
    kl = float(aa.law_kl(aa.best_of_n(law, log_num_samples), law))
    assert kl == pytest.approx(0.0, abs=1e-15)
    assert log_num_samples - 0.9 > 1.0


@pytest.mark.parametrize("name", ["asymalign.testing.strategies", "asymalign.testing.reference"])
def test_docstring_examples(name):
    import doctest
    import importlib

    mod = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    tests = doctest.DocTestFinder().find(mod)
    for test in tests:
        runner.run(test)
    res = runner.summarize(verbose=False)
    assert res.failed == 0 and sum(len(t.examples) for t in tests) > 0
