"""Documentation follows code: the README quick start runs and prints what it says,
and every docstring example in the package passes as a doctest."""

import doctest
import importlib
import pathlib
import re

import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = [
    "asymalign.tilting",
    "asymalign.information",
    "asymalign.large_deviations",
    "asymalign.sequence_laws",
    "asymalign.best_of_n",
    "asymalign.levels",
    "asymalign.level_measures",
    "asymalign.soft_bon",
    "asymalign.infalign",
    "asymalign.simulation",
    "asymalign.estimators",
    "asymalign.optimize",
    "asymalign.reinforce",
    "asymalign.goodhart",
    "asymalign.goodhart_tilt",
    "asymalign.vocab",
]


def _readme_python_blocks():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_quickstart_runs_and_matches_its_comments(capsys):
    blocks = _readme_python_blocks()
    assert blocks, "README has no python example"
    ns: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), ns)
    aa = ns["aa"]
    p, r = np.asarray(ns["p"]), np.asarray(ns["r"])
    # Independent float64 references (NumPy/SciPy) for the numbers the README quotes.
    from scipy.optimize import brentq, minimize_scalar
    from scipy.special import logsumexp

    def lam_partition(lam):
        return logsumexp(np.log(p) + lam * r)

    def tilt_mean(lam):
        w = np.exp(np.log(p) + lam * r - lam_partition(lam))
        return w @ r

    def kl_of_tilt(lam):
        return lam * tilt_mean(lam) - lam_partition(lam)

    lam_ref = brentq(lambda l: kl_of_tilt(l) - 0.2, 1e-9, 50.0, xtol=1e-15)
    rate_ref = -minimize_scalar(lambda t: lam_partition(t) - t * 1.0, bracket=(-1, 1), tol=1e-12).fun
    assert float(ns["res"].lam) == pytest.approx(lam_ref, rel=1e-10)
    assert float(ns["res"].reward) == pytest.approx(tilt_mean(lam_ref), rel=1e-10)
    assert float(ns["res"].kl) == pytest.approx(0.2, abs=1e-12)
    assert float(aa.max_kl(p, r)) == pytest.approx(np.log(10.0), rel=1e-14)
    assert float(aa.rate_function(p, r, 1.0)) == pytest.approx(rate_ref, rel=1e-9)
    # ...and the rounded values written in the README comments are those references.
    text = (ROOT / "README.md").read_text()
    assert f"λ* = {lam_ref:.4f}" in text and f"Λ'(λ*) = {tilt_mean(lam_ref):.4f}" in text
    assert f"I_0(1.0) = {rate_ref:.4f}" in text
    # Best-of-N values are checked against brute force and mpmath in test_best_of_n.py;
    # here only that the README comments still match what the code prints.
    assert float(ns["cmp"].bon_reward) == pytest.approx(0.9544, abs=1e-4)
    assert float(ns["cmp"].bon_kl) == pytest.approx(0.199, abs=1e-3)
    assert float(ns["cmp"].bon_kl_to_tilt) == pytest.approx(0.0023, abs=1e-4)
    est, exact = ns["est"], float(ns["exact"])
    assert abs(float(est.mean) - exact) < 4 * float(est.stderr)  # probabilistic, fixed key


def _run_readme_blocks(upto: int) -> dict:
    """Run the README's python blocks 0..upto in one namespace (they build on each other)."""
    blocks = _readme_python_blocks()
    ns: dict = {}
    for i, block in enumerate(blocks[: upto + 1]):
        exec(compile(block, f"README.md block {i}", "exec"), ns)
    return ns


