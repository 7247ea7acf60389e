"""Large deviations of the reward (THEORY.md §5).

Independent references written here: a float64 NumPy ψ and cumulants from
moments; SciPy's scalar optimiser for the Legendre transforms; 60-digit mpmath
for the rate function (Cramér's sup solved by bisection in the tilt) and the
binary KL.
"""

from math import comb

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy.optimize import brentq, minimize_scalar
from scipy.special import logsumexp, rel_entr

import asymalign as aa
from asymalign import testing as S
from asymalign.testing import reference as ref

# ---------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------


np_log_partition = ref.log_partition  # float64 twins shared with the other test files


def np_psi(p, r, t, lam):
    return np_log_partition(p, r, lam + t) - np_log_partition(p, r, lam)


np_tilt = ref.tilt


def np_cumulants(p, r, lam, order):
    """Cumulants of r under φ_λ from its central moments (moment–cumulant recursion)."""
    phi = np_tilt(p, r, lam)
    mean = float(phi @ r)
    m = [1.0] + [float(phi @ (r - mean) ** j) for j in range(1, order + 1)]
    kap = [0.0] * (order + 1)
    for n in range(1, order + 1):
        kap[n] = m[n] - sum(comb(n - 1, i - 1) * kap[i] * m[n - i] for i in range(1, n))
    kap[1] = mean
    return np.array(kap[1:])


def mp_rate(p, r, x, lam, dps=50):
    """I_λ(x) = sup_t [t x − Λ(λ+t) + Λ(λ)] at `dps` digits.

    The maximiser t solves Λ'(λ+t) = x: a float64 brentq in v = asinh(t·span)
    gives a start, then a bracketed Newton iteration in mpmath (bisection in
    v whenever a Newton step leaves the bracket) converges to full precision.
    """
    lo_r, hi_r = _span(p, r)
    span = hi_r - lo_r
    v0 = brentq(lambda v: float(np_tilt(p, r, lam + np.sinh(v) / span) @ r) - x, -300.0, 300.0, xtol=1e-15, rtol=1e-15)
    with mp.workdps(dps):
        w = [(mp.mpf(float(pi)), mp.mpf(float(ri))) for pi, ri in zip(p, r, strict=False) if pi > 0]
        lam, x, span = mp.mpf(float(lam)), mp.mpf(float(x)), mp.mpf(float(span))
        rmax, rmin = mp.mpf(float(hi_r)), mp.mpf(float(lo_r))

        def stats(t):
            c = rmax if t >= 0 else rmin
            e = [pi * mp.exp(t * (ri - c)) for pi, ri in w]
            z = mp.fsum(e)
            m1 = mp.fsum(ei * ri for ei, (_, ri) in zip(e, w, strict=False)) / z
            m2 = mp.fsum(ei * (ri - m1) ** 2 for ei, (_, ri) in zip(e, w, strict=False)) / z
            return t * c + mp.log(z), m1, m2

        def t_of(v):
            return mp.sinh(v) / span

        # bracket [a, b] in v around the float64 root
        a, b = mp.mpf(v0) - 1, mp.mpf(v0) + 1
        while stats(lam + t_of(a))[1] > x:
            a -= 2 * (b - a)
        while stats(lam + t_of(b))[1] < x:
            b += 2 * (b - a)
        t = t_of(mp.mpf(v0))
        for _ in range(200):
            _, m1, m2 = stats(lam + t)
            g = m1 - x
            if g == 0 or abs(g) < mp.mpf(10) ** (-dps + 8) * span:
                break
            v = mp.asinh(t * span)
            if g < 0:
                a = v
            else:
                b = v
            if b - a < mp.mpf(10) ** (-dps + 8):
                break
            t_new = t - g / m2 if m2 > 0 else None
            if t_new is None or not (t_of(a) < t_new < t_of(b)):
                t_new = t_of((a + b) / 2)
            t = t_new
        return t * x - stats(lam + t)[0] + stats(lam)[0]


def scipy_legendre(f, lo, hi):
    """sup_t [−f(t)] on [lo, hi] by SciPy's bounded scalar minimiser."""
    res = minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12 * max(1.0, hi - lo)})
    return -res.fun, res.x


_NX = 64  # every rate-function call in the property tests uses one x shape


