r"""Private building blocks of the tilted family and the ``λ*`` solver (THEORY.md §2–§3).

Batched, unvalidated kernels behind :mod:`asymalign.tilting` (and the other
modules that tilt): the shifted tilt ``(log p, λ (r - c), c, log Σ p e^{λ (r - c)})``
that is stable for any ``λ`` including ``±inf``, ``Λ``, ``log φ_λ``, the
moments ``(Λ', Λ'', K)``, ``Δ_max``, and ``λ*`` with ``K(λ*) = Δ`` on the
inverse-tilt solver core (:mod:`asymalign._solver`), differentiable by the
implicit function theorem. Conventions as in :mod:`asymalign.tilting`: last
axis = alphabet, leading axes broadcast (explicitly: :func:`_prep`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from . import _numerics as nx
from . import _solver as sv
from ._buckets import device_array
from ._jit import jit

# ---------------------------------------------------------------------------
# private, batched building blocks (no validation)
# ---------------------------------------------------------------------------


def _prep(p, r, lam):
    dt = nx.float_dtype(p, r, lam)
    p, r, lam = nx.broadcast_batch([device_array(p, dt), device_array(r, dt)], [device_array(lam, dt)])
    return p, r, lam


def _tilt_parts(p, r, lam):
    """Shifted pieces of the tilt, stable for any ``λ`` including ``±inf``.

    Returns ``(logp, lu, c, L)`` with ``c = r_max`` (``λ >= 0``) or ``r_min``
    (``λ < 0``), ``lu = λ (r - c) <= 0`` (``0`` where ``r = c``) and
    ``L = log Σ p e^{lu}``, so that ``Λ(λ) = λ c + L`` and
    ``log φ_λ = logp + lu - L``.
    """
    logp = nx.masked_log(p)
    rmin, rmax = nx.support_range(p, r)
    lam_b = lam[..., None]
    c = jnp.where(lam >= 0, rmax, rmin)
    u = r - c[..., None]
    # λ u with 0·(±inf) = 0 where r = c; the zero is put in the λ factor (not
    # in the product) so that ∂(λu)/∂r = λ survives there (tied extremes).
    lu = jnp.where((u == 0) & jnp.isinf(lam_b), 0.0, lam_b) * u
    # Off the support u may have the wrong sign: keep it harmless.
    lu = jnp.where(p > 0, lu, 0.0)
    L = logsumexp(logp + lu, axis=-1)
    return logp, lu, c, L


@jit
def _log_partition(p, r, lam):
    _, _, c, L = _tilt_parts(p, r, lam)
    # λ c with 0·(±inf) = 0, keeping ∂(λc)/∂c = λ at c = 0.
    lc = jnp.where((c == 0) & jnp.isinf(lam), 0.0, lam) * c
    return lc + L


@jit
def _log_tilt(p, r, lam):
    logp, lu, _, L = _tilt_parts(p, r, lam)
    return logp + lu - L[..., None]


@jit
def _tilt(p, r, lam):
    return jnp.exp(_log_tilt(p, r, lam))


@jit
def _moments(p, r, lam):
    """``(Λ'(λ), Λ''(λ), K(λ))`` computed from the shifted tilt."""
    logp, lu, c, L = _tilt_parts(p, r, lam)
    logphi = logp + lu - L[..., None]
    phi = jnp.exp(logphi)
    u = jnp.where(p > 0, r - c[..., None], 0.0)
    mu_u = jnp.sum(phi * u, axis=-1)
    mean = c + mu_u
    var = jnp.sum(phi * (u - mu_u[..., None]) ** 2, axis=-1)
    kl = jnp.sum(nx.xlogy_masked(phi, lu), axis=-1) - L
    return mean, var, jnp.maximum(kl, 0.0)


def _tilt_kl(p, r, lam):
    return _moments(p, r, lam)[2]


@jit
def _max_kl(p, r):
    _, rmax = nx.support_range(p, r)
    on_a = (r == rmax[..., None]) & (p > 0)
    return -jnp.log(jnp.sum(jnp.where(on_a, p, 0.0), axis=-1))


@jax.custom_jvp
def _solve_lambda(p, r, delta):
    sup = sv.support(p, r)
    delta = delta[None]  # per-instance values as rows (1, ...) of the alphabet-first layout
    u = jnp.where(sup.on, sup.rt - sup.rmax, 0.0)  # r - r_max <= 0 on the support, 0 off it
    span = sup.rmax - sup.rmin
    scale = jnp.where(span > 0, span, 1.0)
    top = sv.end_stats(sup.on, -u, sup.pt)  # A = argmax set, masses in p itself
    dmax = -jnp.log(top.p_end)  # as _max_kl
    # Δ >= Δ_max is answered below (λ* = inf): solve the trivial Δ = 0 there.
    d = jnp.where(delta < dmax, delta, 0.0)

    def step(lam):
        # K(λ) = λ Λ'(λ) - Λ(λ) from the weights e = (p/p_max) e^{λu} <= 1,
        # Λ(λ) - λ r_max = log Σ e + log p_max; K' = λ Λ'', K'' = Λ'' + λ Λ'''.
        e, _ = sv.shifted_weights(sup, lam)
        s = jnp.sum(e, axis=0, keepdims=True)
        mean_u = jnp.sum(e * u, axis=0, keepdims=True) / s
        var, k3 = sv.centred_moments(e, s, u - mean_u)
        g = jnp.maximum(lam * mean_u - jnp.log(s) - sup.log_pmax, 0.0) - d
        return (g, *sv.halley_step(lam, g, lam * var, var + lam * k3))

    # Bracket. Upper end: past λ = 1e3 / gap (gap = r_max minus the next
    # reward on the support) K(λ) equals Δ_max to the last bit, whatever p.
    # The gap can be many decades below the span, so 1/span is not enough.
    has_next = jnp.isfinite(top.nxt)
    gap = top.gap
    big = jnp.maximum(jnp.sinh(nx._SINH_V) / scale, jnp.where(has_next, 1e3 / gap, 0.0))
    # Past the first rise of K (where φ_λ has left all but the two highest
    # rewards) λ* is set by the top two: with y = λ gap, q = p₂/p(A) (p₂ the
    # mass at the second reward), w = q e^{-y} and c = Δ_max - Δ, the distance
    # to saturation Δ_max - K(λ) is at least that of the two-letter model,
    # D₂(y) = log(1 + w) + y w/(1 + w), and close to it there. Two Newton steps
    # on log D₂(y) = log c, from the root of the asymptote q (1+y) e^{-y} = c,
    # give y₂ (λ* >= y₂/gap when y₂ is exact). Upper end: for y >= 1,
    # Δ_max - K(λ) <= Q (1+y) e^{-y} with Q = p(Aᶜ)/p(A), so y* - log(1+y*) <=
    # log(Q/c); a fixed-point step of y = L + log(1+y) from above bounds y*
    # (with a factor 2 of margin for rounding). Both matter where λ* is far
    # beyond 1/span: Δ near Δ_max, close top rewards.
    solving = (dmax > d) & has_next
    log_c = jnp.log(jnp.where(solving, dmax - d, 1.0))
    q = top.p_next / top.p_end
    l2 = jnp.log(q) - log_c
    y2 = jnp.where(l2 > 0, l2 + jnp.log1p(l2 + jnp.log1p(jnp.maximum(l2, 0.0))), 1e-3)
    for _ in range(2):
        w = q * jnp.exp(-y2)
        a2 = w / (1 + w)
        d2 = jnp.log1p(w) + y2 * a2
        y2 = jnp.maximum(y2 + (jnp.log(d2) - log_c) * d2 / (y2 * a2 * (1 - a2)), 1e-3)
    l_hi = jnp.log(top.q_rest) - log_c
    y_hi = jnp.maximum(l_hi + jnp.log1p(jnp.maximum(2.0 * l_hi, 3.0)), 1.0)
    hi = jnp.where(solving, jnp.minimum(2.0 * y_hi / gap, big), big)
    lam2 = jnp.where(solving & jnp.isfinite(y2), y2 / gap, 0.0)

    # Start from the larger of the small-Δ expansion K(λ) ≈ λ² Λ''(0) / 2 and
    # the two-letter estimate, clipped to the bracket.
    mean0 = jnp.sum(sup.pt * u, axis=0, keepdims=True)
    var0 = jnp.sum(sup.pt * (u - mean0) ** 2, axis=0, keepdims=True)
    lam_s = jnp.sqrt(2.0 * d / jnp.where(var0 > 0, var0, 1.0))
    lam0 = jnp.clip(jnp.maximum(lam_s, lam2), 0.0, hi)
    tol = 16 * jnp.finfo(d.dtype).eps * jnp.maximum(1.0, d)
    lam = sv.safeguarded_newton(step, lam0, 1.0 / scale, tol, lo=0.0, hi=hi)
    lam = jnp.maximum(lam, 0.0)
    lam = jnp.where(delta >= dmax, jnp.inf, lam)
    return jnp.where(delta == 0, jnp.zeros_like(lam), lam)[0]


@_solve_lambda.defjvp
def _solve_lambda_jvp(primals, tangents):
    """Implicit function theorem on ``K(λ; p, r) = Δ``:
    ``dλ = (dΔ - ∂_p K dp - ∂_r K dr) / (λ Λ''(λ))``."""
    p, r, delta = primals
    dp, dr, dd = tangents
    lam = _solve_lambda(p, r, delta)
    finite = jnp.isfinite(lam) & (lam > 0)
    lam_s = jnp.where(finite, lam, 1.0)
    _, dK = jax.jvp(lambda p_, r_: _tilt_kl(p_, r_, lam_s), (p, r), (dp, dr))
    _, var, _ = _moments(p, r, lam_s)
    denom = lam_s * var
    dlam = (dd - dK) / jnp.where(denom > 0, denom, 1.0)
    return lam, jnp.where(finite & (denom > 0), dlam, 0.0)


@jit
def _solve_lambda_b(p, r, delta):
    """Broadcasting, jitted entry to :func:`_solve_lambda`."""
    batch = jnp.broadcast_shapes(p.shape[:-1], r.shape[:-1], delta.shape)
    p = jnp.broadcast_to(p, batch + p.shape[-1:])
    r = jnp.broadcast_to(r, batch + r.shape[-1:])
    delta = jnp.broadcast_to(delta, batch)
    return sv.map_blocks(_solve_lambda, (p, r, delta), (1, 1, 0))
