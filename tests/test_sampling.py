"""The exact integer token sampler (asymalign/sampling.py; THEORY.md §8).

Exact integer checks of the masses and alias tables (every token has the law
``c / 2^32``), and probabilistic chi-square checks of the drawn tokens (fixed
PRNG keys, a 4-sigma level), each shown to reject a slightly wrong law:
small alphabets drawn in groups of tokens per random word, and a 20 000-token
Zipf vocabulary drawn one token per word from a single-token alias table.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import asymalign as aa
from asymalign import sampling as smp

Z = 4.0  # standard errors of tolerance
KEY = jax.random.key(20240401)  # fixed: every Monte-Carlo assertion is probabilistic
ALPHA = 2 * stats.norm.sf(Z)


def chi2_ok(x, q):
    """Chi-square goodness of fit of the integer samples ``x`` to the law ``q`` at level ALPHA."""
    on = q > 0
    counts = np.bincount(x, minlength=q.size)
    assert np.all(counts[~on] == 0)  # zero-probability outcomes are never drawn
    expect = x.size * q[on]
    return float(np.sum((counts[on] - expect) ** 2 / expect)) <= stats.chi2.isf(ALPHA, on.sum() - 1)


def test_token_sampler_edges():
    # Integer inverse CDF: thresholds round(2^32 F_p), token = #thresholds <= bits;
    # zero-probability tokens own an empty interval, also at the ends of the alphabet.
    p = np.array([0.0, 0.5, 0.0, 0.25, 0.25, 0.0, 0.0])
    thr, last = smp._thresholds(p)
    np.testing.assert_array_equal(np.asarray(thr), [0, 2**31, 2**31, 3 * 2**30, 2**32 - 1, 2**32 - 1])
    assert int(last) == 4
    bits = jnp.array([0, 1, 2**31 - 1, 2**31, 3 * 2**30 - 1, 3 * 2**30, 2**32 - 2, 2**32 - 1], jnp.uint32)
    tok = np.asarray(smp._tokens_from_bits(bits, thr, last))
    np.testing.assert_array_equal(tok, [1, 1, 1, 3, 3, 4, 4, 4])
    # The traced path (p not concrete) computes the same thresholds.
    thr_t, last_t = jax.jit(smp._thresholds)(jnp.asarray(p))
    np.testing.assert_array_equal(np.asarray(thr_t), np.asarray(thr))
    assert int(last_t) == 4


# Zeros at the ends and in the middle, a letter of probability 1e-11 < 2^-33
# (rounded to mass 0) and one of 1e-7 (about 429 units of 2^-32).
TABLE_MODELS = [
    (np.array([0.0, 0.5, 0.0, 0.3, 0.2, 0.0]), 3),
    (np.array([0.0, 0.4, 0.0, 0.35, 0.25 - 1e-7 - 1e-11, 1e-7, 1e-11]), 2),
    (np.random.default_rng(5).dirichlet(np.ones(8)), 4),
    (np.array([0.7, 0.3]), 12),
    (np.array([1.0]), 5),
]


@pytest.mark.parametrize("p, m", TABLE_MODELS)
def test_group_law_and_alias_table_are_exact(p, m):
    # Exact integer checks of the grouped sampler (module docstring): token masses
    # c = diff(round(2^32 F_p)), group masses C with marginals c at every position,
    # within m - 1 of the product per cell, and an alias table whose implied law is C.
    k = p.size
    c = smp._token_masses(p)
    assert c.sum() == 2**32 and np.all(c >= 0)
    np.testing.assert_array_equal(c, np.diff(np.rint(np.cumsum(p) * 2.0**32), prepend=0).astype(np.int64))
    assert np.all(c[p == 0] == 0) and np.all(c[p < 2.0**-33] == 0)
    C = smp._group_masses(c, m)
    assert C.shape == (k**m,) and C.sum() == 2**32 and np.all(C >= 0)
    grid = C.reshape((k,) * m)
    for pos in range(m):
        np.testing.assert_array_equal(grid.sum(axis=tuple(a for a in range(m) if a != pos)), c)
    prod = functools.reduce(np.multiply.outer, [c.astype(object)] * m).reshape(-1)  # exact integers
    scale = 2 ** (32 * (m - 1))
    err = np.abs(C.astype(object) * scale - prod)
    assert np.all(err < max(m - 1, 1) * scale)  # |C - Π c / 2^{32(m-1)}| < m - 1 (exact for m = 1)
    assert np.all(C[prod == 0] == 0)  # a group with a zero-mass token is never drawn
    thr, alias = (np.asarray(a, np.int64) for a in smp._alias_table_host(c.astype(np.int64).tobytes(), m))
    size = thr.size
    q = size.bit_length() - 1
    assert size == 2 ** max(1, (k**m - 1).bit_length()) and q <= smp._TABLE_BITS
    cap = 2 ** (32 - q)
    assert np.all((thr >= 0) & (thr <= cap)) and np.all((alias >= 0) & (alias < size))
    implied = thr.copy()
    np.add.at(implied, alias, cap - thr)  # P(cell j) · 2^32 = thr_j + Σ_{alias_i = j} (cap - thr_i)
    np.testing.assert_array_equal(implied, np.concatenate([C, np.zeros(size - k**m, np.int64)]))
    # The jitted lookup: the last word keeping cell i, and the first one passing to its alias.
    table = smp._Alias(jnp.asarray(thr, jnp.uint32), jnp.asarray(alias, jnp.int32))
    cells = np.arange(size)
    has_own, has_alias = thr > 0, thr < cap
    words = np.concatenate([cells[has_own] * cap + thr[has_own] - 1, cells[has_alias] * cap + thr[has_alias]])
    got = np.asarray(smp._cells_from_bits(jnp.asarray(words, jnp.uint32), table))
    np.testing.assert_array_equal(got, np.concatenate([cells[has_own], alias[has_alias]]))


def test_group_size():
    assert [smp._group_size(k, 64) for k in (1, 2, 3, 8, 16, 64, 65, 4096, 4097)] == [12, 12, 7, 4, 3, 2, 1, 1, 0]
    assert smp._group_size(8, 3) == 3 and smp._group_size(2, 1) == 1


def test_token_frequencies_match_p():
    # Probabilistic (fixed key): with N = 1 the returned tokens are plain draws
    # from p^n. k = 6 gives groups of m = 4 tokens, so n = 7 is one full group
    # and a partial one of 3. Chi-square (4-sigma level) over all tokens, each
    # position, and pairs inside a group, across the group boundary and inside
    # the partial group; a z-bound for a letter of probability 3e-4.
    p = np.array([0.0, 0.4, 0.0, 0.3497, 0.25, 3e-4])
    r = np.array([9.0, 0.3, -9.0, 1.1, -0.4, 2.0])
    n, trials = 7, 40_000
    assert smp._group_size(p.size, n) == 4
    sim = aa.simulate_bon(jax.random.fold_in(KEY, 10), p, r, n, 1, trials, return_tokens=True)
    tok = np.asarray(sim.tokens)
    np.testing.assert_allclose(r[tok].sum(axis=1), np.asarray(sim.rewards), atol=1e-12)
    assert chi2_ok(tok.ravel(), p)
    assert all(chi2_ok(tok[:, i], p) for i in range(n))
    lumped = np.array([0, 1, 2, 3, 4, 4])  # the rare letter joins letter 4 for pair counts
    q = np.bincount(lumped, weights=p)
    for i, j in ((0, 1), (2, 3), (3, 4), (5, 6)):
        assert chi2_ok(lumped[tok[:, i]] * q.size + lumped[tok[:, j]], np.outer(q, q).ravel())
    m = tok.size
    assert abs(np.sum(tok == 5) - m * p[5]) <= Z * np.sqrt(m * p[5] * (1 - p[5])) + 1
    # The same checks reject slightly wrong laws.
    wrong = p.copy()
    wrong[[1, 3]] += [0.01, -0.01]  # noncentrality ≈ 150 vs a 4-sigma cut of 24.5 (0.005 gave ≈ 37: marginal)
    assert not chi2_ok(tok.ravel(), wrong)
    rare = p.copy()
    rare[[3, 5]] += [-6e-4, 6e-4]  # the rare letter three times as likely
    assert not chi2_ok(tok.ravel(), rare)
    indep = np.outer(q, q)
    corr = indep.copy()
    corr[1, 1] += 0.02
    corr[1, 3] -= 0.02  # a dependence between neighbours
    assert not chi2_ok(lumped[tok[:, 0]] * q.size + lumped[tok[:, 1]], corr.ravel())


# ---------------------------------------------------------------------------
# large vocabularies: single-token alias tables (k > 2^12)
# ---------------------------------------------------------------------------


def zipf(k, s=1.1):
    p = 1.0 / np.arange(1, k + 1) ** s
    return p / p.sum()


def test_large_vocabulary_alias_table_is_exact():
    # k = 20 000 > 2^12: one token per word from a 2^15-cell alias table whose
    # implied law is exactly c / 2^32, with zeros (also at the end) and a letter
    # below 2^-33 rounded to mass 0.
    k = 20_000
    p = zipf(k)
    p[[3, 777, k - 1]] = 0.0
    p[5000] = 1e-11
    p /= p.sum()
    group, table = smp.make_sampler(p, 8)
    assert group == 1 and table.threshold.shape == (2**15,)
    c = smp._token_masses(p)
    assert c.sum() == 2**32 and np.all(c[p == 0] == 0) and c[5000] == 0
    np.testing.assert_array_equal(c, np.diff(np.rint(np.cumsum(p) * 2.0**32), prepend=0).astype(np.int64))
    thr, alias = np.asarray(table.threshold, np.int64), np.asarray(table.alias, np.int64)
    cap = 2**17
    assert np.all((thr >= 0) & (thr <= cap)) and np.all((alias >= 0) & (alias < 2**15))
    implied = thr.copy()
    np.add.at(implied, alias, cap - thr)
    np.testing.assert_array_equal(implied, np.concatenate([c, np.zeros(2**15 - k, np.int64)]))
    # Traced p and alphabets beyond 2^20 use the integer CDF thresholds instead.
    assert smp.make_sampler(np.full(2**20 + 1, 1.0 / (2**20 + 1)), 1)[0] == 0
    groups = []
    jax.jit(lambda q: groups.append(smp.make_sampler(q, 8)[0]) or q)(jnp.asarray(p))
    assert groups == [0]


@functools.cache
def zipf_tokens():
    k, n, trials = 20_000, 16, 8192  # 131 072 tokens
    p = zipf(k)
    r = (np.arange(k) % 11 - 5).astype(np.float64)  # integer valences -5..5, like AFINN
    sim = aa.simulate_bon(jax.random.fold_in(KEY, 20), p, r, n, 1, trials, return_tokens=True)
    tok = np.asarray(sim.tokens)
    np.testing.assert_array_equal(r[tok].sum(axis=1), np.asarray(sim.rewards))
    return p, tok.ravel()


def test_large_vocabulary_token_frequencies():
    # Probabilistic (fixed key). Chi-square over 64 bins of consecutive tokens
    # (about 1/64 of the mass each; the head tokens are bins of their own),
    # and the 16 most frequent tokens one by one.
    p, tok = zipf_tokens()
    bins = np.minimum(((np.cumsum(p) - p / 2) * 64).astype(int), 63)
    q = np.bincount(bins, weights=p, minlength=64)
    assert chi2_ok(bins[tok], q)
    head = np.minimum(np.arange(p.size), 16)
    q_head = np.bincount(head, weights=p)
    assert chi2_ok(head[tok], q_head)
    # The same checks reject the law perturbed by 5% in alternate bins, and a
    # head token 3% more likely.
    wrong = p * (1 + 0.05 * (-1.0) ** bins)
    assert not chi2_ok(bins[tok], np.bincount(bins, weights=wrong / wrong.sum(), minlength=64))
    wrong = p.copy()
    wrong[[0, 1]] += [0.03 * p[0], -0.03 * p[0]]
    assert not chi2_ok(head[tok], np.bincount(head, weights=wrong))


def test_random_words_are_uniform_and_independent_halves():
    # Probabilistic (fixed key). With x64 the words are the low and high halves of
    # uint64 draws: word j and word j + size/2 share a 64-bit draw. Chi-square of
    # their top 2 bits jointly (16 cells: uniform and independent), and of the
    # low 4 bits of all words; rejects a law with one cell 25% more likely.
    size = 2**16
    w = np.asarray(smp.random_words(jax.random.fold_in(KEY, 21), (size,))).astype(np.int64)
    assert w.min() >= 0 and w.max() < 2**32
    pairs = (w[: size // 2] >> 30) * 4 + (w[size // 2 :] >> 30)
    assert chi2_ok(pairs, np.full(16, 1 / 16))
    assert chi2_ok(w & 15, np.full(16, 1 / 16))
    skew = np.full(16, 1 / 16)
    skew[0] *= 1.25
    skew[1:] -= (skew[0] - 1 / 16) / 15
    assert not chi2_ok(pairs, skew)
    # Odd sizes and shapes.
    assert smp.random_words(KEY, (3, 5)).shape == (3, 5) and smp.random_words(KEY, (1,)).dtype == jnp.uint32
