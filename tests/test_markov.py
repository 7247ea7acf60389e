"""Markov references (THEORY.md §14) against brute-force enumeration, NumPy eigenvalues and memoryless twins."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asymalign as aa
from asymalign import markov as mk
from asymalign.testing import markov_chains

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(SETTINGS, max_examples=10)  # the heaviest properties
N_ENUM = (1, 4, 7)  # fixed set of n: one compile each


def paths(chain, n):
    """All k^n paths, their log-probabilities (NumPy float64)."""
    P, mu = np.asarray(chain.transition), np.asarray(chain.initial)
    k = P.shape[0]
    y = np.array(list(itertools.product(range(k), repeat=n)), dtype=np.int64).reshape(-1, n)
    with np.errstate(divide="ignore"):
        lp = np.log(mu[y[:, 0]]) + np.log(P[y[:, :-1], y[:, 1:]]).sum(axis=1)
    return y, lp


def enum_law(chain, r, n):
    y, lp = paths(chain, n)
    s = np.asarray(r)[y].sum(axis=1)
    keep = np.isfinite(lp)
    s, lp = s[keep], lp[keep]
    lv = np.unique(np.round(s, 9))
    out = np.array([np.logaddexp.reduce(lp[np.abs(s - v) < 1e-7]) for v in lv])
    return lv, out


def lattice_r(k):
    return np.array([0.0, 1.0, 3.0][:k])


# ---------------------------------------------------------------------------
# Perron root, log-partition, cumulants
# ---------------------------------------------------------------------------


@SETTINGS
@given(markov_chains(), st.floats(-3.0, 3.0))
def test_scaled_cgf_is_log_spectral_radius(chain, lam):
    r = lattice_r(chain.num_states)
    M = np.asarray(chain.transition) * np.exp(lam * r)[None, :]
    ref = np.log(np.max(np.abs(np.linalg.eigvals(M))))
    got = mk.scaled_cgf(chain, r, lam)  # t = lam, base 0
    assert got == pytest.approx(ref, abs=1e-10)


@SETTINGS
@given(markov_chains(k=3), st.sampled_from(N_ENUM), st.floats(-2.0, 2.0))
def test_log_partition_and_reward_law_by_enumeration(chain, n, lam):
    r = lattice_r(3)
    lv, lp = enum_law(chain, r, n)
    ref = np.logaddexp.reduce(lp + lam * lv)
    assert float(mk.log_partition(chain, r, lam, n)) == pytest.approx(ref, abs=1e-10 * (1 + abs(ref)))
    for method in ("dp", "types"):  # "fft": test_fft_law_matches_log_space_dp_in_both_tails
        law = mk.reward_law(chain, r, n, method=method)
        np.testing.assert_allclose(np.asarray(law.levels), lv, atol=1e-9)
        np.testing.assert_allclose(np.asarray(law.log_prob), lp, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(markov_chains(k=3))
def test_reward_law_real_rewards_by_enumeration(chain):
    r = np.array([0.0, 1.0, np.sqrt(2.0)])
    lv, lp = enum_law(chain, r, 7)
    law = mk.reward_law(chain, r, 7)
    np.testing.assert_allclose(np.asarray(law.levels), lv, atol=1e-9)
    np.testing.assert_allclose(np.asarray(law.log_prob), lp, rtol=1e-9, atol=1e-9)


def test_fft_law_matches_log_space_dp_in_both_tails():
    chain = mk.MarkovChain(jnp.array([[0.6, 0.3, 0.1], [0.0, 0.5, 0.5], [0.4, 0.0, 0.6]]), jnp.array([0.2, 0.3, 0.5]))
    r = np.array([0.0, 1.0, 2.0])
    a = mk.reward_law(chain, r, 300, method="dp")
    b = mk.reward_law(chain, r, 300, method="fft")
    np.testing.assert_array_equal(np.asarray(a.levels), np.asarray(b.levels))
    la, lb = np.asarray(a.log_prob), np.asarray(b.log_prob)
    assert la.min() < -150  # both tails are deep
    np.testing.assert_allclose(lb, la, rtol=1e-9)
    # a wrong answer is rejected: one level shifted
    assert not np.allclose(np.roll(lb, 1)[1:], la[1:], rtol=1e-9)


def test_scaled_cumulants_finite_differences_and_exact_variance():
    chain = mk.MarkovChain(jnp.array([[0.7, 0.3, 0.0], [0.1, 0.5, 0.4], [0.5, 0.0, 0.5]]), jnp.array([1.0, 0.0, 0.0]))
    r = jnp.array([0.0, 1.0, 3.0])
    lam = 0.4
    kap = np.asarray(mk.scaled_cumulants(chain, r, 3, lam))
    h = 1e-3
    f = [float(mk.scaled_cgf(chain, r, t, 0.0)) for t in lam + h * np.arange(-2, 3)]
    d1 = (f[3] - f[1]) / (2 * h)
    d2 = (f[3] - 2 * f[2] + f[1]) / h**2
    d3 = (f[4] - 2 * f[3] + 2 * f[1] - f[0]) / (2 * h**3)
    np.testing.assert_allclose(kap, [d1, d2, d3], rtol=1e-4)  # FD truncation ~h^2

    # Λ_n(λ) = nΛ(λ) + c(λ) + O(|ρ2/ρ|^n): the increment of the exact finite-n
    # cumulants (autodiff of the binary-powering Λ_n) is the scaled cumulant.
    def nth(n, j):
        g = lambda x: mk.log_partition(chain, r, x, n)  # noqa: E731
        for _ in range(j):
            g = jax.grad(g)
        return float(jax.jit(g)(jnp.asarray(lam)))

    for j in (1, 2, 3):
        inc = nth(400, j) - nth(200, j)
        assert inc / 200 == pytest.approx(kap[j - 1], rel=1e-8)
    assert abs(kap[1] * 1.01 - (nth(400, 2) - nth(200, 2)) / 200) > 1e-6  # rejects a 1% error


# ---------------------------------------------------------------------------
# KL-RL: finite n by enumeration, the limit, the Doob transform
# ---------------------------------------------------------------------------


@SETTINGS
@given(markov_chains(k=3), st.floats(0.01, 0.3))
def test_finite_kl_rl_by_enumeration(chain, delta):
    r, n = lattice_r(3), 7
    y, lp = paths(chain, n)
    s = r[y].sum(axis=1)
    ok = np.isfinite(lp)
    y, lp, s = y[ok], lp[ok], s[ok]
    sol = mk.kl_rl(chain, r, n, delta)
    lam = float(sol.lam)
    if not np.isfinite(lam):  # budget beyond the maximum: KL is the maximum
        lq = np.where(s >= s.max() - 1e-9, lp, -np.inf)
        lq -= np.logaddexp.reduce(lq)
        return
    lq = lp + lam * s
    lq -= np.logaddexp.reduce(lq)
    q = np.exp(lq)
    kl = np.sum(q * (lq - lp)) / n
    assert kl == pytest.approx(delta, rel=1e-8, abs=1e-12)
    assert float(sol.kl) == pytest.approx(delta, rel=1e-8, abs=1e-12)
    assert float(sol.reward) == pytest.approx(np.sum(q * s) / n, rel=1e-8, abs=1e-12)
    # the non-homogeneous chain reproduces q path by path
    init, T = np.asarray(sol.initial), np.asarray(sol.transitions)
    with np.errstate(divide="ignore"):
        lq_chain = np.log(init[y[:, 0]]) + np.log(T[np.arange(n - 1)[None, :], y[:, :-1], y[:, 1:]]).sum(axis=1)
    np.testing.assert_allclose(lq_chain, lq, atol=1e-8)


def test_budget_beyond_the_maximum_when_the_best_state_is_not_initial():
    """Regression (found by hypothesis): start in state 1 only, the best reward in state 2.
    At the far tilt e^{λ(r - max r)} underflowed for the start, and a rescaled linear
    product gave 0/0, so Δ > Δ_max returned a finite λ. Exact: λ = inf and
    KL/n = -log P(best path set)/n, here the path 1 -> 2 -> ... -> 2."""
    T = np.array([[0.00497512, 0.49751244, 0.49751244], [0.5, 0.0, 0.5], [0.00990099, 0.0, 0.99009901]])
    T /= T.sum(axis=1, keepdims=True)
    chain = mk.MarkovChain(jnp.asarray(T), jnp.asarray([0.0, 1.0, 0.0]))
    r, n = lattice_r(3), 7
    y, lp = paths(chain, n)
    s = r[y].sum(axis=1)
    best = np.isfinite(lp) & (s >= s[np.isfinite(lp)].max() - 1e-9)
    dmax = -np.logaddexp.reduce(lp[best]) / n
    assert dmax == pytest.approx(-(np.log(0.5) + 5 * np.log(T[2, 2])) / n, rel=1e-12)
    sol = mk.kl_rl(chain, r, n, 0.25)
    assert np.isinf(float(sol.lam))
    assert float(sol.kl) == pytest.approx(dmax, rel=1e-9)
    below = mk.kl_rl(chain, r, n, 0.5 * dmax)  # a finite budget below it is still met exactly
    assert np.isfinite(float(below.lam)) and float(below.kl) == pytest.approx(0.5 * dmax, rel=1e-9)


@FEW
@given(markov_chains(), st.floats(0.05, 2.0))
def test_doob_transform(chain, lam):
    r = lattice_r(chain.num_states)
    d = mk.doob_transform(chain, r, lam)
    T, P = np.asarray(d.transition), np.asarray(chain.transition)
    np.testing.assert_allclose(T.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(T[P == 0] == 0)
    w, vl = np.linalg.eig(T.T)
    pi = np.real(vl[:, np.argmin(np.abs(w - 1))])
    pi /= pi.sum()
    pos = T > 0
    kl_direct = np.sum(pi[:, None] * np.where(pos, T * np.log(np.where(pos, T, 1) / np.where(pos, P, 1)), 0))
    assert kl_direct == pytest.approx(float(mk.kl_rate(chain, r, lam)), rel=1e-8, abs=1e-12)
    mean = float(mk.scaled_cumulants(chain, r, 1, lam)[0])
    assert np.sum(pi[:, None] * T * r[None, :]) == pytest.approx(mean, rel=1e-9)


def test_finite_n_transitions_converge_to_doob_mid_sequence():
    chain = mk.MarkovChain(jnp.array([[0.8, 0.2, 0.0], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]]), jnp.array([1 / 3] * 3))
    r = jnp.array([0.0, 1.0, 3.0])
    sol = mk.kl_rl(chain, r, 200, 0.1)
    d = mk.doob_transform(chain, r, sol.lam)
    np.testing.assert_allclose(np.asarray(sol.transitions[100]), np.asarray(d.transition), atol=1e-10)
    assert np.max(np.abs(np.asarray(sol.transitions[-1]) - np.asarray(d.transition))) > 1e-3  # the end differs
    lam_inf = mk.solve_lambda(chain, r, 0.1)
    assert float(mk.kl_rate(chain, r, lam_inf)) == pytest.approx(0.1, rel=1e-10)
    assert abs(float(sol.lam) - float(lam_inf)) < 0.05  # λ_n → λ* (O(1/n))


def test_rate_function_duality_and_range():
    chain = mk.MarkovChain(jnp.array([[0.9, 0.1], [0.4, 0.6]]), jnp.array([0.5, 0.5]))
    r = jnp.array([0.0, 1.0])
    mean = float(mk.scaled_cumulants(chain, r, 1)[0])
    assert float(mk.rate_function(chain, r, mean)) < 1e-14
    for x in (0.05, 0.5, 0.9):
        i = float(mk.rate_function(chain, r, x))
        ts = np.linspace(-30, 30, 60001)
        lam = np.array(
            [
                np.log(
                    np.max(np.abs(np.linalg.eigvals(np.asarray(chain.transition) * np.exp(t * np.asarray(r))[None, :])))
                )
                for t in ts[::50]
            ]
        )
        assert i == pytest.approx(np.max(ts[::50] * x - lam), abs=2e-3)
    assert np.isinf(float(mk.rate_function(chain, r, 1.2)))


# ---------------------------------------------------------------------------
# identical rows: the memoryless model
# ---------------------------------------------------------------------------


@FEW
@given(
    st.sampled_from([2, 3]).flatmap(
        lambda k: st.tuples(st.just(k), st.lists(st.floats(0.05, 1.0), min_size=k, max_size=k))
    ),
    st.floats(0.02, 0.3),
)
def test_identical_rows_is_memoryless(kp, delta):
    k, w = kp
    p = np.array(w) / np.sum(w)
    r = lattice_r(k)
    ch = mk.MarkovChain.memoryless(jnp.asarray(p))
    lam = 0.7
    assert float(mk.scaled_cgf(ch, r, 0.3, lam)) == pytest.approx(
        float(aa.log_partition(p, r, lam + 0.3) - aa.log_partition(p, r, lam)), abs=1e-12
    )
    assert float(mk.log_partition(ch, r, lam, 5)) == pytest.approx(5 * float(aa.log_partition(p, r, lam)), rel=1e-12)
    lam_m = float(aa.solve_lambda(p, r, delta))
    if np.isfinite(lam_m):
        assert float(mk.solve_lambda(ch, r, delta)) == pytest.approx(lam_m, rel=1e-8)
        assert float(mk.kl_rl(ch, r, 4, delta).lam) == pytest.approx(lam_m, rel=1e-8)
    np.testing.assert_allclose(
        np.asarray(mk.doob_transform(ch, r, lam).transition[0]), np.asarray(aa.tilt(p, r, lam)), atol=1e-12
    )
    x = 0.5 * (float(aa.tilt_reward(p, r, lam)) + r[-1])
    assert float(mk.rate_function(ch, r, x, lam)) == pytest.approx(float(aa.rate_function(p, r, x, lam)), rel=1e-8)
    law_m, law = aa.reward_law(p, r, 4), mk.reward_law(ch, r, 4)
    np.testing.assert_allclose(np.asarray(law.log_prob), np.asarray(law_m.log_prob), atol=1e-12)
    q = np.roll(p, 1)
    chq = mk.MarkovChain.memoryless(jnp.asarray(q))
    for a in (0.5, 2.0):
        assert float(mk.renyi_divergence_rate(ch, chq, a)) == pytest.approx(
            float(aa.renyi_divergence(p, q, a)), rel=1e-9
        )
        assert float(mk.renyi_cross_entropy_rate(ch, chq, a)) == pytest.approx(
            float(aa.renyi_cross_entropy(p, q, a)), rel=1e-9
        )
        assert float(mk.renyi_entropy_rate(ch, a)) == pytest.approx(float(aa.renyi_entropy(p, a)), rel=1e-9)


# ---------------------------------------------------------------------------
# Rényi rates
# ---------------------------------------------------------------------------


def _renyi_cross_finite(P, mu, Q, nu, alpha, n):
    """(1/n) H_α(P^n; Q^n) by a NumPy transfer matrix: log Σ p(y) q(y)^{α-1} / (1-α) / n."""
    with np.errstate(divide="ignore"):
        m = np.where(P > 0, P * np.where(Q > 0, Q, 1.0) ** (alpha - 1.0), 0.0)
        v = np.where(mu > 0, mu * np.where(nu > 0, nu, 1.0) ** (alpha - 1.0), 0.0)
    logz = 0.0
    for _ in range(n - 1):
        v = v @ m
        s = v.sum()
        logz += np.log(s)
        v = v / s
    return (logz + np.log(v.sum())) / (1.0 - alpha) / n


@SETTINGS
@given(markov_chains(k=3), st.sampled_from([0.5, 2.0, 3.0]))
def test_renyi_cross_entropy_rate_enumeration_and_limit(chain, alpha):
    P, mu = np.asarray(chain.transition), np.asarray(chain.initial)
    Q = 0.5 * P + 0.5 / 3  # positive everywhere
    nu = np.full(3, 1 / 3)
    # the finite-n transfer formula is the enumeration (n = 4)
    y, lp = paths(chain, 4)
    lq = np.log(nu[y[:, 0]]) + np.log(Q[y[:, :-1], y[:, 1:]]).sum(axis=1)
    ok = np.isfinite(lp)
    h4 = np.log(np.sum(np.exp(lp[ok] + (alpha - 1) * lq[ok]))) / (1 - alpha) / 4
    assert _renyi_cross_finite(P, mu, Q, nu, alpha, 4) == pytest.approx(h4, rel=1e-10)
    # increments of n H_n converge geometrically to the rate
    rate = float(mk.renyi_cross_entropy_rate(P, Q, alpha))
    ev = np.sort(np.abs(np.linalg.eigvals(P * Q ** (alpha - 1.0))))
    assert rate == pytest.approx(np.log(ev[-1]) / (1.0 - alpha), rel=1e-10)
    # increments of n H_n converge geometrically (ratio |λ2/λ1|) to the rate
    if (ev[-2] / ev[-1]) ** 1000 < 1e-10:
        h = [n * _renyi_cross_finite(P, mu, Q, nu, alpha, n) for n in (2998, 3000)]
        assert rate == pytest.approx((h[1] - h[0]) / 2, rel=1e-7)
    d_rate = float(mk.renyi_divergence_rate(P, Q, alpha))
    assert d_rate >= -1e-12


def test_renyi_alpha_to_one_limits():
    P = np.array([[0.7, 0.3, 0.0], [0.2, 0.5, 0.3], [0.4, 0.1, 0.5]])
    Q = np.array([[0.5, 0.25, 0.25], [0.3, 0.4, 0.3], [0.2, 0.2, 0.6]])
    for f, args in (
        (mk.renyi_cross_entropy_rate, (P, Q)),
        (mk.renyi_divergence_rate, (P, Q)),
        (mk.renyi_entropy_rate, (P,)),
    ):
        at1 = float(f(*args, 1.0))
        for eps in (1e-3, -1e-3):
            assert float(f(*args, 1.0 + eps)) == pytest.approx(at1, abs=5e-3 * (1 + abs(at1)))
        assert abs(float(f(*args, 1.2)) - at1) > 1e-4  # not constant in α
    w, vl = np.linalg.eig(P.T)
    pi = np.real(vl[:, np.argmin(np.abs(w - 1))])
    pi /= pi.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.nansum(pi[:, None] * np.where(P > 0, P * np.log(P / Q), 0.0))
    assert float(mk.renyi_divergence_rate(P, Q, 1.0)) == pytest.approx(kl, rel=1e-10)


# ---------------------------------------------------------------------------
# best-of-N on a chain: exact vs enumeration, Monte Carlo vs exact
# ---------------------------------------------------------------------------


def test_best_of_n_on_chain_by_enumeration_and_monte_carlo():
    chain = mk.MarkovChain(jnp.array([[0.6, 0.4, 0.0], [0.2, 0.5, 0.3], [0.5, 0.0, 0.5]]), jnp.array([0.5, 0.5, 0.0]))
    r = lattice_r(3)
    n, num = 7, 6
    law = mk.reward_law(chain, r, n)
    lv, lp = enum_law(chain, r, n)
    F = np.cumsum(np.exp(lp))
    Fm = np.concatenate([[0.0], F[:-1]])
    b_ref = np.minimum(F, 1.0) ** num - Fm**num
    bon = aa.best_of_n(law, np.log(num))
    np.testing.assert_allclose(np.exp(np.asarray(bon.log_prob)), b_ref, atol=1e-12)
    exact = float(aa.law_mean(bon))
    sim = mk.simulate_bon(jax.random.key(3), chain, r, n, num, 4000)
    est = aa.mc_mean(sim.rewards)
    # probabilistic with a fixed key: |error| < 4 SE; a one-level shift is rejected
    assert abs(float(est.mean) - exact) < 4 * float(est.stderr)
    assert abs(float(est.mean) - (exact + 1.0)) > 4 * float(est.stderr)
    assert set(np.unique(np.asarray(sim.rewards))) <= set(np.round(lv, 9))


def test_simulator_bit_identical_across_chunks_and_tokens_consistent():
    chain = mk.MarkovChain(jnp.array([[0.6, 0.4, 0.0], [0.2, 0.5, 0.3], [0.5, 0.0, 0.5]]), jnp.array([0.5, 0.5, 0.0]))
    r = lattice_r(3)
    a = mk.simulate_bon(jax.random.key(1), chain, r, 5, 10, 30, return_tokens=True)
    b = mk.simulate_bon(jax.random.key(1), chain, r, 5, 10, 30, return_tokens=True, chunk_size=7)
    np.testing.assert_array_equal(np.asarray(a.rewards), np.asarray(b.rewards))
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    t = np.asarray(a.tokens)
    np.testing.assert_allclose(r[t].sum(axis=1), np.asarray(a.rewards))
    P = np.asarray(chain.transition)
    assert np.all(P[t[:, :-1], t[:, 1:]] > 0) and np.all(t[:, 0] != 2)  # only allowed paths


def test_law_fingerprint_refuses_other_models():
    c1 = mk.MarkovChain(jnp.array([[0.6, 0.4], [0.2, 0.8]]), jnp.array([0.5, 0.5]))
    c2 = mk.MarkovChain(jnp.array([[0.5, 0.5], [0.2, 0.8]]), jnp.array([0.5, 0.5]))
    r = np.array([0.0, 1.0])
    l1, l2 = mk.reward_law(c1, r, 3), mk.reward_law(c2, r, 3)
    assert l1.fingerprint != l2.fingerprint
    with pytest.raises(ValueError):
        aa.win_rate(l1, l2)


# ---------------------------------------------------------------------------
# jit / vmap / float32 / validation
# ---------------------------------------------------------------------------


def test_vmap_jit_and_float32():
    chain = mk.MarkovChain(jnp.array([[0.9, 0.1], [0.3, 0.7]]), jnp.array([0.5, 0.5]))
    r = jnp.array([0.0, 1.0])
    deltas = jnp.array([0.01, 0.1, 0.3])
    lam = jax.vmap(lambda d: mk.solve_lambda(chain, r, d))(deltas)
    kl = jax.vmap(lambda l: mk.kl_rate(chain, r, l))(lam)
    np.testing.assert_allclose(np.asarray(kl), np.asarray(deltas), rtol=1e-9)
    c32 = mk.MarkovChain(chain.transition.astype(jnp.float32), chain.initial.astype(jnp.float32))
    l32 = mk.solve_lambda(c32, r.astype(jnp.float32), jnp.float32(0.1))
    assert l32.dtype == jnp.float32 and float(l32) == pytest.approx(float(lam[1]), rel=1e-4)
    g = jax.grad(lambda l: mk.scaled_cgf(chain, r, l))(0.3)
    assert np.isfinite(float(g))


@pytest.mark.parametrize(
    "P, mu, match",
    [
        ([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], [0.5, 0.5], "square"),
        ([[0.5, 0.6], [0.5, 0.5]], [0.5, 0.5], "sum to 1"),
        ([[1.5, -0.5], [0.5, 0.5]], [0.5, 0.5], "negative"),
        ([[0.5, 0.5], [0.5, 0.5]], [0.5, 0.25, 0.25], "initial"),
        ([[0.5, 0.5], [0.5, 0.5]], [0.5, 0.6], "initial"),
    ],
)
def test_bad_chains_raise(P, mu, match):
    with pytest.raises(ValueError, match=match):
        mk.reward_law(mk.MarkovChain(np.array(P), np.array(mu)), np.array([0.0, 1.0]), 3)


def test_bad_arguments_raise():
    r = np.array([0.0, 1.0])
    periodic = mk.MarkovChain(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0.5, 0.5]))
    reducible = mk.MarkovChain(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([0.5, 0.5]))
    ok = mk.MarkovChain(np.array([[0.9, 0.1], [0.3, 0.7]]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="aperiodic"):
        mk.scaled_cgf(periodic, r, 1.0)
    with pytest.raises(ValueError, match="irreducible"):
        mk.solve_lambda(reducible, r, 0.1)
    mk.reward_law(periodic, r, 3)  # finite-n laws need no ergodicity
    with pytest.raises(ValueError, match="n"):
        mk.reward_law(ok, r, 0)
    with pytest.raises(ValueError, match="delta"):
        mk.solve_lambda(ok, r, -0.1)
    with pytest.raises(ValueError, match="alpha"):
        mk.renyi_entropy_rate(ok, -1.0)
    with pytest.raises(ValueError, match="r"):
        mk.log_partition(ok, np.array([0.0, 1.0, 2.0]), 0.1, 3)


@pytest.mark.parametrize("name", ["chain", "tilting", "laws", "renyi", "simulation"])
def test_markov_docstring_examples(name):
    import doctest
    import importlib

    mod = importlib.import_module(f"asymalign.markov.{name}")
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    tests = doctest.DocTestFinder().find(mod, globs={"jnp": jnp, "np": np, **vars(mod)})
    for t in tests:
        runner.run(t)
    res = runner.summarize(verbose=False)
    assert res.failed == 0 and res.attempted > 0
