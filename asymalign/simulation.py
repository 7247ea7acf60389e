r"""Monte-Carlo best-of-N: a genuine simulator and its estimators (THEORY.md §8).

:func:`simulate_bon` draws, for each of ``num_trials`` independent trials,
``N = num_samples`` sequences of ``n`` i.i.d. tokens from the reference ``p``,
scores each by its total reward ``r_n(y) = Σ_i r(y_i)`` and keeps one of
highest reward (lowest with ``worst=True``). It never uses the exact law of
``r_n``, so it is an independent check of the exact machinery of THEORY.md §6
and §7: over trials the chosen level has law

.. math::

    B_N(s) = F(s)^N - F(s-)^N \quad\text{(best-of-N)}, \qquad
    W_N(s) = (1 - F(s-))^N - (1 - F(s))^N \quad\text{(worst-of-N)}.

The estimators :func:`mc_mean`, :func:`mc_level_frequencies` and
:func:`mc_win_rate` turn the per-trial output into estimates with standard
errors, to be compared with :func:`~asymalign.bon_reward`,
:func:`~asymalign.bon_level_law` and :func:`~asymalign.bon_win_rate`.

Sampling. When ``p`` is concrete, every token has the law ``c / 2^32`` with
integer masses ``c_j = round(2^32 F_p(j)) - round(2^32 F_p(j-1))`` (``F_p(j) =
p_0 + … + p_j``, computed in float64 on the host), i.e. ``p`` rounded to a
resolution of ``2^-32``: a token with ``p_j = 0`` is never drawn and one with
``0 < p_j < 2^-33`` may be drawn with probability 0.

For ``k <= 2^12`` tokens are drawn ``m`` at a time, one uint32 word of
``jax.random.bits`` per group of ``m`` consecutive tokens of a sequence, where
``m = min(n, ⌊12 / log2 k⌋)`` (``k^m <= 2^12``; ``m = 4`` for ``k = 8``). The
``k^m`` groups have integer masses ``C`` summing to ``2^32``, built by rounding
the product law ``Π_i c_{y_i} / 2^{32(m-1)}`` (first half of the group times
second half, recursively) cell by cell to floor or ceiling with the row and
column sums held exact (a 0-1 matrix with given margins: Ryser's greedy
construction). Hence every position of a group has exactly the marginal law
``c / 2^32``, and a group's probability differs from that of ``m``
independent tokens by at most ``(m - 1) · 2^-32`` (and is 0 wherever a token
has ``c_j = 0``). A group is drawn with probability exactly ``C / 2^32`` by
Walker's alias method on a table of ``2^q >= k^m`` cells (``q <= 12``): the
top ``q`` bits of the word pick a cell, the other ``32 - q`` bits are
compared with its integer threshold. When ``n`` is not a multiple of ``m``,
the last group of a sequence uses only its first ``n mod m`` tokens.

Otherwise (``p`` traced under an outer ``jit``, or ``k > 2^12``) each token
is one word ``u`` inverted through integer CDF thresholds ``t_j = round(2^32
F_p(j))``: the token is the number of thresholds ``<= u`` (drawn with
probability ``(t_x - t_{x-1}) / 2^32``; a traced float32 ``p`` gives a
resolution of about ``2^-24``).

Memory and reproducibility. Trials are processed ``lax.map``-ped in chunks of
``vmap``-ped trials, and inside a trial the ``N`` samples are drawn in chunks
with a running maximum (``lax.scan``), so at most about ``chunk_size`` tokens
exist at once whatever ``N · n · num_trials`` is. The random stream does not
depend on the chunking: trial ``i`` uses ``fold_in(key, i)``, and its samples
come in fixed blocks of ``B = min(N, max(1, 4096 // n))`` sequences, block
``b`` drawn from ``fold_in(fold_in(key, i), b)``. Results are therefore
bit-identical for every ``chunk_size``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _numerics as nx
from ._validate import check_model, check_positive_int, check_real, is_concrete

__all__ = [
    "BoNSimulation",
    "Estimate",
    "LevelFrequencies",
    "simulate_bon",
    "mc_mean",
    "mc_level_frequencies",
    "mc_win_rate",
]

# Tokens per fixed random block: the block size B = max(1, _BLOCK_TOKENS // n)
# (at most N) fixes the random stream; chunking only groups whole blocks.
_BLOCK_TOKENS = 4096
# Default bound on the number of tokens drawn at once (a few tens of MB).
_DEFAULT_CHUNK = 2**21
# Above this many thresholds, binary search beats comparing with all of them.
_COMPARE_ALL_MAX = 32
# Tokens grouped into one word index an alias table of at most 2^_TABLE_BITS cells.
_TABLE_BITS = 12


class BoNSimulation(NamedTuple):
    """Output of :func:`simulate_bon`.

    Attributes:
      rewards: total reward ``r_n`` of the chosen sequence, one per trial,
        shape ``(num_trials,)``, in the float dtype of ``r``.
      tokens: the chosen sequences, shape ``(num_trials, n)``, int32; ``None``
        unless ``return_tokens=True``.
    """

    rewards: jax.Array
    tokens: jax.Array | None


class Estimate(NamedTuple):
    """A Monte-Carlo estimate: ``mean`` and its standard error ``stderr``."""

    mean: jax.Array
    stderr: jax.Array


class LevelFrequencies(NamedTuple):
    """Empirical law over given levels: ``freq`` and its standard errors ``stderr``."""

    freq: jax.Array
    stderr: jax.Array


# ---------------------------------------------------------------------------
# sampling plan and thresholds (host side, static)
# ---------------------------------------------------------------------------


class _Plan(NamedTuple):
    block: int  # sequences per random block (fixes the stream)
    blocks_per_chunk: int  # blocks drawn at once inside a trial
    num_chunks: int  # scan length over sample chunks
    trials_per_chunk: int  # trials vmapped at once
    num_trial_chunks: int  # lax.map length over trial chunks


def _plan(n: int, num_samples: int, num_trials: int, chunk_size: int) -> _Plan:
    """Split the work so that about ``chunk_size`` tokens exist at once."""
    block = max(1, min(num_samples, _BLOCK_TOKENS // n))
    num_blocks = -(-num_samples // block)
    bpc = min(num_blocks, max(1, chunk_size // (block * n)))
    num_chunks = -(-num_blocks // bpc)
    bpc = -(-num_blocks // num_chunks)  # even out the chunks (less padding)
    per_trial = bpc * block * n
    tpc = min(num_trials, max(1, chunk_size // per_trial))
    num_trial_chunks = -(-num_trials // tpc)
    tpc = -(-num_trials // num_trial_chunks)
    return _Plan(block, bpc, num_chunks, tpc, num_trial_chunks)


def _thresholds(p):
    """Integer CDF thresholds ``round(2^32 F_p(j))``, ``j < k-1``, and the last support index."""
    if is_concrete(p):
        a = np.asarray(p, np.float64)
        cdf = np.cumsum(a)
        t = np.rint(cdf[:-1] / cdf[-1] * 2.0**32)
        t = np.clip(t, 0.0, 2.0**32 - 1).astype(np.uint32)
        last = int(np.flatnonzero(a > 0)[-1])
        return jnp.asarray(t), jnp.asarray(last, jnp.int32)
    p = jnp.asarray(p, nx.float_dtype(p))
    dt = p.dtype
    cdf = jnp.cumsum(p)
    top = float(np.nextafter(np.asarray(2.0**32, dt), np.asarray(0.0, dt)))
    t = jnp.clip(jnp.round(cdf[:-1] / cdf[-1] * 2.0**32), 0.0, top).astype(jnp.uint32)
    k = p.shape[-1]
    last = jnp.max(jnp.where(p > 0, jnp.arange(k, dtype=jnp.int32), 0))
    return t, last


def _tokens_from_bits(bits, thresholds, last):
    """Token = number of thresholds ``<= bits`` (integer inverse CDF), capped at ``last``."""
    method = "compare_all" if thresholds.shape[0] <= _COMPARE_ALL_MAX else "scan"
    tok = jnp.searchsorted(thresholds, bits, side="right", method=method).astype(jnp.int32)
    # Thresholds equal to 2^32 were clipped to 2^32 - 1; tokens past the last
    # one with p > 0 (reachable only through that clipping) map back onto it.
    return jnp.minimum(tok, last)


def _draw_tokens(key, thresholds, last, shape):
    """``shape`` i.i.d. tokens from ``p`` (see the module docstring)."""
    return _tokens_from_bits(jax.random.bits(key, shape, jnp.uint32), thresholds, last)


class _Alias(NamedTuple):
    """Alias table for groups of ``m`` tokens (see the module docstring).

    A word ``u`` picks cell ``i = u >> (32 - q)`` and keeps it when
    ``u mod 2^(32-q) < threshold[i]``, else takes ``alias[i]``; cell ``i``
    is the group whose base-``k`` digits (first token most significant) are
    ``i``. Cells ``>= k^m`` pad the table to ``2^q`` and have mass 0.
    """

    threshold: jax.Array  # (2^q,) uint32, in [0, 2^(32-q)]
    alias: jax.Array  # (2^q,) int32


def _group_size(k: int, n: int) -> int:
    """Largest ``m <= n`` with ``k^m <= 2^_TABLE_BITS`` (0 when ``k`` is too large)."""
    m = 0
    while m < min(n, _TABLE_BITS) and k ** (m + 1) <= 2**_TABLE_BITS:
        m += 1
    return m


def _token_masses(p) -> np.ndarray:
    """Integer masses ``c_j = round(2^32 F_p(j)) - round(2^32 F_p(j-1))``, summing to ``2^32``."""
    a = np.asarray(p, np.float64)
    cdf = np.cumsum(a)
    t = np.rint(cdf / cdf[-1] * 2.0**32).astype(np.int64)
    t[-1] = 2**32
    return np.diff(t, prepend=0)


def _round_outer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer ``X_ij ∈ {⌊a_i b_j / 2^32⌋, ⌈a_i b_j / 2^32⌉}`` with row sums ``a`` and column sums ``b``.

    ``a`` and ``b`` are integer masses summing to ``2^32``. Rounding the floors
    up by a 0-1 matrix with the missing row and column sums is feasible (the
    fractional parts are such a matrix, and the transportation polytope is
    integral); Ryser's greedy builds one: each row rounds up in the columns of
    largest remaining demand. Cells with ``a_i b_j = 0`` stay 0.
    """
    prod = np.multiply.outer(a.astype(object), b.astype(object))  # exact: up to 2^64
    x = (prod >> 32).astype(np.int64)
    frac = (prod & (2**32 - 1)).astype(np.int64)
    need_row = a - x.sum(axis=1)
    need_col = b - x.sum(axis=0)
    for i in np.flatnonzero(need_row):
        cols = np.lexsort((-frac[i], -need_col))[: need_row[i]]  # largest demand, then largest fraction
        if np.any(need_col[cols] <= 0) or np.any(prod[i, cols] == 0):
            raise AssertionError("margin-preserving rounding failed")  # impossible by Gale–Ryser
        x[i, cols] += 1
        need_col[cols] -= 1
    if np.any(need_col):
        raise AssertionError("margin-preserving rounding failed")
    return x


