r"""Inference-aware alignment on reward levels (InfAlign, Balashankar et al., ICML 2025; THEORY.md §11).

An aligned level law ``q`` is decoded at inference time by best-of-N or
worst-of-N; its inference-time win rate against the equally decoded
reference is ``W_T(q) = win_rate(T(q), T(P))``
(:func:`~asymalign.inference_win_rate`). Writing ``A = calibrated_reward(T(P))``
for best-of-N, ``W(q) = Σ_s [Q(s)^N - Q(s-)^N] A(s)`` and

.. math:: g(t) = \frac{∂W}{∂q(t)} = N\Big[A(t) Q(t)^{N-1}
          + \sum_{s > t} A(s)\,\big(Q(s)^{N-1} - Q(s-)^{N-1}\big)\Big],

computed with the log-space best-of-``(N-1)`` kernel. Worst-of-N is best-of-N
of the mirrored law ``s -> -s``, with ``W_{WoN}(q) = 1 - W'_{BoN}(q')``.

* Best-of-N: ``W`` is concave in ``q``; the maximiser under
  ``KL(q||P) <= Δ`` is the fixed point ``q = P e^{g(q)/β} / Z`` with ``β``
  set by the budget. It is found by Newton's method on the score,
  ``σ = g(q(σ))`` with ``q(σ) ∝ P e^{λσ}`` at ``KL = Δ`` (a safeguarded,
  warm-started Newton root for ``λ``): the Jacobian is
  ``I + λ M D_q Π``, ``-∂g/∂q = M = L^T diag(m) L`` (``L`` the cumulative
  sum, so two cumulative sums per product) and ``Π`` a projector, solved by
  conjugate gradients in ``L²(q)``; steps are halved until they do not lower
  ``W``; to ``|Δq|_1 <= 1e-13`` (3-5 steps per budget). The score is
  ``g/N - g(top)/N``, a sum of positive terms in log space, accurate where
  ``g/N`` rounds to 1. A batch of budgets over one law is solved in order of
  increasing budget, each from the previous optimum (continuation).
* Worst-of-N: ``W`` is convex; the undamped step ``q <- argmax_{KL<=Δ} <g(q), ·>``
  never decreases it (convexity), and it is run from many starts: the CTRL
  transforms (identity, exponential ``-e^{-tC}`` for several ``t``, power
  ``-(1-C)^{2N-1}``), the raw reward, and one start pushed towards each level
  (the boundary of the KL ball); the best end point is returned.

Also the CTRL score families of §11 (:func:`transformed_reward`), to be used
with :func:`~asymalign.level_tilt` / :func:`~asymalign.solve_level_tilt`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.typing
import numpy as np
from jax.scipy.special import logsumexp

from . import _numerics as nx
from ._buckets import device_array, unpad
from ._jit import jit
from ._level_base import _check_law, _check_log_n, _like
from ._level_kernels import (
    _LOG_HALF,
    _bon_log_law,
    _bon_log_law_worst,
    _broadcast,
    _pad,
    _tails,
)
from ._validate import check_nonneg, check_real
from .level_measures import _calibrated, _win, calibrated_reward
from .sequence_laws import RewardLaw, _bucket

__all__ = ["transformed_reward", "InfAlignOptimum", "infalign_optimum"]

_TRANSFORMS = ("identity", "exponential", "power")
_MAX_ITERS = 2000  # worst-of-N fixed-point steps
_NEWTON_ITERS = 100  # best-of-N Newton steps (with step halvings)
_CG_ITERS = 200
_CG_TOL = 1e-10
_TOL = 1e-13
_EXP_STARTS = (0.5, 2.0, 8.0, 32.0)


def transformed_reward(
    ref: RewardLaw,
    transform: str,
    *,
    log_num_samples: jax.typing.ArrayLike = 0.0,
    t: jax.typing.ArrayLike = 1.0,
    worst: bool = False,
) -> jax.Array:
    r"""CTRL scores over the levels: a transform ``Φ`` of the calibrated reward ``C`` (THEORY.md §11).

    ============== ======================= ===========================
    ``transform``  best-of-N                worst-of-N (``worst=True``)
    ============== ======================= ===========================
    identity       ``C``                    ``C``
    exponential    ``exp(t C)``             ``-exp(-t C)``
    power          ``C^{2N-1}``             ``-(1 - C)^{2N-1}``
    ============== ======================= ===========================

    ``C = calibrated_reward(ref)``; all are increasing in ``C``. KL-RL on a
    score is :func:`~asymalign.level_tilt` / :func:`~asymalign.solve_level_tilt`
    (Balashankar et al. 2025, "InfAlign"; the power is their small-KL optimum).

    Args:
      ref: the reference law.
      transform: ``"identity"``, ``"exponential"`` or ``"power"``.
      log_num_samples: ``log N`` (used by ``"power"``).
      t: the exponential rate ``t > 0``.
      worst: the worst-of-N variants.

    >>> import asymalign as aa
    >>> ref = aa.reward_law([0.5, 0.5], [0.0, 1.0], 1)
    >>> aa.transformed_reward(ref, "power", log_num_samples=jnp.log(2.0)).tolist()
    [0.015625, 0.421875]
    """
    _check_law(ref, "ref")
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {_TRANSFORMS}, got {transform!r}")
    _check_log_n(log_num_samples)
    check_real(t, "t")
    if np.any(np.asarray(t) <= 0) if not isinstance(t, jax.core.Tracer) else False:
        raise ValueError(f"t must be > 0, got {t!r}")
    c = calibrated_reward(ref)
    if transform == "identity":
        return c
    dt = c.dtype
    t, log_n = device_array(t, dt), device_array(log_num_samples, dt)
    return _transform(c, t, log_n, transform=transform, worst=bool(worst))


@functools.partial(jit, static_argnames=("transform", "worst"))
def _transform(c, t, log_n, *, transform, worst):
    """:func:`transformed_reward`'s ``Φ(C)``: one executable (eager operations would compile one each)."""
    if transform == "exponential":
        t = t[..., None]
        return -jnp.exp(-t * c) if worst else jnp.exp(t * c)
    k = 2.0 * jnp.exp(log_n)[..., None] - 1.0
    return -((1.0 - c) ** k) if worst else c**k


