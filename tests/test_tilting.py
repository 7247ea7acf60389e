"""Tilted family and KL-constrained RL (THEORY.md §2–§4).

Every identity is checked against an independent float64 NumPy/SciPy twin
written here, or against an mpmath reference at 50 digits where float64 itself
would not be a trustworthy judge (huge λ, Δ next to Δ_max, k = 1000).
"""

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy.optimize import minimize_scalar
from scipy.special import rel_entr

import asymalign as aa
from asymalign import testing as S
from asymalign.testing import reference as ref

# ---------------------------------------------------------------------------
# independent references
# ---------------------------------------------------------------------------


# float64 twins shared with the other test files (asymalign.testing.reference)
np_log_partition = ref.log_partition
np_tilt = ref.tilt


def _lam(u, p, r):
    """A tilt parameter u / span(r on supp p), so λ(r_max − r_min) = u."""
    span = np.ptp(r[p > 0])
    return u / span if span > 0 else u


np_kl = ref.kl
np_max_kl = ref.max_kl


def mp_moments(p, r, lam, dps=50):
    """(Λ, Λ', Λ'', K) at 50 digits; p, r, lam taken as exact binary floats."""
    with mp.workdps(dps):
        lam = mp.mpf(float(lam))
        w = [(mp.mpf(float(pi)), mp.mpf(float(ri))) for pi, ri in zip(p, r, strict=False) if pi > 0]
        Z = mp.fsum(pi * mp.exp(lam * ri) for pi, ri in w)
        m1 = mp.fsum(pi * ri * mp.exp(lam * ri) for pi, ri in w) / Z
        m2 = mp.fsum(pi * (ri - m1) ** 2 * mp.exp(lam * ri) for pi, ri in w) / Z
        L = mp.log(Z)
        return L, m1, m2, lam * m1 - L


def mp_K(p, r, lam):
    return mp_moments(p, r, lam)[3]


def ball_points(p, r, delta, rng, m=96):
    """Random q with supp q ⊆ supp p and KL(q||p) <= Δ.

    Each q is a mixture (1-t) p + t s toward a random point s of the simplex on
    supp p (sparse Dirichlet draws and the vertices), with t the largest value
    in [0, 1] keeping KL(q||p) <= Δ (KL is convex in t and 0 at t = 0, so
    bisection finds it).
    """
    s_idx = np.flatnonzero(p > 0)
    k = len(p)
    pts = np.zeros((m, k))
    pts[:, s_idx] = rng.dirichlet(np.full(len(s_idx), 0.3), size=m)
    verts = np.zeros((len(s_idx), k))
    verts[np.arange(len(s_idx)), s_idx] = 1.0
    pts = np.concatenate([pts, verts])

    def kl_rows(t):
        q = (1 - t[:, None]) * p + t[:, None] * pts
        return np.sum(rel_entr(q, p), axis=-1)

    lo, hi = np.zeros(len(pts)), np.ones(len(pts))
    # a hair inside the ball, so that rounding in KL cannot let q step outside
    target = delta * (1 - 1e-9) - 1e-15
    full = kl_rows(hi) <= target
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        ok = kl_rows(mid) <= target
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    t = np.where(full, 1.0, lo)
    q = (1 - t[:, None]) * p + t[:, None] * pts
    assert np.all(np.sum(rel_entr(q, p), axis=-1) <= delta * (1 + 1e-12) + 1e-15)
    return q


# jitted once at module level: traced inputs skip validation, compile per size
@jax.jit
def _tilted(p, r, lam):
    """Everything about φ_λ (scalar λ) in one compiled call: one compile per alphabet size."""
    dL = jax.grad(aa.log_partition, argnums=2)
    return dict(
        L=aa.log_partition(p, r, lam),
        phi=aa.tilt(p, r, lam),
        K=aa.tilt_kl(p, r, lam),
        mean=aa.tilt_reward(p, r, lam),
        var=aa.tilt_variance(p, r, lam),
        dL=dL(p, r, lam),
        d2L=jax.grad(dL, argnums=2)(p, r, lam),
        dK=jax.grad(aa.tilt_kl, argnums=2)(p, r, lam),
    )


