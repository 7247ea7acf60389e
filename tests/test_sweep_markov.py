"""Markov references in sweeps (asymalign.sweep._markov; THEORY.md §14, issue 14).

One in-process sweep over a Bernoulli reference, the Markov chain with
identical rows equal to it (every quantity must agree with its memoryless
twin), and a chain with memory, checked against brute-force enumeration of all
2^n paths and NumPy/SciPy computations of the Perron root.
"""

import itertools
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize

from asymalign import sweep

ROOT = Path(__file__).resolve().parents[1]
QUANTITIES = [
    "lambda_star", "delta_max", "klrl_reward", "kl_rate", "klrl_reward_n", "bon_reward",
    "bon_kl", "bon_kl_to_tilt", "bon_kl_bound", "bon_win_rate", "rate_function",
]  # fmt: skip
CONFIG = (
    "quantities = [" + ", ".join(f'"{q}"' for q in QUANTITIES) + "]\n"
    """
name = "mk"
[[reference]]
family = "bernoulli"
prob = 0.3
[[reference]]
family = "markov"
transition = [[0.7, 0.3], [0.7, 0.3]]
initial = [0.7, 0.3]
[[reference]]
family = "markov"
transition = [[0.9, 0.1], [0.3, 0.7]]
[[reward]]
family = "linear"
[grid]
delta = [0.0, 0.05, 0.3, 5.0]
n = [6]
x_relative = [0.2, 0.6]
"""
)
P_MEM = np.array([[0.9, 0.1], [0.3, 0.7]])
N = 6


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    cfg = sweep.parse_config(tomllib.loads(CONFIG))
    assert cfg.kinds == ("iid", "markov")
    out = tmp_path_factory.mktemp("markov") / "out"
    sweep.run_sweep(cfg, out, progress=False, compile_cache=False)
    return cfg, sweep.read_results(out)


def _rows(res, **where):
    mask = np.ones(res["index"].size, bool)
    for k, v in where.items():
        mask &= res[k] == v
    return np.flatnonzero(mask)


def test_identical_rows_chain_is_the_memoryless_model(results):
    _, res = results
    iid = _rows(res, reference="bernoulli")
    chain = _rows(res, reference="markov", chain=0)
    assert iid.size == chain.size == 8
    np.testing.assert_array_equal(res["delta"][iid], res["delta"][chain])
    for q in QUANTITIES:
        np.testing.assert_allclose(res[q][chain], res[q][iid], rtol=1e-8, atol=1e-10, err_msg=q)


def _log_rho(lam):
    r = np.array([0.0, 1.0])
    return math.log(max(abs(np.linalg.eigvals(P_MEM * np.exp(lam * r)[None, :]))))


def _d(f, x, h=1e-4):
    return (f(x + h) - f(x - h)) / (2 * h)


def _kl_rate(lam):
    """K(λ) = λΛ'(λ) - Λ(λ)."""
    return lam * _d(_log_rho, lam) - _log_rho(lam)


def _path_law(P, mu, n):
    """Law of R_n = number of 1s over all 2^n paths (enumeration)."""
    probs = np.zeros(n + 1)
    for path in itertools.product((0, 1), repeat=n):
        w = mu[path[0]] * math.prod(P[a, b] for a, b in itertools.pairwise(path))
        probs[sum(path)] += w
    return np.arange(n + 1.0), probs


