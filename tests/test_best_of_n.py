"""Exact best-of-N / worst-of-N over the levels of r_n (THEORY.md §6).

References written here, independent of the code under test:
* the direct NumPy formulas B_N = F^N - F(s-)^N, W_N = (1-F(s-))^N - (1-F(s))^N
  and the win rate Σ B_N [F(s-) + P/2] for moderate N;
* mpmath at 300 digits for astronomically large N (log N = 0.2·n at n = 256),
  where the naive float64 formula is shown to be wrong;
* the continuous no-ties limits log N - (N-1)/N and N/(N+1);
* the law of r_n under φ_λ^n built from scratch as reward_law(tilt(p, r, λ), r);
* λ* from scipy's brentq for the asymptotic-equivalence checks.
Monte-Carlo comparisons live in test_simulation.py.
"""

import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
import strategies as S
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.special import logsumexp

import asymalign as aa

# ---------------------------------------------------------------------------
# the old quantities, written with the level API (THEORY.md §10): one way each
# ---------------------------------------------------------------------------


def bon_log(law, log_num_samples):
    return aa.best_of_n(law, log_num_samples).log_prob


def won_log(law, log_num_samples):
    return aa.best_of_n(law, log_num_samples, worst=True).log_prob


def bon_kl(law, log_num_samples):
    return aa.law_kl(aa.best_of_n(law, log_num_samples), law)


def bon_reward(law, log_num_samples):
    return aa.law_mean(aa.best_of_n(law, log_num_samples))


def bon_win(law, log_num_samples):
    return aa.win_rate(aa.best_of_n(law, log_num_samples), law)


def tilted_log(law, lam):
    """log φ_λ^n on the levels: level_tilt by sign(λ)·s at temperature 1/|λ|; λ = ±inf
    is solve_level_tilt at an infinite budget (mass on the extreme level)."""
    if isinstance(lam, float | int | np.floating) and math.isinf(lam):
        return aa.solve_level_tilt(law, math.copysign(1.0, lam) * law.levels, math.inf).law.log_prob
    lam = jnp.asarray(lam, law.log_prob.dtype)
    return aa.level_tilt(law, jnp.sign(lam)[..., None] * law.levels, 1.0 / jnp.abs(lam)).log_prob


def level_kl(log_q, log_p, law):
    return aa.law_kl(aa.RewardLaw(law.levels, log_q, law.n), aa.RewardLaw(law.levels, log_p, law.n))


def _bon_window(p, r, n, deltas):
    from asymalign.best_of_n import _bon_window as window

    return window(*aa.pushforward(p, r), n, deltas, aa.solve_lambda(p, r, deltas))


# ---------------------------------------------------------------------------
# laws, padding, references
# ---------------------------------------------------------------------------

# n for each alphabet size, so that laws have at most a few hundred levels
_NS_FOR_K = {2: (1, 4, 30), 3: (1, 4, 12), 5: (1, 3, 6), 8: (1, 2, 4)}
_PAD_SIZES = (16, 64, 256, 1024)


@st.composite
def small_laws(draw, **model_kw):
    """(p, r, n, law) with law = reward_law(p, r, n, method="types")."""
    p, r = draw(S.models(**model_kw))
    n = draw(st.sampled_from(_NS_FOR_K[len(p)]))
    return p, r, n, aa.reward_law(p, r, n, method="types")


def padded(law):
    """The same law with zero-probability levels added below and above, to a
    length from _PAD_SIZES (so the jitted functions compile once per size).
    Padding is itself part of the contract: laws may carry -inf entries."""
    lv, lp = np.asarray(law.levels), np.asarray(law.log_prob)
    size = next(s for s in _PAD_SIZES if s >= lv.size + 2)
    lo = (size - lv.size) // 2
    hi = size - lv.size - lo
    step = max(1.0, float(np.ptp(lv)))
    levels = np.concatenate([lv[0] - step * np.arange(lo, 0, -1), lv, lv[-1] + step * np.arange(1, hi + 1)])
    log_prob = np.concatenate([np.full(lo, -np.inf), lp, np.full(hi, -np.inf)])
    return aa.RewardLaw(jnp.asarray(levels), jnp.asarray(log_prob), law.n, law.fingerprint), slice(lo, lo + lv.size)


def np_bon_parts(levels, log_prob, N):
    """Direct NumPy formulas (float64, tie groups = exactly equal levels).

    Returns per-entry (B_N, W_N) and per-entry (P, F(s-), F(s)) of the group.
    """
    levels, P = np.asarray(levels), np.exp(np.asarray(log_prob))
    uniq, inv = np.unique(levels, return_inverse=True)
    Pg = np.bincount(inv, weights=P, minlength=uniq.size)
    F = np.cumsum(Pg)
    Fm = np.concatenate([[0.0], F[:-1]])
    S_ = np.concatenate([np.cumsum(Pg[::-1])[::-1][1:], [0.0]])  # P(r_n > s), from the top
    Bg = F**N - Fm**N
    Wg = (S_ + Pg) ** N - S_**N
    share = np.divide(P, Pg[inv], out=np.zeros_like(P), where=Pg[inv] > 0)
    return Bg[inv] * share, Wg[inv] * share, Pg[inv], Fm[inv], F[inv]


def np_win_rate(levels, log_prob, N):
    B, _, Pg, Fm, _ = np_bon_parts(levels, log_prob, N)
    return float(np.sum(B * (Fm + 0.5 * Pg)))


def np_kl(B, log_prob):
    on = B > 0
    return float(np.sum(B[on] * (np.log(B[on]) - np.asarray(log_prob)[on])))


def np_tilt(p, r, lam):
    """φ_λ ∝ p e^{λ r} (shifted by the max/min reward on supp p); λ = ±inf: argmax/argmin."""
    s = p > 0
    if np.isinf(lam):
        ext = r[s].max() if lam > 0 else r[s].min()
        q = np.where(s & (r == ext), p, 0.0)
        return q / q.sum()
    c = r[s].max() if lam >= 0 else r[s].min()
    a = np.where(s, lam * (r - c), -np.inf)
    with np.errstate(divide="ignore"):
        lq = np.log(p) + a
    return np.exp(lq - logsumexp(lq[s]))


