r"""Proxy and gold rewards: the exact gold reward of proxy-selected policies (THEORY.md §13).

A proxy reward ``r`` is optimised, a gold reward ``g`` is wanted; both are per
token, ``R_n = Σ r(Y_i)``, ``G_n = Σ g(Y_i)``. Every policy that selects by the
proxy alone is a policy on the proxy levels (§10): given the chosen level
``s`` the sequence is ``p^n(· | R_n = s)``. Its gold reward is therefore one
sum ``Σ_s q(s) m(s)`` against the regression function

.. math:: m(s) = E[G_n | R_n = s] = n \sum_y p(y) g(y) P_{n-1}(s - r(y)) / P_n(s).

:func:`gold_given_level` computes ``m(s)`` and ``Var(G_n | R_n = s)`` exactly;
:func:`gold_reward` turns any level law (best-of-N, soft best-of-N,
Best-of-Poisson, level tilts, ...) into its gold reward. The KL-RL tilt and
its Goodhart peak are in :mod:`asymalign.goodhart_tilt`.

Reference: Gao, Schulman, Hilton, "Scaling laws for reward model
overoptimization", ICML 2023 (arXiv 2210.10760).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from . import _numerics as nx
from ._buckets import device_array
from ._jit import jit
from ._validate import check_model, check_positive_int, check_reward, is_concrete
from .sequence_laws import (
    _LEVEL_RTOL,
    _MERGE_RTOL,
    RewardLaw,
    _compositions,
    _detect_lattice,
    _fingerprint,
    num_types,
    reward_law,
)

__all__ = ["GoldGivenLevel", "GoldReward", "gold_given_level", "gold_reward", "gold_pushforward"]

_MAX_TYPES = 3_000_000


class GoldGivenLevel(NamedTuple):
    """The gold reward given the proxy level (THEORY.md §13).

    Attributes:
      levels: proxy levels ``s`` of ``R_n`` (the reachable levels of
        ``reward_law(p, r, n)``), sorted ascending.
      log_prob: ``log P_n(s)``, the reference law of ``R_n`` on those levels.
      mean: ``m(s) = E[G_n | R_n = s]``.
      var: ``Var(G_n | R_n = s)``.
      n: sequence length.
      fingerprint: the proxy model's fingerprint (as ``RewardLaw.fingerprint``).
    """

    levels: jax.Array
    log_prob: jax.Array
    mean: jax.Array
    var: jax.Array
    n: int
    fingerprint: str

    @property
    def law(self) -> RewardLaw:
        """The reference level law ``P_n`` as a :class:`RewardLaw`."""
        return RewardLaw(self.levels, self.log_prob, self.n, self.fingerprint)


class GoldReward(NamedTuple):
    """Gold reward ``G_n`` of a level policy: its mean and variance."""

    mean: jax.Array
    var: jax.Array


# ---------------------------------------------------------------------------
# push-forward with gold kept per proxy level (THEORY.md §7, §13)
# ---------------------------------------------------------------------------


def check_gold(g, p, name: str = "g") -> None:
    """``g`` finite, same length as ``p`` (``ValueError`` naming ``g``)."""
    if np.ndim(g) != 1:
        raise ValueError(f"{name} must be a 1-D per-token gold reward, got shape {np.shape(g)}")
    check_reward(g, p, name)


def gold_pushforward(p, r, g):
    """Proxy push-forward of ``p`` with the gold kept per proxy letter.

    Tokens with equal proxy reward (relative ``1e-12``, as
    :func:`~asymalign.pushforward`) merge into one letter of weight ``w`` whose
    gold is the ``p``-weighted mean ``ḡ`` and within-letter variance ``v``.
    Host-side (NumPy float64). THEORY.md §7, §13: every proxy-selected
    policy's gold depends on ``g`` only through ``ḡ`` (and its variance only
    through ``v`` as well), so ``(weights, values, gbar)`` is an exact, much
    smaller model for the mean gold of a large vocabulary.

    Args:
      p: reference probabilities, shape ``(k,)``.
      r: proxy reward per token. g: gold reward per token (finite).

    Returns:
      ``(values, weights, gbar, gvar)``: sorted distinct proxy values on
      ``supp p``, their probabilities, mean gold and within-letter gold variance.

    >>> import asymalign as aa
    >>> v, w, gbar, gvar = aa.gold_pushforward([0.25, 0.25, 0.5], [0.0, 1.0, 0.0], [1.0, 5.0, 4.0])
    >>> v.tolist(), w.tolist(), gbar.tolist(), gvar.tolist()
    ([0.0, 1.0], [0.75, 0.25], [3.0, 5.0], [2.0, 0.0])
    """
    check_model(p, r)
    check_gold(g, p)
    p, r, g = (np.asarray(x, dtype=np.float64) for x in (p, r, g))
    keep = p > 0
    order = np.argsort(r[keep], kind="stable")
    v, w, gg = r[keep][order], p[keep][order], g[keep][order]
    tol = _MERGE_RTOL * max(1.0, float(np.max(np.abs(v))))
    starts = np.flatnonzero(np.concatenate([[True], np.diff(v) > tol]))
    weights = np.add.reduceat(w, starts)
    gbar = np.add.reduceat(w * gg, starts) / weights
    dev = gg - np.repeat(gbar, np.diff(np.append(starts, v.size)))
    gvar = np.add.reduceat(w * dev * dev, starts) / weights
    return v[starts], weights / weights.sum(), gbar, gvar


# ---------------------------------------------------------------------------
# lattice kernel
# ---------------------------------------------------------------------------


def _shifted(x, lo: int, count: int, length: int):
    """``y[i, t] = x[lo + i - t]`` for ``i < length``, ``t < count`` (one gather)."""
    return x[lo + jnp.arange(length)[:, None] - jnp.arange(count)[None, :]]


def _lattice_kernel(d, log_w, gs, gv, log_a0, a1n, c2, nf, size: int):
    """Per lattice index ``i = 0..size-1`` of ``M_n``: ``(log P_n, μ, E1, cov)``.

    ``d``: ``log P_{n-2}`` padded with ``2 span`` ``-inf`` on the left and
    enough on the right. ``a_m(i) ∝ w_m P_{n-1}(i-m)`` is the law of the first
    letter given the level and ``b_t(i) ∝ A0_t P_{n-2}(i-t)`` the law of the
    index sum ``t`` of the first two; both are normalised per level, so every
    sum has non-negative weights summing to one. ``μ = Σ a ḡ`` (shifted gold,
    ``>= 0``), ``E1 = E[(g(Y1)-μ)^2 | i]``, ``cov = E[(g(Y1)-μ)(g(Y2)-μ) | i]``
    with the pair term ``C_t + (A1_t - μ)^2``.
    """
    span = log_w.shape[0] - 1
    pairs = 2 * span + 1
    # log P_{n-1} on indices -span .. size-1 (kept in a buffer offset by span).
    length1 = size + span
    d2 = _shifted(d, span, span + 1, length1)  # d[span + x - m] = P_{n-2}(x - m), x = j - span
    logp1 = logsumexp(d2 + log_w[None, :], axis=1)
    y = _shifted(logp1, span, span + 1, size)  # P_{n-1}(i - m)
    za = y + log_w[None, :]
    log_pn = logsumexp(za, axis=1)
    a = jnp.exp(za - jnp.where(jnp.isfinite(log_pn), log_pn, 0.0)[:, None])
    a = jnp.where(jnp.isfinite(log_pn)[:, None], a, 0.0)
    mu = jnp.sum(a * gs[None, :], axis=1)
    e1 = jnp.sum(a * ((gs[None, :] - mu[:, None]) ** 2 + gv[None, :]), axis=1)
    x = _shifted(d, 2 * span, pairs, size) + log_a0[None, :]  # A0_t P_{n-2}(i - t)
    lz = logsumexp(x, axis=1)
    b = jnp.exp(x - jnp.where(jnp.isfinite(lz), lz, 0.0)[:, None])
    b = jnp.where(jnp.isfinite(lz)[:, None], b, 0.0)
    cov = jnp.sum(b * (c2[None, :] + (a1n[None, :] - mu[:, None]) ** 2), axis=1)
    del nf
    return log_pn, mu, e1, cov


_lattice_kernel_jit = jit(_lattice_kernel, static_argnames=("size",))


def _pair_stats(w, gs):
    """Index-sum law of two letters: ``A0_t = Σ_{m+m'=t} w_m w_m'``, the pair's
    mean shifted gold ``A1_t``, and ``C_t = Cov(g(Y1), g(Y2) | m+m' = t)``
    (two-pass, float64)."""
    span = w.size - 1
    a0 = np.convolve(w, w)
    a1 = np.convolve(w * gs, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        a1n = np.where(a0 > 0, a1 / np.where(a0 > 0, a0, 1.0), 0.0)
    c2 = np.zeros(2 * span + 1)
    for m in range(span + 1):  # Σ_{m'} w_m w_m' (gs_m - A1_t)(gs_m' - A1_t), t = m + m'
        t = m + np.arange(span + 1)
        c2[t] += w[m] * w * (gs[m] - a1n[t]) * (gs - a1n[t])
    with np.errstate(invalid="ignore", divide="ignore"):
        c2 = np.where(a0 > 0, c2 / np.where(a0 > 0, a0, 1.0), 0.0)
        log_a0 = np.where(a0 > 0, np.log(np.where(a0 > 0, a0, 1.0)), -np.inf)
    return log_a0, a1n, c2


def _bucket(length: int) -> int:
    return max(64, 1 << (length - 1).bit_length())


def _gold_lattice(p, r, n, lattice, weights, gs, gv, dt):
    a, h, m = lattice
    span = int(m[-1])
    w = np.zeros(span + 1)
    w[m] = weights
    gsd, gvd = np.zeros(span + 1), np.zeros(span + 1)
    gsd[m], gvd[m] = gs, gv
    size = n * span + 1
    if n == 1:
        idx = m
        return idx, np.log(weights), gs, gv
    if n == 2:
        logd = np.zeros(1)
    else:
        law2 = reward_law(p, r, n - 2)
        lev = np.asarray(law2.levels)
        j = np.rint((lev - (n - 2) * a) / h).astype(np.int64)
        logd = np.full((n - 2) * span + 1, -np.inf)
        logd[j] = np.asarray(law2.log_prob)
    bucket = _bucket(size)
    buf = np.full(bucket + 2 * span, -np.inf)
    buf[2 * span : 2 * span + logd.size] = logd
    log_a0, a1n, c2 = _pair_stats(w, gsd)
    with np.errstate(divide="ignore"):
        log_w = np.log(w)
    args = [device_array(x, dt) for x in (buf, log_w, gsd, gvd, log_a0, a1n, c2, n)]
    log_pn, mu, e1, cov = (np.asarray(x) for x in _lattice_kernel_jit(*args, size=bucket))
    idx = np.flatnonzero(np.isfinite(log_pn[:size]))
    var = n * e1[idx] + n * (n - 1.0) * cov[idx]
    log_pn = log_pn[idx] - np.logaddexp.reduce(log_pn[idx])
    return idx, log_pn, n * mu[idx], np.maximum(var, 0.0)


def _gold_types(values, weights, gs, gv, n):
    """Types method (host, float64): per type ``c`` the gold has mean ``c·ḡ``
    and variance ``c·v``; per level, the law-of-total-variance mix (two-pass)."""
    comps = _compositions(n, values.size)
    log_fact = np.array([math.lgamma(c + 1.0) for c in range(n + 1)])
    logp = log_fact[n] - log_fact[comps].sum(axis=-1) + comps @ np.log(weights)
    levels = comps @ values
    hmean, hvar = comps @ gs, comps @ gv
    order = np.argsort(levels, kind="stable")
    levels, logp, hmean, hvar = levels[order], logp[order], hmean[order], hvar[order]
    tol = _LEVEL_RTOL * n * max(1.0, float(np.max(np.abs(values))))
    starts = np.flatnonzero(np.concatenate([[True], np.diff(levels) > tol]))
    group = np.repeat(np.arange(starts.size), np.diff(np.append(starts, levels.size)))
    lp = np.logaddexp.reduceat(logp, starts)
    pi = np.exp(logp - lp[group])
    mean = np.add.reduceat(pi * hmean, starts)
    dev = hmean - mean[group]
    var = np.add.reduceat(pi * (hvar + dev * dev), starts)
    return levels[starts], lp - np.logaddexp.reduce(lp), mean, var


def gold_given_level(p: ArrayLike, r: ArrayLike, g: ArrayLike, n: int, method: str = "auto") -> GoldGivenLevel:
    r"""Gold reward given the proxy level: ``m(s) = E[G_n | R_n = s]`` and ``Var(G_n | R_n = s)``.

    THEORY.md §13 (exchangeability):

    .. math::
       m(s) = n \sum_y p(y) g(y) P_{n-1}(s - r(y)) / P_n(s), \qquad
       E[G_n^2 | s] = n E[g(Y_1)^2 | s] + n(n-1) E[g(Y_1) g(Y_2) | s].

    First ``p`` is pushed forward through ``r`` (§7) with the gold kept per
    proxy letter: tokens of equal proxy merge into one letter whose gold is
    the ``p``-weighted mean ``ḡ`` plus a within-letter variance (across merged
    letters ``E[g(Y_1) g(Y_2) | ·]`` factorises by independence). Then

    * **lattice** proxy (``r = a + h m``, any ``n`` the law supports, e.g.
      ``n = 10^5``): from the exact ``log P_{n-2}`` of :func:`reward_law`, the
      conditional laws of the first letter and of the first two letters'
      index sum given the level are built in log space and normalised per level
      (every weight ``>= 0``, summing to one, each with relative accuracy).
      So ``m(s)`` is a convex combination of the letters' gold: relative
      accuracy when ``g >= 0`` (shift ``g`` by its minimum to get it for
      ``m(s) - n min g``), absolute ``~ eps · n E[|g| | s]`` in general. The
      gold is deliberately *not* shifted internally: adding ``n min g`` back
      would cancel (at ``n = 10^5`` a level whose gold is exactly 1 would come
      out as ``1 + 3e-7``). The variance is
      ``n E[(g_1-μ)^2|s] + n(n-1) E[(g_1-μ)(g_2-μ)|s]`` centred at
      ``μ = m(s)/n``, with the pair term as a within-pair covariance plus a
      square (no large cancelling sums).
    * **types** (any real proxy, small alphabets): per type ``c`` the gold has
      mean ``c·ḡ`` and variance ``c·v``; equal levels are mixed by the law of
      total variance.

    Args:
      p: reference probabilities, shape ``(k,)``.
      r: proxy reward per token, shape ``(k,)``.
      g: gold reward per token, shape ``(k,)``, finite.
      n: sequence length ``>= 1``.
      method: ``"auto"`` (lattice when the proxy is on a lattice, else types),
        ``"lattice"`` or ``"types"``.

    Returns:
      :class:`GoldGivenLevel` on the reachable levels of ``reward_law(p, r, n)``
      (equal up to rounding of the level values), in the dtype of the inputs.

    Paper: Gao, Schulman, Hilton (ICML 2023) measure gold against proxy
    optimisation; here it is exact.

    >>> import asymalign as aa
    >>> gl = aa.gold_given_level([0.5, 0.5], [0.0, 1.0], [1.0, 3.0], 2)
    >>> gl.levels.tolist(), gl.mean.round(12).tolist(), gl.var.round(12).tolist()
    ([0.0, 1.0, 2.0], [2.0, 4.0, 6.0], [0.0, 0.0, 0.0])
    """
    n = check_positive_int(n, "n")
    if method not in ("auto", "types", "lattice"):
        raise ValueError(f"method must be 'auto', 'types' or 'lattice', got {method!r}")
    values, weights, gbar, gvar = gold_pushforward(p, r, g)
    dt = nx.float_dtype(p, r, g)
    fp = _fingerprint(values, weights)
    gs = gbar
    k = values.size
    if k == 1:
        lattice = (float(values[0]), 1.0, np.zeros(1, np.int64))
    elif k == 2:
        lattice = (float(values[0]), float(values[1] - values[0]), np.array([0, 1]))
    else:
        lattice = _detect_lattice(values)
    if method == "auto":
        method = "lattice" if lattice is not None else "types"
    if method == "lattice":
        if lattice is None:
            raise ValueError("method='lattice': the proxy rewards r on supp p are not on a lattice a + h*m")
        idx, logp, mean, var = _gold_lattice(p, r, n, lattice, weights, gs, gvar, dt)
        levels = n * lattice[0] + lattice[1] * idx.astype(np.float64)
    else:
        if num_types(n, k) > _MAX_TYPES:
            raise ValueError(f"n = {n} with {k} distinct proxy rewards has {num_types(n, k)} types (> {_MAX_TYPES})")
        levels, logp, mean, var = _gold_types(values, weights, gs, gvar, n)
    arrs = (device_array(x, dt) for x in (levels, logp, mean, var))
    return GoldGivenLevel(*arrs, n=n, fingerprint=fp)


# ---------------------------------------------------------------------------
# gold reward of any level law
# ---------------------------------------------------------------------------


def _gold_reward_core(xp, levels, log_prob, gold_levels, gold_mean, gold_var):
    """``(mean, var, q, ok)`` with ``xp`` NumPy (concrete inputs: no compilation) or ``jax.numpy``."""
    scale = xp.maximum(1.0, xp.max(xp.abs(gold_levels)))
    tol = 1e-9 * scale
    idx = xp.clip(xp.searchsorted(gold_levels, levels - tol), 0, gold_levels.shape[-1] - 1)
    ok = xp.abs(gold_levels[idx] - levels) <= tol
    q = xp.where(ok, xp.exp(log_prob), 0.0)
    m = gold_mean[idx]
    mean = xp.sum(q * m, axis=-1)
    # second moment about the mean, so it keeps relative accuracy
    var = xp.sum(q * (gold_var[idx] + (m - mean[..., None]) ** 2), axis=-1)
    return mean, var, xp.exp(log_prob), ok


def gold_reward(law: RewardLaw, gold: GoldGivenLevel) -> GoldReward:
    r"""Gold reward of a policy on proxy levels (THEORY.md §10, §13).

    For a level law ``q`` (best-of-N, soft best-of-N, Best-of-Poisson, a level
    tilt, the reference itself ...) on the levels of ``gold``:

    .. math:: E G_n = \sum_s q(s) m(s), \qquad
       Var\, G_n = \sum_s q(s) [Var(G_n|s) + m(s)^2] - (E G_n)^2.

    ``law`` may list the levels of ``gold`` or any subset of them (e.g. a
    padded law with zero-probability copies); its entries are matched to
    ``gold.levels`` within a relative ``1e-9``. Jittable over ``law``
    (validation runs on concrete inputs only).

    Args:
      law: a :class:`RewardLaw` over the proxy levels, same ``n`` and model.
      gold: :func:`gold_given_level` of the same proxy model and ``n``.

    Returns:
      :class:`GoldReward` ``(mean, var)`` of the total gold ``G_n``.

    >>> import asymalign as aa
    >>> gl = aa.gold_given_level([0.5, 0.5], [0.0, 1.0], [1.0, 3.0], 2)
    >>> float(aa.gold_reward(gl.law, gl).mean)
    4.0
    """
    if not isinstance(law, RewardLaw):
        raise ValueError(f"law must be a RewardLaw, got {type(law).__name__}")
    if not isinstance(gold, GoldGivenLevel):
        raise ValueError(f"gold must be a GoldGivenLevel (from gold_given_level), got {type(gold).__name__}")
    if law.n != gold.n:
        raise ValueError(f"law was built for n = {law.n} but gold for n = {gold.n}")
    if law.fingerprint is not None and law.fingerprint != gold.fingerprint:
        raise ValueError("law was built from another model (p, r) than gold; use the same proxy model")
    arrays = (law.levels, law.log_prob, gold.levels, gold.mean, gold.var)
    if is_concrete(*arrays):
        # host NumPy: op-by-op jax.numpy would compile a dozen kernels per law shape
        dt = np.result_type(*(np.asarray(a).dtype for a in arrays[1:]))
        mean, var, q, ok = _gold_reward_core(np, *(np.asarray(a) for a in arrays))
        if not bool(np.all(ok | (q == 0))):
            raise ValueError("law has levels that are not proxy levels of gold (another model or n?)")
        return GoldReward(device_array(np.asarray(mean, dt)), device_array(np.asarray(var, dt)))
    mean, var, _, _ = _gold_reward_core(jnp, *arrays)
    return GoldReward(mean, var)