def rate(p, r, x, lam):
    """aa.rate_function at up to _NX points, padded to one shape (one compile per k)."""
    x = np.atleast_1d(np.asarray(x, float))
    xp = np.full(_NX, x[0])
    xp[: len(x)] = x
    out = np.asarray(aa.rate_function(p, r, xp, lam))[: len(x)]
    return out if len(x) > 1 else float(out[0])


@jax.jit
def _cgfs(p, r, t, lam):
    """ψ_λ(t) three ways, and ψ_λ'(t), in one compiled call (one compile per alphabet size).
    The Rényi-divergence form is only meaningful for λ ≠ 0."""
    return dict(
        direct=aa.scaled_cgf(p, r, t, lam),
        rce=aa.cgf_via_renyi_cross_entropy(p, r, t, lam),
        rd=aa.cgf_via_renyi_divergence(p, r, t, lam),
        d=jax.grad(aa.scaled_cgf, argnums=2)(p, r, t, lam),
    )


_ORDER = 5
_cumulants_j = jax.jit(aa.scaled_cumulants, static_argnums=2)


def _span(p, r):
    s = p > 0
    return r[s].min(), r[s].max()


def _lam(u, p, r):
    lo, hi = _span(p, r)
    return u / (hi - lo) if hi > lo else u


# ---------------------------------------------------------------------------
# scaled CGF and its Rényi forms
# ---------------------------------------------------------------------------


@given(S.normal_models(), st.floats(-20.0, 20.0), st.floats(-10.0, 10.0))
def test_scaled_cgf_matches_numpy(model, ut, ul):
    p, r = model
    t, lam = _lam(ut, p, r), _lam(ul, p, r)
    scale = 1 + (abs(t) + abs(lam)) * np.abs(r).max()
    assert float(_cgfs(p, r, t, lam)["direct"]) == pytest.approx(np_psi(p, r, t, lam), rel=1e-11, abs=1e-12 * scale)
    at0 = _cgfs(p, r, 0.0, lam)
    assert float(at0["direct"]) == 0.0
    # ψ'(0) = Λ'(λ) = E_{φ_λ} r
    phi = np_tilt(p, r, lam)
    assert float(at0["d"]) == pytest.approx(float(phi @ r), rel=1e-10, abs=1e-12 * np.abs(r).max())


@given(S.normal_models(), st.floats(-30.0, 30.0), st.floats(-5.0, 5.0))
def test_cgf_via_renyi_cross_entropy(model, ut, ul):
    """ψ_λ(t) = t log C − t H_{1+t}(φ_λ; q_r) for every real t (orders 1+t < 0 included)."""
    p, r = model
    t, lam = _lam(ut, p, r), _lam(ul, p, r)
    s = p > 0
    log_c = float(logsumexp(r[s]))
    psi = np_psi(p, r, t, lam)
    scale = 1e-10 * (1 + abs(t) * (abs(log_c) + np.abs(r).max()))
    assert float(_cgfs(p, r, t, lam)["rce"]) == pytest.approx(psi, rel=1e-9, abs=scale)
    # the identity itself, with a NumPy Rényi cross-entropy (α = 1 + t ≠ 1)
    if abs(t) > 1e-3:
        q_r = np.where(s, np.exp(r - log_c), 0.0)
        phi = np_tilt(p, r, lam)
        h = float(logsumexp(t * np.log(q_r[s]), b=phi[s])) / (-t)
        assert t * log_c - t * h == pytest.approx(psi, rel=1e-9, abs=scale)
    q_r_pkg = np.asarray(aa.reward_softmax(p, r))
    np.testing.assert_allclose(q_r_pkg[s], np.exp(r[s] - log_c), rtol=1e-13)
    assert np.all(q_r_pkg[~s] == 0)


@pytest.mark.parametrize("t", [-7.0, -2.0, -1.0, -0.5, 0.0, 0.5, 3.0])
def test_cgf_renyi_forms_at_fixed_orders(t):
    """Orders 1+t on both sides of 0 and 1, through both Rényi forms."""
    p = np.array([0.5, 0.0, 0.3, 0.2])
    r = np.array([0.1, 9.0, -1.0, 2.0])
    for lam in (-0.7, 0.4, 2.0):
        psi = np_psi(p, r, t, lam)
        assert float(aa.cgf_via_renyi_cross_entropy(p, r, t, lam)) == pytest.approx(psi, rel=1e-11, abs=1e-13)
        assert float(aa.cgf_via_renyi_divergence(p, r, t, lam)) == pytest.approx(psi, rel=1e-11, abs=1e-13)
        assert float(aa.scaled_cgf(p, r, t, lam)) == pytest.approx(psi, rel=1e-12, abs=1e-14)