def np_lambda_star(p, r, delta):
    """λ* >= 0 with KL(φ_λ || p) = Δ, by brentq on a bracket (NumPy/SciPy)."""

    def kl(lam):
        q = np_tilt(p, r, lam)
        s = q > 0
        return float(np.sum(q[s] * np.log(q[s] / p[s])))

    hi = 1.0
    while kl(hi) < delta:
        hi *= 2.0
    return brentq(lambda lam: kl(lam) - delta, 0.0, hi, xtol=1e-14, rtol=1e-14)


def _lg(x):
    return float(np.asarray(x))


def _finite_logs(x):
    x = np.asarray(x)
    return not np.any(np.isnan(x)) and not np.any(x == np.inf)


# ---------------------------------------------------------------------------
# N = 1 and moderate N against the direct formula
# ---------------------------------------------------------------------------


@given(small_laws())
def test_n_equal_one_is_the_reference(model):
    p, r, n, law = model
    pl, inner = padded(law)
    lp = np.asarray(law.log_prob)
    for f in (bon_log, won_log):
        got = np.asarray(f(pl, 0.0))
        np.testing.assert_allclose(got[inner], lp, rtol=1e-12, atol=1e-12)
        assert np.all(got[: inner.start] == -np.inf) and np.all(got[inner.stop :] == -np.inf)
    assert abs(_lg(bon_kl(pl, 0.0))) <= 1e-12
    assert abs(_lg(bon_win(pl, 0.0)) - 0.5) <= 1e-12
    mean = float(np.sum(np.exp(lp) * np.asarray(law.levels)))
    assert abs(_lg(bon_reward(pl, 0.0)) - mean) <= 1e-12 * max(1.0, np.abs(np.asarray(law.levels)).max())
    assert _lg(aa.bon_kl_bound(0.0)) == 0.0


@given(small_laws(), st.sampled_from([2, 3, 10, 100, 1000]))
def test_bon_and_won_match_direct_formula(model, N):
    p, r, n, law = model
    pl, inner = padded(law)
    log_n = math.log(N)
    B, W, Pg, Fm, F = np_bon_parts(law.levels, law.log_prob, N)
    got_b = np.exp(np.asarray(bon_log(pl, log_n)))
    got_w = np.exp(np.asarray(won_log(pl, log_n)))
    # absolute error of the naive formula is ~N·1e-16; relative accuracy where it is reliable
    np.testing.assert_allclose(got_b[inner], B, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got_w[inner], W, rtol=1e-9, atol=1e-12)
    assert np.all(got_b[: inner.start] == 0) and np.all(got_b[inner.stop :] == 0)
    assert abs(got_b.sum() - 1) <= 1e-12 and abs(got_w.sum() - 1) <= 1e-12
    lv = np.asarray(law.levels)
    scale = max(1.0, np.abs(lv).max())
    assert abs(_lg(bon_reward(pl, log_n)) - np.sum(B * lv)) <= 1e-10 * scale
    assert abs(_lg(bon_win(pl, log_n)) - np_win_rate(law.levels, law.log_prob, N)) <= 1e-10
    assert abs(_lg(bon_kl(pl, log_n)) - np_kl(B, law.log_prob)) <= 1e-9
    # the KL of BoN never exceeds the quoted bound
    assert _lg(bon_kl(pl, log_n)) <= log_n - (N - 1) / N + 1e-12


def test_best_of_two_by_hand():
    """Fair coin, n = 1, N = 2: B = (1/4, 3/4), KL = ¼ log ½ + ¾ log (3/2), win = 5/8."""
    law = aa.reward_law(np.array([0.5, 0.5]), np.array([0.0, 1.0]), 1)
    ln2 = math.log(2.0)
    np.testing.assert_allclose(np.exp(np.asarray(bon_log(law, ln2))), [0.25, 0.75], rtol=1e-14)
    np.testing.assert_allclose(np.exp(np.asarray(won_log(law, ln2))), [0.75, 0.25], rtol=1e-14)
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert abs(_lg(bon_kl(law, ln2)) - kl) <= 1e-14
    assert abs(_lg(bon_win(law, ln2)) - 0.625) <= 1e-14
    assert abs(_lg(bon_reward(law, ln2)) - 0.75) <= 1e-14
    assert kl < _lg(aa.bon_kl_bound(ln2))  # ties: strictly below log 2 - 1/2


# ---------------------------------------------------------------------------
# astronomically large N: mpmath reference, and the naive formula fails
# ---------------------------------------------------------------------------


def mp_binomial_bon(n, q, log_n, worst=False, dps=300):
    """log B_N(k) (or log W_N(k)) for Binomial(n, q) levels k = 0..n, at `dps` digits.

    P(k) is the exact binomial (q taken as its binary float64 value), F by
    exact cumulative sums, N = e^{log N}; F^N evaluated directly in mpmath.
    """
    with mp.workdps(dps):
        q = mp.mpf(float(q))
        P = [mp.binomial(n, k) * q**k * (1 - q) ** (n - k) for k in range(n + 1)]
        F, acc = [], mp.mpf(0)
        for x in P:
            acc += x
            F.append(acc)
        Fm = [mp.mpf(0)] + F[:-1]
        N = mp.exp(mp.mpf(log_n))
        if worst:
            vals = [mp.power(1 - a, N) - mp.power(1 - b, N) for a, b in zip(Fm, F, strict=True)]
        else:
            vals = [mp.power(b, N) - mp.power(a, N) for a, b in zip(Fm, F, strict=True)]
        return np.array([float(mp.log(v)) if v > 0 else -np.inf for v in vals])


@pytest.mark.parametrize("worst", [False, True])
def test_huge_n_upper_tail_matches_mpmath_and_naive_fails(worst):
    """THEORY §6 numerics: Bernoulli(0.3), n = 256, log N = 0.2·n.

    Best-of-N lives where S(s) ~ 1/N ~ e^{-51}, far below 1e-16, so F accumulated
    from the bottom in float64 loses it. (Worst-of-N: the mirror, Bernoulli(0.7).)
    """
    n, log_n = 256, 0.2 * 256
    q = 0.7 if worst else 0.3
    law = aa.reward_law(np.array([1 - q, q]), np.array([0.0, 1.0]), n)
    ref = mp_binomial_bon(n, q, log_n, worst=worst)
    f = won_log if worst else bon_log
    got = np.asarray(f(law, log_n))
    assert got.shape == ref.shape and np.all(np.isfinite(ref))
    assert np.all(np.isfinite(got))
    err = np.abs(got - ref)
    assert np.all(err <= 1e-9 * np.maximum(1.0, np.abs(ref))), (err.max(), int(np.argmax(err)))
    # the chosen level sits deep in the tail ...
    mode = int(np.argmax(ref))
    assert (mode < 179 - 40) if worst else (mode > 77 + 40)  # the mean is 0.3·256 = 77 (0.7·256 = 179)
    # ... where the naive float64 formula is badly wrong
    P = np.exp(np.asarray(law.log_prob))
    F = np.cumsum(P)
    Fm = np.concatenate([[0.0], F[:-1]])
    N = math.exp(log_n)
    with np.errstate(over="ignore", under="ignore"):
        naive = (1 - Fm) ** N - (1 - F) ** N if worst else F**N - Fm**N
    tv = 0.5 * np.abs(naive - np.exp(ref)).sum()
    assert tv > 0.4, tv  # (here F(top) rounds below 1, so F^N underflows at every level)
    assert 0.5 * np.abs(np.exp(got) - np.exp(ref)).sum() <= 1e-9


