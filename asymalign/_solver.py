r"""The inverse-tilt solver core shared by ``λ*`` and the rate function's ``t_x``.

Both :func:`asymalign.solve_lambda` (``K(λ) = Δ``, THEORY.md §3) and
:func:`asymalign.rate_function` (``Λ'(μ) = x``, THEORY.md §5) invert a
monotone function of the tilt parameter of ``φ_μ ∝ p e^{μ r}``. They share
everything but the residual:

* the alphabet-first layout ``(k, ...)`` (:func:`support`): the sums over the
  alphabet in every step vectorise across instances; weights relative to the
  largest ``p`` shifted by the extreme reward in the direction of ``μ``
  (:func:`shifted_weights`), which never overflow;
* the two-letter analysis at an end of the support (:func:`end_stats`): the
  gap to the next reward and the masses that give both a start and a bracket
  once ``φ_μ`` has left all but the top rewards;
* Halley's step with a Newton fallback (:func:`halley_step`) inside a bracket
  with bisection in ``asinh`` scale (:func:`safeguarded_newton`);
* the blockwise map over a large batch on CPU (:func:`map_blocks`).

Per-instance values (``r_max``, the tilt, the residual, …) are rows of shape
``(1, ...)`` (reductions over the alphabet keep their axis), so every
operation broadcasts at equal rank (tests run with
``jax_numpy_rank_promotion="raise"``); callers pass their scalars as
``x[None]`` and take ``[0]`` of the result.

Private: everything here is pure, jittable and vmap-able; no validation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Support(NamedTuple):
    """Per-instance pieces of ``(p, r)`` in the alphabet-first layout ``(k, ...)``.

    ``pn = p / max p`` (so weights ``pn e^{μ (r - c)} <= 1``), ``rt`` the
    rewards, ``on = p > 0``, ``rmin``/``rmax`` over the support.
    """

    on: jax.Array
    rt: jax.Array
    pt: jax.Array
    pn: jax.Array
    rmin: jax.Array
    rmax: jax.Array
    log_pmax: jax.Array


def support(p, r) -> Support:
    """:class:`Support` of ``(p, r)`` given with the alphabet last."""
    pt, rt = jnp.moveaxis(p, -1, 0), jnp.moveaxis(r, -1, 0)
    on = pt > 0
    rmax = jnp.max(jnp.where(on, rt, -jnp.inf), axis=0, keepdims=True)
    rmin = jnp.min(jnp.where(on, rt, jnp.inf), axis=0, keepdims=True)
    pmax = jnp.max(pt, axis=0, keepdims=True)
    return Support(on, rt, pt, pt / pmax, rmin, rmax, jnp.log(pmax))


def shifted_weights(sup: Support, mu):
    """``(e, c)``: ``e = pn e^{μ (r - c)}`` (``0`` off the support), ``c = r_max``
    for ``μ >= 0`` else ``r_min``; ``Λ(μ) = μ c + log Σ e + log max p``."""
    c = jnp.where(mu >= 0, sup.rmax, sup.rmin)
    return sup.pn * jnp.exp(jnp.where(sup.on, mu * (sup.rt - c), 0.0)), c


class EndStats(NamedTuple):
    """The top two levels at one end of the support (distances ``dist >= 0`` from it).

    ``at``: letters at the end (``A``); ``p_end = w(A)``; ``nxt``: distance of
    the next reward (``inf`` for a constant reward); ``gap``: ``nxt`` or 1;
    ``p_next = w(next level)``; ``q_rest = w(Aᶜ)/w(A)`` (``w`` the weights given).
    """

    at: jax.Array
    p_end: jax.Array
    nxt: jax.Array
    gap: jax.Array
    p_next: jax.Array
    q_rest: jax.Array


def end_stats(on, dist, w) -> EndStats:
    """:class:`EndStats` for distances ``dist`` from an end and weights ``w`` (alphabet first)."""
    at = on & (dist == 0)
    p_end = jnp.sum(jnp.where(at, w, 0.0), axis=0, keepdims=True)
    nxt = jnp.min(jnp.where(on & ~at, dist, jnp.inf), axis=0, keepdims=True)
    gap = jnp.where(jnp.isfinite(nxt), nxt, 1.0)
    p_next = jnp.sum(jnp.where(on & (dist == nxt), w, 0.0), axis=0, keepdims=True)
    q_rest = jnp.sum(jnp.where(on & ~at, w, 0.0), axis=0, keepdims=True) / p_end
    return EndStats(at, p_end, nxt, gap, p_next, q_rest)


def centred_moments(e, s, cen):
    """``(Var, κ₃)`` of the weights ``e / s`` about the centre values ``cen`` (alphabet first)."""
    ec2 = e * cen * cen
    return jnp.sum(ec2, axis=0, keepdims=True) / s, jnp.sum(ec2 * cen, axis=0, keepdims=True) / s


def halley_step(x, g, dg, d2g):
    """Halley's step on ``g`` (Newton's where the Halley correction is large).

    Returns ``(x_next, predicted |g(x_next)|)`` as :func:`safeguarded_newton`
    wants them; the prediction ``|g''| δ²/2`` for the Newton step ``δ`` also
    bounds the Halley step's.
    """
    newton = g / dg
    h = g * d2g / (dg * dg)
    x_next = x - jnp.where(jnp.abs(h) < 1, newton / (1 - 0.5 * h), newton)
    return x_next, 0.5 * jnp.abs(d2g) * newton * newton


def safeguarded_newton(step, x0, scale, tol, lo, hi, max_iter: int = 100, return_iters=False):
    """Root of an increasing function: Newton-type steps inside a finite bracket.

    ``step(x) -> (g(x), x_next, g_next)`` elementwise for a batch of
    independent problems: the residual of a function increasing on
    ``[lo, hi]`` with ``g(lo) <= 0 <= g(hi)``; the next iterate the caller's
    local method proposes (a Newton or Halley step, in whatever variable suits
    the problem; non-finite when it has none); and a conservative estimate of
    ``|g(x_next)|`` from the local model (e.g. ``|g''| δ²/2`` for a Newton
    step ``δ``, which also bounds a Halley step's; ``inf`` when there is
    none). ``lo <= x0 <= hi``. The bracket is tightened with the sign of ``g``
    at every iterate. The proposal is taken when it is finite, lies strictly
    inside the bracket and the previous proposal at least halved ``|g|``;
    otherwise the bracket is bisected in ``asinh(x·scale)`` (so a bracket
    spanning decades is halved in log scale; computed only when some element
    needs it). This keeps the local method's fast convergence and breaks the
    two-point cycles plain Newton falls into on sigmoid-like functions.
    Stops, per element, when ``|g| <= tol``; when a taken proposal is
    predicted to have ``|g| <= tol/4`` while ``|g| <= √tol`` (it is returned
    without being evaluated: this saves the last, confirming evaluation); when
    a step is a few ulps; or when the bracket is a few ulps wide (``lax.while_loop``:
    jit/vmap friendly; not differentiated — callers attach derivatives by the
    implicit function theorem).
    """
    dt = jnp.result_type(x0)
    eps = jnp.finfo(dt).eps
    scale = jnp.broadcast_to(jnp.asarray(scale, dt), x0.shape)
    lo = jnp.broadcast_to(jnp.asarray(lo, dt), x0.shape)
    hi = jnp.broadcast_to(jnp.asarray(hi, dt), x0.shape)

    def bisect(lo, hi):
        mid = jnp.sinh(0.5 * (jnp.arcsinh(lo * scale) + jnp.arcsinh(hi * scale))) / scale
        return jnp.where((mid > lo) & (mid < hi), mid, 0.5 * (lo + hi))

    def cond(state):
        return (state[-1] < max_iter) & ~jnp.all(state[4])

    def body(state):
        x, lo, hi, g_prev, done, it = state
        g, x_next, g_next = step(x)
        lo_n = jnp.where(g < 0, x, lo)
        hi_n = jnp.where(g > 0, x, hi)
        tiny = (hi_n - lo_n) <= 8 * eps * jnp.maximum(jnp.abs(lo_n), jnp.abs(hi_n))
        conv = (jnp.abs(g) <= tol) | (g == 0) | tiny
        ok = jnp.isfinite(x_next) & (x_next > lo_n) & (x_next < hi_n) & (jnp.abs(g) <= 0.5 * g_prev)
        # A step of a few ulps means the residual is at rounding level. A step
        # predicted to land within tolerance is taken and is the last, once the
        # iteration is visibly converging (the previous step halved |g|, which
        # is now below √tol): the local model is trusted only there.
        trusted = (jnp.abs(g) <= jnp.sqrt(tol)) & (g_next <= 0.25 * tol)
        last = ok & ((jnp.abs(x_next - x) <= 4 * eps * jnp.abs(x)) | trusted)
        stop = done | conv
        # The transcendental bisection point is only computed when some element needs it.
        x_new = jax.lax.cond(jnp.any(~(ok | stop)), lambda: jnp.where(ok, x_next, bisect(lo_n, hi_n)), lambda: x_next)
        return (jnp.where(stop, x, x_new), lo_n, hi_n, jnp.where(ok, jnp.abs(g), jnp.inf), stop | last, it + 1)

    g0 = jnp.full(x0.shape, jnp.inf, dt)
    state = (x0, lo, hi, g0, jnp.zeros(x0.shape, bool), jnp.asarray(0))
    x, *_, iters = jax.lax.while_loop(cond, body, state)
    return (x, iters) if return_iters else x


CPU_BLOCK = 256


def map_blocks(fn, args, core_ndims, block: int = CPU_BLOCK):
    """``fn(*args)`` over a large batch, in blocks of ``block`` rows on CPU.

    ``args`` share the batch shape (leading axes); ``core_ndims[i]`` trailing
    axes of ``args[i]`` are per-problem data. For an iterative solver under
    ``vmap`` every lane pays for the slowest lane of its batch; on CPU,
    ``lax.map`` over blocks lets each block stop at its own slowest member
    (about 2-3x faster for ``solve_lambda``/``rate_function`` at 1e5
    problems). Small blocks also keep a block's arrays in cache: 256 rows
    measured ~1.5-2x faster per step than 1024 for those two solvers (k = 8).
    Problems are independent, so results equal one big call up to
    rounding (XLA may vectorise a reduction differently for another batch
    size: measured <= 8e-11 relative in ``λ*`` where it is ill-conditioned,
    identical ``K(λ*)`` residuals). On
    accelerators (which want one wide batch) and for small batches this is
    just ``fn(*args)``.
    """
    a0 = args[0]
    batch = a0.shape[: a0.ndim - core_ndims[0]]
    size = math.prod(batch)
    if jax.default_backend() != "cpu" or size <= 2 * block:
        return fn(*args)
    nb = -(-size // block)
    pad = nb * block - size

    def to_blocks(a, c):
        core = a.shape[a.ndim - c :]
        flat = a.reshape((size,) + core)
        flat = jnp.concatenate([flat, jnp.broadcast_to(flat[:1], (pad,) + core)])
        return flat.reshape((nb, block) + core)

    out = jax.lax.map(lambda xs: fn(*xs), [to_blocks(a, c) for a, c in zip(args, core_ndims, strict=True)])
    return jax.tree.map(lambda o: o.reshape((nb * block,) + o.shape[2:])[:size].reshape(batch + o.shape[2:]), out)