@given(S.normal_models(), st.floats(-30.0, 30.0), st.floats(0.1, 10.0), st.booleans())
def test_cgf_via_renyi_divergence(model, ut, ul, neg):
    """ψ_λ(t) = (α − 1)[Λ(λ) + D_α(φ_λ||p)], α = 1 + t/λ, λ ≠ 0 (α of any sign)."""
    p, r = model
    t, lam = _lam(ut, p, r), _lam(-ul if neg else ul, p, r)
    psi = np_psi(p, r, t, lam)
    scale = 1e-10 * (1 + (abs(t) + abs(lam)) * np.abs(r).max())
    assert float(_cgfs(p, r, t, lam)["rd"]) == pytest.approx(psi, rel=1e-9, abs=scale)


# ---------------------------------------------------------------------------
# scaled cumulants
# ---------------------------------------------------------------------------


@given(S.normal_models(), st.floats(-10.0, 10.0))
def test_scaled_cumulants_match_numpy(model, ul):
    p, r = model
    lam = _lam(ul, p, r)
    got = np.asarray(_cumulants_j(p, r, _ORDER, lam))
    ref = np_cumulants(p, r, lam, _ORDER)
    # rounding scale: the spread of r plus the rounding of its level
    sc = np.ptp(r) + 1e-6 * np.abs(r).max()
    for j in range(_ORDER):
        assert got[j] == pytest.approx(
            ref[j], rel=1e-7, abs=1e-10 * sc ** (j + 1) + 1e-15 * abs(ref[0]) * (j == 0) + 1e-300
        )


@given(st.sampled_from((2, 3, 5)).flatmap(lambda k: S.normal_models(k=k)), st.floats(-3.0, 3.0))
def test_scaled_cumulants_are_per_token_cumulants_of_r_n(model, ul):
    """κ_j(r_n)/n from the exact law of r_n under φ_λ^n (n = 3, full enumeration)."""
    p, r = model
    lam = _lam(ul, p, r)
    phi = np_tilt(p, r, lam)
    n = 3
    prob = phi[:, None, None] * phi[None, :, None] * phi[None, None, :]
    rn = r[:, None, None] + r[None, :, None] + r[None, None, :]
    prob, rn = prob.ravel(), rn.ravel()
    mean = float(prob @ rn)
    m = [1.0] + [float(prob @ (rn - mean) ** j) for j in range(1, 5)]
    k2, k3, k4 = m[2], m[3], m[4] - 3 * m[2] ** 2
    got = np.asarray(_cumulants_j(p, r, _ORDER, lam))[:4]
    sc = np.ptp(r) + 1e-6 * np.abs(r).max()
    np.testing.assert_allclose(
        got, np.array([mean, k2, k3, k4]) / n, rtol=1e-7, atol=1e-10 * sc**4 + 1e-15 * sc + 1e-300
    )


def test_cumulants_edge_cases():
    # constant reward: a point mass
    got = _cumulants_j(np.array([0.2, 0.0, 0.8]), np.array([3.0, 1.0, 3.0]), _ORDER, 1.5)
    np.testing.assert_allclose(got, [3.0, 0, 0, 0, 0], atol=1e-12)
    # Bernoulli(a): κ1 = a, κ2 = a(1−a), κ3 = a(1−a)(1−2a), κ4 = a(1−a)(1−6a(1−a))
    a = 0.3
    ref = [a, a * (1 - a), a * (1 - a) * (1 - 2 * a), a * (1 - a) * (1 - 6 * a * (1 - a))]
    np.testing.assert_allclose(
        _cumulants_j(np.array([1 - a, a]), np.array([0.0, 1.0]), _ORDER, 0.0)[:4], ref, rtol=1e-12
    )
    # batch: shape batch + (order,), each row its own model
    out = aa.scaled_cumulants(np.array([[0.5, 0.5], [0.2, 0.8]]), np.array([0.0, 1.0]), 2, np.array([0.0, 1.0]))
    assert out.shape == (2, 2)
    a1 = 0.8 * np.e / (0.2 + 0.8 * np.e)
    np.testing.assert_allclose(out, [[0.5, 0.25], [a1, a1 * (1 - a1)]], rtol=1e-12)


