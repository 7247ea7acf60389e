"""Proxy/gold rewards (THEORY.md §13): gold given the proxy level, gold of level policies and of the
tilt, the Goodhart peak, the small-d expansion and the Gao et al. fits, against independent references."""

import itertools
import math

import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from scipy.optimize import brentq

import asymalign as aa

TOY = dict(p=np.array([0.4, 0.3, 0.2, 0.1]), r=np.array([0.0, 1.0, 2.0, 3.0]), g=np.array([0.0, 1.0, 2.0, -1.0]))


def brute(p, r, g, n):
    """All k^n sequences: per proxy level (rounded) the probability, E[G|s], Var(G|s)."""
    p, r, g = (np.asarray(x, float) for x in (p, r, g))
    ys = np.array(list(itertools.product(range(p.size), repeat=n)))
    pr = np.prod(p[ys], axis=1)
    s = np.round(r[ys].sum(axis=1), 9)
    G = g[ys].sum(axis=1)
    keep = pr > 0
    pr, s, G = pr[keep], s[keep], G[keep]
    lv = np.unique(s)
    P = np.array([pr[s == v].sum() for v in lv])
    m = np.array([(pr[s == v] * G[s == v]).sum() for v in lv]) / P
    var = np.array([(pr[s == v] * (G[s == v] - mi) ** 2).sum() for v, mi in zip(lv, m, strict=True)]) / P
    return lv, P, m, var


def check_against(gl, ref, atol=1e-12):
    lv, P, m, var = ref
    np.testing.assert_allclose(np.asarray(gl.levels), lv, atol=1e-9)
    np.testing.assert_allclose(np.exp(np.asarray(gl.log_prob)), P, rtol=1e-9, atol=1e-300)
    scale = max(1.0, float(np.max(np.abs(m))))
    np.testing.assert_allclose(np.asarray(gl.mean), m, atol=atol * scale * 10, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(gl.var), var, atol=1e-10 * scale**2)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("method", ["lattice", "types"])
def test_gold_given_level_matches_enumeration_with_merged_letters(n, method):
    # letters 1 and 4 share proxy 1 (merged letter: mean gold and a within-letter variance); p has a zero
    p, r, g = [0.35, 0.25, 0.2, 0.05, 0.15, 0.0], [0, 1, 2, 3, 1, 2], [0.0, 1.0, 2.0, -1.0, 5.0, 9.0]
    check_against(aa.gold_given_level(p, r, g, n, method=method), brute(p, r, g, n))


@settings(deadline=None)
@given(
    st.lists(st.floats(0.05, 1.0), min_size=3, max_size=3),
    st.lists(st.integers(0, 3), min_size=3, max_size=3),
    st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
)
def test_gold_given_level_random_lattice_models_vs_enumeration(w, m, g):
    p = np.array(w) / np.sum(w)
    r = 0.5 * np.array(m, float) - 1.0
    check_against(aa.gold_given_level(p, r, g, 4), brute(p, r, g, 4))


def test_non_lattice_proxy_uses_types_and_matches_enumeration():
    p, r, g = [0.5, 0.3, 0.2], [0.0, 1.0, math.sqrt(2)], [1.0, -2.0, 0.5]
    gl = aa.gold_given_level(p, r, g, 4)
    check_against(gl, brute(p, r, g, 4))
    with pytest.raises(ValueError, match="lattice"):
        aa.gold_given_level(p, r, g, 4, method="lattice")


def test_lattice_and_types_agree_and_match_reward_law_at_moderate_n():
    p, r, g = TOY["p"], TOY["r"], TOY["g"]
    a = aa.gold_given_level(p, r, g, 12, method="lattice")
    b = aa.gold_given_level(p, r, g, 12, method="types")
    law = aa.reward_law(p, r, 12)
    for x in (a, b):
        np.testing.assert_allclose(x.levels, law.levels, atol=1e-9)
        np.testing.assert_allclose(x.log_prob, law.log_prob, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a.var, b.var, rtol=1e-8, atol=1e-9)


