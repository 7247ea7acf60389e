r"""Stable kernels on level laws: tails, best-of-N / worst-of-N, tilts, KL, win rates (THEORY.md §6, §10).

Private: used by :mod:`asymalign.best_of_n`, :mod:`asymalign.levels`,
:mod:`asymalign.level_measures`, :mod:`asymalign.soft_bon` and
:mod:`asymalign.infalign`. Over sorted levels ``s`` with ``F(s) = P(r_n <= s)``,
``F(s-) = P(r_n < s)``, ``S(s) = 1 - F(s)``:

.. math::

    B_N(s) = F(s)^N - F(s-)^N, \qquad
    W_N(s) = (1 - F(s-))^N - (1 - F(s))^N .

``log S`` is accumulated from the top level down and ``log F`` from the
bottom up, each used where it is accurate; ``N log F(s) = -exp(log N +
log(-log F(s)))`` with ``-log F = -log1p(-S)`` in the upper tail, and
``B_N(s) = e^{A(s)} (1 - e^{-N D(s)})`` with ``D(s) = log1p(P(s)/F(s-))``,
never a difference of two huge numbers. Equal levels in a law are treated as
one level.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from . import _numerics as nx
from ._buckets import device_array
from ._validate import is_concrete
from .sequence_laws import _bucket

_LOG_HALF = -0.6931471805599453


def _cum_logsumexp(x, reverse=False):
    """Inclusive cumulative log-sum-exp of a 1-D array, blockwise.

    Blocks of 256 are accumulated by a sequential ``logaddexp`` scan run
    across all blocks at once, then offset by the cumulative totals of the
    preceding blocks. Every combine is an exact ``logaddexp``, so relative
    accuracy is kept at every entry. ``lax.cumlogsumexp`` computes the same
    but is ~10x slower on 1e5 entries on CPU (jax 0.10), and a parallel-prefix
    ``associative_scan`` compiles several times slower.
    """
    if reverse:
        return _cum_logsumexp(x[::-1])[::-1]
    length = x.shape[0]
    block = min(length, 256)
    extra = (-length) % block
    ninf = jnp.asarray(-jnp.inf, x.dtype)
    xp = jnp.concatenate([x, jnp.full((extra,), ninf)]) if extra else x
    nb = xp.shape[0] // block

    def step(acc, row):
        acc = jnp.logaddexp(acc, row)
        return acc, acc

    _, local = jax.lax.scan(step, jnp.full((nb,), ninf), xp.reshape(nb, block).T)  # (block, nb)
    before = jnp.concatenate([ninf[None], jax.lax.cumlogsumexp(local[-1])[:-1]])
    return jnp.logaddexp(local, before[None, :]).T.reshape(-1)[:length]


def _log_softplus(z):
    """``log(log1p(e^z))`` without underflow for very negative ``z``."""
    small = z < -30.0
    zs = jnp.where(small, 0.0, z)
    return jnp.where(small, z, jnp.log(jax.nn.softplus(zs)))


def _log1mexp_neg_exp(y):
    """``log(1 - exp(-e^y))``; ``≈ y`` when ``e^y`` underflows (``N D(s)`` below
    ~1e-308, e.g. the top level when ``N P(top) ≪ 1``), where the direct form gives -inf."""
    small = y < -40.0
    big = y > 7.0  # 1 - exp(-e^7) = 1 to double precision; also keeps gradients finite at y = inf
    ys = jnp.where(small | big, 0.0, y)
    return jnp.where(small, y, jnp.where(big, 0.0, nx.log1mexp(-jnp.exp(ys))))


def _log_neg_log1m(log_s):
    """``log(-log(1 - S))`` from ``log S`` (for ``S <= 1/2``)."""
    small = log_s < -30.0
    ls = jnp.where(small, -1.0, log_s)
    return jnp.where(small, log_s, jnp.log(-jnp.log1p(-jnp.exp(ls))))


class _Tails(NamedTuple):
    log_f: jax.Array  # log F(s)
    log_f_prev: jax.Array  # log F(s-)
    log_s: jax.Array  # log S(s) = log P(r_n > s)
    log_pg: jax.Array  # log P(r_n = s) (whole tie group)
    log_neg_log_f: jax.Array  # log(-log F(s))


def _tails(levels, log_prob) -> _Tails:
    """Per-entry CDF pieces of a (single, 1-D) law, tie groups merged."""
    L = levels.shape[-1]
    ninf = jnp.full((1,), -jnp.inf, log_prob.dtype)
    lc = _cum_logsumexp(log_prob)  # log P(idx <= i)
    lr = _cum_logsumexp(log_prob, reverse=True)  # log P(idx >= i)
    lc_ext = jnp.concatenate([ninf, lc])  # lc_ext[i] = log P(idx < i)
    lr_ext = jnp.concatenate([lr, ninf])  # lr_ext[i] = log P(idx >= i)
    # Tie groups of the sorted levels: first index and one-past-last index.
    idx = jnp.arange(L)
    differs = levels[1:] != levels[:-1]
    first = jnp.concatenate([jnp.ones((1,), bool), differs])
    last = jnp.concatenate([differs, jnp.ones((1,), bool)])
    start = jax.lax.cummax(jnp.where(first, idx, 0))
    end = jax.lax.cummin(jnp.where(last, idx, L - 1), reverse=True) + 1
    log_f = lc_ext[end]
    log_f_prev = lc_ext[start]
    log_s = lr_ext[end]
    log_s_prev = lr_ext[start]
    upper = log_s < _LOG_HALF
    # Group probability, from whichever side keeps relative accuracy.
    # A zero-probability group at the top (bottom) has log_s_prev = log_s = -inf
    # (log_f = log_f_prev = -inf): its probability is 0, not -inf - (-inf) = NaN.
    d_up = jnp.where(log_s_prev > -jnp.inf, log_s - log_s_prev, -jnp.inf)
    d_lo = jnp.where(log_f > -jnp.inf, log_f_prev - log_f, -jnp.inf)
    g_up = log_s_prev + nx.log1mexp(jnp.minimum(d_up, 0.0))
    g_lo = log_f + nx.log1mexp(jnp.minimum(d_lo, 0.0))
    log_pg = jnp.where(end - start == 1, log_prob, jnp.where(upper, g_up, g_lo))
    lf_safe = jnp.where(upper, -1.0, jnp.minimum(log_f, -1e-300))
    lnlf = jnp.where(upper, _log_neg_log1m(jnp.where(upper, log_s, -1.0)), jnp.log(-lf_safe))
    # The top group has F = 1 exactly: -log F = 0.
    lnlf = jnp.where(end == L, -jnp.inf, lnlf)
    return _Tails(log_f, log_f_prev, log_s, log_pg, lnlf)


def _bon_log_law(levels, log_prob, log_n):
    return _bon_from_tails(_tails(levels, log_prob), log_prob, log_n)


def _bon_from_tails(t: _Tails, log_prob, log_n):
    a = -jnp.exp(log_n + t.log_neg_log_f)  # N log F(s)
    log_d = _log_softplus(t.log_pg - t.log_f_prev)  # log D(s), D = log F(s) - log F(s-)
    log_group = a + _log1mexp_neg_exp(log_n + log_d)
    share = jnp.where(t.log_pg > -jnp.inf, log_prob - jnp.where(t.log_pg > -jnp.inf, t.log_pg, 0.0), -jnp.inf)
    return jnp.where(log_prob > -jnp.inf, log_group + share, -jnp.inf)


def _bon_log_law_worst(levels, log_prob, log_n):
    """Worst-of-N: best-of-N of the mirrored law ``r -> -r`` (same log-space
    accuracy in the lower tail)."""
    return _bon_log_law(-levels[::-1], log_prob[::-1], log_n)[::-1]


def _pad(levels, log_prob, length=None):
    """Pad a law to ``length`` (default its bucket) with zero-probability copies of the top level.

    Equal levels are one level for every kernel here and ``-inf`` entries
    carry no mass, so padding changes no result; outputs are sliced back.
    """
    size = levels.shape[-1]
    extra = (_bucket(size) if length is None else length) - size
    if extra <= 0:
        return levels, log_prob
    if is_concrete(levels, log_prob):  # on the host: eager jnp ops would compile once per shape
        lv, lp = np.asarray(levels), np.asarray(log_prob)
        top = np.broadcast_to(lv[..., -1:], lv.shape[:-1] + (extra,))
        fill = np.full(lp.shape[:-1] + (extra,), -np.inf, lp.dtype)
        return device_array(np.concatenate([lv, top], axis=-1)), device_array(np.concatenate([lp, fill], axis=-1))
    top = jnp.broadcast_to(levels[..., -1:], levels.shape[:-1] + (extra,))
    fill = jnp.full(log_prob.shape[:-1] + (extra,), -jnp.inf, log_prob.dtype)
    return jnp.concatenate([levels, top], axis=-1), jnp.concatenate([log_prob, fill], axis=-1)


def _broadcast(rows, scalars=()):
    """Broadcast per-level arrays ``(..., L)`` and scalars ``(...)`` to one batch shape
    (explicitly, so vectorised kernels need no rank promotion)."""
    rows = [device_array(x) for x in rows]
    scalars = [device_array(x) for x in scalars]
    out = nx.broadcast_batch(rows, scalars)  # host-side for concrete inputs (no per-shape compilation)
    return out[: len(rows)], out[len(rows) :]


def _pad_host(levels, log_prob):
    """:func:`_pad` in NumPy, for a law held in host arrays (one device transfer)."""
    extra = _bucket(levels.size) - levels.size
    return (
        np.concatenate([levels, np.full(extra, levels[-1])]),
        np.concatenate([log_prob, np.full(extra, -np.inf)]),
    )


def _tilted(levels, log_prob, lam, skip_first=False):
    """Log-law of the levels under ``φ_λ^n``: ``log P_n(s) + λ s - n Λ(λ)``,
    normalised over the law's entries (all but the first when ``skip_first``:
    a lumped level of a window law, whose level stands in for all the mass
    below it and so has no meaningful tilted weight). ``λ = ±inf`` puts all
    mass on the top/bottom level."""
    top = jnp.max(jnp.where(log_prob > -jnp.inf, levels, -jnp.inf))
    bot = jnp.min(jnp.where(log_prob > -jnp.inf, levels, jnp.inf))
    c = jnp.where(lam >= 0, top, bot)
    u = levels - c
    on = u == 0
    lu = jnp.where(on, 0.0, lam * jnp.where(on, 1.0, u))
    z = jnp.where(log_prob > -jnp.inf, log_prob + lu, -jnp.inf)
    first = jnp.arange(z.shape[-1]) == 0
    return z - logsumexp(jnp.where(first & skip_first, -jnp.inf, z))


def _level_kl(log_q, log_p):
    """``Σ_s Q(s) log(Q(s)/P(s))``; ``+inf`` when ``Q`` puts mass where ``P`` has none."""
    q = jnp.exp(log_q)
    on = log_q > -jnp.inf
    bad = jnp.any(on & (log_p == -jnp.inf), axis=-1)
    diff = jnp.where(on & (log_p > -jnp.inf), log_q - jnp.where(log_p > -jnp.inf, log_p, 0.0), 0.0)
    return jnp.where(bad, jnp.inf, jnp.sum(jnp.where(on, q * diff, 0.0), axis=-1))


def _win_from_tails(t: _Tails, log_a):
    """``Σ_s a(s) [B(s-) + b(s)/2]`` with ``t`` the tails of ``b`` (THEORY.md §10)."""
    half_p = t.log_pg + _LOG_HALF
    log_win = logsumexp(log_a + jnp.logaddexp(t.log_f_prev, half_p))
    log_loss = logsumexp(log_a + jnp.logaddexp(t.log_s, half_p))
    # Report whichever complement is computed with relative accuracy.
    return jnp.where(log_loss < _LOG_HALF, -jnp.expm1(log_loss), jnp.exp(log_win))