@pytest.mark.parametrize("log_n", [1e3, 1e6])
def test_huge_log_n_concentrates_on_top_level(log_n):
    # n = 256: P(top) = 0.3^256 = e^{-308} and N P(top) >= e^{692}: all mass on the top
    n = 256
    law = aa.reward_law(np.array([0.7, 0.3]), np.array([0.0, 1.0]), n)
    b = np.asarray(bon_log(law, log_n))
    w = np.asarray(won_log(law, log_n))
    assert _finite_logs(b) and _finite_logs(w)
    assert abs(b[-1]) <= 1e-12 and abs(w[0]) <= 1e-12
    # next level down: B = F^N - F(s-)^N ≈ exp(N log(1 - P(top))) ≈ exp(-N·0.3^n)
    with np.errstate(over="ignore"):
        expected = -np.exp(log_n + n * math.log(0.3))
    if np.isfinite(expected):
        assert abs(b[-2] - expected) <= 1e-9 * abs(expected)
    else:
        assert b[-2] == -np.inf
    assert abs(_lg(bon_reward(law, log_n)) - n) <= 1e-9
    assert abs(_lg(bon_win(law, log_n)) - (1 - 0.5 * 0.3**n)) <= 1e-12
    kl = _lg(bon_kl(law, log_n))
    assert abs(kl - (-n * math.log(0.3))) <= 1e-9 * n  # KL(δ_top || p^n) = -log P(top)


@pytest.mark.parametrize("log_n", [0.0, 1e-3, 0.7])
def test_small_n_keeps_levels_below_1e_minus_308(log_n):
    """Bernoulli(0.3), n = 2048: P(top) = e^{-2466}. For N = 1 the BoN law is the
    reference at *every* level; for small N, B_N(s) ≈ N P(s) in the upper tail.
    (N·P(s) underflows in linear space; the log-law must not.)"""
    n = 2048
    law = aa.reward_law(np.array([0.7, 0.3]), np.array([0.0, 1.0]), n)
    lp = np.asarray(law.log_prob)
    assert lp[-1] < -2000
    b = np.asarray(bon_log(law, log_n))
    assert np.all(np.isfinite(b))
    if log_n == 0.0:
        np.testing.assert_allclose(b, lp, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(won_log(law, 0.0)), lp, rtol=1e-12)
    # upper tail (S(s) < 1e-300): B_N(s) = F(s)^N - F(s-)^N = N P(s) (1 + O(N S(s-)))
    np.testing.assert_allclose(b[-1000:], log_n + lp[-1000:], rtol=1e-12)
    w = np.asarray(won_log(aa.reward_law(np.array([0.3, 0.7]), np.array([0.0, 1.0]), n), log_n))
    np.testing.assert_allclose(w[:1000], log_n + lp[::-1][:1000], rtol=1e-12)


def test_zero_probability_tie_groups_give_no_nan():
    """law_from_types with a zero-probability letter has tied -inf entries."""
    p, r, n = np.array([0.0, 0.5, 0.5]), np.array([1.0, 0.0, 0.0]), 3
    t = aa.law_from_types(p, r, n)
    assert np.sum(np.asarray(t.log_prob) == -np.inf) >= 2
    for log_n in (0.0, 1.0):
        assert _lg(bon_win(t, log_n)) == pytest.approx(0.5, abs=1e-12)
        assert _lg(bon_kl(t, log_n)) == pytest.approx(0.0, abs=1e-12)
        assert _lg(bon_reward(t, log_n)) == 0.0


def test_huge_log_n_short_of_the_top_level():
    """n = 2048: N P(top) = e^{1000 - 2465.7} ≪ 1, so B(top) ≈ N P(top) (relative 1e-9)."""
    n, log_n = 2048, 1e3
    law = aa.reward_law(np.array([0.7, 0.3]), np.array([0.0, 1.0]), n)
    b = np.asarray(bon_log(law, log_n))
    assert _finite_logs(b)
    assert abs(logsumexp(b)) <= 1e-10
    top = log_n + n * math.log(0.3)
    assert abs(b[-1] - top) <= 1e-9 * abs(top)
    # the chosen level sits where n·kl(s/n || 0.3) ≈ log N (Chernoff): about s/n = 0.79
    mean = _lg(bon_reward(law, log_n)) / n
    assert 0.75 < mean < 0.82


# ---------------------------------------------------------------------------
# worst-of-N mirrors best-of-N
# ---------------------------------------------------------------------------