class InfAlignOptimum(NamedTuple):
    """Solution of :func:`infalign_optimum`.

    Attributes:
      law: the optimal aligned level law ``q*``.
      beta: ``β`` in ``q* ∝ P exp(g(q*)/β)`` (``0`` when ``Δ >= -log P(top)``:
        ``q*`` is the top level; ``+inf`` when ``Δ = 0``).
      win_rate: the inference-time win rate ``W_T(q*)``.
    """

    law: RewardLaw
    beta: jax.Array
    win_rate: jax.Array


class _Prep(NamedTuple):
    """Per-law constants of the best-of-N objective (module docstring), from the reference alone."""

    levels: jax.Array
    log_ref: jax.Array
    log_n: jax.Array
    log_nm1: jax.Array  # log(N - 1)
    log_win_w: jax.Array  # log A(s), A = calibrated_reward(BoN(P)), per entry: W = Σ_s B_q(s) A(s)
    log_loss_w: jax.Array  # log(1 - A(s)): 1 - W = Σ_s B_q(s) (1 - A(s))
    log_c: jax.Array  # log(A(s+) - A(s)) on the last entry of each non-top tie group, else -inf
    start: jax.Array  # first index of each entry's tie group
    end: jax.Array  # one past its last index
    last: jax.Array  # last entry of its tie group
    single: jax.Array  # a tie group of one entry


def _prep(levels, log_ref, log_n) -> _Prep:
    length = levels.shape[-1]
    rt = _tails(levels, _bon_log_law(levels, log_ref, log_n))
    idx = jnp.arange(length)
    differs = levels[1:] != levels[:-1]
    first = jnp.concatenate([jnp.ones((1,), bool), differs])
    last = jnp.concatenate([differs, jnp.ones((1,), bool)])
    start = jax.lax.cummax(jnp.where(first, idx, 0))
    end = jax.lax.cummin(jnp.where(last, idx, length - 1), reverse=True) + 1
    # A(s+) - A(s) = [b(s) + b(s+)]/2 with b the BoN(P) mass of a tie group.
    pg_next = jnp.concatenate([rt.log_pg, jnp.full((1,), -jnp.inf, rt.log_pg.dtype)])[end]
    log_c = jnp.where(last & (end < length), _LOG_HALF + jnp.logaddexp(rt.log_pg, pg_next), -jnp.inf)
    log_nm1 = log_n + nx.log1mexp(-log_n)
    half_b = rt.log_pg + _LOG_HALF
    log_win_w = jnp.logaddexp(rt.log_f_prev, half_b)
    log_loss_w = jnp.logaddexp(rt.log_s, half_b)
    return _Prep(levels, log_ref, log_n, log_nm1, log_win_w, log_loss_w, log_c, start, end, last, end - start == 1)


