"""The jitted Monte-Carlo kernels behind :mod:`asymalign.simulation` (THEORY.md §8, §12, §13).

Private: the public functions in :mod:`asymalign.simulation` validate their
arguments and call :func:`_simulate` (best-of-N, worst-of-N, soft, Best-of-Poisson;
the running best over chunks of fixed random blocks) and :func:`_draws` (all
draws). The random stream and the chunking are described in
:mod:`asymalign.simulation`; the token sampler in :mod:`asymalign.sampling`.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._jit import SMALL_WORK, jit
from ._validate import is_concrete
from .sampling import (
    _TABLE_BITS,
    _alias_split,
    _draw_tokens,
    _group_size,
    _group_tokens,
    _group_values,
    _tokens_from_bits,
    random_words,
)

# Tokens per fixed random block: the block size B = max(1, _BLOCK_TOKENS // n)
# (at most N) fixes the random stream; chunking only groups whole blocks.
_BLOCK_TOKENS = 4096
# Default bound on the number of tokens drawn at once (a few tens of MB).
_DEFAULT_CHUNK = 2**21
# Sequences of at most this many units are summed in an unrolled loop.
_UNROLL_ROWS = 16
# fold_in index of a trial's Poisson count (block indices never reach it).
_COUNT_STREAM = 2**32 - 1


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


def _samples_plan(n: int, num_samples: int, num_trials: int, chunk_size: int) -> _Plan | None:
    """A plan shared by every ``N`` of a bucket, for a traced ``N`` with a static
    ``n`` (where :func:`_traced_plan` does not apply), or ``None`` when ``N``
    fixes the block size (``N < 4096 // n``: the block is ``N`` sequences).

    For ``N >= max(1, 4096 // n)`` the block ``B = max(1, 4096 // n)`` does not
    depend on ``N``, so the random stream of ``N`` samples is the first ``N``
    sequences of that of any larger ``N``; chunks of blocks are then drawn in a
    ``while_loop`` until ``N`` samples exist (as for Best-of-Poisson). The
    static sizes come from the power of two ``S >= N``: chunks of at most a
    quarter of the blocks of the bucket's smallest ``N`` (so at most about a
    quarter of a chunk is drawn beyond ``N``), within ``chunk_size`` tokens."""
    block = max(1, _BLOCK_TOKENS // n)
    if num_samples < block:
        return None
    size = 1 << (num_samples - 1).bit_length()
    max_blocks = -(-size // block)
    min_blocks = -(-(size // 2 + 1) // block)
    bpc = max(1, min(max_blocks, chunk_size // (block * n), min_blocks // 4))
    num_chunks = -(-max_blocks // bpc)
    per_trial = bpc * block * n
    tpc = min(num_trials, max(1, chunk_size // per_trial))
    num_trial_chunks = -(-num_trials // tpc)
    tpc = -(-num_trials // num_trial_chunks)
    return _Plan(block, bpc, num_chunks, tpc, num_trial_chunks)


class _Shape(NamedTuple):
    """Static padded sizes of the simulator with ``(n, N)`` traced (issue 11)."""

    rows: int  # units (groups or tokens) per sequence, at most, over the bucket of n
    block: int  # sequences per random block, at most
    half: int  # uint64 words drawn per block (2 * half >= units in any block of the bucket)
    tokens: int  # padded sequence length of the returned tokens: rows * group
    max_samples: int  # N at most over the bucket (S), capped (_traced_plan): sizes the work, not an array


def _traced_plan(n: int, sizing: int, num_trials: int, chunk_size: int, k: int, group: int):
    """``(shape, plan)`` for one executable shared by every ``n`` of the bucket
    ``[2^a, 2^(a+1))`` and every ``N`` of ``(S/2, S]`` (``S = sizing``, a power of
    two), or ``None`` where a shape would change within the bucket.

    The random stream is unchanged (module docstring of :mod:`asymalign.simulation`):
    block ``b`` holds ``B = min(N, max(1, 4096 // n))`` sequences whose ``G`` units
    (groups of ``group`` tokens, or tokens) are words ``g·B + j`` of
    :func:`~asymalign.sampling.random_words` of ``G·B`` words; those words are
    the first ones of a longer draw (``jax.random.bits`` is prefix-stable), so
    padded static sizes hold them with ``n``, ``B`` and ``N`` traced. Needs the
    group size to be the same for every ``n`` of the bucket and at least two
    words per block (one word is drawn differently)."""
    n_lo = 1 << (n.bit_length() - 1)
    n_hi = 2 * n_lo - 1
    m = max(1, group)
    if n_lo < 2 or sizing < 2 or (group > 1 and _group_size(k, _TABLE_BITS) != group) or group > n_lo:
        return None
    nn = np.arange(n_lo, min(n_hi, 2 * _BLOCK_TOKENS) + 1, dtype=np.int64)
    nn = np.append(nn, n_hi)
    units = -(-nn // m) * np.minimum(sizing, np.maximum(1, _BLOCK_TOKENS // nn))
    half = int(-(-int(units.max()) // 2))
    rows = -(-n_hi // m)
    block = min(sizing, max(1, _BLOCK_TOKENS // n_lo))
    # The largest N matters only to the compiler options (asymalign._jit): it is counted up to where
    # the work reaches SMALL_WORK, so buckets of N beyond that still share an executable.
    cap = max(1, -(-SMALL_WORK // (rows * m * num_trials)))
    shape = _Shape(rows, block, half, rows * m, min(sizing, 1 << (cap - 1).bit_length()))
    per_block = (2 * half + block) * m  # tokens held per block
    max_blocks = -(-sizing // max(1, min(sizing // 2 + 1, _BLOCK_TOKENS // n_hi)))
    min_blocks = -(-(sizing // 2 + 1) // block)
    bpc = max(1, min(max_blocks, chunk_size // per_block, min_blocks // 4))
    tpc = min(num_trials, max(1, chunk_size // (bpc * per_block)))
    num_trial_chunks = -(-num_trials // tpc)
    tpc = -(-num_trials // num_trial_chunks)
    return shape, _Plan(block, bpc, 0, tpc, num_trial_chunks)


def _poisson_bucket(mean) -> int:
    """A static size class for ``N = 1 + Poisson(mean)``: the power of two at or above
    ``1 + μ + 8 sqrt(μ) + 8`` (only the block size and chunking depend on it, never the law)."""
    if not is_concrete(mean):
        return 2**31
    mu = float(mean)
    return 1 << math.ceil(math.log2(1 + mu + 8 * math.sqrt(mu) + 8))


# ---------------------------------------------------------------------------
# one random block of sequences: proxy and gold totals (and the units drawn)
# ---------------------------------------------------------------------------


def _block_drawer(sampler, r, g, *, n, block, group, return_tokens):
    """``draw(block_key) -> (r_n, G_n or None, units or None)`` for ``block`` sequences."""
    k = r.shape[0]
    scores = (r,) if g is None else (r, g)
    if group:
        m = group
        num_groups = -(-n // m)
        size = sampler.threshold.shape[0]
        rest = n - (num_groups - 1) * m  # tokens used from the last group

        def tables(v):
            # Each cell's total (first `length` tokens), with its values at the aliases.
            full = _group_values(v, k, m, size, m)
            part = full if rest == m else _group_values(v, k, m, size, rest)
            return (full, full[sampler.alias]), (part, part[sampler.alias])

        tabs = [tables(v) for v in scores]

        def lookup(tab, idx, keep):
            return jnp.where(keep, tab[0][idx], tab[1][idx])

        def values(tab, idx, keep):
            full, part = tab
            if rest == m:
                return lookup(full, idx, keep)
            return jnp.concatenate([lookup(full, idx[:-1], keep[:-1]), lookup(part, idx[-1:], keep[-1:])])

        def draw_values(bkey):
            # (num_groups, block) words, group-major; the last group may be partial.
            idx, keep = _alias_split(random_words(bkey, (num_groups, block)), sampler)
            units = jnp.where(keep, idx, sampler.alias[idx]) if return_tokens else None
            return [values(t, idx, keep) for t in tabs], units

    else:
        thresholds, last_token = sampler

        def draw_values(bkey):
            tok = _draw_tokens(bkey, thresholds, last_token, (n, block))  # position-major
            return [v[tok] for v in scores], tok if return_tokens else None

    def left_to_right(vals):
        # Strictly left to right, so the float result does not depend on how
        # blocks are batched (a tree reduction would).
        return jax.lax.fori_loop(1, vals.shape[0], lambda t, acc: acc + vals[t], vals[0])

    def draw(bkey):
        vals, units = draw_values(bkey)
        sums = [left_to_right(v) for v in vals]
        return sums[0], (sums[1] if g is not None else None), units

    return draw


@functools.partial(jit, static_argnames=("group",))
def _group_tables(alias, r, g, n, *, group):
    """Per score (``r``, then ``g`` if given): ``((full, full[alias]), (part,
    part[alias]))``, each cell's total over its ``group`` tokens and over the
    first ``rest = n - (G - 1)·group`` of them (``n`` traced; the same sums as
    :func:`~asymalign.sampling._group_values`, masked). Computed apart from
    the simulator: XLA on CPU made every table lookup several times slower
    when the tables were computed in the same program."""
    k, m, size = r.shape[0], group, alias.shape[0]
    rest = n - (-(-n // m) - 1) * m
    cell = jnp.arange(size, dtype=jnp.int32)

    def tables(v):
        full = _group_values(v, k, m, size, m)
        part = v[(cell // k ** (m - 1)) % k]
        for j in range(1, m):
            part = jnp.where(j < rest, part + v[(cell // k ** (m - 1 - j)) % k], part)
        return (full, full[alias]), (part, part[alias])

    return [tables(v) for v in ((r,) if g is None else (r, g))]


def _group_tables_host(alias, r, g, n: int, group: int):
    """:func:`_group_tables` in NumPy for concrete inputs (no compilation): the
    same gathers and left-to-right float sums in the same dtype, so the same
    tables bit for bit."""
    alias = np.asarray(alias)
    k, m, size = r.shape[0], group, alias.shape[0]
    rest = n - (-(-n // m) - 1) * m
    cell = np.arange(size)

    def tables(v):
        v = np.asarray(v)
        full = v[(cell // k ** (m - 1)) % k]
        for j in range(1, m):
            full = full + v[(cell // k ** (m - 1 - j)) % k]
        part = v[(cell // k ** (m - 1)) % k]
        for j in range(1, rest):
            part = part + v[(cell // k ** (m - 1 - j)) % k]
        return (full, full[alias]), (part, part[alias])

    return jax.device_put([tables(v) for v in ((r,) if g is None else (r, g))])


def _traced_drawer(sampler, r, g, *, n, block, shape, group, return_tokens, tabs=None):
    """As :func:`_block_drawer`, with ``n`` and the block size ``block`` traced
    and static padded sizes ``shape``: ``draw(block_key) -> (r_n, G_n or None,
    units or None)`` for ``shape.block`` slots (those ``>= block`` are padding),
    ``units`` of shape ``(shape.rows, shape.block)`` (rows ``>= G`` are padding).
    Unit ``t`` of sequence ``j`` is word ``t·block + j`` of the block's
    :func:`~asymalign.sampling.random_words` draw of ``G·block`` words, read
    from a longer prefix-stable draw; same tables and left-to-right sums as
    :func:`_block_drawer`, so the same floats bit for bit. ``tabs``: the
    alias sampler's cell tables (:func:`_group_tables`)."""
    scores = (r,) if g is None else (r, g)
    m = max(1, group)
    rows = -(-n // m)  # traced
    h = (rows * block + 1) // 2
    half, slots = shape.half, shape.block
    length = 2 * half + slots  # words drawn per block (>= rows * block), then room for one row
    pos = jnp.arange(length)

    def words(bkey):
        # random_words of G·block words: with x64 the low halves of ⌈G·block/2⌉
        # uint64 words, then their high halves; else uint32 words in order.
        if not jax.config.jax_enable_x64:
            return jax.random.bits(bkey, (length,), jnp.uint32)
        wide = jax.random.bits(bkey, (half,), jnp.uint64)
        lo, hi = wide.astype(jnp.uint32), (wide >> 32).astype(jnp.uint32)
        ext = jnp.concatenate([lo, hi, lo, jnp.zeros((slots,), jnp.uint32)])
        shifted = jax.lax.dynamic_slice(ext, (half - h,), (length,))  # word f >= h: high half of wide[f - h]
        return jnp.where(pos < h, ext[:length], shifted)

    def row(w, t):  # unit t of every sequence of the block
        return jax.lax.dynamic_slice(w, (t * block,), (slots,))

    if group:

        def lookup(wt, last):
            idx, keep = _alias_split(wt, sampler)
            return [jnp.where(keep, tab[idx], tab_a[idx]) for (tab, tab_a) in (t[1] if last else t[0] for t in tabs)]

        def units_of(wt):
            idx, keep = _alias_split(wt, sampler)
            return jnp.where(keep, idx, sampler.alias[idx])

    else:
        thresholds, last_token = sampler

        def lookup(wt, last):
            tok = _tokens_from_bits(wt, thresholds, last_token)
            return [v[tok] for v in scores]

        def units_of(wt):
            return _tokens_from_bits(wt, thresholds, last_token)

    def draw(bkey):
        w = words(bkey)
        final = lookup(row(w, rows - 1), True)
        acc = [jnp.where(rows == 1, f, x) for f, x in zip(final, lookup(row(w, 0), False), strict=True)]
        # Strictly left to right over the sequence's units, as _block_drawer.
        if shape.rows <= _UNROLL_ROWS:  # few rows: unrolled, rows >= G skipped (measured faster than a loop)
            for t in range(1, shape.rows - 1):
                acc = jax.lax.cond(
                    t < rows - 1,
                    lambda acc, t=t: [a + x for a, x in zip(acc, lookup(row(w, t), False), strict=True)],
                    lambda acc: acc,
                    acc,
                )
        else:
            body = lambda t, acc: [a + x for a, x in zip(acc, lookup(row(w, t), False), strict=True)]  # noqa: E731
            acc = jax.lax.fori_loop(1, rows - 1, body, acc)
        sums = [jnp.where(rows > 1, a + f, a) for a, f in zip(acc, final, strict=True)]
        units = None
        if return_tokens:
            units = jax.vmap(lambda t: units_of(row(w, t)))(jnp.arange(shape.rows))
        return sums[0], (sums[1] if g is not None else None), units

    return draw


# ---------------------------------------------------------------------------
# the jitted simulators
# ---------------------------------------------------------------------------


def _simulation_work(static: dict) -> int:
    """Tokens a :func:`_simulate` call draws (for :func:`asymalign._jit.jit`'s choice of
    compiler options). With ``N`` traced (``num_chunks = 0``, the padded ``shape``)
    chunks are drawn until ``N`` samples exist: at most as many as the bucket's
    largest ``N`` needs, which is what is counted (with ``n`` padded to its bucket
    too, at most about four times the tokens drawn), up to where the count
    reaches :data:`~asymalign._jit.SMALL_WORK`."""
    block, bpc, num_chunks, tpc, num_trial_chunks = static["plan"]
    shape = static.get("shape")
    if shape is not None:
        num_chunks, n = -(-shape.max_samples // (block * bpc)), shape.tokens
    else:
        n = static["n"]
    return block * bpc * max(num_chunks, 1) * n * tpc * num_trial_chunks


@functools.partial(
    jit,
    work=_simulation_work,
    static_argnames=(
        "n",
        "num_samples",
        "num_trials",
        "plan",
        "worst",
        "soft",
        "poisson",
        "return_tokens",
        "group",
        "shape",
    ),
)
def _simulate(
    key,
    sampler,
    r,
    g,
    mean,
    temperature,
    *,
    n,
    num_samples,
    num_trials,
    plan,
    worst,
    soft,
    poisson,
    return_tokens,
    group,
    samples=None,
    shape=None,
    sizes=None,
    tables=None,
):
    """``sampler`` is ``(thresholds, last)`` when ``group == 0`` (one word per
    token), else an :class:`~asymalign.sampling._Alias` for groups of ``group`` tokens.
    ``g`` is ``None`` or the gold vector; ``mean`` is used when ``poisson``,
    ``temperature`` when ``soft``. ``samples``: ``None`` (``N = num_samples``,
    static) or a traced ``N`` with a plan from :func:`_samples_plan` or
    :func:`_traced_plan`. ``shape``: ``None`` (``n`` static) or the static padded
    sizes of :func:`_traced_plan`, with ``sizes = (n, cap)`` traced (the block
    is ``min(cap, max(1, 4096 // n))``, ``cap`` being ``N`` or the Poisson size
    class); the tokens then come back padded to ``shape.tokens``; ``tables``:
    :func:`_group_tables` for the alias sampler."""
    slots, bpc, num_chunks, tpc, num_trial_chunks = plan
    if shape is None:
        block = slots
        draw = _block_drawer(sampler, r, g, n=n, block=block, group=group, return_tokens=return_tokens)
        units_per_seq = -(-n // group) if group else n
    else:
        n_t, cap = (jnp.asarray(x, jnp.int32) for x in sizes)
        block = jnp.minimum(cap, jnp.maximum(1, _BLOCK_TOKENS // n_t))
        draw = _traced_drawer(
            sampler, r, g, n=n_t, block=block, shape=shape, group=group, return_tokens=return_tokens, tabs=tables
        )
        units_per_seq = shape.rows
        rows_t = -(-n_t // max(1, group))
    neg_inf = jnp.asarray(-jnp.inf, r.dtype)

    def draw_block(trial_key, b, limit):
        bkey = jax.random.fold_in(trial_key, b)
        s, gold, units = draw(bkey)
        sel = -s if worst else s  # negation is exact
        if soft:
            sel = sel / temperature + jax.random.gumbel(jax.random.fold_in(bkey, 1), (slots,), r.dtype)
        valid = b * block + jnp.arange(slots) < limit
        if shape is not None:
            valid = valid & (jnp.arange(slots) < block)
        return jnp.where(valid, sel, neg_inf), s, gold, units

    def trial(i):
        trial_key = jax.random.fold_in(key, i)
        if poisson:
            count_key = jax.random.fold_in(trial_key, _COUNT_STREAM)
            limit = 1 + jax.random.poisson(count_key, mean, dtype=jnp.int32)
        elif samples is not None:
            limit = jnp.asarray(samples, jnp.int32)
        else:
            limit = jnp.asarray(num_samples, jnp.int32)

        def step(carry, c):
            best_sel, best_s, best_gold, best_units = carry
            b = c * bpc + jnp.arange(bpc)
            sel, s, gold, units = jax.vmap(draw_block, in_axes=(None, 0, None))(trial_key, b, limit)
            flat = sel.reshape(-1)
            j = jnp.argmax(flat)  # first of the tied maxima
            better = flat[j] > best_sel  # strict: earlier chunks win ties
            best_sel = jnp.where(better, flat[j], best_sel)
            best_s = jnp.where(better, s.reshape(-1)[j], best_s)
            if gold is not None:
                best_gold = jnp.where(better, gold.reshape(-1)[j], best_gold)
            if return_tokens:
                if shape is None:
                    chosen = units[j // block, :, j % block]
                else:  # units (bpc, rows, slots); rows >= G are padding
                    chosen = jnp.where(jnp.arange(shape.rows) < rows_t, units[j // slots, :, j % slots], 0)
                best_units = jnp.where(better, chosen, best_units)
            return (best_sel, best_s, best_gold, best_units), None

        init = (
            neg_inf,
            jnp.zeros((), r.dtype),
            None if g is None else jnp.zeros((), g.dtype),
            jnp.zeros((units_per_seq,), jnp.int32) if return_tokens else None,
        )
        if poisson or samples is not None:  # draw chunks until the trial's N samples exist (exact, no cap)
            _, carry = jax.lax.while_loop(
                lambda st: st[0] * (bpc * block) < limit,
                lambda st: (st[0] + 1, step(st[1], st[0])[0]),
                (jnp.int32(0), init),
            )
        else:
            carry, _ = jax.lax.scan(step, init, jnp.arange(num_chunks))
        _, best_s, best_gold, best_units = carry
        return best_s, best_gold, best_units, limit

    # Trials in chunks of tpc (padded; the extra trials are discarded).
    idx = jnp.arange(num_trial_chunks * tpc).reshape(num_trial_chunks, tpc)
    rewards, gold, units, counts = jax.lax.map(jax.vmap(trial), idx)
    rewards, counts = rewards.reshape(-1)[:num_trials], counts.reshape(-1)[:num_trials]
    gold = None if gold is None else gold.reshape(-1)[:num_trials]
    tokens = None
    if return_tokens:
        units = units.reshape(-1, units_per_seq)[:num_trials]
        length = n if shape is None else shape.tokens
        tokens = _group_tokens(units, r.shape[0], group, length) if group else units
    return rewards, tokens, gold, counts


@functools.partial(
    jit,
    static_argnames=("n", "num_draws", "num_trials", "block", "bpb", "tpb", "group"),
    work=lambda s: s["n"] * s["num_draws"] * s["num_trials"],
)
def _draws(key, sampler, r, g, *, n, num_draws, num_trials, block, bpb, tpb, group):
    draw = _block_drawer(sampler, r, g, n=n, block=block, group=group, return_tokens=False)
    num_blocks = -(-num_draws // block)

    def trial(i):
        trial_key = jax.random.fold_in(key, i)
        s, gold, _ = jax.lax.map(
            lambda b: draw(jax.random.fold_in(trial_key, b)), jnp.arange(num_blocks), batch_size=bpb
        )
        cut = lambda x: None if x is None else x.reshape(-1)[:num_draws]  # noqa: E731
        return cut(s), cut(gold)

    return jax.lax.map(trial, jnp.arange(num_trials), batch_size=tpb)
