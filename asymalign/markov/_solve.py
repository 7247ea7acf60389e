"""A bracketed Newton solver for increasing scalar functions (private, jittable, vmap-able)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def derivs2(f, x):
    """``(f(x), f'(x), f''(x))`` of a scalar function by nested forward-mode autodiff."""

    def d1(y):
        return jax.jvp(f, (y,), (jnp.ones_like(y),))

    (v, d), (_, dd) = jax.jvp(d1, (x,), (jnp.ones_like(x),))
    return v, d, dd


def far_tilt(r, dtype):
    """A tilt so large that ``e^{-λ·gap}`` is at the bottom of the dtype's range
    (``gap`` the smallest gap between distinct rewards): every rate has reached
    its ``λ → ∞`` limit there to rounding."""
    rs = jnp.sort(r)
    d = jnp.diff(rs)
    span = rs[-1] - rs[0]
    pos = d > 1e-9 * jnp.maximum(span, 1.0)
    gap = jnp.min(jnp.where(pos, d, jnp.inf)) if r.shape[0] > 1 else jnp.asarray(jnp.inf, dtype)
    gap = jnp.where(jnp.isfinite(gap), gap, 1.0)
    return 0.9 * -jnp.log(jnp.finfo(dtype).tiny) / gap


def solve_increasing(gd, lo, hi, x0, max_iter: int = 200):
    """Root of an increasing ``g`` on ``[lo, hi]`` (``g(lo) <= 0 <= g(hi)``).

    ``gd(x) -> (g, g')``. Newton steps inside the bracket; a step leaving it,
    or one that did not halve ``|g|``, is replaced by bisection (in
    ``asinh`` scale when the bracket spans decades). Stops when a step or the
    bracket is a few ulps.
    """
    eps = jnp.finfo(jnp.result_type(lo)).eps
    scale = 1.0 / jnp.maximum(jnp.maximum(jnp.abs(lo), jnp.abs(hi)) * 1e-12, 1e-300)

    def bisect(lo, hi):
        a, b = jnp.arcsinh(lo * scale), jnp.arcsinh(hi * scale)
        mid_s = jnp.sinh(0.5 * (a + b)) / scale
        mid_l = 0.5 * (lo + hi)
        # log-scale halving only while the bracket spans more than a factor 4
        return jnp.where(jnp.abs(hi - lo) > 2.0 * jnp.minimum(jnp.abs(lo), jnp.abs(hi)) + 1e-300, mid_s, mid_l)

    def cond(s):
        x, lo, hi, gprev, it, done = s
        return (~done) & (it < max_iter)

    def body(s):
        x, lo, hi, gprev, it, _ = s
        g, dg = gd(x)
        lo = jnp.where(g <= 0, x, lo)
        hi = jnp.where(g >= 0, x, hi)
        newton = x - g / dg
        ok = jnp.isfinite(newton) & (newton > lo) & (newton < hi) & (jnp.abs(g) <= 0.5 * gprev)
        nxt = jnp.where(ok, newton, bisect(lo, hi))
        tiny = 4 * eps * jnp.maximum(jnp.abs(x), jnp.abs(nxt))
        done = (
            (g == 0)
            | (ok & (jnp.abs(newton - x) <= tiny))
            | (hi - lo <= 4 * eps * jnp.maximum(jnp.abs(lo), jnp.abs(hi)))
        )
        nxt = jnp.where(g == 0, x, nxt)
        return nxt, lo, hi, jnp.abs(g), it + 1, done

    x0 = jnp.clip(x0, lo, hi)
    init = (x0, lo, hi, jnp.asarray(jnp.inf, x0.dtype), 0, jnp.asarray(False))
    return jax.lax.while_loop(cond, body, init)[0]