def _evaluate(pre: _Prep, log_q):
    r"""``(σ, W, m)`` at ``q``: the score ``σ = g/N - g(K)/N``, the win rate, the curvature.

    ``g`` summed by parts over the distinct levels ``k`` (``K`` the top,
    ``b`` the mass of ``BoN(P)``, ``A(k+) - A(k) = (b(k) + b(k+))/2``):

    .. math:: g(K)/N - g(t)/N = \sum_{t <= k < K} \tfrac12\big(b(k) + b(k+)\big) Q(k)^{N-1},

    a cumulative sum of positive terms: ``σ`` keeps its relative accuracy
    where ``g/N`` rounds to 1 (the upper levels, where a large ``λ`` puts the
    mass) and ``σ(K) = 0`` exactly (the tilt ignores the constant).
    ``Q(k)`` from the cumulative sums of ``q`` from below and above
    (``log Q = log1p(-S)`` where ``S = 1 - Q < 1/2``); ``W = Σ_k B_q(k) A(k)``
    (or ``1 -`` the loss, whichever is accurate) with the best-of-N masses
    ``B_q(k) = Q(k)^N (1 - e^{-N D})``, ``D = log1p(q(k) / Q(k-))``; and the
    curvature weights ``m(k) = (N-1) (A(k+) - A(k)) Q(k)^{N-2}`` of
    ``-∂(g/N)/∂q = L^T diag(m) L`` (``L`` the cumulative sum; on ``Σ δq = 0``).
    Mass below ``1e-308`` per level is dropped (it moves none of these)."""
    q = jnp.exp(log_q)
    zero = jnp.zeros((1,), q.dtype)
    below = jnp.concatenate([zero, jnp.cumsum(q)])  # below[i] = Σ_{j<i} q
    above = jnp.concatenate([jnp.cumsum(q[::-1])[::-1], zero])  # above[i] = Σ_{j>=i} q
    f, f_prev, s = below[pre.end], below[pre.start], above[pre.end]  # Q(k), Q(k-), 1 - Q(k)
    group = jnp.where(pre.single, q, jnp.where(s < 0.5, above[pre.start] - s, f - f_prev))
    upper = s < 0.5
    log_f = jnp.where(upper, jnp.log1p(-jnp.where(upper, s, 0.0)), jnp.log(f))  # -inf where Q(k) = 0
    pos = f > 0
    big_n = jnp.exp(pre.log_n)
    lf = jnp.where(pos, log_f, 0.0)
    # best-of-N masses of q, per tie group (read on the group's last entry)
    d = jnp.log1p(group / jnp.where(f_prev > 0, f_prev, 1.0))
    log_b = big_n * lf + jnp.log(-jnp.expm1(-big_n * d))
    log_b = jnp.where(pos & (group > 0), jnp.where(f_prev > 0, log_b, big_n * lf), -jnp.inf)
    log_b = jnp.where(pre.last, log_b, -jnp.inf)
    log_win = logsumexp(log_b + pre.log_win_w)
    log_loss = logsumexp(log_b + pre.log_loss_w)
    w = jnp.where(log_loss < _LOG_HALF, -jnp.expm1(log_loss), jnp.exp(log_win))
    has = pre.log_nm1 > -jnp.inf  # N > 1 (N = 1: W = Σ q A is linear, Q^0 = 1)
    seen = pre.log_c > -jnp.inf
    n_pow = jnp.where(has, jnp.exp(pre.log_nm1) * lf, 0.0)  # (N-1) log Q(k)
    terms = jnp.where(seen & (pos | ~has), jnp.exp(pre.log_c + n_pow), 0.0)
    h = jnp.cumsum(terms[::-1])[::-1][pre.start]  # g(K)/N - g/N
    ok = has & seen & pos
    log_m = pre.log_nm1 + pre.log_c + (big_n - 2.0) * lf
    m = jnp.where(ok, jnp.exp(jnp.minimum(log_m, 700.0)), 0.0)
    return -h, w, m


def _curvature(pre: _Prep, m, dq):
    """``M δq = L^T diag(m) L δq`` (``M = -∂(g/N)/∂q`` on ``Σ δq = 0``), tie groups as one level."""
    d_cdf = jnp.cumsum(dq)[pre.end - 1]  # δQ(s) at each entry's group
    return jnp.cumsum(jnp.where(pre.last, m * d_cdf, 0.0)[::-1])[::-1][pre.start]


