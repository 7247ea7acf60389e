r"""Exact soft best-of-N on reward levels (Verdun et al., ISIT 2025; THEORY.md §12).

Soft best-of-N draws ``N`` sequences and keeps ``Y_j`` with probability
``w_j / Σ_i w_i``, ``w = exp(r_n / τ)``. Its level law, for any ``N``
(with ``1/x = ∫_0^∞ e^{-tx} dt``):

.. math:: q(s) = N P(s)\, w_s \int_0^\infty e^{-t w_s} M(t)^{N-1}\,dt, \qquad
          M(t) = \sum_s P(s)\, e^{-t w_s},

with ``w_s = exp((s - s_max)/τ) <= 1``. In ``u = log t`` the integrand of
level ``s`` is ``g(u - c_s) E(u)`` with ``g(x) = exp(x - e^x)`` (a Gumbel
bump centred at ``c_s = -log w_s``) and ``E = M(e^u)^{N-1}``, which falls
from 1 to 0 in steps: one *cut-off* ``exp(-K_i e^u)`` per plateau between
two bumps, centred at ``-log K_i``, ``K_i = (N-1) Σ_{t<i} P(t) w_t / F(<i)``.

**Quadrature.** The trapezoid rule on the lattice ``u = jh`` (``h = 3/16``)
is exponentially accurate for these integrands (analytic in the strip
``|Im u| < π/2``: error ``~e^{-π²/h} ≈ 1e-23``). The step is a binary
fraction, so every node ``jh`` (``|j|`` up to ``5·10^6`` at ``log N = 1e6``)
is an exact double: the nearly cancelling sums below give the same result
however the compiler fuses them (with ``h = 0.2``, unoptimised code moved
the mass at ``log N = 1e6`` by 5.6e-11). Only nodes within
``[-A, 4.4]`` (``A = 40``) of a feature centre (bumps and cut-offs) are
evaluated: ``W = 238`` lattice nodes per feature, their union shared by all
levels. Between these windows ``e^u E(u)`` is log-linear (``E`` is constant
there to a relative ``e^{-A}``), so the lattice sums over the gaps are exact
geometric series of the log-linear interpolant, and the tail below the first
node is ``Σ_{j<j_0} h e^{u_j} E``.

**Per level**, the lattice sum splits at the first node of the level's own
window, ``J_s = ⌈(c_s - A)/h⌉``: below it ``g(u - c_s) = e^{u - c_s}`` to a
relative ``e^{-A}``, so that part is ``w_s`` times one shared prefix sum of
``h e^u E(u)``; the ``W`` nodes of the window are summed directly; above it
``g`` is doubly-exponentially negligible. ``M`` at a node: levels with
``u - c_s < -A`` enter through prefix sums (``F``, and ``e^u Σ P w`` for
``1 - M``), the next ``D`` levels exactly, the rest (``u - c_s`` past
``log(e^{4.4} + Δ log P + log L + 40)``, ``Δ log P`` the spread of the
law's finite log-probabilities) by the bound ``Σ_{rest} P e^{-t w} <= P(rest) e^{-t w_{first}}``,
negligible; ``D`` is the most levels in any window of that width.

Everything is in log space (``M^{N-1} = exp(-exp(log(N-1) + log(-log M)))``
with ``-log M`` from ``1 - M`` accumulated directly), so ``log N`` up to
``1e6`` and ``τ`` from ``1e-3`` to ``1e3`` keep relative accuracy per level.
Cost ``O(T·D + L·W)`` for ``T`` window nodes: ``O(L)`` in practice (about
``480 L`` terms); the node count ``T`` and ``D`` are computed on the host
from concrete inputs (and bucketed to powers of two, one compilation per
bucket), or bounded by ``T <= 2 L W``, ``D <= L`` under tracing.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import jax.typing
import numpy as np

from . import _numerics as nx
from ._jit import jit
from ._level_base import _apply, _check_law, _check_log_n
from ._level_kernels import _LOG_HALF, _cum_logsumexp, _log1mexp_neg_exp, _log_neg_log1m
from ._validate import check_real, is_concrete
from .sequence_laws import RewardLaw

__all__ = ["soft_best_of_n"]

_H = 0.1875  # lattice step in u = log t: a binary fraction, so every node j h is an exact double
_A = 40.0  # a window starts A before its feature centre
_W = 238  # lattice nodes per window: (W - 1) h >= A + TOP
_TOP = 4.4  # g(x) = exp(x - e^x) <= e^{-77} for x > 4.4


def _scaled(xp, levels, log_prob, temperature):
    """``(log w, log P, on)``: ``log w = (s - s_max)/τ`` clipped at 0 (sorted, like the levels)."""
    on = log_prob > -xp.inf
    top = xp.max(xp.where(on, levels, -xp.inf), axis=-1, keepdims=True)
    lw = xp.minimum((levels - top) / temperature, 0.0)
    return lw, xp.where(on, log_prob, -xp.inf), on


def _log_nm1(xp, log_n):
    """``log(N - 1)`` (``-inf`` for ``N = 1``)."""
    big = log_n > 0
    safe = xp.where(big, log_n, 1.0)
    if xp is np:
        return np.where(big, safe + np.log(-np.expm1(-safe)), -np.inf)
    return jnp.where(big, safe + nx.log1mexp(-safe), -jnp.inf)


def _window_starts(xp, lw, on, log_nm1, cum_lp, cum_lpw):
    """First lattice index of every feature window: the ``L`` bumps ``c_s = -log w_s``
    and the ``L`` cut-offs ``-log K_i``; windows of absent features repeat the top
    bump's (``c = 0``) and so add no node. Returns ``(bump starts, all starts)``."""
    bump = xp.where(on, -lw, 0.0)
    fin = xp.isfinite(cum_lp) & xp.isfinite(cum_lpw) & xp.isfinite(log_nm1)
    safe = xp.where(fin, log_nm1 + cum_lpw - cum_lp, 0.0)
    cut = xp.where(fin, -safe, 0.0)  # plateau above level i: -log K_{i+1}
    start = lambda c: xp.ceil((c - _A) / _H)  # noqa: E731
    return start(bump), xp.concatenate([start(bump), start(cut)], axis=-1)