def _group_masses(c: np.ndarray, m: int) -> np.ndarray:
    """Integer masses of ``m``-token groups (base-``k`` index, first token most significant), summing to ``2^32``.

    The first ``m - m//2`` and the last ``m//2`` tokens are combined by
    :func:`_round_outer`, recursively: every position has marginal ``c`` exactly
    and each cell is within ``m - 1`` of the product ``Π_i c_{y_i} / 2^{32(m-1)}``.
    """
    if m == 1:
        return c
    return _round_outer(_group_masses(c, m - m // 2), _group_masses(c, m // 2)).reshape(-1)


@functools.lru_cache(maxsize=64)
def _alias_table_host(masses: tuple, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer alias table for the law of ``m``-token groups (host side, cached)."""
    group = _group_masses(np.asarray(masses, np.int64), m)
    q = max(1, (group.size - 1).bit_length())
    cap = 1 << (32 - q)  # mass of one cell; the table holds 2^q · cap = 2^32
    mass = [int(v) for v in group] + [0] * ((1 << q) - group.size)
    threshold = [cap] * len(mass)
    alias = list(range(len(mass)))
    small = [i for i, v in enumerate(mass) if v < cap]
    large = [i for i, v in enumerate(mass) if v > cap]
    while small:  # Walker/Vose, in exact integers
        s, big = small.pop(), large[-1]
        threshold[s], alias[s] = mass[s], big
        mass[big] -= cap - mass[s]
        if mass[big] <= cap:
            large.pop()
            if mass[big] < cap:
                small.append(big)
    if large:
        raise AssertionError("alias table does not sum to 2^32")
    return np.asarray(threshold, np.uint32), np.asarray(alias, np.int32)


def _alias_table(p, m: int) -> _Alias:
    thr, alias = _alias_table_host(tuple(int(v) for v in _token_masses(p)), m)
    return _Alias(jnp.asarray(thr), jnp.asarray(alias))


def _alias_split(bits, table: _Alias):
    """Cell index ``i = u >> (32 - q)`` of each word and whether it is kept (``u mod 2^(32-q) < threshold[i]``)."""
    shift = 32 - (table.threshold.shape[0].bit_length() - 1)
    idx = (bits >> shift).astype(jnp.int32)
    keep = (bits & jnp.uint32((1 << shift) - 1)) < table.threshold[idx]
    return idx, keep


def _cells_from_bits(bits, table: _Alias):
    """The group drawn by each word: its cell if kept, else the cell's alias."""
    idx, keep = _alias_split(bits, table)
    return jnp.where(keep, idx, table.alias[idx])


def _group_values(score, k: int, m: int, size: int, length: int):
    """Score of each cell's first ``length`` tokens, summed left to right: ``Σ_{j<length} score[d_j(i)]``."""
    cell = jnp.arange(size, dtype=jnp.int32)
    vals = score[(cell // k ** (m - 1)) % k]
    for j in range(1, length):
        vals = vals + score[(cell // k ** (m - 1 - j)) % k]
    return vals


def _group_tokens(cells, k: int, m: int, n: int):
    """Tokens of a sequence from its group cells ``(..., G)``: base-``k`` digits, first ``n`` kept."""
    powers = k ** jnp.arange(m - 1, -1, -1, dtype=jnp.int32)
    tok = (cells[..., None] // powers) % k
    return tok.reshape(*cells.shape[:-1], -1)[..., :n].astype(jnp.int32)


# ---------------------------------------------------------------------------
# the jitted simulator
# ---------------------------------------------------------------------------


@functools.partial(
    jax.jit,
    static_argnames=("n", "num_samples", "num_trials", "plan", "worst", "return_tokens", "group"),
)
def _simulate(key, sampler, r, *, n, num_samples, num_trials, plan, worst, return_tokens, group):
    """``sampler`` is ``(thresholds, last)`` when ``group == 0`` (one word per
    token), else an :class:`_Alias` for groups of ``group`` tokens."""
    block, bpc, num_chunks, tpc, num_trial_chunks = plan
    score = -r if worst else r  # maximise the score; negation is exact
    neg_inf = jnp.asarray(-jnp.inf, r.dtype)
    k = r.shape[0]

    if group:
        m = group
        num_groups = -(-n // m)
        size = sampler.threshold.shape[0]
        rest = n - (num_groups - 1) * m  # tokens used from the last group
        full = _group_values(score, k, m, size, m)
        part = full if rest == m else _group_values(score, k, m, size, rest)
        # Each table with its values at the aliases: two gathers with the same index.
        full, part = (full, full[sampler.alias]), (part, part[sampler.alias])

        def lookup(table, idx, keep):
            return jnp.where(keep, table[0][idx], table[1][idx])

        def draw_values(bkey):
            # (num_groups, block) words, group-major; the last group may be partial.
            idx, keep = _alias_split(jax.random.bits(bkey, (num_groups, block), jnp.uint32), sampler)
            if rest == m:
                vals = lookup(full, idx, keep)
            else:
                vals = jnp.concatenate([lookup(full, idx[:-1], keep[:-1]), lookup(part, idx[-1:], keep[-1:])])
            units = jnp.where(keep, idx, sampler.alias[idx]) if return_tokens else None  # as _cells_from_bits
            return vals, units

        units_per_seq = num_groups
    else:
        thresholds, last_token = sampler

        def draw_values(bkey):
            tok = _draw_tokens(bkey, thresholds, last_token, (n, block))  # position-major
            return score[tok], tok

        units_per_seq = n

    def draw_block(trial_key, b):
        # One fixed random block of `block` sequences.
        vals, units = draw_values(jax.random.fold_in(trial_key, b))
        # Sum strictly left to right, so the float result does not depend on
        # how blocks are batched (a tree reduction would).
        s = jax.lax.fori_loop(1, vals.shape[0], lambda t, acc: acc + vals[t], vals[0])
        valid = b * block + jnp.arange(block) < num_samples
        return jnp.where(valid, s, neg_inf), units

    def trial(i):
        trial_key = jax.random.fold_in(key, i)

        def step(carry, c):
            best, best_units = carry
            b = c * bpc + jnp.arange(bpc)
            s, units = jax.vmap(draw_block, in_axes=(None, 0))(trial_key, b)  # (bpc, block), (bpc, U, block)
            j = jnp.argmax(s.reshape(-1))  # first of the tied maxima
            sj = s.reshape(-1)[j]
            better = sj > best  # strict: earlier chunks win ties
            best = jnp.where(better, sj, best)
            if return_tokens:
                best_units = jnp.where(better, units[j // block, :, j % block], best_units)
            return (best, best_units), None

        init = (neg_inf, jnp.zeros((units_per_seq,), jnp.int32) if return_tokens else None)
        (best, best_units), _ = jax.lax.scan(step, init, jnp.arange(num_chunks))
        return (-best if worst else best), best_units

    # Trials in chunks of tpc (padded; the extra trials are discarded).
    idx = jnp.arange(num_trial_chunks * tpc).reshape(num_trial_chunks, tpc)
    rewards, units = jax.lax.map(jax.vmap(trial), idx)
    rewards = rewards.reshape(-1)[:num_trials]
    tokens = None
    if return_tokens:
        units = units.reshape(-1, units_per_seq)[:num_trials]
        tokens = _group_tokens(units, k, group, n) if group else units
    return rewards, tokens


def _check_key(key, name="key"):
    dt = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    typed = dt is not None and jnp.issubdtype(dt, jax.dtypes.prng_key) and shape == ()
    raw = dt == jnp.uint32 and shape == (2,)
    if not (typed or raw):
        raise ValueError(
            f"{name} must be a single JAX PRNG key (jax.random.key(seed) or "
            f"jax.random.PRNGKey(seed)), got {type(key).__name__} with shape {shape}"
        )


def _check_vector(x, name):
    if np.ndim(x) != 1:
        raise ValueError(f"{name} must be a 1-D vector, got shape {np.shape(x)}")


def simulate_bon(
    key,
    p,
    r,
    n: int,
    num_samples: int,
    num_trials: int,
    *,
    worst: bool = False,
    return_tokens: bool = False,
    chunk_size: int | None = None,
) -> BoNSimulation:
    r"""Simulate best-of-N (or worst-of-N) by genuine sampling (THEORY.md §8).

    For each of ``num_trials`` independent trials, draws ``N = num_samples``
    sequences ``Y_1, …, Y_N ~ p^n`` (``N · n`` i.i.d. tokens from ``p``),
    scores them by ``r_n(y) = Σ_i r(y_i)`` and keeps one of highest score
    (lowest with ``worst=True``; among ties, the first drawn). Over trials the
    chosen level has law ``B_N(s) = F(s)^N - F(s-)^N`` (``W_N`` for
    worst-of-N), THEORY.md §6, without this function using that law.

    Jit-compiled once per ``(n, num_samples, num_trials, chunk plan, worst,
    return_tokens)``, alphabet size and whether ``p`` is concrete (which
    selects the sampler: groups of tokens per random word, or one word per
    token). Memory is bounded by chunking (about
    ``chunk_size`` tokens at once, default ``2^21``), so ``N · n ·
    num_trials`` may be far beyond device memory; the result is bit-identical
    for every ``chunk_size`` (see the module docstring for the random stream
    and the ``2^-32`` resolution of the token sampler).

    Args:
      key: a JAX PRNG key.
      p: reference probabilities, shape ``(k,)``; zeros are never sampled.
      r: per-token rewards, shape ``(k,)``; sums are accumulated in its float
        dtype.
      n: sequence length (>= 1).
      num_samples: ``N``, sequences drawn per trial (>= 1).
      num_trials: independent trials (>= 1).
      worst: keep the lowest-reward sequence instead (worst-of-N).
      return_tokens: also return the chosen sequences.
      chunk_size: upper bound on the tokens drawn at once (>= 1; memory only,
        never the result).

    Returns:
      :class:`BoNSimulation` with ``rewards`` ``(num_trials,)`` and ``tokens``
      ``(num_trials, n)`` int32 or ``None``.

    Raises ``ValueError`` naming the argument for an invalid ``p``/``r``, a
    non-positive ``n``/``num_samples``/``num_trials``/``chunk_size`` or a bad
    key. Under an outer ``jit`` the values of ``p`` and ``r`` are not checked.

    >>> import jax, asymalign as aa
    >>> p, r = jnp.array([0.5, 0.5]), jnp.array([0.0, 1.0])
    >>> sim = aa.simulate_bon(jax.random.key(0), p, r, n=4, num_samples=8,
    ...                       num_trials=2000, return_tokens=True)
    >>> sim.rewards.shape, sim.tokens.shape
    ((2000,), (2000, 4))
    >>> bool(jnp.all(sim.tokens.sum(axis=1) == sim.rewards))
    True
    >>> est = aa.mc_mean(sim.rewards)
    >>> exact = aa.bon_reward(aa.reward_law(p, r, 4), jnp.log(8.0))
    >>> bool(abs(est.mean - exact) < 4 * est.stderr)  # probabilistic; fixed key
    True
    """
    _check_key(key)
    _check_vector(p, "p")
    _check_vector(r, "r")
    check_model(p, r)
    n = check_positive_int(n, "n")
    num_samples = check_positive_int(num_samples, "num_samples")
    num_trials = check_positive_int(num_trials, "num_trials")
    chunk_size = _DEFAULT_CHUNK if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
    r = jnp.asarray(r, nx.float_dtype(r))
    group = _group_size(r.shape[0], n) if is_concrete(p) else 0
    sampler = _alias_table(p, group) if group else _thresholds(p)
    plan = _plan(n, num_samples, num_trials, chunk_size)
    rewards, tokens = _simulate(
        key,
        sampler,
        r,
        n=n,
        num_samples=num_samples,
        num_trials=num_trials,
        plan=plan,
        worst=bool(worst),
        return_tokens=bool(return_tokens),
        group=group,
    )
    return BoNSimulation(rewards, tokens if return_tokens else None)


# ---------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------


def _default_atol(dt, *scales):
    """``sqrt(eps) · max(1, max |scale|)``: far above summation round-off, far below level gaps."""
    scale = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(s)) for s in scales], jnp.asarray(1.0, dt))
    return jnp.sqrt(jnp.finfo(dt).eps) * scale


def _check_atol(atol):
    if atol is not None:
        check_real(atol, "atol")
        if is_concrete(atol) and np.any(np.asarray(atol) < 0):
            raise ValueError(f"atol must be >= 0, got {atol!r}")


def mc_mean(x) -> Estimate:
    r"""Sample mean and its standard error along the last axis (trials).

    .. math:: \bar x = \frac1m \sum_t x_t, \qquad
              \mathrm{se} = \sqrt{\frac{1}{m(m-1)} \sum_t (x_t - \bar x)^2}

    With ``x = simulate_bon(...).rewards`` this estimates the best-of-N reward
    ``E_{π_N}[r_n] = Σ_s B_N(s) s`` (THEORY.md §6, §8). Needs ``m >= 2``.

    >>> import asymalign as aa
    >>> est = aa.mc_mean(jnp.array([1.0, 2.0, 3.0, 4.0]))
    >>> float(est.mean), round(float(est.stderr), 6)
    (2.5, 0.645497)
    """
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[-1] < 2:
        raise ValueError(f"x must have at least 2 samples along its last axis, got shape {x.shape}")
    return _mean(x.astype(nx.float_dtype(x)))


@jax.jit
def _mean(x):
    m = x.shape[-1]
    mean = jnp.mean(x, axis=-1)
    var = jnp.sum((x - mean[..., None]) ** 2, axis=-1) / (m - 1)
    return Estimate(mean, jnp.sqrt(var / m))


def mc_level_frequencies(rewards, levels, atol=None) -> LevelFrequencies:
    r"""How often each level was chosen, with binomial standard errors (THEORY.md §8).

    Each reward is matched to its nearest level and counted there if within
    ``atol`` (simulated sums and exact levels differ by floating round-off):

    .. math:: \hat B(s) = \frac1m \#\{t : |x_t - s| \le \mathrm{atol}\}, \qquad
              \mathrm{se}(s) = \sqrt{\hat B(s)(1 - \hat B(s)) / m}.

    Compare ``freq`` with ``exp(bon_level_law(law, log N))`` over
    ``law.levels`` (§6). Rewards matching no level are not counted, so
    ``1 - freq.sum()`` is the unmatched fraction. Default ``atol`` is
    ``sqrt(eps) · max(1, max|levels|)`` in the working dtype.

    Args:
      rewards: chosen total rewards, shape ``(m,)``.
      levels: sorted distinct levels, shape ``(L,)`` (e.g. ``reward_law(...).levels``).
      atol: matching tolerance (>= 0).

    >>> import asymalign as aa
    >>> lf = aa.mc_level_frequencies(jnp.array([0.0, 1.0, 1.0, 2.0]), jnp.array([0.0, 1.0, 2.0]))
    >>> lf.freq.tolist()
    [0.25, 0.5, 0.25]
    """
    _check_vector(rewards, "rewards")
    _check_vector(levels, "levels")
    if np.shape(rewards)[0] < 1 or np.shape(levels)[0] < 1:
        raise ValueError("rewards and levels must be non-empty")
    check_real(rewards, "rewards")
    check_real(levels, "levels")
    if is_concrete(levels) and np.any(np.diff(np.asarray(levels)) <= 0):
        raise ValueError("levels must be sorted strictly ascending (distinct levels)")
    _check_atol(atol)
    dt = nx.float_dtype(rewards, levels)
    x, lv = jnp.asarray(rewards, dt), jnp.asarray(levels, dt)
    atol = _default_atol(dt, lv) if atol is None else jnp.asarray(atol, dt)
    return _level_frequencies(x, lv, atol)


@jax.jit
def _level_frequencies(x, lv, atol):
    dt = x.dtype
    m, num = x.shape[0], lv.shape[0]
    hi = jnp.clip(jnp.searchsorted(lv, x), 0, num - 1)
    lo = jnp.clip(hi - 1, 0, num - 1)
    idx = jnp.where(jnp.abs(x - lv[lo]) <= jnp.abs(x - lv[hi]), lo, hi)
    hit = jnp.abs(x - lv[idx]) <= atol
    freq = jnp.zeros(num, dt).at[idx].add(hit.astype(dt)) / m
    return LevelFrequencies(freq, jnp.sqrt(freq * (1 - freq) / m))


def mc_win_rate(key, rewards, p, r, n: int, *, atol=None) -> Estimate:
    r"""Win rate of the chosen sequences against fresh reference draws (THEORY.md §6, §8).

    For each trial ``t`` draws one independent ``Y'_t ~ p^n`` (with the same
    sampler as :func:`simulate_bon`) and scores

    .. math:: w_t = 1[x_t > r_n(Y'_t)] + \tfrac12 1[x_t = r_n(Y'_t)],

    so ``mean(w)`` estimates ``P(r(Y_N) > r(Y')) + ½ P(r(Y_N) = r(Y')) =
    Σ_s B_N(s) [F(s-) + ½ P_n(s)]`` (:func:`~asymalign.bon_win_rate`). Equality
    is up to ``atol`` (default ``sqrt(eps) · max(1, max|x|, max|r_n(Y')|)``).
    ``key`` must be independent of the one given to :func:`simulate_bon`
    (e.g. split it).

    Args:
      key: a JAX PRNG key.
      rewards: chosen total rewards ``x_t``, shape ``(num_trials,)``, num_trials >= 2.
      p, r: the model the rewards were simulated from.
      n: sequence length.
      atol: tie tolerance (>= 0).

    Returns:
      :class:`Estimate` of the win rate.

    >>> import jax, asymalign as aa
    >>> p, r = jnp.array([0.5, 0.5]), jnp.array([0.0, 1.0])
    >>> k1, k2 = jax.random.split(jax.random.key(1))
    >>> sim = aa.simulate_bon(k1, p, r, n=4, num_samples=8, num_trials=2000)
    >>> est = aa.mc_win_rate(k2, sim.rewards, p, r, n=4)
    >>> exact = aa.bon_win_rate(aa.reward_law(p, r, 4), jnp.log(8.0))
    >>> bool(abs(est.mean - exact) < 4 * est.stderr)  # probabilistic; fixed key
    True
    """
    _check_vector(rewards, "rewards")
    num_trials = np.shape(rewards)[0]
    if num_trials < 2:
        raise ValueError(f"rewards must hold at least 2 trials, got {num_trials}")
    check_real(rewards, "rewards")
    _check_atol(atol)
    ref = simulate_bon(key, p, r, n, 1, num_trials).rewards
    dt = nx.float_dtype(rewards, ref)
    x, ref = jnp.asarray(rewards, dt), ref.astype(dt)
    atol = _default_atol(dt, x, ref) if atol is None else jnp.asarray(atol, dt)
    return _win_scores(x, ref, atol)


@jax.jit
def _win_scores(x, ref, atol):
    d = x - ref
    w = jnp.where(jnp.abs(d) <= atol, 0.5, jnp.where(d > 0, 1.0, 0.0)).astype(x.dtype)
    return _mean(w)