def test_chain_with_memory_against_enumeration_and_perron_root(results):
    cfg, res = results
    models = sweep.build_models(cfg)
    rows = _rows(res, reference="markov", chain=1)
    m = models[res["model"][rows[0]]]
    np.testing.assert_allclose(m.transition, P_MEM)
    np.testing.assert_allclose(m.p @ P_MEM, m.p, atol=1e-14)  # default initial law: stationary
    levels, probs = _path_law(P_MEM, m.p, N)
    probs = probs / probs.sum()
    S = np.cumsum(probs[::-1])[::-1] - probs  # P(R_n > s), from the top (no cancellation)
    F_prev = np.clip(1.0 - S - probs, 0.0, 1.0)
    np.testing.assert_allclose(res["delta_max"][rows], -math.log(0.7), rtol=1e-9)  # max cycle: stay in state 1
    for i in rows:
        delta, x = float(res["delta"][i]), float(res["x"][i])
        # Limiting KL-RL: λ* solves λΛ'(λ) - Λ(λ) = Δ, Λ = log ρ(P e^{λ r}) (NumPy eigenvalues).
        if delta == 0:
            lam = 0.0
        elif delta >= -math.log(0.7):
            lam = math.inf
        else:
            lam = optimize.brentq(lambda t, d=delta: _kl_rate(t) - d, 0.0, 60.0, xtol=1e-13)
        np.testing.assert_allclose(res["lambda_star"][i], lam, rtol=1e-6, atol=1e-9)
        if math.isfinite(lam):
            np.testing.assert_allclose(res["klrl_reward"][i], _d(_log_rho, lam), rtol=1e-6)
            np.testing.assert_allclose(res["kl_rate"][i], delta, rtol=1e-8, atol=1e-12)
        else:
            np.testing.assert_allclose(res["klrl_reward"][i], 1.0, rtol=1e-9)

        # Finite-n KL-RL with budget nΔ, on the enumerated path law.
        def kl_n(t):
            w = probs * np.exp(t * (levels - N))
            q = w / w.sum()
            return float(np.sum(q * np.log(np.where(q > 0, q / probs, 1.0)))), float(q @ levels)

        if delta == 0:
            want_n = float(probs @ levels) / N
        elif N * delta >= -math.log(probs[-1]):
            want_n = 1.0
        else:
            t = optimize.brentq(lambda t, d=delta: kl_n(t)[0] - N * d, 0.0, 200.0, xtol=1e-14)
            want_n = kl_n(t)[1] / N
        np.testing.assert_allclose(res["klrl_reward_n"][i], want_n, rtol=1e-8)
        # Exact best-of-N at log N = nΔ from the enumerated law.
        Nn = math.exp(N * delta)
        B = np.exp(Nn * np.log1p(-S)) - F_prev**Nn  # F(s)^N - F(s-)^N
        on = B > 0
        np.testing.assert_allclose(res["bon_reward"][i], B @ levels / N, rtol=1e-9)
        np.testing.assert_allclose(res["bon_kl"][i], np.sum(B[on] * np.log(B[on] / probs[on])) / N, atol=1e-10)
        np.testing.assert_allclose(res["bon_win_rate"][i], B @ (F_prev + probs / 2), rtol=1e-9)
        np.testing.assert_allclose(res["bon_kl_bound"][i], (N * delta + math.expm1(-N * delta)) / N, atol=1e-14)
        # Gärtner–Ellis rate at x: sup_t [t x - Λ(t)].
        rate = -optimize.minimize_scalar(lambda t, x=x: _log_rho(t) - t * x, bounds=(-60, 60), method="bounded").fun
        np.testing.assert_allclose(res["rate_function"][i], rate, rtol=1e-5, atol=1e-8)
    # Memory matters: the memoryless model with the same stationary marginal
    # gives a best-of-N reward far from the chain's (the test sees the difference).
    iid_levels = levels
    iid = np.array([math.comb(N, j) * m.p[1] ** j * m.p[0] ** (N - j) for j in range(N + 1)])
    Fi = np.cumsum(iid)
    i = rows[np.flatnonzero(res["delta"][rows] == 0.05)[0]]
    Nn = math.exp(N * 0.05)
    wrong = (Fi**Nn - (Fi - iid) ** Nn) @ iid_levels / N
    assert abs(wrong - res["bon_reward"][i]) > 1e-3


def test_markov_configs(tmp_path):
    cfg = sweep.load_config(ROOT / "experiments" / "sweeps" / "markov.toml")
    assert "markov" in cfg.kinds
    assert sweep.make_plan(cfg, 256).num_points > 0
    bad = {
        "transition = [[0.5, 0.4], [0.5, 0.5]]": "every row must sum to 1",
        "transition = [[0.0, 1.0], [1.0, 0.0]]": "must be irreducible and aperiodic",
        "transition = [[0.5, 0.5], [0.5]]": "must be a square matrix",
        "transition = [[0.5, 0.5], [0.5, 0.5]]\ninitial = [1.0]": "initial must be a list of 2 probabilities",
        "transition = [[0.5, 0.5], [0.5, 0.5]]\nk = 3": "not both",
        "k = 3\ncount = 2": "is missing 'concentration'",
    }
    for body, message in bad.items():
        text = f'[[reference]]\nfamily = "markov"\n{body}\n[[reward]]\nfamily = "linear"\n[grid]\ndelta = 0.1\n'
        with pytest.raises(sweep.SweepConfigError, match=message):
            sweep.parse_config(tomllib.loads(text))