@given(small_laws(), st.sampled_from([0.0, 0.5, 3.0, 40.0, 1e4]))
def test_worst_of_n_mirrors_best_of_n(model, log_n):
    p, r, n, law = model
    neg = aa.reward_law(p, -r, n, method="types")
    np.testing.assert_allclose(np.asarray(neg.levels), -np.asarray(law.levels)[::-1], atol=1e-12)
    pl, inner = padded(law)
    pn, inner_n = padded(neg)
    w = np.asarray(won_log(pl, log_n))[inner]
    b = np.asarray(bon_log(pn, log_n))[inner_n][::-1]
    assert _finite_logs(w)
    np.testing.assert_allclose(w, b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------
# KL and win rate: the no-ties limit, and ties
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("N", [1, 2, 10, 100, 1000])
def test_no_ties_limit_uniform_many_levels(N):
    """Uniform on L = 10^5 atoms approximates a continuous law: KL -> log N - (N-1)/N
    and win rate -> N/(N+1), with discretisation error O(N/L)."""
    L = 100_000
    law = aa.RewardLaw(jnp.arange(L, dtype=jnp.float64), jnp.full(L, -math.log(L)), 1)
    log_n = math.log(N)
    bound = log_n - (N - 1) / N
    kl = _lg(bon_kl(law, log_n))
    assert abs(_lg(aa.bon_kl_bound(log_n)) - bound) <= 1e-14
    assert kl <= bound + 1e-12
    assert abs(kl - bound) <= N / L
    assert abs(_lg(bon_win(law, log_n)) - N / (N + 1)) <= N / L


@given(small_laws(ties=True, nonconstant=True), st.floats(0.05, 30.0))
def test_kl_strictly_below_bound_with_ties(model, log_n):
    p, r, n, law = model
    pl, _ = padded(law)
    kl = _lg(bon_kl(pl, log_n))
    assert 0.0 < kl < _lg(aa.bon_kl_bound(log_n))
    # KL(π_N||p^n) <= log N: the chosen level's law has B_N <= N·P_n
    b = np.asarray(bon_log(pl, log_n))
    lp = np.asarray(pl.log_prob)
    on = lp > -np.inf
    assert np.all(b[on] <= log_n + lp[on] + 1e-9)


def test_bon_kl_bound_values():
    for N in (1.0, 2.0, 7.5, 1e3):
        assert abs(_lg(aa.bon_kl_bound(math.log(N))) - (math.log(N) - (N - 1) / N)) <= 1e-13
    assert _lg(aa.bon_kl_bound(1e6)) == 1e6 - 1.0
    np.testing.assert_allclose(
        np.asarray(aa.bon_kl_bound(jnp.array([0.0, 1e-10, 1e6]))), [0.0, 0.5e-20, 1e6 - 1.0], rtol=1e-6, atol=0
    )


@given(st.sampled_from([0.0, 0.3, 2.0, 25.0]), st.data())
def test_law_from_types_duplicates_equal_merged(log_n, data):
    """law_from_types keeps tied levels as separate entries; BoN treats them as one."""
    k = data.draw(st.sampled_from([3, 4]))
    p, r = data.draw(S.models(k=k, lattice=True))
    n = 4
    t = aa.law_from_types(p, r, n)
    m = aa.reward_law(p, r, n, method="types")
    assume(np.sum(np.asarray(t.log_prob) > -np.inf) > np.asarray(m.levels).size)
    _check_types_vs_merged(t, m, log_n)


@pytest.mark.parametrize(
    "r",
    [
        [0.0, 1.0, 1.0, 2.0, 3.0],  # exact ties
        [0.1, 0.2, 0.3, 0.4, 0.7],  # mathematical ties that float rounding breaks (0.1 + 0.2 vs 0.3)
    ],
)
@pytest.mark.parametrize("log_n", [0.0, 1.0, 5.0])
def test_law_from_types_duplicates_equal_merged_fixed(r, log_n):
    p = np.array([0.2, 0.3, 0.1, 0.15, 0.25])
    r = np.array(r)
    n = 6
    t = aa.law_from_types(p, r, n)
    m = aa.reward_law(p, r, n)
    _check_types_vs_merged(t, m, log_n)


def _check_types_vs_merged(t, m, log_n):
    tl, ml = np.asarray(t.levels), np.asarray(m.levels)
    tp = np.asarray(t.log_prob)
    on = tp > -np.inf  # types using a zero-probability letter carry -inf
    assert on.sum() > ml.size  # the test needs duplicates
    bt = np.exp(np.asarray(bon_log(t, log_n)))
    bm = np.exp(np.asarray(bon_log(m, log_n)))
    wt = np.exp(np.asarray(won_log(t, log_n)))
    wm = np.exp(np.asarray(won_log(m, log_n)))
    assert np.all(bt[~on] == 0) and np.all(wt[~on] == 0)
    tl, bt, wt, tp = tl[on], bt[on], wt[on], tp[on]
    # sum the per-entry law over the entries of each merged level
    idx = np.argmin(np.abs(tl[:, None] - ml[None, :]), axis=1)
    assert np.all(np.abs(tl - ml[idx]) <= 1e-9 * max(1.0, np.abs(ml).max()))
    np.testing.assert_allclose(np.bincount(idx, bt, ml.size), bm, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(np.bincount(idx, wt, ml.size), wm, rtol=1e-9, atol=1e-14)
    # within a tie group, B_N is shared in proportion to P
    pm = np.exp(np.asarray(m.log_prob))
    np.testing.assert_allclose(bt, bm[idx] * np.exp(tp) / pm[idx], rtol=1e-9, atol=1e-14)
    for f in (bon_kl, bon_reward, bon_win):
        assert abs(_lg(f(t, log_n)) - _lg(f(m, log_n))) <= 1e-9 * max(1.0, abs(_lg(f(m, log_n)))), f.__name__


# ---------------------------------------------------------------------------
# tilted level law
# ---------------------------------------------------------------------------


@given(small_laws(), st.one_of(st.floats(-4.0, 4.0), st.sampled_from([np.inf, -np.inf, 0.0])))
def test_tilted_level_law_equals_law_under_tilted_model(model, lam):
    p, r, n, law = model
    span = np.ptp(r[p > 0])
    lam_r = lam / span if (span > 0 and np.isfinite(lam)) else lam  # λ·span in [-4, 4]
    pl, inner = padded(law)
    got = np.asarray(tilted_log(pl, lam_r))
    assert not np.any(np.isnan(got))
    assert np.all(got[: inner.start] == -np.inf) and np.all(got[inner.stop :] == -np.inf)
    got = got[inner]
    ref = aa.reward_law(np_tilt(p, r, lam_r), r, n, method="types")
    rl, rp = np.asarray(ref.levels), np.asarray(ref.log_prob)
    lv = np.asarray(law.levels)
    idx = np.searchsorted(lv, rl)
    idx = np.clip(idx, 0, lv.size - 1)
    np.testing.assert_allclose(lv[idx], rl, atol=1e-9 * max(1.0, np.abs(lv).max()))
    scale = n * abs(lam_r) * span if np.isfinite(lam_r) else 0.0
    np.testing.assert_allclose(got[idx], rp, rtol=1e-9, atol=1e-9 * max(1.0, scale))
    rest = np.ones(lv.size, bool)
    rest[idx] = False
    assert np.all(got[rest] == -np.inf)  # λ = ±inf: no mass off the extreme level


def test_tilted_level_law_lattice_law_with_gaps():
    """-inf (unreachable) levels stay -inf; finite λ matches the tilted model's law."""
    n, lam = 25, 0.7
    p = np.array([0.4, 0.0, 0.35, 0.25])
    r = np.array([0.0, 1.0, 3.0, 4.0])
    log_w = np.full(5, -np.inf)
    log_w[[0, 3, 4]] = np.log([0.4, 0.35, 0.25])
    law = jax.jit(aa.law_from_lattice, static_argnums=(1,))(jnp.asarray(log_w), n)
    lp = np.asarray(law.log_prob)
    assert np.any(lp == -np.inf)
    got = np.asarray(tilted_log(law, lam))
    assert np.all(got[lp == -np.inf] == -np.inf)
    ref = aa.reward_law(np_tilt(p, r, lam), r, n, method="types")
    np.testing.assert_allclose(got[np.asarray(ref.levels).astype(int)], np.asarray(ref.log_prob), atol=1e-9)
    for lam_inf, level in ((np.inf, 4 * n), (-np.inf, 0)):
        t = np.asarray(tilted_log(law, lam_inf))
        assert t[level] == 0.0 and np.all(np.delete(t, level) == -np.inf)


# ---------------------------------------------------------------------------
# asymptotic equivalence with KL-RL (THEORY.md §6)
# ---------------------------------------------------------------------------

_ASYM_NS = (16, 64, 256, 1024, 4096, 16384, 65536)


@pytest.mark.parametrize(
    "p, r, delta",
    [
        ([0.7, 0.3], [0.0, 1.0], 0.2),  # Bernoulli, Δ_max = 1.20
        ([0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 2.0, 3.0], 0.5),  # 4-letter lattice, Δ_max = 2.30
    ],
)
def test_asymptotic_equivalence_with_klrl(p, r, delta):
    """log N = nΔ. Exact identity (per token):
        KL(π_N||φ^n)/n = (KL(π_N||p^n)/n - Δ) + λ*(Λ'(λ*) - E r_n/n),
    and both brackets are >= 0 (KL bound; KL-RL optimality of φ_{λ*}). The
    tilted KL grows like ½ log n (THEORY §6), so each gap is at most
    ~log(n)/n: we require KL(π_N||φ^n)/n <= log(n)/n, Δ - KL(π_N||p^n)/n <=
    log(n)/n and the reward gap <= 2 log(n)/(λ* n), at every n, and strictly
    decreasing gaps as n grows to 65536.
    """
    p, r = np.array(p), np.array(r)
    lam = np_lambda_star(p, r, delta)
    phi = np_tilt(p, r, lam)
    rl_reward = float(phi @ r)
    rows = []
    for n in _ASYM_NS:
        law = aa.reward_law(p, r, n)
        res = aa.bon_vs_klrl(p, r, n, delta, law=law)
        assert all(np.isfinite(np.asarray(x)) for x in res)
        assert abs(_lg(res.lam) - lam) <= 1e-9 * lam
        assert abs(_lg(res.rl_reward) - rl_reward) <= 1e-10
        log_n = n * delta
        kl_gap = delta - _lg(res.bon_kl)
        r_gap = rl_reward - _lg(res.bon_reward)
        # exact identity, to rounding of sums of ~n-sized terms
        assert abs(_lg(res.bon_kl_to_tilt) - (-kl_gap + lam * r_gap)) <= 1e-9
        assert kl_gap >= (1 - math.exp(-log_n)) / n - 1e-12  # KL <= log N - (N-1)/N
        assert r_gap > 0  # φ_{λ*} maximises reward at KL <= nΔ
        assert _lg(res.bon_kl_to_tilt) <= math.log(n) / n
        assert kl_gap <= math.log(n) / n
        assert r_gap <= 2 * math.log(n) / (lam * n)
        rows.append((_lg(res.bon_kl_to_tilt), kl_gap, r_gap))
    kl_t, kl_gap, r_gap = map(np.array, zip(*rows, strict=True))
    assert np.all(np.diff(kl_t) < 0), kl_t
    assert np.all(np.diff(kl_gap) < 0), kl_gap
    assert np.all(np.diff(r_gap) < 0), r_gap
    # ... and the un-normalised tilted KL keeps growing (THEORY §6: ~½ log n)
    assert np.all(np.diff(kl_t * np.array(_ASYM_NS)) > 0)


# ---------------------------------------------------------------------------
# bad input and no NaN for valid input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 40])
def test_bon_vs_klrl_fields_are_level_law_quantities(n):
    """Each field is the corresponding level-law quantity at log N = nΔ, divided by n."""
    p, r, delta = np.array([0.5, 0.0, 0.3, 0.2]), np.array([0.0, 7.0, 1.0, 3.0]), 0.4
    law = aa.reward_law(p, r, n)
    res = aa.bon_vs_klrl(p, r, n, delta)
    lam = np_lambda_star(p, r, delta)
    log_n = n * delta
    assert abs(_lg(res.lam) - lam) <= 1e-9 * lam
    assert abs(_lg(res.rl_reward) - float(np_tilt(p, r, lam) @ r)) <= 1e-10
    assert abs(_lg(res.bon_reward) - _lg(bon_reward(law, log_n)) / n) <= 1e-12
    assert abs(_lg(res.bon_kl) - _lg(bon_kl(law, log_n)) / n) <= 1e-12
    b = bon_log(law, log_n)
    kl_t = _lg(level_kl(b, tilted_log(law, lam), law)) / n
    assert abs(_lg(res.bon_kl_to_tilt) - kl_t) <= 1e-9
    # and KL(π_N||φ^n) from THEORY §6 written out in NumPy: Σ B [log B - log P - λ s + nΛ]
    bb, lp, lv = np.asarray(b), np.asarray(law.log_prob), np.asarray(law.levels)
    n_lam = n * float(logsumexp(lam * r[p > 0], b=p[p > 0]))
    on = bb > -np.inf
    kl_np = np.sum(np.exp(bb[on]) * (bb[on] - lp[on] - lam * lv[on] + n_lam)) / n
    assert abs(_lg(res.bon_kl_to_tilt) - kl_np) <= 1e-9
    assert abs(_lg(res.win_rate) - _lg(bon_win(law, log_n))) <= 1e-12


def test_bad_input_names_the_argument():
    p, r = np.array([0.2, 0.3, 0.5]), np.array([0.0, 1.0, 2.0])
    law = aa.reward_law(p, r, 5)
    with pytest.raises(ValueError, match="^log_num_samples"):
        aa.best_of_n(law, -1.0)
    with pytest.raises(ValueError, match="^log_num_samples"):
        aa.best_of_n(law, np.array([0.0, -1e-3]), worst=True)
    with pytest.raises(ValueError, match="^log_num_samples"):
        aa.best_of_n(law, np.nan)
    with pytest.raises(ValueError, match="^log_num_samples"):
        aa.bon_kl_bound(-0.5)
    with pytest.raises(ValueError, match="^law"):
        aa.best_of_n((law.levels, law.log_prob), 1.0)
    with pytest.raises(ValueError, match="^law"):
        aa.level_tilt(law.log_prob, law.levels, 1.0)
    with pytest.raises(ValueError, match="^beta"):
        aa.level_tilt(law, law.levels, np.nan)
    with pytest.raises(ValueError, match="^law_a and law_b"):
        aa.law_kl(law, aa.reward_law(p, r, 4))
    # bon_vs_klrl
    with pytest.raises(ValueError, match="^n must"):
        aa.bon_vs_klrl(p, r, 0, 0.1)
    with pytest.raises(ValueError, match="^n must"):
        aa.bon_vs_klrl(p, r, -4, 0.1)
    with pytest.raises(ValueError, match="^n must"):
        aa.bon_vs_klrl(p, r, 2.0, 0.1)
    with pytest.raises(ValueError, match="^delta"):
        aa.bon_vs_klrl(p, r, 5, -0.1)
    with pytest.raises(ValueError, match="^r has length"):
        aa.bon_vs_klrl(p, np.array([0.0, 1.0]), 5, 0.1)
    with pytest.raises(ValueError, match="^p "):
        aa.bon_vs_klrl(np.array([0.5, 0.6, 0.1]), r, 5, 0.1)
    with pytest.raises(ValueError, match="^law"):
        aa.bon_vs_klrl(np.array([0.3, 0.3, 0.4]), r, 5, 0.1, law=law)  # another model
    with pytest.raises(ValueError, match="^law"):
        aa.bon_vs_klrl(p, r, 6, 0.1, law=law)  # another n
    with pytest.raises(ValueError, match="^law"):
        aa.bon_vs_klrl(p, r, 5, 0.1, law=(law.levels, law.log_prob))


@given(
    small_laws(zeros=True, ties=True),
    st.sampled_from([0.0, 1e-12, 0.7, 30.0, 1e3, 1e6]),
)
def test_no_nan_for_valid_input(model, log_n):
    p, r, n, law = model
    pl, inner = padded(law)
    lv = np.asarray(law.levels)
    for f in (bon_log, won_log):
        b = np.asarray(f(pl, log_n))
        assert _finite_logs(b), f.__name__
        assert abs(logsumexp(b)) <= 1e-9
    kl = _lg(bon_kl(pl, log_n))
    assert np.isfinite(kl) and -1e-12 <= kl <= _lg(aa.bon_kl_bound(log_n)) + 1e-9
    w = _lg(bon_win(pl, log_n))
    assert 0.5 - 1e-12 <= w <= 1.0
    rew = _lg(bon_reward(pl, log_n))
    tol = 1e-9 * max(1.0, np.abs(lv).max())
    assert lv[0] - tol <= rew <= lv[-1] + tol
    assert rew >= float(np.exp(np.asarray(law.log_prob)) @ lv) - tol  # BoN never lowers the mean


@pytest.mark.parametrize("log_n", [0.0, 1e6])
def test_constant_rewards_single_level(log_n):
    p, r = np.array([0.3, 0.0, 0.7]), np.array([2.0, -1.0, 2.0])
    law = aa.reward_law(p, r, 9)
    assert np.asarray(law.levels).tolist() == [18.0]
    assert np.asarray(bon_log(law, log_n)).tolist() == [0.0]
    assert np.asarray(won_log(law, log_n)).tolist() == [0.0]
    assert _lg(bon_kl(law, log_n)) == 0.0
    assert _lg(bon_win(law, log_n)) == 0.5
    assert _lg(bon_reward(law, log_n)) == 18.0
    res = aa.bon_vs_klrl(p, r, 9, 0.0, law=law)
    assert all(np.isfinite(np.asarray(x)) for x in res)
    assert _lg(res.bon_reward) == 2.0 and _lg(res.bon_kl) == 0.0


# ---------------------------------------------------------------------------
# jit and vmap
# ---------------------------------------------------------------------------


def test_jit_and_vmap_over_log_n():
    law = aa.reward_law(np.array([0.5, 0.2, 0.3]), np.array([0.0, 1.0, 2.5]), 6)
    log_ns = jnp.array([0.0, 0.5, 3.0, 50.0, 1e6])
    fns = {
        "bon": bon_log,
        "won": won_log,
        "kl": bon_kl,
        "reward": bon_reward,
        "win": bon_win,
    }
    for name, f in fns.items():
        eager = np.stack([np.asarray(f(law, float(x))) for x in log_ns])
        jf = jax.jit(f)
        jitted = np.stack([np.asarray(jf(law, x)) for x in log_ns])
        mapped = np.asarray(jax.vmap(f, in_axes=(None, 0))(law, log_ns))
        for got in (jitted, mapped):
            np.testing.assert_allclose(got, eager, rtol=1e-12, atol=1e-12, err_msg=name)
        if name in ("bon", "win"):  # batching by broadcasting log_n
            got = np.asarray(f(law, log_ns))
            np.testing.assert_allclose(got, eager, rtol=1e-12, atol=1e-12, err_msg=name)
    lams = jnp.array([-1.0, 0.0, 2.0])  # ±inf: test_tilted_level_law_lattice_law_with_gaps
    eager = np.stack([np.asarray(tilted_log(law, float(x))) for x in lams])
    np.testing.assert_allclose(np.asarray(jax.vmap(jax.jit(tilted_log), (None, 0))(law, lams)), eager)
    b = bon_log(law, 2.0)
    assert abs(_lg(jax.jit(level_kl)(b, law.log_prob, law)) - _lg(bon_kl(law, 2.0))) <= 1e-12


def test_vmap_over_stacked_laws():
    n = 5
    r = np.array([0.0, 1.0, 1.0, 3.0])
    ps = np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], [0.7, 0.0, 0.2, 0.1]])
    stacked = jax.vmap(lambda p: aa.law_from_types(p, jnp.asarray(r), n))(jnp.asarray(ps))
    assert stacked.levels.shape[0] == 3
    log_n = 4.0
    for f in (bon_kl, bon_reward, bon_win, bon_log, won_log):
        batched = np.asarray(f(stacked, log_n))  # broadcasting over the stack
        mapped = np.asarray(jax.vmap(jax.jit(f), (0, None))(stacked, log_n))
        for i, p in enumerate(ps):
            single = aa.law_from_types(p, r, n)
            np.testing.assert_allclose(batched[i], np.asarray(f(single, log_n)), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(mapped[i], batched[i], rtol=1e-12, atol=1e-12)
    # and the merged law agrees with the stacked duplicate-level laws
    for i, p in enumerate(ps):
        m = aa.reward_law(p, r, n)
        assert abs(np.asarray(bon_kl(stacked, log_n))[i] - _lg(bon_kl(m, log_n))) <= 1e-10


def test_bon_vs_klrl_jit_in_delta():
    p, r, n = np.array([0.6, 0.3, 0.1]), np.array([0.0, 1.0, 2.0]), 64
    law = aa.reward_law(p, r, n)
    deltas = [0.05, 0.3, 1.0]
    f = jax.jit(lambda d: aa.bon_vs_klrl(p, r, n, d, law=law))
    for d in deltas:
        got, ref = f(d), aa.bon_vs_klrl(p, r, n, d)
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)
    mapped = jax.vmap(lambda d: aa.bon_vs_klrl(p, r, n, d, law=law))(jnp.asarray(deltas))
    np.testing.assert_allclose(np.asarray(mapped.bon_kl), [_lg(f(d).bon_kl) for d in deltas], rtol=1e-12)


