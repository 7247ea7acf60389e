"""Information measures (THEORY.md §2, §5): KL, cross-entropy, Rényi quantities.

References are written here: SciPy (``rel_entr``, ``entropy``) for the Shannon
quantities and 40-digit mpmath sums for the Rényi ones, with the conventions
0·log 0 = 0 and +inf where the support condition fails spelled out
independently of the package.
"""

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import entropy as sp_entropy

import asymalign as aa
from asymalign import testing as S
from asymalign.testing import reference as ref

# ---------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------


np_kl = ref.kl  # the shared float64 twin (scipy.special.rel_entr)


def np_cross_entropy(q, s):
    on = q > 0
    if np.any(s[on] == 0):
        return np.inf
    return float(-np.sum(q[on] * np.log(s[on])))


def mp_renyi_divergence(q, p, alpha):
    """(1/(α−1)) log Σ_{q>0} q^α p^{1−α}; a q>0=p letter makes it +inf (α>1) or drops out (α<1)."""
    with mp.workdps(40):
        a = mp.mpf(float(alpha))
        if alpha == 0:
            return -mp.log(mp.fsum(mp.mpf(pi) for qi, pi in zip(q, p, strict=False) if qi > 0))
        terms = []
        for qi, pi in zip(q, p, strict=False):
            if qi == 0:
                continue
            if pi == 0:
                if alpha > 1:
                    return mp.inf
                continue
            terms.append(mp.mpf(qi) ** a * mp.mpf(pi) ** (1 - a))
        return mp.log(mp.fsum(terms)) / (a - 1)


def mp_renyi_cross_entropy(q, s, alpha):
    """(1/(1−α)) log Σ_{q>0} q s^{α−1}; a q>0=s letter gives +inf (α<1) or a 0 term (α>1)."""
    with mp.workdps(40):
        a = mp.mpf(float(alpha))
        terms = []
        for qi, si in zip(q, s, strict=False):
            if qi == 0:
                continue
            if si == 0:
                if alpha < 1:
                    return mp.inf
                continue
            terms.append(mp.mpf(qi) * mp.mpf(si) ** (a - 1))
        tot = mp.fsum(terms)
        if tot == 0:
            return mp.inf
        return mp.log(tot) / (1 - a)


def _close(got, ref, rtol=1e-10, atol=1e-12):
    ref = float(ref)
    if np.isinf(ref):
        assert got == ref
    else:
        assert got == pytest.approx(ref, rel=rtol, abs=atol)


pairs = st.sampled_from(S.SIZES).flatmap(lambda k: st.tuples(S.probs(k=k), S.probs(k=k)))
# q absolutely continuous w.r.t. p (so every divergence is finite)
ac_pairs = S.probs().flatmap(lambda p: st.tuples(S.abs_continuous(p), st.just(p)))

_renyi_div_j = jax.jit(aa.renyi_divergence)
_renyi_ce_j = jax.jit(aa.renyi_cross_entropy)
_renyi_ent_j = jax.jit(aa.renyi_entropy)

# ---------------------------------------------------------------------------
# Shannon quantities
# ---------------------------------------------------------------------------


@given(pairs)
def test_kl_cross_entropy_entropy_match_scipy(qp):
    q, p = qp
    _close(float(aa.kl(q, p)), np_kl(q, p))
    _close(float(aa.cross_entropy(q, p)), np_cross_entropy(q, p))
    _close(float(aa.entropy(p)), sp_entropy(p))
    # KL = H(q; p) − H(q) whenever finite
    if np.isfinite(np_kl(q, p)):
        assert float(aa.kl(q, p)) == pytest.approx(
            float(aa.cross_entropy(q, p)) - float(aa.entropy(q)), rel=1e-9, abs=1e-12
        )
    assert float(aa.kl(p, p)) == pytest.approx(0.0, abs=1e-15)