def _tilt(log_p, score, delta, x0):
    """``(x, λ, log q)``: ``q ∝ p e^{λ score}`` with ``KL(q||p) = Δ``, ``x = log λ``.

    ``λ = 0`` (``q = p``) at ``Δ = 0``; ``λ = inf`` (``p`` on the argmax set)
    when ``Δ >= -log p(argmax)``. Otherwise a safeguarded Newton iteration on
    ``log KL(x) = log Δ`` (``dKL/dx = λ² Var_q(score)``; ``KL ∝ λ²`` for small
    ``λ``, where the step is exact), warm-started at ``x0`` and kept inside a
    bracket ``[lo, hi]`` of ``x`` (bisection when a step would leave it or
    not halve the previous one, as in Numerical Recipes' ``rtsafe``), until
    ``|log KL - log Δ| <= 1e-13`` (then one more step) or ``x`` is resolved to
    rounding (a bracket or step of one part in ``1e15``)."""
    on = log_p > -jnp.inf
    top = jnp.max(jnp.where(on, score, -jnp.inf))
    bot = jnp.min(jnp.where(on, score, jnp.inf))
    u = jnp.where(on, score - top, 0.0)  # <= 0
    span = jnp.where(top > bot, top - bot, 1.0)
    arg = on & (u == 0)
    dmax = -logsumexp(jnp.where(arg, log_p, -jnp.inf))
    dt = u.dtype
    log_delta = jnp.log(jnp.where(delta > 0, delta, 1.0))

    def evaluate(x):
        lam = jnp.exp(x)
        lu = jnp.where(arg, 0.0, lam * u)
        z = jnp.where(on, log_p + lu, -jnp.inf)
        lz = logsumexp(z)
        q = jnp.where(on, jnp.exp(z - lz), 0.0)
        kl = jnp.sum(q * lu) - lz
        mean = jnp.sum(q * u)
        dkl = lam * lam * jnp.sum(q * (u - mean) ** 2)  # dKL/dx
        below = kl < delta
        f = jnp.where(kl > 0, jnp.log(jnp.where(kl > 0, kl, 1.0)) - log_delta, -jnp.inf)
        xn = x - f * kl / jnp.where(dkl > 0, dkl, 1.0)
        return below, f, xn, z - lz

    def body(state):
        k, x, lo, hi, step, _ = state
        below, f, xn, _ = evaluate(x)
        lo, hi = jnp.where(below, x, lo), jnp.where(below, hi, x)
        # Newton only while it stays in the bracket and its steps at least halve (else it can zigzag)
        newton = (xn >= lo) & (xn <= hi) & (jnp.abs(xn - x) <= 0.5 * step)
        res = 1e-15 * jnp.maximum(1.0, jnp.abs(x))  # the resolution of x
        done = (jnp.abs(f) <= 1e-13) | (hi - lo <= res) | (newton & (jnp.abs(xn - x) <= res))
        x_new = jnp.where(newton, xn, jnp.where(done, x, 0.5 * (lo + hi)))
        return k + 1, x_new, lo, hi, jnp.abs(x_new - x), done

    def cont(state):
        k, _, _, _, _, done = state
        return (k < 100) & ~done

    lo = jnp.asarray(-40.0, dt) - jnp.log(span)
    hi = jnp.asarray(60.0, dt) - jnp.log(span)
    x0 = jnp.where(jnp.isfinite(x0), jnp.clip(x0, lo, hi), 0.5 * (lo + hi))
    edge = (delta <= 0) | (delta >= dmax)
    _, x, _, _, _, _ = jax.lax.while_loop(cont, body, (0, x0, lo, hi, jnp.asarray(jnp.inf, dt), edge))
    x = jnp.where(edge, x0, x)
    lam = jnp.where(delta >= dmax, jnp.inf, jnp.where(delta > 0, jnp.exp(x), 0.0))
    _, _, _, log_q = evaluate(jnp.where(edge, -jnp.inf, x))  # x = -inf: λ = 0, q = p
    cond = jnp.where(arg, log_p + dmax, -jnp.inf)
    return x, lam, jnp.where(jnp.isinf(lam), cond, log_q)