# ---------------------------------------------------------------------------
# bon_vs_klrl without a law: the window law (only where best-of-N has mass)
# ---------------------------------------------------------------------------


def _assert_same_bon_vs_klrl(a, b, rtol=1e-9):
    for name in ("lam", "rl_reward", "bon_reward", "bon_kl", "win_rate"):
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-13, err_msg=name)
    # KL(π_N||φ^n)/n is a small difference of O(1) per-token terms
    np.testing.assert_allclose(np.asarray(a.bon_kl_to_tilt), np.asarray(b.bon_kl_to_tilt), rtol=1e-7, atol=1e-11)


@st.composite
def _span4_models(draw):
    """Rewards a + h·m, m in {0..4} (the extremes with positive probability,
    inner letters possibly absent or tiny); one span keeps compilations few."""
    w = draw(S.probs(k=5, zeros=True, min_support=2))
    w[0] += 0.02
    w[4] += 0.02
    a = draw(st.sampled_from([0.0, -1.5, 3.0]))
    h = draw(st.sampled_from([1.0, 0.25, 2.0]))
    return w / w.sum(), a + h * np.arange(5.0)


@given(_span4_models(), st.sampled_from([400]), st.floats(0.0, 0.9))
def test_window_law_matches_the_full_law(model, n, frac):
    """bon_vs_klrl(p, r, n, Δ) computes the law only on the levels where the
    tilted laws have mass (plus one lumped level below): it must agree with
    the full law passed explicitly, whatever the model (zeros, tiny letters
    that force the fallback, Δ = 0)."""
    p, r = model
    delta = frac * float(aa.max_kl(p, r))
    full = aa.bon_vs_klrl(p, r, n, delta, law=aa.reward_law(p, r, n))
    _assert_same_bon_vs_klrl(aa.bon_vs_klrl(p, r, n, delta), full)


