"""Inference-aware alignment on levels (THEORY.md §11): the exact optimum and the CTRL families.

Independent references: a brute-force grid over the 2-simplex (3 levels), the
inference-time win rate written directly from its §11 formula in jnp (its
autodiff gradient gives the fixed-point condition), and every CTRL transform
family solved to the same KL.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import asymalign as aa

REF3 = ([0.5, 0.3, 0.2], [0.0, 1.0, 2.5])
LOG4 = math.log(4.0)
# One batch shape of budgets everywhere: infalign_optimum compiles once per decoding.
DELTAS = jnp.array([0.02, 0.1, 0.3, 0.8])


def w_direct(q, levels_f, n_samples, worst):
    """W_T(q) from §11 for distinct levels, F the reference CDF (jnp, differentiable in q)."""
    Q = jnp.cumsum(q)
    Qm = Q - q
    F, Fm = levels_f
    if not worst:
        return jnp.sum((Q**n_samples - Qm**n_samples) * (F**n_samples + Fm**n_samples) / 2)
    return jnp.sum(
        ((1 - Qm) ** n_samples - (1 - Q) ** n_samples) * (1 - ((1 - Fm) ** n_samples + (1 - F) ** n_samples) / 2)
    )


def grid_best(ref, log_n, delta, worst, steps=600):
    """Max of W_T over the grid of the 2-simplex (step 1/steps) inside the KL ball (NumPy)."""
    P = np.asarray(ref.prob)
    g = np.linspace(0.0, 1.0, steps + 1)
    a, b = np.meshgrid(g, g)
    Q = np.stack([a.ravel(), b.ravel(), 1 - a.ravel() - b.ravel()], 1)
    Q = Q[Q[:, 2] >= -1e-12].clip(0, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.sum(np.where(Q > 0, Q * np.log(Q / P), 0.0), 1)
    Q = Q[kl <= delta]
    F = np.cumsum(P)
    N, Fm = math.exp(log_n), F - P
    Qc = np.cumsum(Q, 1)
    Qm = Qc - Q
    if not worst:
        w = np.sum((Qc**N - Qm**N) * (F**N + Fm**N) / 2, 1)
    else:
        w = np.sum(((1 - Qm) ** N - (1 - Qc) ** N) * (1 - ((1 - Fm) ** N + (1 - F) ** N) / 2), 1)
    return float(np.max(w))


@pytest.mark.parametrize("worst", [False, True])
def test_optimum_matches_grid_search_and_beats_every_family(worst):
    ref = aa.reward_law(*REF3, 1)
    deltas = DELTAS
    opt = aa.infalign_optimum(ref, LOG4, deltas, worst=worst)
    kls = np.asarray(aa.law_kl(opt.law, ref))
    np.testing.assert_allclose(kls, np.asarray(deltas), rtol=1e-9)  # the budget binds
    np.testing.assert_allclose(
        np.asarray(opt.win_rate), np.asarray(aa.inference_win_rate(opt.law, ref, LOG4, worst=worst)), rtol=1e-13
    )
    scores = [
        ref.levels,
        aa.transformed_reward(ref, "identity"),
        aa.transformed_reward(ref, "power", log_num_samples=LOG4, worst=worst),
    ]
    scores += [aa.transformed_reward(ref, "exponential", t=t, worst=worst) for t in (0.3, 1.0, 3.0, 10.0, 30.0)]
    for score in scores:
        fam = aa.solve_level_tilt(ref, score, deltas).law
        assert np.all(
            np.asarray(aa.inference_win_rate(fam, ref, LOG4, worst=worst)) <= np.asarray(opt.win_rate) + 1e-12
        )
    for d, w in zip(np.asarray(deltas), np.asarray(opt.win_rate), strict=True):
        best = grid_best(ref, LOG4, d, worst)
        assert w >= best - 1e-12  # no feasible grid point is better
        assert w <= best + 3e-3  # and the grid (step 1/600) gets close


@pytest.mark.parametrize("worst", [False, True])
def test_fixed_point_condition(worst):
    """q* ∝ P exp(g(q*)/β) with g = ∂W_T/∂q from autodiff of the direct §11 formula."""
    ref = aa.reward_law([0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 2.0, 3.0], 1)
    P = np.asarray(ref.prob)
    F = np.cumsum(P)
    opt = aa.infalign_optimum(ref, LOG4, DELTAS, worst=worst)
    for i in range(DELTAS.shape[0]):
        q = jnp.asarray(opt.law.prob[i])
        g = np.asarray(jax.grad(w_direct)(q, (F, F - P), 4.0, worst))
        resid = np.log(np.asarray(q)) - np.log(P) - g / float(opt.beta[i])
        assert np.ptp(resid) <= 1e-8, resid


def test_sequence_law_with_ties_and_kl_edges():
    ref = aa.reward_law([0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 1.0, 2.0], 4)  # tied rewards, 9 levels
    top = float(-ref.log_prob[-1])
    opt = aa.infalign_optimum(ref, LOG4, jnp.array([0.0, 0.5, top, top + 1.0]))
    assert np.isinf(float(opt.beta[0])) and float(opt.beta[2]) == 0.0 and float(opt.beta[3]) == 0.0
    np.testing.assert_allclose(np.asarray(opt.law.prob[0]), np.asarray(ref.prob), rtol=1e-13)
    assert float(opt.win_rate[0]) == pytest.approx(0.5, abs=1e-13)
    assert float(opt.law.prob[3, -1]) == 1.0
    w = np.asarray(opt.win_rate)
    assert np.all(np.diff(w) >= -1e-13)  # more budget never hurts
    calib = aa.solve_level_tilt(ref, aa.calibrated_reward(ref), 0.5).law
    assert float(opt.win_rate[1]) >= float(aa.inference_win_rate(calib, ref, LOG4)) - 1e-13


def test_identity_decoding_optimum_is_the_calibrated_tilt():
    """N = 1: W is linear, W(q) = E_q C, so the optimum is KL-RL on the calibrated reward (§11)."""
    ref = aa.reward_law(*REF3, 2)
    opt = aa.infalign_optimum(ref, 0.0, DELTAS)
    calib = aa.solve_level_tilt(ref, aa.calibrated_reward(ref), DELTAS)
    np.testing.assert_allclose(np.asarray(opt.law.prob), np.asarray(calib.law.prob), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(np.asarray(opt.beta), np.asarray(calib.beta), rtol=1e-8)


def test_transformed_reward_values_and_bad_input():
    ref = aa.reward_law([0.5, 0.5], [0.0, 1.0], 1)
    c = np.array([0.25, 0.75])
    np.testing.assert_allclose(aa.transformed_reward(ref, "identity"), c)
    np.testing.assert_allclose(aa.transformed_reward(ref, "exponential", t=2.0), np.exp(2 * c))
    np.testing.assert_allclose(aa.transformed_reward(ref, "exponential", t=2.0, worst=True), -np.exp(-2 * c))
    np.testing.assert_allclose(aa.transformed_reward(ref, "power", log_num_samples=LOG4), c**7)
    np.testing.assert_allclose(aa.transformed_reward(ref, "power", log_num_samples=LOG4, worst=True), -((1 - c) ** 7))
    with pytest.raises(ValueError, match="^transform"):
        aa.transformed_reward(ref, "log")
    with pytest.raises(ValueError, match="^t must"):
        aa.transformed_reward(ref, "exponential", t=0.0)
    with pytest.raises(ValueError, match="^delta"):
        aa.infalign_optimum(ref, LOG4, -0.1)
    with pytest.raises(ValueError, match="^log_num_samples"):
        aa.infalign_optimum(ref, -1.0, 0.1)
    with pytest.raises(ValueError, match="^ref"):
        aa.infalign_optimum(ref.log_prob, LOG4, 0.1)


def _slsqp_optimum(P, levels_n, delta):
    """Independent reference: SciPy SLSQP on q itself (simplex, KL(q||P) <= Δ) with the §11 best-of-N
    W and its gradient written out in NumPy, best of three starts."""
    from scipy.optimize import minimize

    F = np.cumsum(P)
    A = (F**levels_n + (F - P) ** levels_n) / 2

    def w(q):
        Q = np.cumsum(q)
        return np.sum((Q**levels_n - (Q - q) ** levels_n) * A)

    def grad(q):
        Q = np.cumsum(q)
        d = A * (Q ** (levels_n - 1) - (Q - q) ** (levels_n - 1))
        return levels_n * (A * Q ** (levels_n - 1) + np.concatenate([np.cumsum(d[::-1])[::-1][1:], [0.0]]))

    def kl(q):
        return np.sum(q * np.log(q / P))

    cons = [
        {"type": "eq", "fun": lambda q: np.sum(q) - 1.0, "jac": lambda q: np.ones_like(q)},
        {"type": "ineq", "fun": lambda q: delta - kl(q), "jac": lambda q: -(np.log(q / P) + 1.0)},
    ]
    best = None
    for start in (P, P[::-1], np.full(P.size, 1.0 / P.size)):
        r = minimize(
            lambda q: -w(q),
            start,
            jac=lambda q: -grad(q),
            method="SLSQP",
            bounds=[(1e-300, 1.0)] * P.size,
            constraints=cons,
            options={"ftol": 1e-16, "maxiter": 1000},
        )
        if best is None or -r.fun > -best.fun:
            best = r
    return best.x, -best.fun, kl(best.x), w


def test_best_of_n_matches_slsqp_and_the_edge_limits():
    """The Newton solver against SciPy SLSQP (4 levels) at budgets from 0 to beyond -log P(top), given
    unsorted with a repeat (continuation over sorted budgets must not change any answer), plus the exact
    limits: Δ = 0 (q = P, W = 1/2), tiny Δ (W - 1/2 = sqrt(2 Δ Var_P g(P)) + O(Δ)), Δ >= -log P(top)
    (the top level: W = 1 - (1 - F(top-)^N)/2)."""
    P = np.array([0.4, 0.3, 0.2, 0.1])
    ref = aa.reward_law(P, [0.0, 1.0, 2.0, 3.0], 1)
    top = -math.log(P[-1])
    deltas = np.array(
        [0.5, 0.0, top + 1.0, 1e-10, 0.05, 0.99 * top, 1e-4, 1.5, 0.5, top * (1 - 1e-6), top * (1 - 1e-3), top]
    )
    opt = aa.infalign_optimum(ref, LOG4, jnp.asarray(deltas))
    w_aa, q_aa = np.asarray(opt.win_rate), np.asarray(opt.law.prob)
    kls = np.asarray(aa.law_kl(opt.law, ref))
    for i, d in enumerate(deltas):
        single = aa.infalign_optimum(ref, LOG4, float(d))  # alone: a cold start
        assert abs(float(single.win_rate) - w_aa[i]) <= 1e-14, d
        np.testing.assert_allclose(np.asarray(single.law.prob), q_aa[i], rtol=0, atol=1e-11)
        if d == 0.0:
            np.testing.assert_allclose(q_aa[i], P, rtol=1e-14)
            assert w_aa[i] == pytest.approx(0.5, abs=1e-15)
            assert np.isinf(float(opt.beta[i]))
            continue
        if d >= top:
            assert q_aa[i, -1] == 1.0 and float(opt.beta[i]) == 0.0
            assert w_aa[i] == pytest.approx(1 - (1 - (1 - P[-1]) ** 4) / 2, abs=1e-15)
            continue
        if d < 1e-6:  # tiny Δ: KL itself is resolved only to ~1e-16 absolute; the first-order optimum
            F = np.cumsum(P)
            g0 = np.asarray(jax.grad(w_direct)(jnp.asarray(P), (F, F - P), 4.0, False))
            var = P @ (g0 - P @ g0) ** 2
            assert w_aa[i] - 0.5 == pytest.approx(math.sqrt(2 * d * var), rel=1e-4)
            assert kls[i] == pytest.approx(d, abs=1e-15)
            continue
        assert kls[i] == pytest.approx(d, rel=1e-9)  # the budget binds
        q_ref, w_ref, kl_ref, w_np = _slsqp_optimum(P, 4.0, d)
        assert kl_ref <= d * (1 + 1e-9)  # the reference is feasible to rounding ...
        # ... so it cannot beat the optimum (both W by the same NumPy formula) by more than its
        # KL excess, and the optimum's KL shortfall (both rounding), are worth (dW*/dΔ = β)
        on = q_aa[i] > 0
        kl_aa = float(np.sum(q_aa[i][on] * np.log(q_aa[i][on] / P[on])))  # the same NumPy KL
        budget_gap = max(kl_ref - d, 0.0) + max(d - kl_aa, 0.0)
        assert w_np(q_aa[i]) >= w_ref - float(opt.beta[i]) * budget_gap - 4e-15  # rounding
        assert w_np(q_aa[i]) == pytest.approx(w_aa[i], abs=1e-14)  # the two W formulas, rounding
        assert w_aa[i] <= w_ref + 1e-11, (d, w_aa[i] - w_ref)  # SLSQP resolves W to ~1e-11