def test_zero_conventions():
    half = np.array([0.5, 0.5])
    e0, e1 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert float(aa.kl(half, e0)) == np.inf  # q > 0 = p
    assert float(aa.kl(e0, half)) == pytest.approx(np.log(2), rel=1e-15)  # 0 log 0 = 0
    assert float(aa.kl(e0, e0)) == 0.0  # 0 log(0/0) = 0
    assert float(aa.cross_entropy(half, e0)) == np.inf
    assert float(aa.cross_entropy(e1, half)) == pytest.approx(np.log(2), rel=1e-15)
    assert float(aa.entropy(e0)) == 0.0
    # Rényi divergence: support failure is +inf for α >= 1 only
    for a in (1.0, 1.5, 7.0, np.inf):
        assert float(aa.renyi_divergence(half, e0, a)) == np.inf
    for a in (0.0, 0.3, 0.9):
        # only the letter with p > 0 contributes: log(0.5^α 1^{1-α})/(α−1)
        assert float(aa.renyi_divergence(half, e0, a)) == pytest.approx(a * np.log(0.5) / (a - 1), abs=1e-15)
    assert float(aa.renyi_divergence(e0, half, 0.0)) == pytest.approx(np.log(2), rel=1e-15)  # −log p(supp q)
    # Rényi cross-entropy: q > 0 = s is +inf for α <= 1, a zero term for α > 1
    q = np.array([0.5, 0.5, 0.0])
    s = np.array([0.0, 0.25, 0.75])
    for a in (0.0, 0.5, 1.0):
        assert float(aa.renyi_cross_entropy(q, s, a)) == np.inf
    for a in (2.0, 3.5, np.inf):
        expected = float(mp_renyi_cross_entropy(q, s, a)) if np.isfinite(a) else -np.log(0.25)
        assert float(aa.renyi_cross_entropy(q, s, a)) == pytest.approx(expected, rel=1e-13)
    # s vanishing on all of supp q: +inf for every order
    for a in (0.0, 0.5, 1.0, 2.0, np.inf):
        assert float(aa.renyi_cross_entropy(e0, e1, a)) == np.inf
    # Rényi entropy special orders
    p = np.array([0.5, 0.0, 0.3, 0.2])
    assert float(aa.renyi_entropy(p, 0.0)) == pytest.approx(np.log(3), rel=1e-15)
    assert float(aa.renyi_entropy(p, 1.0)) == pytest.approx(sp_entropy(p), rel=1e-14)
    assert float(aa.renyi_entropy(p, np.inf)) == pytest.approx(-np.log(0.5), rel=1e-15)
    assert float(aa.renyi_entropy(p, 2.0)) == pytest.approx(-np.log(np.sum(p**2)), rel=1e-14)


# ---------------------------------------------------------------------------
# Rényi quantities against mpmath
# ---------------------------------------------------------------------------


@given(pairs, S.alphas(0.0, 60.0))
def test_renyi_divergence_matches_mpmath(qp, alpha):
    q, p = qp
    _close(float(_renyi_div_j(q, p, alpha)), mp_renyi_divergence(q, p, alpha), rtol=1e-9, atol=1e-11)


@given(pairs, S.alphas(0.0, 60.0))
def test_renyi_cross_entropy_matches_mpmath(qs, alpha):
    q, s = qs
    _close(float(_renyi_ce_j(q, s, alpha)), mp_renyi_cross_entropy(q, s, alpha), rtol=1e-9, atol=1e-11)


@given(S.probs(), S.alphas(0.0, 60.0))
def test_renyi_entropy_matches_mpmath(p, alpha):
    ref = mp_renyi_cross_entropy(p, p, alpha)  # H_α(p) = H_α(p; p)
    _close(float(_renyi_ent_j(p, alpha)), ref, rtol=1e-9, atol=1e-11)
    with mp.workdps(40):
        direct = mp.log(mp.fsum(mp.mpf(x) ** mp.mpf(alpha) for x in p if x > 0)) / (1 - mp.mpf(alpha))
    _close(float(_renyi_ent_j(p, alpha)), direct, rtol=1e-9, atol=1e-11)


@given(ac_pairs)
def test_renyi_monotone_in_alpha(qp):
    """D_α(q||p) is nondecreasing in α; H_α(q; s) and H_α(p) are nonincreasing."""
    q, p = qp
    grid = np.array([0.0, 0.1, 0.5, 0.9, 0.999, 1.0, 1.001, 1.5, 2.0, 5.0, 20.0, 1e3, np.inf])
    d = np.asarray(_renyi_div_j(q[None], p[None], grid))
    h = np.asarray(_renyi_ce_j(q[None], p[None], grid))
    e = np.asarray(_renyi_ent_j(p[None], grid))
    tol = 1e-10 * (1 + np.abs(d[np.isfinite(d)]).max(initial=0))
    assert np.all(np.diff(d) >= -tol)
    assert np.all(np.diff(h) <= 1e-10 * (1 + np.abs(h).max()))
    assert np.all(np.diff(e) <= 1e-10 * (1 + np.abs(e).max()))
    assert np.all(d >= -1e-11)  # rounding ~ eps/|α − 1| next to α = 1


# ---------------------------------------------------------------------------
# the α -> 1 and α -> ∞ limits
# ---------------------------------------------------------------------------