# ---------------------------------------------------------------------------
# rate function
# ---------------------------------------------------------------------------


@given(S.normal_models(nonconstant=True), st.floats(0.0, 1.0), st.floats(-5.0, 5.0))
def test_rate_function_matches_mpmath_inside(model, u, ul):
    """1e-9 relative accuracy inside (r_min, r_max), away from the ill-conditioned mean."""
    p, r = model
    lo, hi = _span(p, r)
    lam = _lam(ul, p, r)
    x = lo + u * (hi - lo)
    assume(lo < x < hi)
    mean = float(np_tilt(p, r, lam) @ r)
    assume(abs(x - mean) > 1e-4 * (hi - lo))
    ref = mp_rate(p, r, x, lam)
    assert float(rate(p, r, x, lam)) == pytest.approx(float(ref), rel=1e-9)


@given(S.normal_models(nonconstant=True), st.floats(-10.0, -9.0), st.floats(-5.0, 5.0), st.booleans())
def test_rate_function_next_to_the_ends(model, log_d, ul, top):
    """x within 1e-9 (relative to the span) of r_max or r_min: finite, 1e-9 accurate."""
    p, r = model
    lo, hi = _span(p, r)
    lam = _lam(ul, p, r)
    d = 10.0**log_d * (hi - lo)
    x = hi - d if top else lo + d
    assume(lo < x < hi)
    got = float(rate(p, r, x, lam))
    assert np.isfinite(got)
    assert got == pytest.approx(float(mp_rate(p, r, x, lam)), rel=1e-9)


@pytest.mark.parametrize(
    "p,r,x",
    [
        # two rewards 8e-7 apart at the bottom, x 2e-9 above r_min: t_x ≈ -8e6, where the
        # value's μ c_μ - λ c_λ - t x must be summed without cancellation
        (
            [0.14618278177666566, 0.0, 0.0, 0.11108678386649434, 0.0, 0.39017737452406426, 0.0, 0.35255305983277585],
            [-0.6745869708635879, -0.6745869708635879, 0.03853460332063907, -0.6745877957242632]
            + [-0.042271462800299364, 0.14450389867978375, -0.23968858294734874, -0.4962760092281442],
            -0.6745877936825109,
        ),
        # the next reward up from r_min has p ≈ 6e-11: far from the root φ_μ is a point mass and
        # Λ'' underflows, so the local model (Halley step, predicted residual) means nothing there
        (
            [4.1078774711773824e-07, 6.044821931827022e-11, 0.024885954517278524, 1.908932348454306e-06]
            + [0.7968063457853529, 0.12374228569203062, 0.0006669845162764749, 0.05389610970851752],
            [0.6526170448259485, -0.593905312797165, -0.6992835820298431, 0.8032224463315891]
            + [-0.15868726084389517, 0.9264691564150427, -0.016609092501206346, -0.08723916859808933],
            -0.6992835818459703,
        ),
    ],
)
def test_rate_function_next_to_the_end_with_a_huge_tilt(p, r, x):
    """x a hair above r_min with an extreme neighbour: I (≈ 2-4) is well-conditioned, so 1e-12 relative."""
    p, r = np.array(p), np.array(r)
    got = float(rate(p, r, x, 0.0))
    assert got == pytest.approx(float(mp_rate(p, r, x, 0.0, dps=60)), rel=1e-12)