@pytest.mark.parametrize(
    "p, r, n, deltas",
    [
        ([0.7, 0.3], [0.0, 1.0], 20000, 0.05),  # binomial window
        ([0.7, 0.3], [0.0, 1.0], 20000, [0.1, 0.3, 0.6]),  # ... covering a batch of Δ
        ([0.1, 0.2, 0.3, 0.15, 0.25], [0.0, 1.0, 2.0, 3.0, 5.0], 5000, [0.1, 0.3, 0.6]),  # lattice, gap at 4
        ([0.25, 0.0, 0.5, 0.25], [-1.5, 9.0, 0.5, 2.5], 3000, 0.05),  # a = -1.5, h = 2, zero letter
    ],
)
def test_window_law_used_and_exact(p, r, n, deltas):
    """The window law is really used here (a fraction of the levels), its
    levels are the full law's with the same log-probabilities, its lump holds
    exactly the mass below, the tilted mass it leaves out on either side is
    below e^-60, and bon_vs_klrl agrees with the full law."""
    p, r = np.array(p), np.array(r)
    full = aa.reward_law(p, r, n)
    found = _bon_window(p, r, n, deltas)
    assert found is not None
    law, lumped = found
    assert lumped and law.levels.shape[0] < full.levels.shape[0] // 2
    fl, fp = np.asarray(full.levels), np.asarray(full.log_prob)
    wl, wp = np.asarray(law.levels), np.asarray(law.log_prob)
    i0 = int(np.searchsorted(fl, wl[1] - 1e-9 * abs(wl[1])))
    np.testing.assert_allclose(wl[1:], fl[i0 : i0 + wl.size - 1], rtol=1e-13)
    np.testing.assert_allclose(wp[1:], fp[i0 : i0 + wl.size - 1], rtol=1e-10, atol=1e-10)
    assert wl[0] < wl[1]
    # the lump is 1 - (mass of the window): exact to absolute rounding
    np.testing.assert_allclose(np.exp(wp[0]), np.exp(logsumexp(fp[:i0])), rtol=1e-10, atol=1e-14)
    # neglected tilted mass, for the extreme λ* of the batch
    lams = [np_lambda_star(p, r, d) if d > 0 else 0.0 for d in np.atleast_1d(deltas)]
    for lam in (min(lams), max(lams)):
        tilted = fp + lam * (fl - fl[-1])
        tilted = tilted - logsumexp(tilted)
        assert logsumexp(tilted[:i0]) <= -60 + 1e-6
        assert logsumexp(tilted[i0 + wl.size - 1 :]) <= -60 + 1e-6
    _assert_same_bon_vs_klrl(aa.bon_vs_klrl(p, r, n, deltas), aa.bon_vs_klrl(p, r, n, deltas, law=full))