@given(ac_pairs, st.sampled_from([1e-6, -1e-6, 1e-4, -1e-4]))
def test_alpha_to_one_limits(qp, h):
    """Near α = 1 the Rényi quantities approach the Shannon ones at rate
    h Var/2: D_{1+h} = KL + h Var_q(log q/p)/2 + O(h²), likewise for H."""
    q, p = qp
    on = q > 0
    z = np.log(q[on] / p[on])
    var_z = float(q[on] @ (z - q[on] @ z) ** 2)
    kl = np_kl(q, p)
    assert float(aa.renyi_divergence(q, p, 1.0)) == pytest.approx(kl, rel=1e-12, abs=1e-15)
    d = float(aa.renyi_divergence(q, p, 1.0 + h))
    assert abs(d - kl) <= abs(h) * (var_z + 1e-3) + 1e-9
    ls = np.log(p[on])
    var_ls = float(q[on] @ (ls - q[on] @ ls) ** 2)
    ce = np_cross_entropy(q, p)
    assert float(aa.renyi_cross_entropy(q, p, 1.0)) == pytest.approx(ce, rel=1e-12, abs=1e-15)
    hce = float(aa.renyi_cross_entropy(q, p, 1.0 + h))
    assert abs(hce - ce) <= abs(h) * (var_ls + 1e-3) + 1e-9
    H = sp_entropy(p)
    lp = np.log(p[p > 0])
    var_lp = float(p[p > 0] @ (lp - p[p > 0] @ lp) ** 2)
    assert float(aa.renyi_entropy(p, 1.0)) == pytest.approx(H, rel=1e-12, abs=1e-15)
    assert abs(float(aa.renyi_entropy(p, 1.0 + h)) - H) <= abs(h) * (var_lp + 1e-3) + 1e-9


@given(ac_pairs, st.sampled_from([10.0, 100.0, 1e3, 1e4]))
def test_alpha_to_infinity_limits(qp, alpha):
    """D_∞ = log max q/p, H_∞(q; s) = −log max_{q>0} s, H_∞(p) = −log max p, and the
    finite-α values are within the exact gap −log q(x_m)/(α−1) of the limit."""
    q, p = qp
    on = q > 0
    ratio = np.full(len(q), -np.inf)
    ratio[on] = np.log(q[on]) - np.log(p[on])
    d_inf = ratio.max()
    assert float(aa.renyi_divergence(q, p, np.inf)) == pytest.approx(d_inf, rel=1e-13, abs=1e-15)
    qm = q[ratio == d_inf].max()
    d = float(aa.renyi_divergence(q, p, alpha))
    assert d <= d_inf + 1e-12 * (1 + abs(d_inf))
    assert d_inf - d <= -np.log(qm) / (alpha - 1) + 1e-12 * (1 + abs(d_inf))

    smax = p[on].max()
    h_inf = -np.log(smax)
    assert float(aa.renyi_cross_entropy(q, p, np.inf)) == pytest.approx(h_inf, rel=1e-13, abs=1e-15)
    qm = q[on][p[on] == smax].sum()
    hce = float(aa.renyi_cross_entropy(q, p, alpha))
    assert h_inf - 1e-12 * (1 + h_inf) <= hce <= h_inf - np.log(qm) / (alpha - 1) + 1e-12 * (1 + h_inf)

    pmax = p.max()
    assert float(aa.renyi_entropy(p, np.inf)) == pytest.approx(-np.log(pmax), rel=1e-13, abs=1e-15)
    he = float(aa.renyi_entropy(p, alpha))
    assert -np.log(pmax) - 1e-12 <= he <= -np.log(pmax) * alpha / (alpha - 1) + 1e-12


# ---------------------------------------------------------------------------
# batching, jit, dtype
# ---------------------------------------------------------------------------


def test_batching_and_jit():
    rng = np.random.default_rng(3)
    q = rng.dirichlet(np.ones(5), size=4)
    p = rng.dirichlet(np.ones(5), size=4)
    q[0, 1] = 0.0
    q[0] /= q[0].sum()
    alphas = np.array([0.0, 0.5, 2.0, np.inf])
    got = np.asarray(aa.renyi_divergence(q, p, alphas))
    ref = [float(aa.renyi_divergence(a, b, c)) for a, b, c in zip(q, p, alphas, strict=False)]
    np.testing.assert_allclose(got, ref, rtol=1e-14)
    np.testing.assert_allclose(jax.vmap(aa.renyi_divergence)(q, p, alphas), ref, rtol=1e-14)
    np.testing.assert_allclose(aa.kl(q, p), [np_kl(a, b) for a, b in zip(q, p, strict=False)], rtol=1e-12)
    np.testing.assert_allclose(
        jax.jit(aa.renyi_cross_entropy)(q, p, 3.0),
        [float(mp_renyi_cross_entropy(a, b, 3.0)) for a, b in zip(q, p, strict=False)],
        rtol=1e-12,
    )
    # float32 follows the input dtype and stays close to float64
    d32 = aa.renyi_divergence(q.astype(np.float32), p.astype(np.float32), np.float32(2.0))
    assert d32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(d32, np.float64), aa.renyi_divergence(q, p, 2.0), rtol=1e-4)


@given(pairs, st.one_of(st.sampled_from([0.0, 1.0, np.inf]), st.floats(0.0, 1e4)))
def test_no_nan_under_jit(qs, alpha):
    q, s = qs
    for f in (_renyi_div_j, _renyi_ce_j):
        assert not np.isnan(float(f(q, s, alpha)))
    assert not np.isnan(float(_renyi_ent_j(q, alpha)))
    val = float(_renyi_div_j(q, s, alpha))
    assert val >= -1e-12  # a divergence, possibly +inf