@jax.jit
def _klrl(p, r, delta):
    """kl_rl and dλ*/dΔ in one compiled call."""
    return aa.kl_rl(p, r, delta), jax.grad(aa.solve_lambda, argnums=2)(p, r, delta)


def _kl_rl_j(p, r, delta):
    return _klrl(p, r, delta)[0]


_log_partition_j = jax.jit(aa.log_partition)
_tilt_kl_j = jax.jit(aa.tilt_kl)


def _fraction_of_dmax(p, r, frac):
    dmax = np_max_kl(p, r)
    assume(dmax > 1e-9)
    return dmax, frac * dmax


# ---------------------------------------------------------------------------
# §2: the tilted family
# ---------------------------------------------------------------------------


@given(S.normal_models(), st.floats(-30.0, 30.0))
def test_log_partition_and_tilt_match_numpy(model, u):
    p, r = model
    max(np.ptp(r), 1e-12)
    lam = _lam(u, p, r)
    out = _tilted(p, r, lam)
    np.testing.assert_allclose(out["L"], np_log_partition(p, r, lam), rtol=1e-12, atol=1e-12)
    phi = np.asarray(out["phi"])
    np.testing.assert_allclose(phi, np_tilt(p, r, lam), rtol=1e-11, atol=1e-15)
    assert phi.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(phi[p == 0] == 0)
    np.testing.assert_allclose(_tilted(p, r, 0.0)["phi"], p, rtol=1e-14, atol=0)


@given(S.normal_models(), st.floats(-20.0, 20.0))
def test_derivatives_of_log_partition_are_tilted_moments(model, u):
    """Λ'(λ) = E_φ r, Λ''(λ) = Var_φ r (autodiff and the closed forms agree with NumPy)."""
    p, r = model
    lam = _lam(u, p, r)
    phi = np_tilt(p, r, lam)
    mean = float(phi @ r)
    var = float(phi @ (r - mean) ** 2)
    scale = max(1.0, np.abs(r).max())
    out = _tilted(p, r, lam)
    assert float(out["dL"]) == pytest.approx(mean, rel=1e-10, abs=1e-12 * scale)
    assert float(out["mean"]) == pytest.approx(mean, rel=1e-10, abs=1e-12 * scale)
    assert float(out["d2L"]) == pytest.approx(var, rel=1e-8, abs=1e-12 * scale**2)
    assert float(out["var"]) == pytest.approx(var, rel=1e-8, abs=1e-12 * scale**2)


@given(S.normal_models(), st.floats(-20.0, 20.0))
def test_tilt_kl_is_lam_dLam_minus_Lam(model, u):
    """K(λ) = KL(φ_λ||p) = λΛ'(λ) − Λ(λ)."""
    p, r = model
    lam = _lam(u, p, r)
    phi = np_tilt(p, r, lam)
    direct = np_kl(phi, p)
    via_lambda = lam * float(phi @ r) - np_log_partition(p, r, lam)
    K = float(_tilted(p, r, lam)["K"])
    assert K == pytest.approx(direct, rel=1e-9, abs=1e-12)
    assert K == pytest.approx(via_lambda, rel=1e-9, abs=1e-11 * (1 + abs(lam) * np.abs(r).max()))


