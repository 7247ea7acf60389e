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