def test_total_expectation_and_variance_at_large_n():
    # Σ_s P(s) m(s) = n E_p g and Var G_n = E Var(G|s) + Var m(R_n) = n Var_p g
    p, r, g = TOY["p"], TOY["r"], TOY["g"]
    n = 5000
    gl = aa.gold_given_level(p, r, g, n)
    P = np.exp(np.asarray(gl.log_prob))
    mu = float(p @ g)
    np.testing.assert_allclose(P @ np.asarray(gl.mean), n * mu, rtol=1e-10)
    tot = aa.gold_reward(gl.law, gl)
    np.testing.assert_allclose(float(tot.var), n * float(p @ (g - mu) ** 2), rtol=1e-8)
    # exactly known levels at the edges: level 0 is all zeros (G = 0), level 1 one letter 1 (G = 1),
    # the top level 3n is all letters 3 (G = -n); all with zero variance
    np.testing.assert_allclose(np.asarray(gl.mean)[[0, 1, -1]], [0.0, 1.0, -n], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(gl.var)[[0, 1, -1]], 0.0, atol=1e-6)


def test_gold_equal_to_proxy_gives_the_level():
    p, r = TOY["p"], TOY["r"]
    for n in (1, 7, 300):
        gl = aa.gold_given_level(p, r, r, n)
        np.testing.assert_allclose(gl.mean, gl.levels, rtol=1e-11, atol=1e-9)
        np.testing.assert_allclose(gl.var, 0.0, atol=1e-7 * n)
    # and an affine gold a + b r as well (types route, non-lattice rewards)
    p3, r3 = [0.2, 0.5, 0.3], [0.0, 1.0, math.pi]
    gl = aa.gold_given_level(p3, r3, 2.0 - 0.5 * np.array(r3), 5)
    np.testing.assert_allclose(gl.mean, 2.0 * 5 - 0.5 * np.asarray(gl.levels), rtol=1e-12, atol=1e-11)


def tilt_level_law(law, lam):
    lp = np.asarray(law.log_prob) + lam * np.asarray(law.levels)
    lp = lp - np.logaddexp.reduce(lp)
    return aa.RewardLaw(law.levels, jnp.asarray(lp), law.n, law.fingerprint)


@pytest.mark.parametrize("lam", [-0.7, 0.0, 0.4, 2.5])
def test_tilt_gold_three_ways(lam):
    p, r, g = TOY["p"], TOY["r"], TOY["g"]
    n = 4
    direct = float(aa.tilt_gold(p, r, g, lam, n=n))
    gl = aa.gold_given_level(p, r, g, n)
    via_m = float(aa.gold_reward(tilt_level_law(gl.law, lam), gl).mean)
    phi = p * np.exp(lam * r)
    phi /= phi.sum()
    ys = np.array(list(itertools.product(range(4), repeat=n)))
    enum = float(np.sum(np.prod(phi[ys], axis=1) * g[ys].sum(axis=1)))
    np.testing.assert_allclose([direct, via_m], enum, rtol=1e-12)


def exact_bon_law(law, N):
    P = np.exp(np.asarray(law.log_prob))
    F = np.cumsum(P)
    Fm = F - P
    q = np.clip(F, 0, 1) ** N - np.clip(Fm, 0, 1) ** N
    return aa.RewardLaw(law.levels, jnp.log(jnp.asarray(q)), law.n, law.fingerprint)


def test_monte_carlo_best_of_n_gold_within_standard_errors_and_rejects_shifted_m():
    p, r, g = TOY["p"], TOY["r"], TOY["g"]
    n, N, trials = 6, 8, 40_000
    gl = aa.gold_given_level(p, r, g, n)
    q = exact_bon_law(gl.law, N)
    exact = float(aa.gold_reward(q, gl).mean)
    # independent NumPy twin: draw N x n tokens, keep the first of the highest proxy (tie-break
    # independent of the gold given the level)
    rng = np.random.default_rng(1)
    tok = rng.choice(4, size=(trials, N, n), p=p)
    best = np.argmax(r[tok].sum(-1), axis=1)
    gold = g[tok].sum(-1)[np.arange(trials), best]
    se = gold.std(ddof=1) / math.sqrt(trials)
    assert abs(gold.mean() - exact) < 4 * se  # probabilistic (fixed seed)
    # the sample's variance agrees with the exact Var G_n too (loose: 4 SE of a variance)
    assert abs(gold.var() - float(aa.gold_reward(q, gl).var)) < 0.05 * gold.var()
    # the same test rejects m read one level off
    P = np.exp(np.asarray(q.log_prob))
    shifted = float(P[:-1] @ np.asarray(gl.mean)[1:] + P[-1] * float(gl.mean[-1]))
    assert abs(gold.mean() - shifted) > 4 * se