@given(S.normal_models(), st.floats(-5.0, 5.0))
def test_rate_function_boundary_values(model, ul):
    """I = −log φ_λ(A) at r_max (A the argmax set), likewise at r_min; +inf outside; 0 at the mean."""
    p, r = model
    lo, hi = _span(p, r)
    lam = _lam(ul, p, r)
    phi = np_tilt(p, r, lam)
    s = p > 0
    with mp.workdps(40):
        w = [mp.mpf(pi) * mp.exp(mp.mpf(lam) * mp.mpf(ri)) for pi, ri in zip(p, r, strict=False)]
        z = mp.fsum(wi for wi, si in zip(w, s, strict=False) if si)
        top = float(-mp.log(mp.fsum(wi for wi, si, ri in zip(w, s, r, strict=False) if si and ri == hi) / z))
        bot = float(-mp.log(mp.fsum(wi for wi, si, ri in zip(w, s, r, strict=False) if si and ri == lo) / z))
    xs = np.array([hi, lo, hi + 1e-9 * max(1, abs(hi)), lo - 1e-9 * max(1, abs(lo)), np.inf, -np.inf])
    got = np.asarray(rate(p, r, xs, lam))
    if hi > lo:
        assert got[0] == pytest.approx(top, rel=1e-10, abs=1e-15)
        assert got[1] == pytest.approx(bot, rel=1e-10, abs=1e-15)
    else:
        # a constant reward: the mean is the only finite point (0 up to rounding in Σp)
        assert got[0] == got[1] and abs(got[0]) <= 1e-15
    assert np.all(got[2:] == np.inf)
    mean = float(np.clip(phi @ r, lo, hi))
    at_mean = float(rate(p, r, mean, lam))
    assert 0.0 <= at_mean <= 1e-14
    if hi > lo:  # and only there: positive at any other point of [r_min, r_max]
        x = mean + 0.5 * (hi - mean) if hi - mean > 0.5 * (hi - lo) else mean - 0.5 * (mean - lo)
        assert float(rate(p, r, x, lam)) > 0.0


@given(S.normal_models(nonconstant=True), st.floats(0.03, 0.97), st.floats(-3.0, 3.0))
def test_rate_function_is_the_legendre_transform(model, u, ul):
    """I_λ(x) (package, KL form) = KL(φ_{λ+t_x}||φ_λ) (NumPy, t_x by brentq) = sup_t [tx − ψ(t)] (SciPy)."""
    p, r = model
    lo, hi = _span(p, r)
    lam = _lam(ul, p, r)
    x = lo + u * (hi - lo)
    span = hi - lo
    # KL form with an independent root find of Λ'(λ+t) = x
    mean_at = lambda t: float(np_tilt(p, r, lam + t) @ r) - x  # noqa: E731
    T = 1.0
    while mean_at(T / span) < 0:
        T *= 2
    while mean_at(-T / span) > 0:
        T *= 2
    t_x = brentq(mean_at, -T / span, T / span, xtol=1e-14 / span, rtol=1e-15)
    kl_form = float(np.sum(rel_entr(np_tilt(p, r, lam + t_x), np_tilt(p, r, lam))))
    sup, t_opt = scipy_legendre(lambda t: -(t * x - np_psi(p, r, t, lam)), -2 * T / span, 2 * T / span)
    got = float(rate(p, r, x, lam))
    tol = 1e-9 * (1 + abs(t_x) * np.abs(r).max())
    assert kl_form == pytest.approx(sup, rel=1e-7, abs=tol)
    assert got == pytest.approx(sup, rel=1e-7, abs=tol)
    assert got == pytest.approx(kl_form, rel=1e-9, abs=tol)


@given(S.normal_models(nonconstant=True), st.floats(-8.0, 8.0), st.floats(-3.0, 3.0))
def test_convex_duality(model, ut, ul):
    """ψ_λ(t) = sup_x [t x − I_λ(x)]: Fenchel–Young on a grid, equality at x = Λ'(λ+t), and SciPy's sup."""
    p, r = model
    lo, hi = _span(p, r)
    span = hi - lo
    t, lam = ut / span, _lam(ul, p, r)
    psi = np_psi(p, r, t, lam)
    xs = np.linspace(lo, hi, _NX)
    I = np.asarray(rate(p, r, xs, lam))
    assert np.all(np.isfinite(I)) and np.all(I >= 0)
    tol = 1e-9 * (1 + abs(t) * np.abs(r).max())
    assert np.all(t * xs - I <= psi + tol)  # Fenchel–Young
    # convexity of I on the grid
    assert np.all(I[:-2] + I[2:] - 2 * I[1:-1] >= -1e-9 * (1 + I.max()))
    # the sup is attained at x_t = Λ'(λ+t)
    x_t = float(np_tilt(p, r, lam + t) @ r)
    if lo < x_t < hi:
        assert t * x_t - float(rate(p, r, x_t, lam)) == pytest.approx(psi, rel=1e-8, abs=tol)
    phi_t = np_tilt(p, r, lam + t)
    var_t = float(phi_t @ (r - x_t) ** 2)
    # SciPy's bounded search resolves x to ~1e-8·span: reliable when the maximiser
    # is inside and the peak of t x − I(x) (curvature 1/Λ''(λ+t)) is not razor-sharp
    if lo + 1e-3 * span < x_t < hi - 1e-3 * span and var_t > 1e-6 * span**2:
        sup, _ = scipy_legendre(lambda x: -(t * x - float(rate(p, r, x, lam))), lo, hi)
        assert sup == pytest.approx(psi, rel=1e-7, abs=1e-7 * (1 + abs(t) * np.abs(r).max()))