def _union(xp, starts):
    """Sorted window starts ``a``; the union of ``[a_i, a_i + W)`` adds
    ``min(W, a_i - a_{i-1})`` new nodes per window. Returns ``(a, new, total)``."""
    a = xp.sort(starts, axis=-1)
    new = xp.minimum(_W, xp.diff(a, axis=-1))
    new = xp.concatenate([xp.full(a.shape[:-1] + (1,), float(_W)), new], axis=-1)
    return a, new, xp.sum(new, axis=-1)


def _host_sizes(levels, log_prob, log_n, temperature):
    """``(T, D)`` needed by the kernel for concrete (broadcast) inputs, in NumPy."""
    lv, lp0 = np.asarray(levels, np.float64), np.asarray(log_prob, np.float64)
    ln, tau = np.asarray(log_n, np.float64)[..., None], np.asarray(temperature, np.float64)[..., None]
    lw, lp, on = _scaled(np, lv, lp0, tau)
    with np.errstate(invalid="ignore", over="ignore"):
        cum_lp = np.logaddexp.accumulate(lp, axis=-1)
        cum_lpw = np.logaddexp.accumulate(lp + lw, axis=-1)
    _, starts = _window_starts(np, lw, on, _log_nm1(np, ln), cum_lp, cum_lpw)
    _, _, total = _union(np, starts)
    length = lv.shape[-1]
    fin = np.where(on, lp, np.nan).reshape(-1, length)
    spread = np.nanmax(fin, axis=-1) - np.nanmin(fin, axis=-1)
    reach = _A + np.log(np.exp(_TOP) + spread + math.log(length) + 40.0)  # window width in log w
    # a node's first non-full level i0 has log w >= -A - u: its window must reach
    # the last live level with log w <= log w_{i0} + reach (dead levels need no slot)
    idx = np.arange(length)
    direct = 1
    for row, live, r in zip(lw.reshape(-1, length), on.reshape(-1, length), reach, strict=True):
        last_live = np.maximum.accumulate(np.where(live, idx, -1))
        hi = np.searchsorted(row, row + r, side="right") - 1
        direct = max(direct, int(np.max(last_live[hi] - idx)) + 1)
    return int(np.max(total)), direct


