"""Exact law of the total reward r_n under p^n (THEORY.md §7).

Every law is checked against an independent float64 NumPy reference written
here: brute-force enumeration of all k^n sequences (itertools), a stars-and-bars
types enumeration, a log-space k = 3 reference at n = 10^4 (loop over c2,
vectorised over c1, ``np.logaddexp`` into the levels) and a boolean
reachability recursion for lattices with gaps. Nothing is compared with
numbers produced by the code under test.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.special import gammaln, logsumexp

import asymalign as aa
from asymalign import _lattice as lattice_kernels  # the windows' resolution score is not public
from asymalign import testing as S
from asymalign.testing import reference as ref

# ---------------------------------------------------------------------------
# independent references
# ---------------------------------------------------------------------------


# merge_levels, brute_force_law (all k^n sequences) and types_law (stars and
# bars) are the shared float64 twins of asymalign.testing.reference.
_merge_levels = ref.merge_levels
brute_force_law = ref.brute_force_law
types_law_np = ref.types_law


def lattice3_log_law(p, n):
    """log P(M_n = s), s = 0..2n, for letters m = 0, 1, 2 with probabilities p.

    Exact in log space: loop over c2, vectorised over c1, every type's term
    added into its level with np.logaddexp (for fixed c2 the levels
    s = c1 + 2 c2 are distinct). Error ~1e-11 absolute in log (gammaln of ~1e4).
    """
    lp = np.log(np.asarray(p, float))
    lf = gammaln(np.arange(n + 1) + 1.0)
    acc = np.full(2 * n + 1, -np.inf)
    c1_all = np.arange(n + 1)
    for c2 in range(n + 1):
        c1 = c1_all[: n - c2 + 1]
        c0 = n - c2 - c1
        v = lf[n] - lf[c0] - lf[c1] - lf[c2] + c0 * lp[0] + c1 * lp[1] + c2 * lp[2]
        s = c1 + 2 * c2
        acc[s] = np.logaddexp(acc[s], v)
    return acc


def reachable_np(m_letters, n):
    """Boolean reachability of s = 0..n·max(m) as a sum of n letters (NumPy)."""
    span = int(max(m_letters))
    reach = np.zeros(n * span + 1, dtype=bool)
    reach[0] = True
    for _ in range(n):
        new = np.zeros_like(reach)
        for m in m_letters:
            new[m:] |= reach[: reach.size - m]
        reach = new
    return reach


def assert_law_close(law, levels, logp, atol=1e-10, rtol=1e-10):
    """Same (sorted, distinct) levels and log-probabilities within atol + rtol·|log P|."""
    got_l = np.asarray(law.levels)
    got_p = np.asarray(law.log_prob)
    assert got_l.shape == levels.shape, (got_l, levels)
    np.testing.assert_allclose(got_l, levels, rtol=1e-12, atol=1e-9)
    assert np.all(np.isfinite(got_p))
    err = np.abs(got_p - logp)
    assert np.all(err <= atol + rtol * np.abs(logp)), (err.max(), got_p, logp)


def assert_well_formed(law):
    lv, lp = np.asarray(law.levels), np.asarray(law.log_prob)
    assert lv.ndim == 1 and lv.shape == lp.shape
    assert np.all(np.diff(lv) > 0), "levels must be sorted and distinct"
    assert np.all(np.isfinite(lp)), "reward_law returns only reachable levels"
    assert abs(logsumexp(lp)) <= 1e-12


# ---------------------------------------------------------------------------
# brute force (all k^n sequences)
# ---------------------------------------------------------------------------

# (p, r, n): zeros in p, ties, constant rewards, lattice (integer and
# non-integer), non-lattice real rewards.
BRUTE_CASES = {
    "zeros-and-ties": ([0.4, 0.0, 0.3, 0.1, 0.2], [0.0, 5.0, 1.0, 1.0, 2.0], 5),
    "real-ties": ([0.25, 0.25, 0.3, 0.2], [0.3, 1.7, 1.7, -0.4], 5),
    "constant": ([0.2, 0.3, 0.5], [2.5, 2.5, 2.5], 5),
    "constant-on-support": ([0.5, 0.5, 0.0], [1.0, 1.0, 7.0], 5),
    "quarter-lattice": ([0.1, 0.2, 0.3, 0.4], [0.5, 0.75, 1.25, 1.5], 5),
    "negative-lattice-gap": ([0.3, 0.3, 0.4], [-1.5, 0.0, 3.0], 5),
    "non-lattice": ([0.1, 0.2, 0.3, 0.4], [0.0, 1.0, math.sqrt(2.0), math.pi], 5),
    "tiny-probabilities": ([1e-6, 0.5, 0.5 - 1e-6], [4.0, 0.0, 1.0], 6),
    "bernoulli": ([0.7, 0.3], [0.0, 1.0], 8),
}


@pytest.mark.parametrize("method", ["auto", "types"])
@pytest.mark.parametrize("case", sorted(BRUTE_CASES))
def test_reward_law_matches_brute_force(case, method):
    p, r, n = BRUTE_CASES[case]
    levels, logp = brute_force_law(p, r, n)
    law = aa.reward_law(np.array(p), np.array(r), n, method=method)
    assert law.n == n
    assert_well_formed(law)
    assert_law_close(law, levels, logp)


@pytest.mark.parametrize("case", ["zeros-and-ties", "quarter-lattice", "negative-lattice-gap", "tiny-probabilities"])
def test_lattice_method_matches_brute_force(case):
    """The same cases through method="lattice" (and "auto" picks it for them)."""
    p, r, n = BRUTE_CASES[case]
    levels, logp = brute_force_law(p, r, n)
    law = aa.reward_law(np.array(p), np.array(r), n, method="lattice")
    assert_well_formed(law)
    assert_law_close(law, levels, logp)


@given(st.data())
def test_types_law_matches_brute_force_random(data):
    p, r = data.draw(S.models())
    # The oracle merges levels within 1e-9 (summation order); reward_law merges
    # rewards within 1e-12: distinct rewards closer than 1e-8 are ambiguous.
    gaps = np.diff(np.unique(r[p > 0]))
    assume(np.all(gaps > 1e-8 * max(1.0, float(np.max(np.abs(r))))))
    k = len(p)
    n = data.draw(st.sampled_from([n for n in (1, 2, 3, 4, 5) if k**n <= 4096]))
    levels, logp = brute_force_law(p, r, n)
    law = aa.reward_law(p, r, n, method="types")
    assert_well_formed(law)
    assert_law_close(law, levels, logp, atol=1e-9, rtol=1e-10)


# n for each alphabet size, keeping C(n+k-1, k-1) below ~2e4 types
_NS_FOR_K = {2: (1, 7, 40, 300), 3: (1, 7, 40), 5: (1, 7, 20), 8: (1, 7)}


@given(st.data())
def test_reward_law_sums_to_one_in_log_space(data):
    p, r = data.draw(S.models(lattice=True))
    n = data.draw(st.sampled_from(_NS_FOR_K[len(p)]))
    law = aa.reward_law(p, r, n, method="types")
    assert_well_formed(law)
    # also against the independent types enumeration
    levels, logp = types_law_np(p, r, n)
    assert_law_close(law, levels, logp, atol=1e-9, rtol=1e-10)


# ---------------------------------------------------------------------------
# types vs lattice
# ---------------------------------------------------------------------------

_LAT_N, _LAT_SPAN = 12, 4
_law_from_lattice_j = jax.jit(aa.law_from_lattice, static_argnums=(1,))
_scored_j = jax.jit(lattice_kernels._lattice_log_law_scored, static_argnums=(1, 2, 3))


@st.composite
def lattice_models(draw):
    """(p, r, log_w, a, h): rewards a + h m with m in 0.._LAT_SPAN, both ends present."""
    k = draw(st.sampled_from([3, 4, 5]))
    m = np.array([0, _LAT_SPAN] + draw(st.lists(st.integers(0, _LAT_SPAN), min_size=k - 2, max_size=k - 2)))
    p = draw(S.probs(k=k))
    p = 0.9 * p
    p[0] += 0.05
    p[1] += 0.05  # letters with m = 0 and m = span keep positive probability
    a = draw(st.sampled_from([0.0, -1.5, 0.5, 3.25]))
    h = draw(st.sampled_from([1.0, 0.25, 3.0, 0.1]))
    log_w = np.full(_LAT_SPAN + 1, -np.inf)
    for mi in range(_LAT_SPAN + 1):
        if p[m == mi].sum() > 0:
            log_w[mi] = np.log(p[m == mi].sum())
    return p, a + h * m, log_w, a, h


@given(lattice_models())
def test_types_and_lattice_agree(model):
    p, r, log_w, a, h = model
    n = _LAT_N
    types = aa.reward_law(p, r, n, method="types")
    lat = _law_from_lattice_j(jnp.asarray(log_w), n, a, h)
    lat_l, lat_p = np.asarray(lat.levels), np.asarray(lat.log_prob)
    assert lat_l.shape == (n * _LAT_SPAN + 1,)
    np.testing.assert_allclose(lat_l, n * a + h * np.arange(n * _LAT_SPAN + 1), rtol=1e-12, atol=1e-12)
    finite = np.isfinite(lat_p)
    # the lattice law's reachable levels are exactly the types law's levels
    np.testing.assert_allclose(np.asarray(types.levels), lat_l[finite], rtol=1e-12, atol=1e-9)
    # within 1e-9 relative where a window resolves the level well (score =
    # log(Q / max Q) in its best window >= -16); the strategy also draws letters
    # of tiny probability, whose dips are resolved only to the documented
    # relative error ~1e-16 e^{-score} (checked down to score -20)
    score = np.asarray(
        _scored_j(
            jnp.asarray(log_w),
            n,
            lattice_kernels.default_num_tilts(n, _LAT_SPAN),
            lattice_kernels._fft_size(n, _LAT_SPAN),
        )[1]
    )[finite]
    err = np.abs(np.asarray(types.log_prob) - lat_p[finite])
    bound = 1e-9 * (1.0 + np.abs(lat_p[finite])) + 100 * 1e-16 * np.exp(-score)
    checked = score >= -20.0
    assert np.all(err[checked] <= bound[checked]), (err.max(), score[np.argmax(err / bound)])
    # and both agree with the independent enumeration
    levels, logp = types_law_np(p, r, n)
    assert_law_close(types, levels, logp, atol=1e-9, rtol=1e-10)


@pytest.mark.parametrize(
    "p, r",
    [
        ([0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 2.0, 3.0]),
        ([0.3, 0.0, 0.3, 0.4], [0.5, 9.0, 0.75, 1.5]),
    ],
)
def test_reward_law_auto_lattice_matches_types_moderate_n(p, r):
    p, r, n = np.array(p), np.array(r), 60
    lat = aa.reward_law(p, r, n)  # auto: lattice
    levels, logp = types_law_np(p, r, n)
    assert_well_formed(lat)
    assert_law_close(lat, levels, logp, atol=1e-9, rtol=1e-10)


def test_lattice_tails_match_exact_reference_n_10000():
    """Relative accuracy at every level with P >= e^{-n Δ_max} (here: every level).

    The reference is exact in log space (error ~1e-11); we require an
    *absolute* log error <= 1e-8 at every such level, which is stricter than
    the relative requirement |Δ log P| <= 1e-8·max(1, |log P|).
    """
    n = 10_000
    p = np.array([0.6, 0.3, 0.1])
    a, h = -1.0, 1.5
    r = a + h * np.array([0.0, 1.0, 2.0])
    ref = lattice3_log_law(p, n)
    law = aa.reward_law(p, r, n)
    lv, lp = np.asarray(law.levels), np.asarray(law.log_prob)
    np.testing.assert_allclose(lv, n * a + h * np.arange(2 * n + 1), rtol=1e-13, atol=1e-9)
    dmax = -np.log(p[2])
    keep = ref >= -n * dmax - 1e-6
    assert keep.sum() == 2 * n + 1  # the top level has probability exactly e^{-n Δ_max}
    err = np.abs(lp - ref)[keep]
    assert err.max() <= 1e-8, (err.max(), int(np.argmax(err)))
    # plain FFT would have lost everything below ~1e-16 relative to the mode
    assert ref.min() < -20_000


@pytest.mark.parametrize("eps, n", [(1e-30, 6), (1e-20, 100), (1e-12, 100)])
def test_lattice_relative_accuracy_with_tiny_letter_probability(eps, n):
    """Relative accuracy 1e-8 at every level with P >= e^{-n Δ_max} (Δ_max = -log eps).

    p = (eps, 1/2, 1/2 - eps) on rewards (4, 0, 1): levels that need exactly j
    copies of the rare letter sit in deep dips of the law (P(7)^2 / (P(6) P(8))
    ~ eps^2 at n = 6), so they are never near the top of any tilted window; the
    lattice method must detect this and fall back to its exact log-space convolution.
    """
    p = np.array([eps, 0.5, 0.5 - eps])
    r = np.array([4.0, 0.0, 1.0])
    levels, logp = types_law_np(p, r, n)
    keep = logp >= n * np.log(eps)
    assert keep.all()
    law = aa.reward_law(p, r, n)  # auto: lattice
    assert np.asarray(law.levels).shape == levels.shape, "reachable levels are missing"
    err = np.abs(np.asarray(law.log_prob) - logp)
    assert np.all(err <= 1e-8 * np.maximum(1.0, np.abs(logp))), err.max()


# ---------------------------------------------------------------------------
# lattices with gaps: unreachable levels
# ---------------------------------------------------------------------------

_GAP_P = np.array([0.4, 0.1, 0.3, 0.2])
_GAP_M = np.array([0, 3, 4, 7])  # 1, 2, 5, 7n-1, ... unreachable


def test_lattice_with_gaps_absent_levels():
    n, a, h = 40, -1.5, 0.75
    r = a + h * _GAP_M
    law = aa.reward_law(_GAP_P, r, n)
    reach = reachable_np(_GAP_M, n)
    assert (~reach).sum() >= 6  # the test needs gaps (at both ends)
    assert_well_formed(law)
    expected_levels = a * n + h * np.flatnonzero(reach)
    levels, logp = types_law_np(_GAP_P, r, n)
    np.testing.assert_allclose(levels, expected_levels, atol=1e-12)
    assert_law_close(law, levels, logp, atol=1e-9, rtol=1e-10)

    # law_from_lattice: all lattice levels, unreachable ones exactly -inf
    log_w = np.full(8, -np.inf)
    log_w[_GAP_M] = np.log(_GAP_P)
    full = _law_from_lattice_j(jnp.asarray(log_w), n, a, h)
    fl = np.asarray(full.log_prob)
    assert fl.shape == reach.shape
    assert np.all(fl[~reach] == -np.inf)
    assert np.all(np.isfinite(fl[reach]))
    np.testing.assert_allclose(fl[reach], logp, rtol=1e-10, atol=1e-9)


def test_lattice_reachability_long_sequences():
    """Beyond span^2 the reachability recursion takes a shortcut; check it at n = 300."""
    n = 300
    law = aa.reward_law(_GAP_P, _GAP_M.astype(float), n)
    reach = reachable_np(_GAP_M, n)
    np.testing.assert_array_equal(np.asarray(law.levels), np.flatnonzero(reach).astype(float))
    assert_well_formed(law)


# ---------------------------------------------------------------------------
# jittable constructors: jit and vmap
# ---------------------------------------------------------------------------


@given(S.probs(k=5, zeros=True, min_support=2), st.sampled_from([1, 7, 300, 40000]))
def test_host_fisher_length_grid_matches_the_jitted_one(w, n):
    """reward_law finds its tilts on the host in NumPy (no compilation on a first
    call); the jittable constructors use the JAX kernel. Same bisections, same
    grid: the tilt grid agrees to the conditioning of the end tilts (the mean's
    slope there is the variance, ~1/n), the Fisher length to 1e-9."""
    w = w.copy()
    w[0] += 0.01  # the lattice's ends have positive weight
    w[-1] += 0.01
    with np.errstate(divide="ignore"):
        log_w = np.log(w / w.sum())
    th_host, u_host = lattice_kernels._host_fisher_length_grid(log_w, n)
    th, u = (np.asarray(x) for x in jax.jit(lattice_kernels._fisher_length_grid)(jnp.asarray(log_w), float(n)))
    np.testing.assert_allclose(th_host, th, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(u_host, u, rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(th_host) > 0) and np.all(np.diff(u_host) >= 0)


def test_host_fisher_length_grid_in_blocks_matches_the_jitted_one():
    """A long alphabet (span 600: the 4096-tilt grid is computed in 2^20-entry blocks of 1747 rows)."""
    log_w = np.full(601, -np.inf)
    log_w[[0, 1, 7, 350, 600]] = np.log([0.3, 0.3, 0.2, 0.1, 0.1])
    assert (1 << 20) // log_w.size < 4096 // 2  # at least three blocks
    th_host, u_host = lattice_kernels._host_fisher_length_grid(log_w, 50)
    th, u = (np.asarray(x) for x in jax.jit(lattice_kernels._fisher_length_grid)(jnp.asarray(log_w), 50.0))
    np.testing.assert_allclose(th_host, th, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(u_host, u, rtol=1e-9, atol=1e-12)


def test_law_from_lattice_jit_and_vmap_match_reward_law():
    n, span = 30, 3
    ps = np.array([[0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25], [0.5, 0.3, 0.0, 0.2], [0.01, 0.01, 0.01, 0.97]])
    with np.errstate(divide="ignore"):
        log_ws = np.log(ps)
    a, h = -0.5, 0.75
    batched = jax.jit(jax.vmap(lambda lw: aa.law_from_lattice(lw, n, a, h)))(jnp.asarray(log_ws))
    assert batched.levels.shape == (4, n * span + 1)
    for i, p in enumerate(ps):
        r = a + h * np.arange(span + 1)
        ref = aa.reward_law(p, r, n, method="types")  # the lattice method is what is under test
        levels, logp = types_law_np(p, r, n)
        assert_law_close(ref, levels, logp, atol=1e-9, rtol=1e-10)
        for law in (_law_from_lattice_j(jnp.asarray(log_ws[i]), n, a, h), jax.tree.map(lambda x, i=i: x[i], batched)):
            lv, lp = np.asarray(law.levels), np.asarray(law.log_prob)
            finite = np.isfinite(lp)
            assert abs(logsumexp(lp)) <= 1e-12
            np.testing.assert_allclose(lv[finite], np.asarray(ref.levels), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(lp[finite], np.asarray(ref.log_prob), rtol=1e-10, atol=1e-9)


def test_law_from_types_jit_matches_reward_law():
    p = np.array([0.1, 0.0, 0.3, 0.6])
    r = np.array([1.0, 2.0, 2.0, -0.5])
    n = 7
    law = jax.jit(aa.law_from_types, static_argnums=(2,))(jnp.asarray(p), jnp.asarray(r), n)
    lv, lp = np.asarray(law.levels), np.asarray(law.log_prob)
    assert np.all(np.diff(lv) >= 0)
    assert abs(logsumexp(lp)) <= 1e-12
    levels, logp = _merge_levels(lv, lp)
    ref = aa.reward_law(p, r, n)
    assert_law_close(ref, levels, logp, atol=1e-10, rtol=1e-10)


# ---------------------------------------------------------------------------
# push-forward, fingerprints, lattice detection
# ---------------------------------------------------------------------------


@given(S.models())
def test_pushforward_merges_ties_and_drops_zeros(model):
    p, r = model
    values, weights = aa.pushforward(p, r)
    assert np.all(np.diff(values) > 0)
    assert np.all(weights > 0)
    assert abs(weights.sum() - 1.0) <= 1e-12
    for v, w in zip(values, weights, strict=True):
        close = (p > 0) & (np.abs(r - v) <= 1e-12 * max(1.0, np.abs(r).max()))
        np.testing.assert_allclose(w, p[close].sum(), rtol=1e-12)
    assert set(np.round(values, 9)) == set(np.round(r[p > 0], 9))


def test_near_tied_rewards_are_not_collapsed_onto_one_lattice_point():
    """Two rewards 1e-10 apart (distinct for the push-forward, equal within the
    lattice tolerance) must keep both letters' probability."""
    p = np.array([0.5, 0.25, 0.25])
    r = np.array([0.0, 1.0, 1.0 + 1e-10])
    n = 5
    levels, logp = _merge_levels(*brute_force_law(p, r, n), rtol=1e-9)
    law = aa.reward_law(p, r, n)
    merged_l, merged_p = _merge_levels(np.asarray(law.levels), np.asarray(law.log_prob), rtol=1e-9)
    np.testing.assert_allclose(merged_l, levels, atol=1e-8)
    np.testing.assert_allclose(merged_p, logp, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=0), "n"),
        (dict(n=-3), "n"),
        (dict(n=2.5), "n"),
        (dict(n=True), "n"),
        (dict(method="fft"), "method"),
        (dict(r=np.array([0.0, 1.0])), "r"),
        (dict(p=np.array([0.5, 0.6, 0.1])), "p"),
        (dict(p=np.array([1.2, -0.2, 0.0])), "p"),
        (dict(r=np.array([0.0, np.nan, 1.0])), "r"),
        (dict(r=np.array([0.0, 1.0, math.sqrt(2.0)]), method="lattice"), "lattice"),
        (dict(n=10_000, method="types"), "types"),
    ],
)
def test_reward_law_bad_input(kwargs, match):
    args = dict(p=np.array([0.2, 0.3, 0.5]), r=np.array([0.0, 1.0, 2.0]), n=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        aa.reward_law(args["p"], args["r"], args["n"], method=args.get("method", "auto"))


@pytest.mark.parametrize("n", [0, -1, 1.0])
def test_jittable_constructors_reject_bad_n(n):
    with pytest.raises(ValueError, match="n"):
        aa.law_from_types(np.array([0.5, 0.5]), np.array([0.0, 1.0]), n)
    with pytest.raises(ValueError, match="n"):
        aa.law_from_lattice(np.log(np.array([0.5, 0.5])), n)


def test_distinct_levels_closer_than_the_reward_tolerance_stay_distinct():
    """Regression (found by hypothesis): r = (0, 0, 1e-11), n = 12 has 13 distinct levels
    k·1e-11. Merging levels with the per-reward tolerance (n · 1e-12) chained all of them
    into one, whose value depended on the sort direction, so r and -r were not mirrors.
    Levels now merge only at rounding size (also 0.1 + 0.2 vs 0.3)."""
    p = np.full(3, 1.0 / 3.0)
    law = aa.reward_law(p, [0.0, 0.0, 1e-11], 12, method="types")
    neg = aa.reward_law(p, [0.0, 0.0, -1e-11], 12, method="types")
    np.testing.assert_allclose(np.asarray(law.levels), 1e-11 * np.arange(13), rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.asarray(neg.levels), -np.asarray(law.levels)[::-1], rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.asarray(law.log_prob), np.asarray(neg.log_prob)[::-1], rtol=1e-13)
    k = np.arange(13)
    binom = np.array([math.comb(12, int(i)) for i in k]) * (1 / 3) ** k * (2 / 3) ** (12 - k)
    np.testing.assert_allclose(np.asarray(law.prob), binom, rtol=1e-12)
    rounding = aa.reward_law(np.full(3, 1.0 / 3.0), [0.1, 0.2, 0.3], 2, method="types")
    levels = np.asarray(rounding.levels)  # 0.1 + 0.3 and 0.2 + 0.2 differ by rounding only: one level
    assert np.unique(np.round(levels, 9)).size == levels.size
