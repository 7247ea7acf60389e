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

from ._validate import is_concrete
from .sampling import _alias_split, _draw_tokens, _group_tokens, _group_values, random_words

# Tokens per fixed random block: the block size B = max(1, _BLOCK_TOKENS // n)
# (at most N) fixes the random stream; chunking only groups whole blocks.
_BLOCK_TOKENS = 4096
# Default bound on the number of tokens drawn at once (a few tens of MB).
_DEFAULT_CHUNK = 2**21
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


# ---------------------------------------------------------------------------
# the jitted simulators
# ---------------------------------------------------------------------------


@functools.partial(
    jax.jit,
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
):
    """``sampler`` is ``(thresholds, last)`` when ``group == 0`` (one word per
    token), else an :class:`~asymalign.sampling._Alias` for groups of ``group`` tokens.
    ``g`` is ``None`` or the gold vector; ``mean`` is used when ``poisson``,
    ``temperature`` when ``soft``."""
    block, bpc, num_chunks, tpc, num_trial_chunks = plan
    draw = _block_drawer(sampler, r, g, n=n, block=block, group=group, return_tokens=return_tokens)
    neg_inf = jnp.asarray(-jnp.inf, r.dtype)
    units_per_seq = -(-n // group) if group else n

    def draw_block(trial_key, b, limit):
        bkey = jax.random.fold_in(trial_key, b)
        s, gold, units = draw(bkey)
        sel = -s if worst else s  # negation is exact
        if soft:
            sel = sel / temperature + jax.random.gumbel(jax.random.fold_in(bkey, 1), (block,), r.dtype)
        valid = b * block + jnp.arange(block) < limit
        return jnp.where(valid, sel, neg_inf), s, gold, units

    def trial(i):
        trial_key = jax.random.fold_in(key, i)
        if poisson:
            count_key = jax.random.fold_in(trial_key, _COUNT_STREAM)
            limit = 1 + jax.random.poisson(count_key, mean, dtype=jnp.int32)
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
                best_units = jnp.where(better, units[j // block, :, j % block], best_units)
            return (best_sel, best_s, best_gold, best_units), None

        init = (
            neg_inf,
            jnp.zeros((), r.dtype),
            None if g is None else jnp.zeros((), g.dtype),
            jnp.zeros((units_per_seq,), jnp.int32) if return_tokens else None,
        )
        if poisson:  # draw chunks until the trial's N samples exist (exact, no cap)
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
        tokens = _group_tokens(units, r.shape[0], group, n) if group else units
    return rewards, tokens, gold, counts


@functools.partial(jax.jit, static_argnames=("n", "num_draws", "num_trials", "block", "bpb", "tpb", "group"))
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
