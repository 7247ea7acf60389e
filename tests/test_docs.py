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
    "asymalign.simulation",
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
    # The numbers quoted in the README comments are what the code produces.
    assert float(ns["res"].lam) == pytest.approx(0.8288, abs=1e-4)
    assert float(ns["res"].reward) == pytest.approx(0.9584, abs=1e-4)
    assert float(ns["res"].kl) == pytest.approx(0.2, abs=1e-12)
    assert float(aa.rate_function(ns["p"], ns["r"], 1.0)) == pytest.approx(0.2359, abs=1e-4)
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