@given(S.normal_models(nonconstant=True))
def test_tilt_kl_increasing_from_zero_to_max_kl(model):
    """K is increasing on λ >= 0, K(0) = 0, K -> Δ_max, and K'(λ) = λΛ''(λ)."""
    p, r = model
    rs = np.unique(r[p > 0])
    span, gap = rs[-1] - rs[0], rs[-1] - rs[-2]
    # at λ = (40 + log(max p / min p)) / gap, K(λ) is Δ_max to ~e^{-40}
    spread = np.log(p[p > 0].max() / p[p > 0].min())
    lams = np.sort(np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 60) / span, [(40.0 + spread) / gap]]))
    K = np.asarray(_tilt_kl_j(p, r, lams))
    dmax = np_max_kl(p, r)
    assert K[0] == pytest.approx(0.0, abs=1e-15)
    assert np.all(np.diff(K) >= -1e-13 * max(1.0, dmax))
    assert np.all(K <= dmax + 1e-12)
    assert K[-1] == pytest.approx(dmax, abs=1e-9 * max(1.0, dmax))
    assert float(aa.max_kl(p, r)) == pytest.approx(dmax, rel=1e-13, abs=1e-15)
    assert float(_tilted(p, r, np.inf)["K"]) == pytest.approx(dmax, rel=1e-13, abs=1e-15)
    for lam in lams[[5, 20, 40]]:
        phi = np_tilt(p, r, lam)
        var = float(phi @ (r - phi @ r) ** 2)
        assert float(_tilted(p, r, lam)["dK"]) == pytest.approx(lam * var, rel=1e-7, abs=1e-12)


@given(S.normal_models(), st.floats(-10.0, 10.0), st.floats(-5.0, 5.0))
def test_renyi_divergence_of_a_tilt(model, u, alpha):
    """D_α(φ_μ||p) = (Λ(αμ) − αΛ(μ)) / (α − 1) for α >= 0."""
    p, r = model
    alpha = abs(alpha)
    assume(abs(alpha - 1) > 1e-3)
    mu = _lam(u, p, r)
    expected = (np_log_partition(p, r, alpha * mu) - alpha * np_log_partition(p, r, mu)) / (alpha - 1)
    got = float(aa.renyi_divergence(aa.tilt(p, r, mu), p, alpha))
    assert got == pytest.approx(expected, rel=1e-8, abs=1e-10)


# ---------------------------------------------------------------------------
# §3: solving K(λ) = Δ
# ---------------------------------------------------------------------------


@given(S.normal_models(nonconstant=True), st.floats(1e-6, 1 - 1e-6))
def test_solve_lambda_accuracy(model, frac):
    """|K(λ*) − Δ| <= 1e-10 max(1, Δ), K evaluated at 50 digits."""
    p, r = model
    _, delta = _fraction_of_dmax(p, r, frac)
    lam = float(aa.solve_lambda(p, r, delta))
    assert 0 < lam < np.inf
    assert abs(float(mp_K(p, r, lam)) - delta) <= 1e-10 * max(1.0, delta)


@given(
    st.sampled_from(S.SIZES).flatmap(lambda k: st.tuples(S.probs(k=k, min_support=k), S.wide_rewards(k))),
    st.floats(-8.0, -6.0),
    st.booleans(),
)
def test_solve_lambda_near_max_kl_and_wide_rewards(model, log_gap, near):
    """Rewards spanning 1e-3..1e3 and Δ within 1e-6 of Δ_max."""
    p, r = model
    dmax = np_max_kl(p, r)
    assume(dmax > 1e-5)
    delta = dmax - 10.0**log_gap if near else 0.5 * dmax
    lam = float(aa.solve_lambda(p, r, delta))
    assert 0 < lam < np.inf
    assert abs(float(mp_K(p, r, lam)) - delta) <= 1e-10 * max(1.0, delta)


def test_solve_lambda_boundaries():
    p = np.array([0.5, 0.2, 0.2, 0.1])
    r = np.array([0.0, 1.0, 3.0, 3.0])  # tie at the top: Δ_max = -log 0.3
    dmax = -np.log(0.3)
    assert float(aa.max_kl(p, r)) == pytest.approx(dmax, rel=1e-15)
    assert float(aa.solve_lambda(p, r, 0.0)) == 0.0
    for d in (dmax, dmax + 1e-12, 2 * dmax, 1e6, np.inf):
        assert float(aa.solve_lambda(p, r, d)) == np.inf
    # just below: finite, huge-ish
    lam = float(aa.solve_lambda(p, r, dmax - 1e-9))
    assert np.isfinite(lam) and lam > 5
    assert abs(float(mp_K(p, r, lam)) - (dmax - 1e-9)) <= 1e-10 * dmax
    # batched Δ, including both boundaries
    deltas = np.array([0.0, 0.1, dmax, 5.0])
    lams = np.asarray(aa.solve_lambda(p, r, deltas))
    assert lams[0] == 0 and lams[2] == np.inf and lams[3] == np.inf and 0 < lams[1] < np.inf