@given(
    S.probs(k=4, zeros=False),
    st.sampled_from([0.1, 1.0, 30.0]),
    st.floats(-3.0, 3.0),
    st.floats(0.0, 2.0),
    st.sampled_from([60.0, 6.0, 0.06, 6e-4]),
)
def test_chernoff_cutoffs_solve_the_tilted_rate_equation(p, scale, lam_lo, width, kappa):
    """The window's cutoffs (host NumPy) satisfy their definition, checked with
    the public rate function of the tilted model (an independent JAX road):
    ``I_{φ_λhi}(x_hi) = κ`` above ``Λ'(λ_hi)`` and ``I_{φ_λlo}(x_lo) = κ`` below
    ``Λ'(λ_lo)``, or the cutoff is the reward's end when ``κ`` is never reached."""
    from asymalign._window_law import _chernoff_cutoffs

    r = scale * np.array([0.0, 0.4, 1.0, 2.5])
    lam_lo, lam_hi = lam_lo / scale, (lam_lo + width) / scale
    x_lo, x_hi = _chernoff_cutoffs(r, np.log(p), lam_lo, lam_hi, kappa)

    def tilted(lam):
        q = p * np.exp(lam * (r - r.max()))
        return q / q.sum()

    for lam, x, end, side in ((lam_hi, x_hi, r[-1], 1.0), (lam_lo, x_lo, r[0], -1.0)):
        q = tilted(lam)
        assert side * (x - float(q @ r)) >= -1e-12 * scale  # on the far side of the tilted mean
        if x == end:  # κ is never reached: all of that side is within rate κ (I at the end is -log q(end))
            assert -math.log(q[-1] if side > 0 else q[0]) <= kappa * (1 + 1e-9)
        else:
            rate = float(aa.rate_function(q, r, x))
            np.testing.assert_allclose(rate, kappa, rtol=1e-7, atol=1e-12)


