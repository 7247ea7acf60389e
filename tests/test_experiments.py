"""Every experiment runs in --quick mode, writes its files, and its data show the claims.

The quick run happens once per module (in-process, so JIT caches are shared).
"""

import csv
import json
import math

import numpy as np
import pytest

from asymalign import cli


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    assert cli.main(["reproduce", "--quick", "--out", str(out), "--seed", "0"]) == 0
    return out


def _names():
    return list(cli.load_experiments().EXPERIMENTS)


def _rows(out, name):
    with open(out / f"{name}.csv") as fh:
        rows = list(csv.DictReader(fh))
    return rows


def _series(out, name, panel, series):
    rows = [r for r in _rows(out, name) if r["panel"] == panel and r["series"] == series]
    assert rows, f"{name}: no data for {panel}/{series}"
    return (np.array([float(r["x"]) for r in rows]), np.array([float(r["y"]) for r in rows]))


def _finite(obj):
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


def test_every_experiment_writes_every_file(quick_run):
    for name in _names():
        for ext in ("png", "pdf", "csv", "json"):
            path = quick_run / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
        rows = _rows(quick_run, name)
        assert rows, name
        vals = np.array([[float(r[c]) for c in ("x", "y", "yerr")] for r in rows])
        assert np.all(np.isfinite(vals)), name
        doc = json.loads((quick_run / f"{name}.json").read_text())
        assert doc["seed"] == 0 and doc["quick"] is True
        assert doc["versions"]["jax"] and doc["jax_backend"]
        assert doc["params"] and _finite(doc["summary"]), name


def test_claim_bon_reaches_klrl_curve(quick_run):
    doc = json.loads((quick_run / "frontier.json").read_text())
    gaps = doc["summary"]["max_reward_gap_to_klrl_curve"]
    bern = gaps["Bernoulli p = (0.7, 0.3), r = (0, 1)"]
    # The last (largest n) BoN points are within 1e-2 of the KL-RL curve ...
    assert 0 <= bern[str(doc["summary"]["largest_n"])] < 1e-2
    # ... and the distance shrinks with n (from n = 4 on, for both models).
    for g in gaps.values():
        v = [g[k] for k in sorted(g, key=int) if int(k) >= 4]
        assert all(b < a for a, b in zip(v, v[1:], strict=False)), v


def test_claim_rate_function_gap_shrinks(quick_run):
    n, gap = _series(quick_run, "ldp", "gap", "max_x |exponent − I_λ(x)|")
    assert np.all(np.diff(gap) < 0) and gap[-1] < 0.05
    doc = json.loads((quick_run / "ldp.json").read_text())
    assert doc["summary"]["max_legendre_vs_kl_form"] < 1e-3


def test_claim_bound_and_identity(quick_run):
    doc = json.loads((quick_run / "bon_kl_bound.json").read_text())
    for s in doc["summary"]["bound_minus_exact"].values():
        assert s["min_bound_minus_kl"] > -1e-12  # log N - (N-1)/N is an upper bound
    near = json.loads((quick_run / "near_optimal.json").read_text())["summary"]
    assert near["num_feasible"] > 0 and near["bound_violations_feasible"] == 0
    assert near["max_identity_residual"] < 1e-12


def test_claim_bon_kl_to_tilt_vanishes_per_token(quick_run):
    doc = json.loads((quick_run / "bon_vs_rl_kl.json").read_text())
    for row in doc["summary"]["monte_carlo"]:  # probabilistic (fixed seed)
        assert abs(row["mc"] - row["exact"]) <= 5 * row["stderr"] + 1e-12, row
    for lab, slope in doc["summary"]["slope_of_total_kl_vs_log_n"].items():
        n, kl = _series(quick_run, "bon_vs_rl_kl", "per_token", f"{lab}, exact")
        assert np.all(np.diff(kl[n >= 4]) < 0)
        assert 0.2 < slope < 0.8


def test_same_seed_same_data(quick_run, tmp_path):
    assert cli.main(["reproduce", "--quick", "--only", "near_optimal", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "near_optimal.csv").read_bytes() == (quick_run / "near_optimal.csv").read_bytes()