@pytest.mark.parametrize("gap", [1e-20, 1e-47])
def test_solve_lambda_with_a_gap_decades_below_the_span(gap):
    """r_max − (next reward) = gap ≪ span: λ* ~ 1/gap is far beyond 1/span."""
    p = np.array([1 / 3, 1 / 3, 1 / 3])
    r = np.array([0.0, gap, -0.01])
    dmax = np.log(3)
    for delta in (0.01, 0.5 * dmax, dmax - 1e-6):
        lam = float(aa.solve_lambda(p, r, delta))
        assert abs(float(mp_K(p, r, lam)) - delta) <= 1e-10 * max(1.0, delta)
    res = aa.kl_rl(p, r, 0.5 * dmax)
    assert float(res.kl) == pytest.approx(0.5 * dmax, rel=1e-10)
    assert float(res.lam) > 1 / gap


def test_constant_reward_and_zeros_in_p():
    p = np.array([0.3, 0.0, 0.7])
    r = np.array([2.0, 2.0, 2.0])
    assert float(aa.max_kl(p, r)) == pytest.approx(0.0, abs=1e-15)
    assert float(aa.log_partition(p, r, 3.0)) == pytest.approx(6.0, rel=1e-15)
    np.testing.assert_allclose(aa.tilt(p, r, 7.0), p, rtol=1e-15)
    assert float(aa.tilt_kl(p, r, 7.0)) == pytest.approx(0.0, abs=1e-15)
    assert float(aa.solve_lambda(p, r, 0.0)) == 0.0
    assert float(aa.solve_lambda(p, r, 0.3)) == np.inf
    res = aa.kl_rl(p, r, 0.3)
    np.testing.assert_allclose(res.policy, p, rtol=1e-15)
    assert float(res.reward) == 2.0 and float(res.kl) == pytest.approx(0.0, abs=1e-15)
    # a huge reward on a zero-probability letter is ignored: r_max is over supp p
    p = np.array([0.5, 0.5, 0.0])
    r = np.array([0.0, 1.0, 100.0])
    assert float(aa.max_kl(p, r)) == pytest.approx(np.log(2), rel=1e-15)
    np.testing.assert_allclose(aa.tilt(p, r, np.inf), [0, 1, 0], atol=0)
    np.testing.assert_allclose(aa.tilt(p, r, -np.inf), [1, 0, 0], atol=0)
    res = aa.kl_rl(p, r, 10.0)
    np.testing.assert_allclose(res.policy, [0, 1, 0], atol=0)
    assert float(res.reward) == 1.0
    assert float(res.kl) == pytest.approx(np.log(2), rel=1e-15)
    for lam in (-1e4, -3.0, 0.0, 3.0, 1e4):
        phi = np.asarray(aa.tilt(p, r, lam))
        assert np.all(np.isfinite(phi)) and phi[2] == 0.0