def _projector(on, q, score):
    """``Π``: the ``L²(q)``-orthogonal projector off ``span{1, σ - E_q σ}``."""
    s = jnp.where(on, score - jnp.sum(q * score), 0.0)
    var = jnp.sum(q * s * s)
    inv_var = jnp.where(var > 0, 1.0 / jnp.where(var > 0, var, 1.0), 0.0)

    def proj(v):
        v = v - jnp.sum(q * v)
        return jnp.where(on, v - s * (jnp.sum(q * s * v) * inv_var), 0.0)

    return proj


def _newton_direction(pre: _Prep, score, lam, log_q, g, m):
    """Newton step ``δσ`` for the fixed point ``σ = g(q(σ))`` (``q(σ)`` the tilt at budget Δ).

    With ``Π`` the ``L²(q)``-orthogonal projector off ``span{1, σ - E_q σ}``
    (the directions the tilt absorbs: normalisation and ``λ``),
    ``∂q/∂σ = λ D_q Π`` and ``∂g/∂q = -M`` (:func:`_curvature`), so
    ``(I + λ M D_q Π) δσ = r``, ``r = g - σ``. Then ``y = Π δσ`` solves
    ``(I + Π λ M D_q) y = Π r``, an operator that is self-adjoint and ``>= I``
    in ``L²(q)`` for concave ``W`` (conjugate gradients, to a relative
    residual ``min(1e-2, λ |Π r|_q)``: inexact Newton, still quadratic), and
    ``δσ = r - λ M D_q y``. ``d W/dt = λ <Π r, y>_q > 0`` along it: an ascent
    direction."""
    on = pre.log_ref > -jnp.inf
    q = jnp.where(on, jnp.exp(log_q), 0.0)
    lam = jnp.where(jnp.isfinite(lam), lam, 0.0)  # λ = inf: the plain fixed-point step
    r = jnp.where(on, g - score, 0.0)
    proj = _projector(on, q, score)

    def op(v):
        return v + proj(lam * _curvature(pre, m, q * v))

    b = proj(r)
    bb = jnp.sum(q * b * b)

    def body(state):
        k, y, res, p, rr = state
        ap = op(p)
        pap = jnp.sum(q * p * ap)
        alpha = jnp.where(pap > 0, rr / jnp.where(pap > 0, pap, 1.0), 0.0)
        y, res = y + alpha * p, res - alpha * ap
        rr_new = jnp.sum(q * res * res)
        return k + 1, y, res, res + (rr_new / jnp.where(rr > 0, rr, 1.0)) * p, rr_new

    # Inexact Newton: relative residual <= min(1e-2, λ |Π r|_q) (λ |Π r|_q ~ the plain step's |Δq|),
    # so the outer convergence stays quadratic; not below _CG_TOL.
    tol = jnp.clip(lam * jnp.sqrt(bb), _CG_TOL, 1e-2)

    def cont(state):
        k, _, _, _, rr = state
        return (k < _CG_ITERS) & (rr > tol**2 * bb)

    _, y, _, _, _ = jax.lax.while_loop(cont, body, (0, jnp.zeros_like(b), b, b, bb))
    return r - lam * _curvature(pre, m, q * y)