def test_chernoff_cutoffs_reject_a_wrong_rate():
    """The check above can fail: a cutoff moved by 1e-4 of the range misses ``κ`` by far more than its tolerance."""
    from asymalign._window_law import _chernoff_cutoffs

    p, r = np.array([0.4, 0.3, 0.2, 0.1]), np.array([0.0, 0.4, 1.0, 2.5])
    _, x_hi = _chernoff_cutoffs(r, np.log(p), 0.2, 0.5, 0.06)
    q = p * np.exp(0.5 * r)
    q /= q.sum()
    assert abs(float(aa.rate_function(q, r, x_hi)) - 0.06) < 1e-9
    assert abs(float(aa.rate_function(q, r, x_hi + 2.5e-4)) - 0.06) > 1e-6


def test_window_law_not_used_where_it_cannot_be():
    """Δ >= Δ_max (λ* = inf), non-lattice rewards and most-levels windows fall
    back to the full law, with the same results as passing it."""
    p, r = np.array([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 2.0])
    dmax = float(aa.max_kl(p, r))
    assert _bon_window(p, r, 200, dmax) is None
    assert _bon_window(p, r, 200, [0.1, 2 * dmax]) is None
    assert _bon_window(p, r, 4, 0.1) is None  # 9 levels: nothing to gain
    q, s = np.array([0.5, 0.3, 0.2]), np.array([0.0, 1.0, math.sqrt(2.0)])
    assert _bon_window(q, s, 30, 0.1) is None  # not a lattice: types law
    for delta in (dmax, 2 * dmax):
        _assert_same_bon_vs_klrl(
            aa.bon_vs_klrl(p, r, 200, delta), aa.bon_vs_klrl(p, r, 200, delta, law=aa.reward_law(p, r, 200))
        )


def test_bon_vs_klrl_keeps_float32_inputs_in_float32():
    """The law is built on the host in float64; a float32 model still gets float32 results
    (the accelerator path), close to the float64 ones."""
    p = np.array([0.6, 0.3, 0.1])
    r = np.array([0.0, 1.0, 2.0])
    ref = aa.bon_vs_klrl(p, r, 4096, 0.2)
    f32 = aa.bon_vs_klrl(p.astype(np.float32), r.astype(np.float32), 4096, np.float32(0.2))
    for name in ("bon_reward", "bon_kl", "rl_reward"):
        got = getattr(f32, name)
        assert got.dtype == jnp.float32, name
        assert float(got) == pytest.approx(float(getattr(ref, name)), rel=1e-5), name


def test_a_batch_of_deltas_shares_one_copy_of_the_law(monkeypatch):
    """The law reaches the kernel with its own shape, not copied once per Δ (the tails are
    computed once; with 32 Δ on a law of 7e5 levels a copy per Δ tripled the time), and the
    batch gives what each Δ gives alone."""
    import importlib

    bon = importlib.import_module("asymalign.best_of_n")  # the module (aa.best_of_n is a function)
    seen = []
    kernel = bon._bon_vs_klrl_kernel

    def spy(levels, log_prob, *scalars):
        seen.append((levels.shape, log_prob.shape, [x.shape for x in scalars]))
        return kernel(levels, log_prob, *scalars)

    monkeypatch.setattr(bon, "_bon_vs_klrl_kernel", spy)
    p, r, deltas = np.array([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 2.5]), np.array([0.05, 0.2, 0.6])
    law = aa.reward_law(p, r, 40)
    batch = aa.bon_vs_klrl(p, r, 40, deltas, law=law)
    (levels, log_prob, scalars) = seen[0]
    assert len(levels) == 1 and levels == log_prob and all(s == (3,) for s in scalars), seen[0]
    for i, d in enumerate(deltas):
        one = aa.bon_vs_klrl(p, r, 40, d, law=law)
        for a, b in zip(one, batch, strict=True):
            np.testing.assert_allclose(np.asarray(b)[i], np.asarray(a), rtol=1e-13, atol=1e-15)


def test_the_tilt_grid_is_kept_per_model_and_n():
    """The Fisher-length tilt grid (host bisections, ~5 ms) is computed once per (log w, n):
    the kept grid equals a fresh computation, cannot be written to, and another n or
    another law gets its own."""
    from asymalign import _lattice

    log_w = np.log(np.array([0.2, 0.5, 0.3]))
    first = _lattice._host_thetas(log_w, 500)
    assert _lattice._host_thetas(log_w.copy(), 500) is first
    np.testing.assert_array_equal(first, _lattice._host_thetas_of.__wrapped__(log_w.tobytes(), 500))
    with pytest.raises(ValueError, match="read-only"):
        first[0] = 0.0
    assert _lattice._host_thetas(log_w, 501) is not first
    other = np.log(np.array([0.2, 0.3, 0.5]))
    assert not np.array_equal(_lattice._host_thetas(other, 500), first)
