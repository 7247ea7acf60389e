"""Private numerical building blocks shared by the public modules.

Everything here is pure, jittable and vmap-able. Log-space conventions:
``log 0 = -inf``; gradients are kept finite with the double-``where`` trick.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ._buckets import device_array
from ._validate import is_concrete

# Bisection iterations in the sinh-stretched variable: the bracket [-V, V]
# with V = 40 shrinks below one ulp of v after ~60 halvings in float64.
_BISECT_ITERS = 90
_SINH_V = 40.0


def float_dtype(*xs):
    """Common floating dtype of ``xs`` (weak Python scalars do not upcast)."""
    xs = [np.asarray(x) if isinstance(x, list | tuple) else x for x in xs]
    return jnp.result_type(*xs, 0.0)


def masked_log(p):
    """``log p`` with ``log 0 = -inf``; gradient-safe at zeros."""
    pos = p > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, p, 1.0)), -jnp.inf)


def xlogy_masked(x, logy):
    """``x * logy`` with the convention ``0 * anything = 0`` (gradient-safe)."""
    pos = x > 0
    return jnp.where(pos, x * jnp.where(pos, logy, 0.0), 0.0)


def log1mexp(x):
    """``log(1 - exp(x))`` for ``x <= 0``, accurate everywhere (Mächler 2012).

    ``log1mexp(0) = -inf``, ``log1mexp(-inf) = 0``.
    """
    x = jnp.minimum(x, 0.0)
    small = x > -0.6931471805599453
    # Double where keeps gradients finite in the unselected branch.
    xs = jnp.where(small, x, -1.0)
    xl = jnp.where(small, -1.0, x)
    return jnp.where(small, jnp.log(-jnp.expm1(xs)), jnp.log1p(-jnp.exp(xl)))


def logsumexp0(x, axis):
    """``logsumexp`` along ``axis`` that is ``-inf`` with a zero (not NaN) gradient and
    tangent when every term is ``-inf``."""
    empty = jnp.all(x == -jnp.inf, axis=axis, keepdims=True)
    out = logsumexp(jnp.where(empty, 0.0, x), axis=axis, keepdims=True)
    return jnp.squeeze(jnp.where(empty, -jnp.inf, out), axis=axis)


def support_range(p, r):
    """``(r_min, r_max)`` of ``r`` over the support ``{p > 0}`` (last axis)."""
    pos = p > 0
    rmax = jnp.max(jnp.where(pos, r, -jnp.inf), axis=-1)
    rmin = jnp.min(jnp.where(pos, r, jnp.inf), axis=-1)
    return rmin, rmax


def bisect_increasing(g, lo, hi, iters: int = _BISECT_ITERS):
    """Root of a scalar increasing function ``g`` on ``[lo, hi]`` by bisection.

    Assumes ``g(lo) <= 0 <= g(hi)`` (if not, converges to the nearer end).
    Fixed iteration count: jit/vmap friendly and deterministic.
    """

    def body(_, bracket):
        a, b = bracket
        m = 0.5 * (a + b)
        gm = g(m)
        a = jnp.where(gm <= 0, m, a)
        b = jnp.where(gm <= 0, b, m)
        return a, b

    a, b = jax.lax.fori_loop(0, iters, body, (lo, hi))
    return 0.5 * (a + b)


def sinh_bisect(g, scale, v_lo, v_hi, iters: int = _BISECT_ITERS):
    """Root in ``x = sinh(v) / scale`` of an increasing ``g(x)``, bisecting ``v``.

    The sinh stretch gives relative precision over many decades of ``|x|``
    with a fixed number of iterations.
    """
    v = bisect_increasing(lambda v: g(jnp.sinh(v) / scale), v_lo, v_hi, iters)
    return jnp.sinh(v) / scale


def broadcast_batch(vectors, scalars=()):
    """Broadcast explicitly (no implicit rank promotion) to one batch shape.

    ``vectors`` have the alphabet as their last axis, ``scalars`` are per
    instance; the batch shape is the broadcast of ``v.shape[:-1]`` and
    ``s.shape``. Returns ``[v broadcast to batch + (k,)] + [s broadcast to
    batch]`` (views, no copies under jit).
    """
    batch = jnp.broadcast_shapes(*(v.shape[:-1] for v in vectors), *(s.shape for s in scalars))
    shapes = [batch + v.shape[-1:] for v in vectors] + [batch for _ in scalars]
    arrays = list(vectors) + list(scalars)
    if is_concrete(*arrays):  # on the host: an eager broadcast would compile once per shape
        pairs = zip(arrays, shapes, strict=True)
        return [a if a.shape == s else device_array(np.broadcast_to(np.asarray(a), s)) for a, s in pairs]
    return [jnp.broadcast_to(a, s) for a, s in zip(arrays, shapes, strict=True)]