@pytest.mark.parametrize("lam", [-1e4, -1e3, -1.0, 1.0, 1e3, 1e4])
def test_huge_lambda_against_mpmath(lam):
    """|λ| up to 1e4: Λ, φ_λ, Λ', K match a 50-digit reference."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7))
    p[3] = 0.0
    p /= p.sum()
    r = np.round(rng.uniform(-1, 1, 7), 3)
    r[5] = r[6]  # a tie
    L, m1, _, K = mp_moments(p, r, lam)
    assert float(aa.log_partition(p, r, lam)) == pytest.approx(float(L), rel=1e-13)
    assert float(aa.tilt_reward(p, r, lam)) == pytest.approx(float(m1), rel=1e-12, abs=1e-14)
    assert float(aa.tilt_kl(p, r, lam)) == pytest.approx(float(K), rel=1e-12, abs=1e-13)
    phi = np.asarray(aa.tilt(p, r, lam))
    with mp.workdps(50):
        ref = [
            float(mp.mpf(pi) * mp.exp(mp.mpf(lam) * mp.mpf(ri) - L)) if pi > 0 else 0.0
            for pi, ri in zip(p, r, strict=False)
        ]
    np.testing.assert_allclose(phi, ref, rtol=1e-11, atol=1e-300)


# ---------------------------------------------------------------------------
# §3: KL-constrained RL optimality
# ---------------------------------------------------------------------------


@given(S.normal_models(), st.floats(0.0, 1.5), st.integers(0, 2**32 - 1))
def test_kl_rl_beats_every_q_in_the_kl_ball(model, frac, seed):
    """φ_{λ*} is feasible, and no random q with KL(q||p) <= Δ has a higher reward."""
    p, r = model
    dmax = np_max_kl(p, r)
    delta = frac * max(dmax, 1e-3)
    res = _kl_rl_j(p, r, delta)
    pol = np.asarray(res.policy)
    scale = max(1.0, np.abs(r).max())
    assert pol.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(pol[p == 0] == 0)
    kl_pol = np_kl(pol, p)
    assert kl_pol <= delta + 1e-10 * max(1, delta)
    assert float(res.kl) == pytest.approx(min(delta, dmax), rel=1e-9, abs=1e-10)
    assert kl_pol == pytest.approx(min(delta, dmax), rel=1e-8, abs=1e-10)
    assert float(res.reward) == pytest.approx(float(pol @ r), rel=1e-12, abs=1e-12 * scale)
    q = ball_points(p, r, delta, np.random.default_rng(seed))
    assert np.max(q @ r) <= float(res.reward) + 1e-9 * scale
    if delta >= dmax and delta > 0:  # (Δ = 0 = Δ_max: p and p|A differ only by rounding)
        s = p > 0
        a = s & (r == r[s].max())
        np.testing.assert_allclose(pol, np.where(a, p, 0) / p[a].sum(), rtol=1e-13, atol=1e-300)
    if delta > dmax + 1e-12:  # clear of rounding in Δ_max (e.g. a constant reward, Δ_max = 0)
        assert float(res.lam) == np.inf


@given(S.normal_models(nonconstant=True), st.floats(0.02, 0.98))
def test_dual_form_of_optimal_value(model, frac):
    """E_{φ_λ*} r = min_{λ>0} (Δ + Λ(λ))/λ, the minimum found by scipy in log λ."""
    p, r = model
    _, delta = _fraction_of_dmax(p, r, frac)
    rs = np.unique(r[p > 0])
    span, gap = rs[-1] - rs[0], rs[-1] - rs[-2]

    def f(v):
        lam = np.exp(v)
        return (delta + np_log_partition(p, r, lam)) / lam

    # λ* lies in [1e-8/span, 1e3/gap]: beyond 1e3/gap, K(λ) = Δ_max to the last bit
    bounds = (np.log(1e-8 / span), np.log(1e3 / gap))
    opt = minimize_scalar(f, bounds=bounds, method="bounded", options={"xatol": 1e-12})
    res = _kl_rl_j(p, r, delta)
    scale = np.abs(r).max()
    assert float(res.reward) == pytest.approx(opt.fun, rel=1e-8, abs=1e-9 * scale)
    assert float(res.lam) == pytest.approx(np.exp(opt.x), rel=1e-3)


@given(S.normal_models(), st.floats(0.05, 50.0), st.integers(0, 2**32 - 1))
def test_kl_regularized_maximises_penalised_reward(model, beta, seed):
    """φ_{1/β} maximises E_q r − β KL(q||p); the value there is β Λ(1/β)."""
    p, r = model
    beta = beta * max(np.ptp(r), 1e-3)
    phi = np.asarray(aa.kl_regularized(p, r, beta))
    np.testing.assert_allclose(phi, np_tilt(p, r, 1 / beta), rtol=1e-11, atol=1e-15)
    best = float(phi @ r) - beta * np_kl(phi, p)
    assert best == pytest.approx(beta * np_log_partition(p, r, 1 / beta), rel=1e-9, abs=1e-10 * beta)
    rng = np.random.default_rng(seed)
    q = ball_points(p, r, rng.uniform(0, 3), rng)
    vals = q @ r - beta * np.sum(rel_entr(q, p), axis=-1)
    assert np.max(vals) <= best + 1e-9 * (1 + abs(best))


# ---------------------------------------------------------------------------
# §4: near-optimal means close
# ---------------------------------------------------------------------------


@given(S.normal_models().flatmap(lambda m: st.tuples(st.just(m), S.abs_continuous(m[0]))), st.floats(-20.0, 20.0))
def test_near_optimality_identity(mq, u):
    """KL(q||φ_λ) = KL(q||p) − λ E_q r + Λ(λ) for q << p and every λ."""
    (p, r), q = mq
    lam = _lam(u, p, r)
    rhs = np_kl(q, p) - lam * float(q @ r) + np_log_partition(p, r, lam)
    lhs = float(aa.kl(q, aa.tilt(p, r, lam)))
    assert lhs == pytest.approx(rhs, rel=1e-9, abs=1e-10 * (1 + abs(lam) * np.abs(r).max()))
    # and q not absolutely continuous w.r.t. p makes both sides +inf
    if np.any(p == 0):
        q2 = 0.5 * q + 0.5 * (p == 0) / np.sum(p == 0)
        assert float(aa.kl(q2, aa.tilt(p, r, lam))) == np.inf


@given(S.normal_models(nonconstant=True), st.floats(0.05, 0.95), st.integers(0, 2**32 - 1))
def test_near_optimality_lambda_epsilon_bound(model, frac, seed):
    """KL(q||p) <= Δ = K(λ) and E_q r >= E_φ r − ε imply KL(q||φ_λ) <= λ ε."""
    p, r = model
    _, delta = _fraction_of_dmax(p, r, frac)
    res = _kl_rl_j(p, r, delta)
    lam = float(res.lam)
    # log φ_λ, not φ_λ: for large λ, φ_λ underflows on letters that q may still use
    log_phi = np.asarray(aa.log_tilt(p, r, lam))
    q = ball_points(p, r, delta, np.random.default_rng(seed))
    eps = float(res.reward) - q @ r
    with np.errstate(divide="ignore", invalid="ignore"):  # masked by the where
        kl_q_phi = np.sum(np.where(q > 0, q * (np.log(q) - log_phi), 0.0), axis=-1)
    assert np.all(kl_q_phi <= lam * eps + 1e-9 * (1 + lam * np.abs(r).max()))
    # the identity form: KL(q||φ) = [KL(q||p) − Δ] + λ ε
    np.testing.assert_allclose(
        kl_q_phi,
        np.sum(rel_entr(q, p), axis=-1) - delta + lam * eps,
        rtol=1e-7,
        atol=1e-9 * (1 + lam * np.abs(r).max()),
    )


# ---------------------------------------------------------------------------
# large alphabet
# ---------------------------------------------------------------------------


def test_k1000_model():
    rng = np.random.default_rng(1)
    k = 1000
    p = rng.dirichlet(np.full(k, 0.5))
    p[rng.choice(k, 100, replace=False)] = 0.0
    p /= p.sum()
    r = rng.normal(size=k)
    r[:10] = r[10]  # ties
    lam = 3.7
    assert float(aa.log_partition(p, r, lam)) == pytest.approx(np_log_partition(p, r, lam), rel=1e-13)
    np.testing.assert_allclose(aa.tilt(p, r, lam), np_tilt(p, r, lam), rtol=1e-10, atol=1e-300)
    dmax = np_max_kl(p, r)
    deltas = np.array([1e-4, 0.1, 0.5 * dmax, dmax - 1e-6])
    lams = np.asarray(aa.solve_lambda(p, r, deltas))
    for d, l in zip(deltas, lams, strict=False):
        assert abs(float(mp_K(p, r, l)) - d) <= 1e-10 * max(1.0, d)
    res = aa.kl_rl(p, r, 0.5 * dmax)
    q = ball_points(p, r, 0.5 * dmax, rng, m=32)
    assert np.max(q @ r) <= float(res.reward) + 1e-9
    assert np.all(np.isfinite(np.asarray(aa.tilt(p, r, 1e4))))


# ---------------------------------------------------------------------------
# jit, vmap, grad, dtypes
# ---------------------------------------------------------------------------


_P = np.array([0.4, 0.0, 0.25, 0.2, 0.15])
_R = np.array([0.3, 5.0, -1.0, 0.7, 2.0])


@pytest.mark.parametrize("lam", [-2.0, 0.8])
def test_log_partition_gradients(lam):
    check_grads(lambda l: _log_partition_j(_P, _R, l), (lam,), order=2, modes=("fwd", "rev"))
    check_grads(lambda r: _log_partition_j(_P, r, lam), (_R,), order=1, modes=("fwd", "rev"))
    check_grads(lambda l: _tilt_kl_j(_P, _R, l), (lam,), order=1, modes=("rev",))


def test_log_partition_gradient_in_r_with_tied_maximum():
    p = np.array([0.3, 0.3, 0.4])
    r = np.array([1.0, 1.0, 0.0])
    for lam in (-1.5, 2.0):
        check_grads(lambda r_, lam=lam: _log_partition_j(p, r_, lam), (r,), order=1, modes=("fwd", "rev"))
        g = jax.grad(_log_partition_j, argnums=1)(p, r, lam)
        np.testing.assert_allclose(g, lam * np_tilt(p, r, lam), rtol=1e-12)  # ∂Λ/∂r = λ φ_λ


@pytest.mark.parametrize("delta", [1e-3, 0.05, 0.4, 0.9])
def test_solve_lambda_gradient_in_delta(delta):
    """dλ*/dΔ = 1/(λ* Λ''(λ*)) (implicit function theorem), and check_grads agrees."""
    dmax = np_max_kl(_P, _R)
    d = delta * dmax
    lam = float(aa.solve_lambda(_P, _R, d))
    phi = np_tilt(_P, _R, lam)
    var = float(phi @ (_R - phi @ _R) ** 2)
    g = float(jax.grad(lambda x: aa.solve_lambda(_P, _R, x))(d))
    assert g == pytest.approx(1.0 / (lam * var), rel=1e-8)
    check_grads(lambda x: aa.solve_lambda(_P, _R, x), (d,), order=1, modes=("fwd", "rev"), eps=1e-4 * d)
    # through kl_rl: d reward / dΔ = 1/λ* (the dual variable)
    dr = float(jax.grad(lambda x: aa.kl_rl(_P, _R, x).reward)(d))
    assert dr == pytest.approx(1.0 / lam, rel=1e-7)


def test_vmap_and_jit_agree_with_loops():
    deltas = np.linspace(0.0, 1.2 * np_max_kl(_P, _R), 7)
    batched = np.asarray(jax.vmap(aa.solve_lambda, in_axes=(None, None, 0))(_P, _R, deltas))
    looped = np.array([float(aa.solve_lambda(_P, _R, d)) for d in deltas])
    np.testing.assert_array_equal(np.isinf(batched), np.isinf(looped))
    np.testing.assert_allclose(batched, looped, rtol=1e-12)
    rng = np.random.default_rng(2)
    ps = rng.dirichlet(np.ones(5), size=4)
    rs = rng.normal(size=(4, 5))
    lams = rng.normal(size=4)
    v = jax.vmap(aa.log_partition)(ps, rs, lams)
    np.testing.assert_allclose(
        v, [np_log_partition(a, b, c) for a, b, c in zip(ps, rs, lams, strict=False)], rtol=1e-13
    )
    # batch axes broadcast without vmap too
    np.testing.assert_allclose(aa.log_partition(ps, rs, lams), v, rtol=1e-14)
    res_j, res_e = jax.jit(aa.kl_rl)(ps, rs, 0.2), aa.kl_rl(ps, rs, 0.2)
    for a, b in zip(res_j, res_e, strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    tk = jax.vmap(aa.tilt_kl, in_axes=(None, None, 0))(_P, _R, jnp.asarray(deltas))
    np.testing.assert_allclose(tk, [float(aa.tilt_kl(_P, _R, d)) for d in deltas], rtol=1e-13)


def test_float32_smoke():
    p64 = np.array([0.5, 0.25, 0.15, 0.1])
    r64 = np.array([0.0, 1.0, 2.5, 3.0])
    p32, r32 = p64.astype(np.float32), r64.astype(np.float32)
    dmax = np_max_kl(p64, r64)
    for f, extra in [
        (aa.log_partition, (0.7,)),
        (aa.tilt_kl, (0.7,)),
        (aa.tilt_reward, (0.7,)),
        (aa.tilt, (0.7,)),
        (aa.solve_lambda, (np.float32(0.5 * dmax),)),
        (aa.solve_lambda, (np.float32(0.01),)),
    ]:
        lo, hi = f(p32, r32, *extra), f(p64, r64, *[np.float64(e) for e in extra])
        assert lo.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(lo)))
        np.testing.assert_allclose(np.asarray(lo, np.float64), hi, rtol=1e-4, atol=1e-6)
    res = aa.kl_rl(p32, r32, np.float32(0.5 * dmax))
    assert res.policy.dtype == jnp.float32
    assert float(res.kl) == pytest.approx(0.5 * dmax, rel=1e-4)


@given(
    S.normal_models(),
    st.one_of(st.floats(-1e4, 1e4), st.sampled_from([np.inf, -np.inf, 0.0])),
    st.one_of(st.floats(0.0, 10.0), st.sampled_from([0.0, np.inf])),
)
def test_no_nan_under_jit_on_valid_input(model, lam, delta):
    p, r = model
    out = _tilted(p, r, lam)
    assert np.all(np.isfinite(np.asarray(out["phi"])))
    for key in ("K", "mean", "var"):
        assert np.isfinite(float(out[key]))
    if np.isfinite(lam):
        for key in ("L", "dL", "d2L", "dK"):
            assert np.isfinite(float(out[key]))
    res, dlam = _klrl(p, r, delta)
    assert not np.isnan(float(res.lam))
    assert np.all(np.isfinite(np.asarray(res.policy)))
    assert np.isfinite(float(res.reward)) and np.isfinite(float(res.kl))
    assert not np.isnan(float(dlam))


def test_blockwise_cpu_path_matches_one_batch():
    """Batches above 2 blocks are solved blockwise on CPU (each block's Newton loop
    stops at its own slowest member); the result must match solving the same
    problems in small batches (one batched solve each, no blocks)."""
    rng = np.random.default_rng(7)
    b = 2 * 1024 + 77  # not a multiple of the block: exercises the padding
    p = rng.dirichlet(np.full(5, 0.5), size=b)
    r = rng.normal(size=(b, 5))
    delta = rng.uniform(0.0, 1.2, size=b) * np.asarray(aa.max_kl(p, r))
    x = r.min(-1) + rng.uniform(0.01, 0.99, size=b) * np.ptp(r, axis=-1)
    chunks = [slice(i, min(i + 500, b)) for i in range(0, b, 500)]  # <= 2 blocks: one batched solve
    lam_blocks = np.asarray(aa.solve_lambda(p, r, delta))
    lam_one = np.concatenate([np.asarray(aa.solve_lambda(p[c], r[c], delta[c])) for c in chunks])
    assert lam_blocks.shape == (b,)
    np.testing.assert_array_equal(np.isinf(lam_blocks), np.isinf(lam_one))
    fin = np.isfinite(lam_one)
    # λ* itself is ill-conditioned where K is flat; compare the defining residuals too
    np.testing.assert_allclose(lam_blocks[fin], lam_one[fin], rtol=1e-8)
    k_blocks = np.asarray(aa.tilt_kl(p[fin], r[fin], lam_blocks[fin]))
    np.testing.assert_allclose(k_blocks, delta[fin], rtol=0, atol=1e-10 * max(1.0, delta.max()))
    i_blocks = np.asarray(aa.rate_function(p, r, x))
    i_one = np.concatenate([np.asarray(aa.rate_function(p[c], r[c], x[c])) for c in chunks])
    np.testing.assert_allclose(i_blocks, i_one, rtol=1e-10, atol=1e-300)