def mp_binary_kl(x, a):
    with mp.workdps(50):
        x, a = mp.mpf(float(x)), mp.mpf(a)
        return x * mp.log(x / a) + (1 - x) * mp.log((1 - x) / (1 - a))


@given(st.floats(0.01, 0.99), st.floats(-3.0, 3.0), st.floats(-5.0, -1.0), st.sampled_from([-1.0, 1.0]))
def test_bernoulli_rate_function_is_binary_kl(a, lam, log_off, sign):
    """p = Bernoulli(a), r = identity: I_λ(x) = KL(x || a_λ), a_λ = a e^λ/(1−a+a e^λ);
    checked at 1e-9 relative next to the mean (|x − a_λ| down to 1e-5)."""
    p = np.array([1 - a, a])
    r = np.array([0.0, 1.0])
    with mp.workdps(50):
        A = mp.mpf(a)
        a_lam = A * mp.exp(lam) / (1 - A + A * mp.exp(lam))
    x = float(a_lam) + sign * 10.0**log_off * min(float(a_lam), 1 - float(a_lam))
    assume(0 < x < 1)
    assert float(rate(p, r, x, lam)) == pytest.approx(float(mp_binary_kl(x, a_lam)), rel=1e-9)
    # the endpoints: −log a_λ and −log(1 − a_λ); just inside 1: within 1e-9
    assert float(rate(p, r, 1.0, lam)) == pytest.approx(float(-mp.log(a_lam)), rel=1e-12)
    assert float(rate(p, r, 0.0, lam)) == pytest.approx(float(-mp.log(1 - a_lam)), rel=1e-12)
    x = 1.0 - 1e-9
    assert float(rate(p, r, x, lam)) == pytest.approx(float(mp_binary_kl(x, a_lam)), rel=1e-9)


def test_rate_function_k1000_and_constant_reward():
    rng = np.random.default_rng(5)
    k = 1000
    p = rng.dirichlet(np.full(k, 0.5))
    p[:50] = 0.0
    p /= p.sum()
    r = rng.normal(size=k)
    r[:50] = 10.0  # the largest rewards sit on zero-probability letters
    r[50:52] = 3.5  # a tie at the top of the support
    lo, hi = _span(p, r)
    assert hi == 3.5
    xs = np.array([lo + 0.1 * (hi - lo), 0.5, hi - 1e-9 * (hi - lo), hi, 10.0])
    got = np.asarray(aa.rate_function(p, r, xs, 0.3))
    for x, g in zip(xs[:3], got, strict=False):
        assert g == pytest.approx(float(mp_rate(p, r, x, 0.3)), rel=1e-9)
    phi = np_tilt(p, r, 0.3)
    assert got[3] == pytest.approx(-np.log(phi[50] + phi[51]), rel=1e-12)
    assert got[4] == np.inf
    # constant reward: 0 at the constant, +inf elsewhere
    assert float(aa.rate_function([0.3, 0.7], [2.0, 2.0], 2.0)) == 0.0
    assert float(aa.rate_function([0.3, 0.7], [2.0, 2.0], 2.0 + 1e-12)) == np.inf


# ---------------------------------------------------------------------------
# gradients, batching, dtypes, NaN-freedom
# ---------------------------------------------------------------------------

_P = np.array([0.4, 0.0, 0.25, 0.2, 0.15])
_R = np.array([0.3, 5.0, -1.0, 0.7, 2.0])
_rate_j = jax.jit(aa.rate_function)