def test_nakano_estimator_and_simulator_gold_agree_with_exact():
    if not hasattr(aa, "mc_bon_gold_unbiased"):
        pytest.skip("the simulator's gold / Nakano estimator (helper S) is not in this tree yet")
    import jax

    p, r, g = TOY["p"], TOY["r"], TOY["g"]
    n, N = 5, 4
    gl = aa.gold_given_level(p, r, g, n)
    exact = float(aa.gold_reward(exact_bon_law(gl.law, N), gl).mean)
    est = aa.mc_bon_gold_unbiased(jax.random.PRNGKey(3), p, r, g, n, N, 16, 2000)
    assert abs(float(est.mean) - exact) < 4 * float(est.stderr)
    sim = aa.simulate_bon(jax.random.PRNGKey(4), p, r, n, N, 10_000, g=g)
    gold = np.asarray(sim.gold)
    se = gold.std(ddof=1) / math.sqrt(gold.size)
    assert abs(gold.mean() - exact) < 4 * se


def cov_numpy(p, r, g, lam):
    w = p * np.exp(lam * (r - r.max()))
    w /= w.sum()
    return float(w @ ((r - w @ r) * (g - w @ g)))


def test_goodhart_peak_is_the_root_of_the_covariance():
    p, r, g = TOY["p"], TOY["r"], TOY["g"]
    pk = aa.goodhart_peak(p, r, g, n=16)
    root = brentq(lambda lam: cov_numpy(p, r, g, lam), 1e-6, 50.0, xtol=1e-15)
    np.testing.assert_allclose(float(pk.lam), root, rtol=1e-10)
    phi = p * np.exp(root * r)
    phi /= phi.sum()
    np.testing.assert_allclose(float(pk.kl), float(phi @ np.log(phi / p)), rtol=1e-9)
    np.testing.assert_allclose(float(pk.gold), 16 * float(phi @ g), rtol=1e-10)
    np.testing.assert_allclose(float(pk.d), math.sqrt(16 * float(pk.kl)), rtol=1e-12)
    # it is a maximum of the exact tilt gold
    lams = root * np.array([0.9, 1.1])
    assert np.all(np.asarray(aa.tilt_gold(p, r, g, lams, n=16)) < float(pk.gold))
    # a gold aligned with the proxy never peaks; an anti-aligned one peaks at 0
    assert math.isinf(float(aa.goodhart_peak(p, r, r, n=1).lam))
    assert float(aa.goodhart_peak(p, r, -r, n=1).lam) == 0.0


@settings(deadline=None)
@given(st.lists(st.floats(0.05, 1.0), min_size=4, max_size=4), st.lists(st.floats(-2, 2), min_size=4, max_size=4))
def test_small_d_expansion_matches_the_exact_tilt_curve(w, g):
    p = np.array(w) / np.sum(w)
    r, g = np.array([0.0, 1.0, 2.5, 3.0]), np.array(g)
    n = 9
    pk = aa.goodhart_peak(p, r, g, n=n)
    mu = float(p @ g)

    def remainder(alpha, beta, lam):
        phi = p * np.exp(lam * r)
        phi /= phi.sum()
        d = math.sqrt(n * float(phi @ np.log(phi / p)))
        return n * (float(phi @ g) - mu) - (alpha * d - beta * d * d), d

    a, b = float(pk.alpha), float(pk.beta)
    (e1, d1), (e2, d2) = remainder(a, b, 2e-3), remainder(a, b, 1e-3)
    scale = 1.0 + abs(a) + abs(b)
    assert abs(e1) <= 50 * scale * d1**3 + 1e-12 and abs(e2) <= 50 * scale * d2**3 + 1e-12
    # and the expansion is not trivially satisfied: a wrong β (dropping the κ3 term) leaves an O(d^2) error
    var = float(p @ (r - p @ r) ** 2)
    wrong = b - (2.0 / 3.0) * float(p @ ((r - p @ r) * (g - mu))) * float(p @ (r - p @ r) ** 3) / var**2
    if abs(wrong - b) > 1e-2:
        assert abs(remainder(a, wrong, 1e-3)[0]) > 0.5 * abs(wrong - b) * d2**2