def _pow2(x: int) -> int:
    return 1 << max(int(x) - 1, 1).bit_length()


def _log_geometric(l1, l2, d):
    """``log Σ_{m=1}^{d-1} exp(l1 + m σ)``, ``σ = (l2 - l1)/d``: the lattice sum of the
    log-linear interpolant strictly between two nodes ``d`` apart (``-inf`` for ``d <= 1``)."""
    gap = d > 1
    fin = gap & jnp.isfinite(l1) & jnp.isfinite(l2)
    l1s, l2s, ds = jnp.where(fin, l1, 0.0), jnp.where(fin, l2, 0.0), jnp.where(fin, d, 2.0)
    sig = (l2s - l1s) / ds
    a = ds - 1.0
    tiny = jnp.abs(sig) < 1e-12
    ss = jnp.where(tiny, 1.0, sig)
    pos = (a - 1.0) * ss + nx.log1mexp(-a * jnp.abs(ss)) - nx.log1mexp(-jnp.abs(ss))  # σ > 0
    neg = nx.log1mexp(-a * jnp.abs(ss)) - nx.log1mexp(-jnp.abs(ss))  # σ < 0
    ratio = jnp.where(tiny, jnp.log(a) + 0.5 * (a - 1.0) * sig, jnp.where(sig > 0, pos, neg))
    return jnp.where(fin, l1s + sig + ratio, -jnp.inf)