@pytest.mark.parametrize("x,lam", [(-0.5, 0.0), (0.9, 1.3), (1.95, -0.4)])
def test_rate_function_gradients(x, lam):
    check_grads(lambda x_: _rate_j(_P, _R, x_, lam), (x,), order=1, modes=("fwd", "rev"))
    check_grads(lambda r_: _rate_j(_P, r_, x, lam), (_R,), order=1, modes=("rev",))
    # ∂I/∂x = t_x with Λ'(λ + t_x) = x (envelope theorem), t_x by brentq
    t_x = brentq(lambda t: float(np_tilt(_P, _R, lam + t) @ _R) - x, -50, 50, xtol=1e-14)
    assert float(jax.grad(_rate_j, argnums=2)(_P, _R, x, lam)) == pytest.approx(t_x, rel=1e-8)
    # ∂²I/∂x² = 1/Λ''(λ + t_x) (I is the Legendre transform of a strictly convex ψ)
    phi = np_tilt(_P, _R, lam + t_x)
    var = float(phi @ (_R - phi @ _R) ** 2)
    d2 = float(jax.grad(jax.grad(_rate_j, argnums=2), argnums=2)(_P, _R, x, lam))
    assert d2 == pytest.approx(1.0 / var, rel=1e-8)
    # ∂I/∂λ = Λ'(λ) − x
    assert float(jax.grad(_rate_j, argnums=3)(_P, _R, x, lam)) == pytest.approx(
        float(np_tilt(_P, _R, lam) @ _R) - x, rel=1e-8, abs=1e-12
    )
    check_grads(lambda t_: aa.scaled_cgf(_P, _R, t_, lam), (x,), order=2, modes=("fwd", "rev"))


def test_vmap_matches_loop():
    xs = np.linspace(-1.2, 2.2, 9)
    got = np.asarray(jax.vmap(aa.rate_function, in_axes=(None, None, 0, None))(_P, _R, xs, 0.5))
    ref = np.array([rate(_P, _R, x, 0.5) for x in xs])
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    np.testing.assert_allclose(got, ref, rtol=1e-13)
    ts = np.linspace(-3, 3, 5)
    np.testing.assert_allclose(
        jax.vmap(aa.cgf_via_renyi_cross_entropy, in_axes=(None, None, 0, None))(_P, _R, ts, 0.5),
        [np_psi(_P, _R, t, 0.5) for t in ts],
        rtol=1e-11,
        atol=1e-13,
    )


def test_float32_smoke():
    p32, r32 = _P.astype(np.float32), _R.astype(np.float32)
    for f, args in [
        (aa.rate_function, (np.float32(0.9), np.float32(0.5))),
        (aa.rate_function, (np.float32(1.99), np.float32(0.0))),
        (aa.scaled_cgf, (np.float32(1.5), np.float32(0.5))),
        (aa.cgf_via_renyi_cross_entropy, (np.float32(-2.5), np.float32(0.5))),
        (aa.cgf_via_renyi_divergence, (np.float32(-2.5), np.float32(0.5))),
    ]:
        lo = f(p32, r32, *args)
        hi = f(_P, _R, *[np.float64(a) for a in args])
        assert lo.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(lo)))
        np.testing.assert_allclose(np.asarray(lo, np.float64), hi, rtol=1e-4, atol=1e-6)


@given(S.normal_models(), st.one_of(st.floats(-1e3, 1e3), st.sampled_from([np.inf, -np.inf])), st.floats(-50.0, 50.0))
def test_no_nan_under_jit(model, x, lam):
    p, r = model
    assert not np.isnan(float(rate(p, r, x, lam)))
    assert float(rate(p, r, x, lam)) >= 0
    t = x if np.isfinite(x) else 1.0
    out = _cgfs(p, r, t, lam)
    assert np.isfinite(float(out["direct"])) and np.isfinite(float(out["rce"])) and np.isfinite(float(out["d"]))
    with np.errstate(over="ignore"):
        alpha_ok = lam != 0 and abs(np.float64(t) / np.float64(lam)) < 1e12
    if alpha_ok:  # the Rényi-divergence form needs a representable order α = 1 + t/λ
        assert np.isfinite(float(out["rd"]))
    assert np.all(np.isfinite(np.asarray(_cumulants_j(p, r, _ORDER, lam))))
