r"""The exact integer token sampler behind the Monte-Carlo simulator (THEORY.md §8).

Every token has the law ``c / 2^32`` with integer masses ``c_j =
round(2^32 F_p(j)) - round(2^32 F_p(j-1))`` (``F_p(j) = p_0 + … + p_j``,
computed in float64 on the host), i.e. ``p`` rounded to a resolution of
``2^-32``: a token with ``p_j = 0`` is never drawn and one with ``0 < p_j <
2^-33`` may be drawn with probability 0. Three samplers, chosen by
:func:`make_sampler`:

- **Groups** (``p`` concrete, ``k <= 2^12``): tokens are drawn ``m`` at a time,
  one uint32 word (:func:`random_words`) per group of ``m`` consecutive tokens
  of a sequence, ``m = min(n, ⌊12 / log2 k⌋)`` (``k^m <= 2^12``; ``m = 4`` for
  ``k = 8``). The ``k^m`` groups have integer masses ``C`` summing to ``2^32``,
  built by rounding the product law ``Π_i c_{y_i} / 2^{32(m-1)}`` (first half
  of the group times second half, recursively) cell by cell to floor or
  ceiling with the row and column sums held exact (a 0-1 matrix with given
  margins: Ryser's greedy construction). Hence every position of a group has
  exactly the marginal law ``c / 2^32``, and a group's probability differs from
  that of ``m`` independent tokens by at most ``(m - 1) · 2^-32`` (and is 0
  wherever a token has ``c_j = 0``). When ``n`` is not a multiple of ``m`` the
  last group of a sequence uses only its first ``n mod m`` tokens.
- **Single tokens** (``p`` concrete, ``2^12 < k <= 2^20``, e.g. a 20 000-word
  vocabulary): the same alias table with ``m = 1``, one word per token, each
  token drawn with probability exactly ``c_j / 2^32`` in two table lookups
  (instead of a binary search over ``k`` thresholds).
- **Thresholds** (``p`` traced under an outer ``jit``, or ``k > 2^20``): each
  token is one word ``u`` inverted through integer CDF thresholds ``t_j =
  round(2^32 F_p(j))``: the token is the number of thresholds ``<= u`` (drawn
  with probability ``(t_x - t_{x-1}) / 2^32``; a traced float32 ``p`` gives a
  resolution of about ``2^-24``).

Alias tables (Walker's method in exact integers) have ``2^q >= k^m`` cells:
the top ``q`` bits of a word pick a cell, the other ``32 - q`` bits are
compared with its integer threshold, so a group (token) is drawn with
probability exactly ``C / 2^32``. Tables are built on the host and cached.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _numerics as nx
from ._buckets import device_array
from ._validate import is_concrete

# Above this many thresholds, binary search beats comparing with all of them.
_COMPARE_ALL_MAX = 32
# Tokens grouped into one word index an alias table of at most 2^_TABLE_BITS cells.
_TABLE_BITS = 12
# Single-token alias tables up to 2^_ALIAS_MAX_BITS cells (host build time ~1 s at the top).
_ALIAS_MAX_BITS = 20


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


def random_words(key, shape) -> jax.Array:
    """``shape`` i.i.d. uniform uint32 words from ``key``.

    With x64 enabled they are the low and high halves of ``⌈size/2⌉`` uint64
    words of ``jax.random.bits`` (one threefry hash gives 64 bits: twice the
    words per hash of 32-bit draws on CPU), else ``jax.random.bits`` uint32.
    """
    size = math.prod(shape)
    if not jax.config.jax_enable_x64 or size < 2:
        return jax.random.bits(key, shape, jnp.uint32)
    wide = jax.random.bits(key, ((size + 1) // 2,), jnp.uint64)
    halves = jnp.concatenate([wide.astype(jnp.uint32), (wide >> 32).astype(jnp.uint32)])
    return halves[:size].reshape(shape)


def _draw_tokens(key, thresholds, last, shape):
    """``shape`` i.i.d. tokens from ``p`` (see the module docstring)."""
    return _tokens_from_bits(random_words(key, shape), thresholds, last)


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
def _alias_table_host(masses: bytes, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer alias table for the law of ``m``-token groups (host side, cached by the
    bytes of the int64 token masses)."""
    group = _group_masses(np.frombuffer(masses, np.int64).copy(), m)
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
    thr, alias = _alias_table_host(_token_masses(p).astype(np.int64).tobytes(), m)
    return _Alias(device_array(thr), device_array(alias))


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
    powers = (k ** jnp.arange(m - 1, -1, -1, dtype=jnp.int32)).reshape((1,) * cells.ndim + (m,))
    tok = (cells[..., None] // powers) % k
    return tok.reshape(*cells.shape[:-1], -1)[..., :n].astype(jnp.int32)


def make_sampler(p, n: int):
    """``(group, sampler)`` for :func:`draw_units`: an :class:`_Alias` for groups of
    ``group >= 1`` tokens, or ``(thresholds, last)`` with ``group = 0`` (module docstring)."""
    k = np.shape(p)[-1]
    if not is_concrete(p):
        return 0, _thresholds(p)
    group = _group_size(k, n)
    if group == 0 and (k - 1).bit_length() <= _ALIAS_MAX_BITS:
        group = 1
    return (group, _alias_table(p, group)) if group else (0, _thresholds(p))


def draw_units(bits, sampler, group: int):
    """Draw one unit per word: the cell index and keep flag (alias), or the token (thresholds)."""
    if group:
        return _alias_split(bits, sampler)
    thresholds, last = sampler
    return _tokens_from_bits(bits, thresholds, last), None
