"""The benchmark runner on its smallest sizes: every case runs and both
implementations agree (issue 6). No timing assertions: speed is measured by
``python benchmarks/run.py``, never asserted in tests."""

import importlib.util
import json
import math
import os
import sys

import pytest

_BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(scope="module")
def runner():
    if _BENCH not in sys.path:
        sys.path.insert(0, _BENCH)
    spec = importlib.util.spec_from_file_location("asymalign_bench_run", os.path.join(_BENCH, "run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_results(runner):
    # run_cases raises AssertionError if any baseline/asymalign pair disagrees.
    return runner.run_cases(tiny=True, verbose=False)


def test_every_case_runs_and_agrees(runner, tiny_results):
    import cases

    names = {n.split("/")[0] for n in tiny_results if not n.startswith("_")}
    assert set(cases.FAMILIES) <= names
    for name, rec in tiny_results.items():
        if name.startswith("_") or name.endswith("/fit"):
            continue
        if "skipped" in rec:
            assert rec["skipped"].startswith("skipped: API missing"), rec["skipped"]
            continue
        for key in ("baseline_s", "asymalign_s", "compile_s", "ratio", "size"):
            assert key in rec, (name, key)
        assert rec["baseline_s"] > 0 and rec["asymalign_s"] > 0 and math.isfinite(rec["ratio"])
        acc = rec.get("accuracy", rec)
        if "max_rel_diff" in acc:
            assert acc["max_rel_diff"] < 1e-6, (name, acc)


def test_json_and_markdown(runner, tiny_results, tmp_path):
    res = runner._jsonable(tiny_results)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(res))
    back = json.loads(path.read_text())
    assert back["_machine"]["backend"]
    md = runner.to_markdown(back, gpu=back)
    assert "| `solve_lambda_grid` |" in md and "GPU ratio" in md


def test_ahead_and_not_ahead_use_the_strongest_numpy_version(runner):
    """The report sorts cases by the ratio against the strongest NumPy version (the vectorised
    Newton for the grids, not the per-instance SciPy loop), and first calls by the warm time."""
    rec = dict(baseline_s=1.0, asymalign_s=0.01, ratio=100.0)
    results = {
        "_machine": {},
        "solve_lambda_grid": dict(rec, ratio_vs_newton=0.8),  # 100x SciPy, slower than NumPy Newton
        "bon_exact/bernoulli/n=10": dict(rec, ratio=0.5),
        "bon_monte_carlo": dict(rec, ratio=19.0),
        "sweep": dict(rec, ratio=0.6),  # 4 devices against 1: not a NumPy comparison
        "cold_start/solve_lambda": dict(cold_s=2.0, warm_s=1.5, baseline_s=0.5, ratio=0.25),
        "cold_start/simulate_bon": dict(cold_s=3.0, warm_s=1.9, baseline_s=2.2, ratio=0.7),
    }
    lines = runner._ahead_and_not(results)
    ahead = next(ln for ln in lines if ln.startswith("- Ahead:"))
    behind = next(ln for ln in lines if ln.startswith("- Not ahead:"))
    assert "`solve_lambda_grid` 0.8x against vectorised NumPy Newton" in behind and "(100x against" in behind
    assert "`bon_exact/bernoulli/n=10` 0.5x" in behind and "`bon_monte_carlo` 19x" in ahead
    assert "`simulate_bon` first call" in ahead and "`solve_lambda` first call" in behind
    assert "sweep" not in ahead + behind


def test_disagreement_fails_loudly(runner):
    import cases
    import numpy as np

    def check(b, a):
        raise AssertionError("disagree")

    bad = cases.Case(
        name="broken",
        family="solve_lambda_grid",
        size="1",
        baseline=lambda: np.array([1.0]),
        asymalign=lambda: np.array([2.0]),
        check=check,
        repeats=1,
    )
    with pytest.raises(AssertionError, match="disagree"):
        runner._measure(bad, lambda *a: None)
