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
  set by the budget. It is found by a damped fixed-point iteration on the
  score: ``σ <- (σ + g(q))/2``, ``q = solve_level_tilt(P, σ, Δ)`` (each step
  an exact 1-D root for the multiplier), to ``|Δq|_1 < 1e-13``.
* Worst-of-N: ``W`` is convex; the undamped step ``q <- argmax_{KL<=Δ} <g(q), ·>``
  never decreases it (convexity), and it is run from many starts: the CTRL
  transforms (identity, exponential ``-e^{-tC}`` for several ``t``, power
  ``-(1-C)^{2N-1}``), the raw reward, and one start pushed towards each level
  (the boundary of the KL ball); the best end point is returned.

Also the CTRL score families of §11 (:func:`transformed_reward`), to be used
with :func:`~asymalign.level_tilt` / :func:`~asymalign.solve_level_tilt`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.typing
import numpy as np
from jax.scipy.special import logsumexp

from . import _numerics as nx
from ._level_base import _check_law, _check_log_n, _like
from ._level_kernels import _bon_from_tails, _bon_log_law, _broadcast, _cum_logsumexp, _pad, _tails
from ._validate import check_nonneg, check_real
from .level_measures import _calibrated, _inference_win, calibrated_reward
from .sequence_laws import RewardLaw, _bucket

__all__ = ["transformed_reward", "InfAlignOptimum", "infalign_optimum"]

_TRANSFORMS = ("identity", "exponential", "power")
_MAX_ITERS = 2000
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
    dt = c.dtype
    if transform == "identity":
        return c
    if transform == "exponential":
        t = jnp.asarray(t, dt)[..., None]
        return -jnp.exp(-t * c) if worst else jnp.exp(t * c)
    k = 2.0 * jnp.exp(jnp.asarray(log_num_samples, dt))[..., None] - 1.0
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


def _bon_gradient(levels, log_q, log_ref, log_n):
    """``(g/N, A)``: the best-of-N gradient of ``W`` (module docstring) divided by ``N``."""
    a = _calibrated(levels, _bon_log_law(levels, log_ref, log_n))  # A(s)
    tq = _tails(levels, log_q)
    log_nm1 = log_n + nx.log1mexp(-log_n)
    q_pow = jnp.where(log_nm1 > -jnp.inf, jnp.exp(-jnp.exp(log_nm1 + tq.log_neg_log_f)), 1.0)  # Q(t)^{N-1}
    log_b = _bon_from_tails(tq, log_q, log_nm1)  # per entry, sums to Q(s)^{N-1} - Q(s-)^{N-1} over a group
    length = levels.shape[-1]
    terms = jnp.where(log_b > -jnp.inf, jnp.log(a) + log_b, -jnp.inf)
    above = jnp.concatenate([_cum_logsumexp(terms, reverse=True), jnp.full((1,), -jnp.inf, terms.dtype)])
    idx = jnp.arange(length)
    last = jnp.concatenate([levels[1:] != levels[:-1], jnp.ones((1,), bool)])
    end = jax.lax.cummin(jnp.where(last, idx, length - 1), reverse=True) + 1
    # N = 1: W = Σ q A is linear, g = A (Q^0 = 1 and the differences vanish).
    return a * q_pow + jnp.where(log_nm1 > -jnp.inf, jnp.exp(above[end]), 0.0)


def _gradient(levels, log_q, log_ref, log_n, worst: bool):
    """``g/N`` for best-of-N, or for worst-of-N by mirroring (``worst`` static)."""
    if worst:
        return -_bon_gradient(-levels[::-1], log_q[::-1], log_ref[::-1], log_n)[::-1]
    return _bon_gradient(levels, log_q, log_ref, log_n)


def _tilt_to_budget(log_p, score, delta):
    """``(λ, log q)`` with ``q ∝ p e^{λ score}`` and ``KL(q||p) = Δ``; ``λ = inf``
    (``p`` on the argmax set) when ``Δ >= -log p(argmax)``. Bisection in
    ``log λ`` (64 steps over ``[-40, 60]`` in units of the score's span): a
    small graph that compiles fast inside the fixed-point loop."""
    on = log_p > -jnp.inf
    top = jnp.max(jnp.where(on, score, -jnp.inf))
    bot = jnp.min(jnp.where(on, score, jnp.inf))
    u = jnp.where(on, score - top, 0.0)  # <= 0
    span = jnp.where(top > bot, top - bot, 1.0)
    arg = on & (u == 0)
    dmax = -logsumexp(jnp.where(arg, log_p, -jnp.inf))

    def tilt(lam):
        lu = jnp.where(arg, 0.0, lam * u)
        z = jnp.where(on, log_p + lu, -jnp.inf)
        lz = logsumexp(z)
        kl = jnp.sum(jnp.where(on, jnp.exp(z - lz) * lu, 0.0)) - lz
        return kl, z - lz

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        below = tilt(jnp.exp(mid) / span)[0] < delta
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 64, body, (jnp.asarray(-40.0, u.dtype), jnp.asarray(60.0, u.dtype)))
    lam = jnp.where(delta >= dmax, jnp.inf, jnp.where(delta > 0, jnp.exp(0.5 * (lo + hi)) / span, 0.0))
    cond = jnp.where(arg, log_p + dmax, -jnp.inf)
    return lam, jnp.where(jnp.isinf(lam), cond, tilt(jnp.where(jnp.isinf(lam), 0.0, lam))[1])