def _solve_from(pre: _Prep, delta, sign, score0, x0, newton: bool):
    """Maximise ``W`` (best-of-N, ``sign = 1``; ``sign = -1``: ``1 - W`` of the
    mirrored law, i.e. worst-of-N) on the KL sphere from ``score0``.

    Steps ``σ <- σ + t d``, ``t`` halved after a rejected step and doubled
    (up to 1) after a kept one:

    * ``newton`` (concave ``W``): ``d`` the Newton direction
      (:func:`_newton_direction`), a step kept if it does not lower ``W``
      (to ``1e-15``) or if it is a full step that moves ``q`` by
      ``|Δq|_1 <= 1e-7`` (the quadratic regime, where ``W`` is flat to
      rounding). Stops when a full (``t = 1``) step moves ``q`` by
      ``|Δq|_1 <= 1e-13``, or when full steps stop shrinking at the floor set
      by rounding (``< 1e-12``).
    * else (convex ``W``): ``d = g(q(σ)) - σ``, kept only if it does not lower
      ``W``: the full step (``q <- argmax_{KL<=Δ} <g(q), ·>``) never does.
      Stops when a full step moves ``q`` by ``|Δq|_1 <= 1e-13``.

    Returns ``(σ, x, λ, log q, W, g, (steps, last |Δq|_1))``."""
    on = pre.log_ref > -jnp.inf

    def evaluate(score, log_q):
        g, w, m = _evaluate(pre, log_q)
        g, w, m = sign * g, jnp.where(sign > 0, w, 1.0 - w), sign * m
        return g, w, m, w

    def direction(score, lam, log_q, g, m):
        if not newton:
            return jnp.where(on, g - score, 0.0)
        return _newton_direction(pre, score, lam, log_q, g, m)

    def step(state):
        it, score, x, lam, log_q, w, merit, g, m, d, t, change, _ = state
        first = it == 0  # the start itself (d = 0): evaluated by this same body, so it is compiled once
        cand = jnp.where(on, score + t * d, 0.0)
        x_c, lam_c, log_c = _tilt(pre.log_ref, cand, delta, x)
        g_c, w_c, m_c, merit_c = evaluate(cand, log_c)
        move = jnp.sum(jnp.abs(jnp.exp(log_c) - jnp.exp(log_q)))
        keep = first | (merit_c >= merit - 1e-15)
        if newton:  # a full Newton step this small is in the quadratic regime, where W is flat to rounding
            keep = keep | ((t == 1.0) & (move <= 1e-7))
        d_c = jax.lax.cond(keep, direction, lambda *_: d, cand, lam_c, log_c, g_c, m_c)
        stall = keep & (t == 1.0) & (move < 1e-12) & (move > 0.5 * change) if newton else False
        done = (keep & (t == 1.0) & (move <= _TOL)) | stall | (t < 1e-8)
        done = jnp.where(first, jnp.isinf(lam_c) | (delta <= 0), done)
        move = jnp.where(first, 1.0, move)
        new = (
            it + 1,
            jnp.where(keep, cand, score),
            jnp.where(keep, x_c, x),
            jnp.where(keep, lam_c, lam),
            jnp.where(keep, log_c, log_q),
            jnp.where(keep, w_c, w),
            jnp.where(keep, merit_c, merit),
            jnp.where(keep, g_c, g),
            jnp.where(keep, m_c, m),
            d_c,
            jnp.where(keep, jnp.minimum(1.0, 2.0 * t), 0.5 * t),
            jnp.where(keep, move, change),
            done,
        )
        return new

    def cont(state):  # one more pass than steps: the first evaluates the start
        return (state[0] <= (_NEWTON_ITERS if newton else _MAX_ITERS)) & ~state[-1]

    score0 = jnp.where(on, score0, 0.0)
    dt = pre.log_ref.dtype
    one, zero = jnp.asarray(1.0, dt), jnp.zeros_like(score0)
    # placeholders for the start's values, all replaced by the first pass
    state = (0, score0, x0, one, jnp.zeros_like(score0), one, one, zero, zero, zero, one, one, jnp.asarray(False))
    it, score, x, lam, log_q, w, _, g, _, _, _, change, _ = jax.lax.while_loop(cont, step, state)
    return score, x, lam, log_q, w, g, (it - 1, change)


def _finish(pre: _Prep, delta, sign, x, log_q, w, g):
    """``β`` of the fixed point: the tilt by ``g(q)`` itself (its law kept if no worse)."""
    _, lam, log_g = _tilt(pre.log_ref, jnp.where(pre.log_ref > -jnp.inf, g, 0.0), delta, x)
    _, w_g, _ = _evaluate(pre, log_g)
    w_g = jnp.where(sign > 0, w_g, 1.0 - w_g)
    better = w_g >= w
    return jnp.where(better, log_g, log_q), lam


def _top_law(levels, log_ref, delta):
    """``(at_top, log q)``: ``Δ >= -log P(top)``, where the top level itself is feasible and
    optimal for both decodings (there the gradient is flat and the iteration cannot see it)."""
    on = log_ref > -jnp.inf
    top = on & (levels == jnp.max(jnp.where(on, levels, -jnp.inf)))
    log_top = logsumexp(jnp.where(top, log_ref, -jnp.inf))
    return delta >= -log_top, jnp.where(top, log_ref - log_top, -jnp.inf)


def _top_win(pre: _Prep, top):
    """The win rate of the top-level law (``top``: its entries) against best-of-N of ``P``:
    ``A(top) = P_BoN(r < top) + P_BoN(r = top)/2``, read off :func:`_prep`'s weights
    (``1 -`` the loss where that is the accurate side, as in :func:`_evaluate`)."""
    i = jnp.max(jnp.where(top, jnp.arange(top.shape[-1]), 0))
    log_win, log_loss = pre.log_win_w[i], pre.log_loss_w[i]
    return jnp.where(log_loss < _LOG_HALF, -jnp.expm1(log_loss), jnp.exp(log_win))