def _sbon_log_law(levels, log_prob, log_n, temperature, num_nodes: int, num_direct: int):
    """Soft best-of-N log-law of one 1-D law (see the module docstring)."""
    dt = log_prob.dtype
    length = levels.shape[-1]
    lw, lp, on = _scaled(jnp, levels, log_prob, temperature)
    log_nm1 = _log_nm1(jnp, log_n)
    has_others = log_n > 0
    cum_lp, cum_lpw = _cum_logsumexp(lp), _cum_logsumexp(lp + lw)
    tail_lp = _cum_logsumexp(lp, reverse=True)

    # Node layout (no gradient: the lattice sums do not depend on it).
    sg = jax.lax.stop_gradient
    bump_start, starts = _window_starts(jnp, sg(lw), on, sg(log_nm1), sg(cum_lp), sg(cum_lpw))
    a, new, total = _union(jnp, starts)
    ends = jnp.cumsum(new)
    k = jnp.arange(num_nodes)
    win = jnp.minimum(jnp.searchsorted(ends, k, side="right"), a.shape[0] - 1)
    j = (a[win] + _W - new[win]) + (k - (ends[win] - new[win]))  # lattice index of node k
    valid = k < total
    j = jnp.where(valid, j, a[-1] + _W + k)  # padding: increasing, beyond every window
    # Origin o at the main cut-off (u ≈ -log(N-1)): sums are accumulated relative
    # to it, so log N = 1e6 does not cost digits to the magnitude of u.
    j_o = jnp.where(has_others, jnp.round(-sg(log_nm1) / _H), 0.0)
    o = j_o * _H
    u_rel = (j - j_o).astype(dt) * _H
    u = o + u_rel

    # E(u) = M(e^u)^{N-1} at the nodes, blockwise over nodes.
    i0 = jnp.searchsorted(lw, -_A - u, side="left")  # levels [0, i0) have u - c_s < -A
    offs = jnp.arange(num_direct)

    def log_e(args):
        """``log E`` at one node (mapped over nodes in blocks)."""
        ur, ib = args
        ub = o + ur
        prev = jnp.maximum(ib - 1, 0)
        log_f = jnp.where(ib > 0, cum_lp[prev], -jnp.inf)
        log_g = jnp.where(ib > 0, ur + cum_lpw[prev], -jnp.inf)  # relative to o
        idx = ib + offs
        ic = jnp.minimum(idx, length - 1)
        lpi = jnp.where(idx < length, lp[ic], -jnp.inf)
        live = lpi > -jnp.inf
        xs = jnp.where(live, ub + lw[ic], 0.0)
        rest = jnp.where(ib + num_direct < length, tail_lp[jnp.minimum(ib + num_direct, length - 1)], -jnp.inf)
        terms_m = jnp.where(live, lpi - jnp.exp(jnp.minimum(xs, 700.0)), -jnp.inf)
        log_m = nx.logsumexp0(jnp.concatenate([log_f[None], terms_m]), 0)
        others = jnp.concatenate([jnp.where(live, lpi + _log1mexp_neg_exp(xs), -jnp.inf), rest[None]]) - o
        log_1m_rel = nx.logsumexp0(jnp.concatenate([log_g[None], others]), 0)  # log(1 - M) - o
        log_1m = o + log_1m_rel
        small = log_1m < _LOG_HALF
        big_m = jnp.minimum(jnp.where(small, -1.0, log_m), -1e-300)
        # log(N-1) + log(-log M), with log(N-1) + o (nearly cancelling) formed first
        ls = jnp.where(small, log_1m, -1.0)
        lnlm = jnp.where(small, (log_nm1 + o) + log_1m_rel + (_log_neg_log1m(ls) - ls), log_nm1 + jnp.log(-big_m))
        return jnp.where(has_others, -jnp.exp(jnp.minimum(lnlm, 700.0)), 0.0)

    block = max(1, min(num_nodes, (1 << 22) // max(num_direct, 1)))
    log_en = jax.lax.map(log_e, (u_rel, i0), batch_size=block)

    # Prefix sums of h e^u E(u) / e^o over the lattice (nodes, interpolated gaps, tail).
    v = jnp.where(valid, math.log(_H) + u_rel + log_en, -jnp.inf)
    d = jnp.concatenate([j[1:] - j[:-1], jnp.zeros((1,), j.dtype)])
    v_next = jnp.concatenate([v[1:], jnp.full((1,), -jnp.inf, dt)])
    gap = _log_geometric(v, v_next, d.astype(dt))
    t = nx.logsumexp0(jnp.stack([v, gap]), 0)
    tail = v[0] + (-_H - math.log(-math.expm1(-_H)))  # Σ_{j < j_0} h e^{u_j} E, E ≈ E(u_0) there
    upto = jnp.concatenate([jnp.full((1,), -jnp.inf, dt), _cum_logsumexp(t)[:-1]])  # nodes before k
    before = nx.logsumexp0(jnp.stack([jnp.full((num_nodes,), tail), upto]), 0)

    # Per level: w_s · prefix below its window + its W window nodes.
    ks = jnp.searchsorted(j, bump_start, side="left")
    widx = jnp.arange(_W)

    def level(args):
        """``log`` of the lattice sum of level ``s`` (mapped over levels in blocks)."""
        kb, lwb = args
        idx = jnp.minimum(kb + widx, num_nodes - 1)
        x = u[idx] + lwb
        terms = math.log(_H) + (u_rel[idx] + lwb) - jnp.exp(jnp.minimum(x, 700.0)) + log_en[idx]  # relative to o
        return nx.logsumexp0(jnp.concatenate([(lwb + before[jnp.minimum(kb, num_nodes - 1)])[None], terms]), 0)

    log_i = jax.lax.map(level, (ks, lw), batch_size=max(1, min(length, (1 << 22) // _W)))
    out = jnp.where(on, (log_n + o) + lp + log_i, -jnp.inf)
    return jnp.where(total <= num_nodes, out, jnp.nan), total  # too few nodes: NaN (the caller retries)


@functools.partial(jit, static_argnames=("num_nodes", "num_direct"))
def _vec_sbon(levels, log_prob, log_n, temperature, num_nodes, num_direct):
    kernel = functools.partial(_sbon_log_law, num_nodes=num_nodes, num_direct=num_direct)
    return jnp.vectorize(kernel, signature="(l),(l),(),()->(l),()")(levels, log_prob, log_n, temperature)


def _kernel(levels, log_prob, log_n, temperature):
    """Sizes from the concrete inputs (bucketed), or the bounds under tracing, then the kernel."""
    length = levels.shape[-1]
    if not is_concrete(levels, log_prob, log_n, temperature):
        return _vec_sbon(levels, log_prob, log_n, temperature, num_nodes=2 * length * _W, num_direct=length)[0]
    total, direct = _host_sizes(levels, log_prob, log_n, temperature)
    num_nodes, num_direct = _pow2(total + 64), min(length, _pow2(direct + 2))
    out, used = _vec_sbon(levels, log_prob, log_n, temperature, num_nodes=num_nodes, num_direct=num_direct)
    most = int(np.max(np.asarray(used)))  # np.max of a jax.Array would compile a reduction
    if most > num_nodes:  # the device counted more window nodes than NumPy (rounding at an edge)
        num_nodes = _pow2(most + 64)
        out = _vec_sbon(levels, log_prob, log_n, temperature, num_nodes=num_nodes, num_direct=num_direct)[0]
    return out


def soft_best_of_n(
    law: RewardLaw, log_num_samples: jax.typing.ArrayLike, temperature: jax.typing.ArrayLike
) -> RewardLaw:
    r"""Law of the level chosen by soft best-of-N (Verdun et al., ISIT 2025; THEORY.md §12).

    Draw ``N`` samples from ``law`` and keep sample ``j`` with probability
    ``w_j / Σ_i w_i``, ``w = exp(s / τ)``:

    .. math:: q(s) = N P(s)\, w_s \int_0^\infty e^{-t w_s} M(t)^{N-1}\,dt,
              \qquad M(t) = \sum_s P(s) e^{-t w_s}.

    ``N = 1`` (``log N = 0``) is the identity; ``N -> inf`` tends to the tilt
    ``P e^{s/τ}`` (``φ_{1/τ}^n`` for the reference law); ``τ -> 0`` tends to
    best-of-N, ``τ -> inf`` to ``law``. The 1-D integral is computed in
    ``log t`` by the trapezoid rule on a lattice, evaluated only in windows
    around the integrand's features and summed exactly (geometric series)
    between them (module docstring). Measured in float64: machine precision
    against enumeration of all N-tuples (N <= 4, τ from 1e-3 to 1e3), total
    mass 1 to 1e-14 for ``log N`` up to ``1e6`` (with the fast-compile
    options and with XLA's defaults), and the ``1/N^2`` rate with the §12
    constant to 5e-5 at N = 2^18. Cost ``O(L)`` for ``L`` levels (about 480
    terms per level).
    Jittable, vmappable and differentiable in ``law.log_prob``,
    ``log_num_samples`` and ``temperature`` (the quadrature nodes carry no
    gradient; the integral does not depend on them). With concrete inputs
    the node count is computed on the host (one compilation per power-of-two
    bucket); under tracing (``jax.jit`` of a caller) it is bounded by
    ``2 L · 238`` nodes, which is slower for large ``L``.

    Args:
      law: a :class:`~asymalign.RewardLaw` (or stacked laws).
      log_num_samples: ``log N >= 0``.
      temperature: ``τ > 0``.

    Returns:
      The level law of soft best-of-N.

    >>> import asymalign as aa
    >>> law = aa.reward_law([0.5, 0.5], [0.0, 1.0], 1)
    >>> q = aa.soft_best_of_n(law, jnp.log(2.0), 1.0).prob  # two draws
    >>> bool(abs(q[1] - (0.25 + 0.5 * np.e / (1 + np.e))) < 1e-12)  # (1,1), or (0,1)/(1,0) won w.p. e/(1+e)
    True
    """
    _check_law(law)
    _check_log_n(log_num_samples)
    check_real(temperature, "temperature")
    if is_concrete(temperature) and np.any(np.asarray(temperature) <= 0):
        raise ValueError(f"temperature must be > 0, got {np.min(np.asarray(temperature))!r}")
    return _apply(_kernel, law, log_num_samples, temperature)