def test_fit_gao_recovers_both_forms_and_reports_residuals():
    d = np.linspace(0.0, 3.0, 31)
    fit = aa.fit_gao(d, d * (0.8 - 0.3 * d), form="bon")
    np.testing.assert_allclose([float(fit.alpha), float(fit.beta)], [0.8, 0.3], rtol=1e-12)
    assert float(fit.rms) < 1e-12
    dl = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)  # d log d -> 0 at d = 0
    fit = aa.fit_gao(d, 0.8 * d - 0.3 * dl, form="rl")
    np.testing.assert_allclose([float(fit.alpha), float(fit.beta)], [0.8, 0.3], rtol=1e-12)
    # a curve of the other shape leaves residuals
    assert float(aa.fit_gao(d, d * (0.8 - 0.3 * d), form="rl").rms) > 1e-3
    np.testing.assert_allclose(np.asarray(fit.residuals).shape, d.shape)


def test_gold_reward_accepts_subsets_and_padding_of_the_levels():
    p, r, g = TOY["p"], TOY["r"], TOY["g"]
    gl = aa.gold_given_level(p, r, g, 3)
    q = exact_bon_law(gl.law, 5)
    full = float(aa.gold_reward(q, gl).mean)
    keep = np.asarray(q.log_prob) > -30
    sub = aa.RewardLaw(q.levels[keep], q.log_prob[keep], 3, q.fingerprint)
    np.testing.assert_allclose(float(aa.gold_reward(sub, gl).mean), full, rtol=1e-9)
    pad = aa.RewardLaw(
        jnp.concatenate([q.levels, jnp.full(3, q.levels[-1])]), jnp.concatenate([q.log_prob, jnp.full(3, -jnp.inf)]), 3
    )
    np.testing.assert_allclose(float(aa.gold_reward(pad, gl).mean), full, rtol=1e-12)


def test_float32_runs_without_nan():
    p, r, g = (x.astype(np.float32) for x in (TOY["p"], TOY["r"], TOY["g"]))
    gl = aa.gold_given_level(p, r, g, 6)
    assert gl.mean.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(gl.mean)))
    assert np.all(np.isfinite(np.asarray(aa.tilt_gold(p, r, g, np.float32([0.0, 1.0, np.inf]), n=3))))
    assert np.isfinite(float(aa.goodhart_peak(p, r, g).lam))


def test_bad_input_names_the_argument():
    p, r, g = TOY["p"], TOY["r"], TOY["g"]
    with pytest.raises(ValueError, match="g"):
        aa.gold_given_level(p, r, g[:3], 3)
    with pytest.raises(ValueError, match="g"):
        aa.gold_given_level(p, r, [0.0, np.nan, 1.0, 2.0], 3)
    with pytest.raises(ValueError, match="g"):
        aa.tilt_gold(p, r, [0.0, np.inf, 1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="n"):
        aa.gold_given_level(p, r, g, 0)
    with pytest.raises(ValueError, match="method"):
        aa.gold_given_level(p, r, g, 3, method="fft")
    gl = aa.gold_given_level(p, r, g, 3)
    with pytest.raises(ValueError, match="another model"):
        aa.gold_reward(aa.reward_law([0.1, 0.2, 0.3, 0.4], r, 3), gl)
    with pytest.raises(ValueError, match="n ="):
        aa.gold_reward(aa.reward_law(p, r, 4), gl)
    with pytest.raises(ValueError, match="form"):
        aa.fit_gao([0.0, 1.0], [0.0, 1.0], form="ppo")
    with pytest.raises(ValueError, match="d"):
        aa.fit_gao([-1.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="r"):
        aa.goodhart_peak(p, np.zeros(4), g)