def _at_top(levels, log_ref, log_n, delta, worst: bool, log_q, lam):
    """``(log q, β, W)`` with the top-level law where :func:`_top_law` applies."""
    beta = jnp.exp(log_n) / lam  # q ∝ P exp(g/β), g = N · (g/N): β = N / λ
    at_top, log_top = _top_law(levels, log_ref, delta)
    log_q = jnp.where(at_top, log_top, log_q)
    bon = _bon_log_law_worst if worst else _bon_log_law  # chosen here: one branch compiled, not two
    win = _win(levels, bon(levels, log_q, log_n), bon(levels, log_ref, log_n))
    return log_q, jnp.where(at_top, 0.0, beta), win


def _starts(levels, log_ref, log_n):
    """Worst-of-N initial scores: the CTRL transforms, the raw reward, and one
    push towards each level (the boundary of the KL ball)."""
    c = _calibrated(levels, log_ref)
    k = 2.0 * jnp.exp(log_n) - 1.0
    fams = [c, levels, -((1.0 - c) ** k)] + [-jnp.exp(-t * c) for t in _EXP_STARTS]
    return jnp.concatenate([jnp.stack(fams), jnp.eye(levels.shape[-1], dtype=levels.dtype)])


def _worst_1d(levels, log_ref, log_n, delta):
    """Worst-of-N: best of the monotone fixed-point ascents from every start, on
    the mirrored law (``W_WoN(q) = 1 - W'_BoN(q')``, ``g = -g'``)."""
    pre = _prep(-levels[::-1], log_ref[::-1], log_n)
    starts = _starts(levels, log_ref, log_n)[:, ::-1]
    x0 = jnp.asarray(jnp.nan, log_ref.dtype)

    def one(s):
        _, x, _, log_q, w, g, _ = _solve_from(pre, delta, -1.0, s, x0, newton=False)
        return x, log_q, w, g

    x, log_q, w, g = jax.vmap(one)(starts)
    b = jnp.argmax(w)
    log_q, lam = _finish(pre, delta, -1.0, x[b], log_q[b], w[b], g[b])
    return _at_top(levels, log_ref, log_n, delta, True, log_q[::-1], lam)


_vec_worst = jit(jnp.vectorize(_worst_1d, signature="(l),(l),(),()->(l),(),()"))


def _co_calibrated(levels, log_ref):
    """``1 - C = S(s) + P(s)/2`` with relative accuracy (``C`` rounds to 1 on upper levels)."""
    t = _tails(levels, log_ref)
    return jnp.exp(jnp.logaddexp(t.log_s, t.log_pg + _LOG_HALF))


@jit
def _best_nd(levels, log_ref, log_n, delta):
    """:func:`_best_batch` of a batch of any shape (flattened and restored in one executable)."""
    batch = log_n.shape
    flat = [x.reshape((-1,) + x.shape[len(batch) :]) for x in (levels, log_ref, log_n, delta)]
    return tuple(x.reshape(batch + x.shape[1:]) for x in _best_batch(*flat)[:3])