def _solve_from(levels, log_ref, log_n, delta, worst: bool, score0):
    """Fixed-point iteration on the score from ``score0``: ``σ <- (1-η)σ + η g(q(σ))``,
    ``q(σ)`` the tilt by ``σ`` at budget Δ. A step is kept only if it does not
    lower ``W`` (else ``η`` is halved; kept steps grow ``η`` back towards 1).
    For worst-of-N (convex ``W``) the full step ``η = 1`` never lowers ``W``."""
    p = log_ref  # the budget solver works from log p

    def win(log_q):
        return _inference_win(levels, log_q, log_ref, log_n, worst)

    def step(state):
        it, score, log_q, w, eta, _ = state
        g = _gradient(levels, log_q, log_ref, log_n, worst)
        cand_score = jnp.where(p > -jnp.inf, (1.0 - eta) * score + eta * g, 0.0)
        _, cand = _tilt_to_budget(p, cand_score, delta)
        w_c = win(cand)
        keep = w_c >= w - 1e-15
        change = jnp.where(keep, jnp.sum(jnp.abs(jnp.exp(cand) - jnp.exp(log_q))), 1.0)
        return (
            it + 1,
            jnp.where(keep, cand_score, score),
            jnp.where(keep, cand, log_q),
            jnp.where(keep, w_c, w),
            jnp.where(keep, jnp.minimum(1.0, 1.25 * eta), 0.5 * eta),
            change,
        )

    def cont(state):
        it, _, _, _, eta, change = state
        return (it < _MAX_ITERS) & (change > _TOL) & (eta > 1e-8)

    score0 = jnp.where(p > -jnp.inf, score0, 0.0)
    _, log_q0 = _tilt_to_budget(p, score0, delta)
    one = jnp.asarray(1.0, log_ref.dtype)
    eta0 = one if worst else 0.5 * one
    state = (0, score0, log_q0, win(log_q0), eta0, one)
    _, _, log_q, w, _, _ = jax.lax.while_loop(cont, step, state)
    # β of the fixed point: the tilt by g(q) itself (kept if it is no worse).
    g = _gradient(levels, log_q, log_ref, log_n, worst)
    lam, log_g = _tilt_to_budget(p, jnp.where(p > -jnp.inf, g, 0.0), delta)
    w_g = win(log_g)
    better = w_g >= w
    return jnp.where(better, log_g, log_q), lam, jnp.where(better, w_g, w)


def _starts(levels, log_ref, log_n, worst: bool):
    """Initial scores: the CTRL transforms and the raw reward; for worst-of-N
    also one push towards each level (the boundary of the KL ball)."""
    c = _calibrated(levels, log_ref)
    k = 2.0 * jnp.exp(log_n) - 1.0
    if not worst:
        return c[None]  # concave: the fixed point is unique
    fams = [c, levels, -((1.0 - c) ** k)] + [-jnp.exp(-t * c) for t in _EXP_STARTS]
    return jnp.concatenate([jnp.stack(fams), jnp.eye(levels.shape[-1], dtype=levels.dtype)])


def _infalign_1d(levels, log_ref, log_n, delta, worst: bool):
    starts = _starts(levels, log_ref, log_n, worst)
    log_q, lam, win = jax.vmap(lambda s: _solve_from(levels, log_ref, log_n, delta, worst, s))(starts)
    best = jnp.argmax(win)
    # β with q ∝ P exp(g/β), g = N · (g/N): β = N / λ.
    beta = jnp.exp(log_n) / lam[best]
    log_q, win = log_q[best], win[best]
    # Δ >= -log P(top): the top level itself is feasible and optimal for both
    # decodings (there the gradient is flat and the iteration cannot see it).
    on = log_ref > -jnp.inf
    top = on & (levels == jnp.max(jnp.where(on, levels, -jnp.inf)))
    log_top = logsumexp(jnp.where(top, log_ref, -jnp.inf))
    at_top = delta >= -log_top
    log_q = jnp.where(at_top, jnp.where(top, log_ref - log_top, -jnp.inf), log_q)
    win = jnp.where(at_top, _inference_win(levels, log_q, log_ref, log_n, worst), win)
    return log_q, jnp.where(at_top, 0.0, beta), win


_vec_infalign = {
    w: jax.jit(
        jnp.vectorize(lambda lv, lr, ln, d, w=w: _infalign_1d(lv, lr, ln, d, w), signature="(l),(l),(),()->(l),(),()")
    )
    for w in (False, True)
}


def infalign_optimum(
    ref: RewardLaw, log_num_samples: jax.typing.ArrayLike, delta: jax.typing.ArrayLike, *, worst: bool = False
) -> InfAlignOptimum:
    r"""The level law maximising the inference-time win rate under a KL budget, exactly (THEORY.md §11).

    .. math:: q^* = \arg\max_q\ W_T(q) \quad \text{s.t.} \quad KL(q \| P) \le Δ,
              \qquad q^* ∝ P \exp(g(q^*) / β),\ g = ∂W_T/∂q,

    ``T`` best-of-N (``W_T`` concave: unique optimum, damped fixed point) or
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
    rows, scalars = _broadcast((levels, log_ref), (jnp.asarray(log_num_samples, dt), jnp.asarray(delta, dt)))
    log_q, beta, win = _vec_infalign[bool(worst)](*rows, *scalars)
    return InfAlignOptimum(_like(ref, log_q[..., :length]), beta, win)