def test_readme_level_policies_match_independent_numbers(capsys):
    ns = _run_readme_blocks(1)
    aa = ns["aa"]
    from scipy.optimize import brentq
    from scipy.special import xlogy

    from asymalign.testing import reference as ref_np

    p, r = np.asarray(ns["p"]), np.asarray(ns["r"])
    levels, log_p = ref_np.types_law(p, r, 16)  # independent types enumeration (NumPy)
    P = np.exp(log_p)
    Fm = np.cumsum(P) - P  # F(s-): accurate where it matters for the win rate (B(s) weights)
    log_b = ref_np.bon_level_log_law(log_p, np.log(4.0))  # best-of-4 in log space (NumPy twin, §6)
    B = np.exp(log_b)
    mean = float(B @ levels) / 16
    kl_b = float(np.sum(B * (log_b - log_p)))
    win = float(B @ (Fm + P / 2))  # win rate against the reference, §10
    assert float(aa.law_mean(ns["bon"]) / 16) == pytest.approx(mean, rel=1e-10)
    assert float(aa.law_kl(ns["bon"], ns["ref"])) == pytest.approx(kl_b, rel=1e-9)
    assert float(aa.win_rate(ns["bon"], ns["ref"])) == pytest.approx(win, rel=1e-10)

    # KL-RL on the levels at the same KL: a scalar root in NumPy.
    def tilt_of(lam):
        w = log_p + lam * levels
        w = np.exp(w - w.max())
        return w / w.sum()

    def kl_of(lam):
        q = tilt_of(lam)
        return float(np.sum(xlogy(q, q) - q * log_p))

    lam = brentq(lambda x: kl_of(x) - kl_b, 0.0, 50.0, xtol=1e-14)
    q = tilt_of(lam)
    assert float(aa.law_mean(ns["tilt"]) / 16) == pytest.approx(float(q @ levels) / 16, rel=1e-8)
    # InfAlign: the optimum beats standard KL-RL after best-of-4 decoding (§11).
    assert float(ns["opt"].win_rate) > float(aa.inference_win_rate(ns["std"], ns["ref"], np.log(4.0)))
    text = (ROOT / "README.md").read_text()
    quoted = f"{mean:.4f}, {kl_b:.4f}, {win:.4f}"
    assert quoted in text, quoted
    assert f"{float(q @ levels) / 16:.4f}, {float(q @ (Fm + P / 2)):.4f}" in text
    assert f"{float(ns['opt'].win_rate):.4f} vs" in text


def test_readme_markov_example_matches_perron_root(capsys):
    ns = _run_readme_blocks(2)
    from scipy.optimize import brentq

    P = np.array([[0.9, 0.1], [0.3, 0.7]])
    rc = np.array([0.0, 1.0])

    def log_rho(lam):  # Perron root of P diag(e^{λ r}) by NumPy eigvals (THEORY §14)
        return float(np.log(np.max(np.abs(np.linalg.eigvals(P * np.exp(lam * rc)[None, :])))))

    def kl_rate(lam, h=1e-6):
        d = (log_rho(lam + h) - log_rho(lam - h)) / (2 * h)
        return lam * d - log_rho(lam)

    lam = brentq(lambda x: kl_rate(x) - 0.1, 1e-6, 20.0, xtol=1e-12)
    markov = ns["markov"]
    assert float(markov.solve_lambda(ns["chain"], ns["rc"], 0.1)) == pytest.approx(lam, rel=1e-6)
    text = (ROOT / "README.md").read_text()
    assert f"limit (Perron root), {lam:.4f}" in text
    fin = ns["fin"]
    assert float(fin.kl) == pytest.approx(0.1, abs=1e-10)
    assert f"{float(fin.lam):.4f}, {float(fin.reward):.4f} per token" in text
    assert f"# {float(ns['aa'].law_mean(ns['bon']) / 256):.4f} per token" in text


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError:
        pytest.skip(f"{name} not present")
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    n_examples = 0
    for test in finder.find(mod, globs={"jnp": jnp, "np": np, **vars(mod)}):
        n_examples += len(test.examples)
        runner.run(test)
    res = runner.summarize(verbose=False)
    assert res.failed == 0, f"{res.failed} doctest failures in {name}"
    assert n_examples > 0, f"{name} has no docstring examples"