def _best_batch(levels, log_ref, log_n, delta):
    """Best-of-N over a flat batch ``(B, l), (B, l), (B,), (B,)``, one problem after
    another in order of increasing budget within each run of equal laws
    (``W`` concave: the optimum is unique, so each Newton solve may start
    from the previous optimum's score and multiplier: continuation)."""
    same = jnp.concatenate(
        [
            jnp.zeros((1,), bool),
            jnp.all(levels[1:] == levels[:-1], axis=-1)
            & jnp.all(log_ref[1:] == log_ref[:-1], axis=-1)
            & (log_n[1:] == log_n[:-1]),
        ]
    )
    run = jnp.cumsum(~same)
    order = jnp.lexsort((delta, run))
    warm = jnp.concatenate([jnp.zeros((1,), bool), run[order][1:] == run[order][:-1]])

    def one(pre, lv, lr, ln, d, score0, x0):
        score, x, lam, log_q, w, _, info = _solve_from(pre, d, 1.0, score0, x0, newton=True)
        # at convergence σ = g(q) to the last step: β = N / λ of the final tilt
        beta = jnp.exp(ln) / lam
        at_top, log_top = _top_law(lv, lr, d)
        log_q = jnp.where(at_top, log_top, log_q)
        beta = jnp.where(at_top, 0.0, beta)
        win = jnp.where(at_top, _top_win(pre, log_top > -jnp.inf), w)
        return score, x, (log_q, beta, win, info)

    if levels.shape[0] == 1:  # one problem: no continuation, nothing to order (a smaller program to compile)
        lv, lr, ln, d = levels[0], log_ref[0], log_n[0], delta[0]
        out = one(_prep(lv, lr, ln), lv, lr, ln, d, -_co_calibrated(lv, lr), jnp.asarray(jnp.nan, lr.dtype))[2]
        return jax.tree.map(lambda a: a[None], out)

    def solve(carry, item):
        score_prev, x_prev, pre_prev, valid = carry
        i, same_law = item
        lv, lr, ln, d = levels[i], log_ref[i], log_n[i], delta[i]
        pre = jax.lax.cond(same_law, lambda: pre_prev, lambda: _prep(lv, lr, ln))
        w_ok = same_law & valid  # a previous optimum of this law to start from
        score0 = jax.lax.cond(w_ok, lambda: score_prev, lambda: -_co_calibrated(lv, lr))
        x0 = jnp.where(w_ok, x_prev, jnp.nan)
        score, x, out = one(pre, lv, lr, ln, d, score0, x0)
        _, beta, _, _ = out
        # an edge budget (Δ = 0 or the top level) leaves no useful score: keep the previous one
        useful = jnp.isfinite(beta) & (beta > 0)
        carry = (jnp.where(useful, score, score_prev), jnp.where(useful, x, x_prev), pre, useful | w_ok)
        return carry, out

    pre0 = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(_prep, levels[0], log_ref[0], log_n[0]))
    init = (jnp.zeros_like(levels[0]), jnp.asarray(jnp.nan, log_ref.dtype), pre0, jnp.asarray(False))
    _, out = jax.lax.scan(solve, init, (order, warm))
    back = jnp.argsort(order)
    return jax.tree.map(lambda a: a[back], out)


def infalign_optimum(
    ref: RewardLaw, log_num_samples: jax.typing.ArrayLike, delta: jax.typing.ArrayLike, *, worst: bool = False
) -> InfAlignOptimum:
    r"""The level law maximising the inference-time win rate under a KL budget, exactly (THEORY.md §11).

    .. math:: q^* = \arg\max_q\ W_T(q) \quad \text{s.t.} \quad KL(q \| P) \le Δ,
              \qquad q^* ∝ P \exp(g(q^*) / β),\ g = ∂W_T/∂q,

    ``T`` best-of-N (``W_T`` concave: unique optimum, Newton's method on the
    fixed point, the budgets of a batch solved by continuation) or
    worst-of-N (convex: best of many monotone ascents, see the module
    docstring). By data processing (§10) the optimum over all policies on
    ``p^n`` is this level policy. Balashankar et al. (2025), "InfAlign:
    inference-aware language model alignment".

    Args:
      ref: the reference law ``P``.
      log_num_samples: ``log N >= 0`` of the decoding.
      delta: the budget ``Δ >= 0`` on ``KL(q || P)`` (total).
      worst: worst-of-N decoding.

    Returns:
      :class:`InfAlignOptimum` ``(law, beta, win_rate)``.

    >>> import asymalign as aa
    >>> ref = aa.reward_law([0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 2.0, 3.0], 1)
    >>> opt = aa.infalign_optimum(ref, jnp.log(4.0), 0.2)
    >>> calib = aa.solve_level_tilt(ref, aa.calibrated_reward(ref), 0.2).law
    >>> bool(opt.win_rate >= aa.inference_win_rate(calib, ref, jnp.log(4.0)))
    True
    """
    _check_law(ref, "ref")
    _check_log_n(log_num_samples)
    check_real(delta, "delta", allow_inf=True)
    check_nonneg(delta, "delta")
    length = ref.levels.shape[-1]
    dt = ref.log_prob.dtype
    # Small buckets (>= 8): worst-of-N runs one start per (padded) level.
    levels, log_ref = _pad(jnp.asarray(ref.levels, dt), jnp.asarray(ref.log_prob), _bucket(length, 8))
    rows, scalars = _broadcast((levels, log_ref), (device_array(log_num_samples, dt), device_array(delta, dt)))
    if worst:
        log_q, beta, win = _vec_worst(*rows, *scalars)
    else:
        log_q, beta, win = _best_nd(*rows, *scalars)
    return InfAlignOptimum(_like(ref, unpad(log_q, length)), beta, win)
