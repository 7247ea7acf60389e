r"""The tilted family and KL-constrained RL (THEORY.md §2–§3).

For a reference ``p`` over ``{0, …, k-1}`` and a per-token reward ``r``:

.. math::

    Λ(λ) = \log \sum_x p(x) e^{λ r(x)}, \qquad
    φ_λ(x) = p(x) e^{λ r(x) - Λ(λ)}, \qquad
    K(λ) = \mathrm{KL}(φ_λ \| p) = λ Λ'(λ) - Λ(λ).

The optimal policy of ``max E_q r s.t. KL(q||p) <= Δ`` is ``φ_{λ*}`` with
``K(λ*) = Δ`` for ``0 <= Δ < Δ_max = -log p(A)``, and ``p`` conditioned on the
argmax set ``A`` (``λ* = +inf``) for ``Δ >= Δ_max``.

Conventions shared by every function here: the last axis is the alphabet;
``lam``/``delta`` broadcast against the leading (batch) axes of ``p`` and
``r``; zeros in ``p`` are allowed (those letters get probability 0 and never
produce NaN); all functions are pure, jittable and vmap-able. Concrete inputs
are validated (``ValueError`` naming the argument); traced inputs are not, and
valid traced inputs give NaN-free results.

Reference: Yang, Salamatian, Sun, Suresh and Beirami, "Asymptotics of Language
Model Alignment" (ISIT 2024, arXiv 2404.01730).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from . import _numerics as nx
from . import _solver as sv
from ._buckets import call_bucketed, device_array
from ._validate import check_model, check_nonneg, check_real, is_concrete

__all__ = [
    "KLRLResult",
    "log_partition",
    "tilt",
    "log_tilt",
    "tilt_kl",
    "tilt_reward",
    "tilt_variance",
    "max_kl",
    "solve_lambda",
    "kl_rl",
    "kl_regularized",
]


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


@jax.jit
def _log_partition(p, r, lam):
    _, _, c, L = _tilt_parts(p, r, lam)
    # λ c with 0·(±inf) = 0, keeping ∂(λc)/∂c = λ at c = 0.
    lc = jnp.where((c == 0) & jnp.isinf(lam), 0.0, lam) * c
    return lc + L


@jax.jit
def _log_tilt(p, r, lam):
    logp, lu, _, L = _tilt_parts(p, r, lam)
    return logp + lu - L[..., None]


@jax.jit
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


@jax.jit
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


@jax.jit
def _solve_lambda_b(p, r, delta):
    """Broadcasting, jitted entry to :func:`_solve_lambda`."""
    batch = jnp.broadcast_shapes(p.shape[:-1], r.shape[:-1], delta.shape)
    p = jnp.broadcast_to(p, batch + p.shape[-1:])
    r = jnp.broadcast_to(r, batch + r.shape[-1:])
    delta = jnp.broadcast_to(delta, batch)
    return sv.map_blocks(_solve_lambda, (p, r, delta), (1, 1, 0))


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def log_partition(p: ArrayLike, r: ArrayLike, lam: ArrayLike) -> jax.Array:
    r"""Log-partition function (cumulant generating function of ``r`` under ``p``).

    .. math:: Λ(λ) = \log \sum_x p(x) e^{λ r(x)}

    THEORY.md §2; Yang et al. (ISIT 2024), the tilted family. Computed as
    ``λ c + log Σ p e^{λ (r - c)}`` with ``c`` the extreme reward on the support
    in the direction of ``λ``, so it is finite and exact for ``|λ|`` up to
    ``1e300/|r|``. Differentiable in ``λ``, ``r`` and ``p``; ``jax.grad`` gives
    ``Λ'(λ) = E_{φ_λ} r`` and higher derivatives the cumulants.

    Args:
      p: reference probabilities, shape ``(..., k)`` (zeros allowed).
      r: per-token rewards, shape ``(..., k)``.
      lam: tilt parameter (``±inf`` allowed), broadcasting against the batch.

    Returns:
      ``Λ(λ)`` with the broadcast batch shape.

    >>> import asymalign as aa
    >>> float(aa.log_partition([0.5, 0.5], [0.0, 1.0], 0.0))
    0.0
    """
    check_model(p, r)
    check_real(lam, "lam", allow_inf=True)
    return _log_partition(*_prep(p, r, lam))


def log_tilt(p: ArrayLike, r: ArrayLike, lam: ArrayLike) -> jax.Array:
    r"""Log-probabilities of the exponential tilt (THEORY.md §2).

    .. math:: \log φ_λ(x) = \log p(x) + λ r(x) - Λ(λ)

    ``λ = +inf`` gives ``p`` conditioned on ``A = argmax_S r``, ``λ = -inf`` on
    the argmin set; zeros of ``p`` give ``-inf``. Yang et al. (ISIT 2024).

    Args:
      p: reference probabilities, shape ``(..., k)``.
      r: per-token rewards, shape ``(..., k)``.
      lam: tilt parameter, broadcasting against the batch.

    Returns:
      ``log φ_λ``, shape ``batch + (k,)``.

    >>> import asymalign as aa
    >>> aa.log_tilt([0.5, 0.5, 0.0], [0.0, 1.0, 2.0], float("inf")).tolist()
    [-inf, 0.0, -inf]
    """
    check_model(p, r)
    check_real(lam, "lam", allow_inf=True)
    return _log_tilt(*_prep(p, r, lam))


def tilt(p: ArrayLike, r: ArrayLike, lam: ArrayLike) -> jax.Array:
    r"""Exponential tilt of ``p`` by ``λ r`` (THEORY.md §2).

    .. math:: φ_λ(x) = p(x) \exp(λ r(x) - Λ(λ)), \qquad φ_0 = p.

    ``λ = ±inf`` gives ``p`` conditioned on the argmax/argmin set of ``r``
    over the support. The KL-regularised problem ``max_q E_q r - β KL(q||p)``
    is solved by ``tilt(p, r, 1/β)`` (§3; Yang et al., ISIT 2024).

    Args:
      p: reference probabilities, shape ``(..., k)``.
      r: per-token rewards, shape ``(..., k)``.
      lam: tilt parameter, broadcasting against the batch.

    Returns:
      ``φ_λ``, shape ``batch + (k,)``.

    >>> import asymalign as aa
    >>> aa.tilt([0.5, 0.5], [0.0, 1.0], 1e4).round(6).tolist()
    [0.0, 1.0]
    """
    return jnp.exp(log_tilt(p, r, lam))


def tilt_kl(p: ArrayLike, r: ArrayLike, lam: ArrayLike) -> jax.Array:
    r"""KL divergence of the tilt from the reference (THEORY.md §2).

    .. math:: K(λ) = \mathrm{KL}(φ_λ \| p) = λ Λ'(λ) - Λ(λ)

    Increasing on ``λ >= 0`` from ``K(0) = 0`` to ``Δ_max = -log p(A)``
    (reached at ``λ = +inf``); ``K'(λ) = λ Λ''(λ)``. Computed as
    ``Σ φ_λ (λ (r - r_max)) - log Σ p e^{λ (r - r_max)}``, which keeps full
    absolute precision up to ``Δ_max`` for huge ``λ``. Yang et al. (ISIT 2024).

    Args:
      p: reference probabilities, shape ``(..., k)``.
      r: per-token rewards, shape ``(..., k)``.
      lam: tilt parameter, broadcasting against the batch.

    Returns:
      ``K(λ) >= 0`` with the broadcast batch shape.

    >>> import asymalign as aa
    >>> round(float(aa.tilt_kl([0.5, 0.5], [0.0, 1.0], float("inf"))), 12)  # = log 2
    0.69314718056
    """
    check_model(p, r)
    check_real(lam, "lam", allow_inf=True)
    return _tilt_kl(*_prep(p, r, lam))


def tilt_reward(p: ArrayLike, r: ArrayLike, lam: ArrayLike) -> jax.Array:
    r"""Expected reward of the tilt (THEORY.md §2).

    .. math:: Λ'(λ) = E_{φ_λ} r

    Increasing in ``λ``, from ``r_min`` (``λ = -inf``) to ``r_max``
    (``λ = +inf``). Yang et al. (ISIT 2024).

    Args:
      p: reference probabilities, shape ``(..., k)``.
      r: per-token rewards, shape ``(..., k)``.
      lam: tilt parameter, broadcasting against the batch.

    Returns:
      ``Λ'(λ)`` with the broadcast batch shape.

    >>> import asymalign as aa
    >>> float(aa.tilt_reward([0.5, 0.5], [0.0, 1.0], 0.0))
    0.5
    """
    check_model(p, r)
    check_real(lam, "lam", allow_inf=True)
    return _moments(*_prep(p, r, lam))[0]


def tilt_variance(p: ArrayLike, r: ArrayLike, lam: ArrayLike) -> jax.Array:
    r"""Variance of the reward under the tilt (THEORY.md §2).

    .. math:: Λ''(λ) = \mathrm{Var}_{φ_λ} r

    Yang et al. (ISIT 2024); ``K'(λ) = λ Λ''(λ)``.

    Args:
      p: reference probabilities, shape ``(..., k)``.
      r: per-token rewards, shape ``(..., k)``.
      lam: tilt parameter, broadcasting against the batch.

    Returns:
      ``Λ''(λ) >= 0`` with the broadcast batch shape.

    >>> import asymalign as aa
    >>> float(aa.tilt_variance([0.5, 0.5], [0.0, 1.0], 0.0))
    0.25
    """
    check_model(p, r)
    check_real(lam, "lam", allow_inf=True)
    return _moments(*_prep(p, r, lam))[1]


def max_kl(p: ArrayLike, r: ArrayLike) -> jax.Array:
    r"""The largest useful KL budget (THEORY.md §1–§2).

    .. math:: Δ_{\max} = -\log p(A), \qquad A = \arg\max_{x: p(x)>0} r(x)

    ``K(λ) -> Δ_max`` as ``λ -> inf``; a budget beyond it buys nothing. It is
    ``0`` for a constant reward. Yang et al. (ISIT 2024).

    Args:
      p: reference probabilities, shape ``(..., k)``.
      r: per-token rewards, shape ``(..., k)``.

    Returns:
      ``Δ_max`` with the batch shape.

    >>> import asymalign as aa
    >>> round(float(aa.max_kl([0.7, 0.2, 0.1], [0.0, 1.0, 2.0])), 12)  # = log 10
    2.302585092994
    """
    check_model(p, r)
    p, r, _ = _prep(p, r, 0.0)
    return _max_kl(p, r)


def solve_lambda(p: ArrayLike, r: ArrayLike, delta: ArrayLike) -> jax.Array:
    r"""The KL-budget multiplier ``λ*`` of KL-constrained RL (THEORY.md §3).

    .. math:: K(λ^*) = \mathrm{KL}(φ_{λ^*} \| p) = Δ

    Returns ``0`` for ``Δ = 0``, ``+inf`` for ``Δ >= Δ_max = -log p(A)``
    (including any ``Δ`` for a constant reward), otherwise the unique root of
    ``K(λ) = Δ`` on ``λ > 0`` (Yang et al., ISIT 2024: the optimal aligned
    model is ``φ_{λ*}``). The root is found by Halley's method
    (``K'(λ) = λ Λ''(λ)``, ``K''(λ) = Λ''(λ) + λ Λ'''(λ)``) from the larger of
    the small-Δ guess ``√(2Δ/Λ''(0))`` and the root of the model with only the
    two highest rewards (which sets ``λ*`` once ``φ_λ`` has left the others),
    kept inside a bracket ``[0, hi]`` (``hi`` from an upper bound on the
    distance to saturation ``Δ_max - K(λ)``, at most
    ``max(sinh(40)/(r_max-r_min), 1e3/gap)``) that falls back to bisection in
    ``asinh`` scale whenever a step leaves it or fails to halve the residual
    (``lax.while_loop``; typically 2–8 steps; the solver core is shared with
    :func:`asymalign.rate_function`). In float64
    ``|K(λ*) - Δ| <= 1e-10 max(1, Δ)`` (measured ≤ 6e-14 over 1e5 random
    models), also for ``Δ`` within ``1e-6`` of ``Δ_max`` and rewards spread
    over many decades.

    Differentiable in ``p``, ``r`` and ``delta`` by the implicit function
    theorem, ``dλ*/dΔ = 1 / (λ* Λ''(λ*))`` (the derivative is reported as 0
    where ``λ*`` is ``0`` or ``inf``, where it does not exist).

    Args:
      p: reference probabilities, shape ``(..., k)``.
      r: per-token rewards, shape ``(..., k)``.
      delta: KL budget ``Δ >= 0``, broadcasting against the batch.

    Returns:
      ``λ* >= 0`` (``inf`` when saturated) with the broadcast batch shape.

    >>> import asymalign as aa
    >>> p, r = [0.7, 0.2, 0.1], [0.0, 1.0, 2.0]
    >>> lam = aa.solve_lambda(p, r, 0.1)
    >>> round(float(aa.tilt_kl(p, r, lam)), 12)
    0.1
    """
    check_model(p, r)
    check_nonneg(delta, "delta")
    return call_bucketed(_solve_lambda_b, _prep(p, r, delta), (1, 1, 0))


class KLRLResult(NamedTuple):
    """Solution of ``max_q E_q r  s.t.  KL(q || p) <= Δ`` (THEORY.md §3).

    Attributes:
      policy: the optimal policy ``φ_{λ*}`` (``p`` conditioned on the argmax
        set when ``Δ >= Δ_max``), shape ``(..., k)``.
      lam: the multiplier ``λ*`` (``+inf`` when ``Δ >= Δ_max``).
      reward: ``E_policy r = Λ'(λ*)`` (``r_max`` when ``Δ >= Δ_max``).
      kl: ``KL(policy || p) = min(Δ, Δ_max)``.
    """

    policy: jax.Array
    lam: jax.Array
    reward: jax.Array
    kl: jax.Array


def kl_rl(p: ArrayLike, r: ArrayLike, delta: ArrayLike) -> KLRLResult:
    r"""Exact KL-constrained RL solution (THEORY.md §3).

    .. math:: \max_q E_q r \ \text{ s.t. } \ \mathrm{KL}(q\|p) \le Δ
              \ \Rightarrow\ q^* = φ_{λ^*},\ K(λ^*) = Δ .

    The optimal value also equals the dual ``min_{λ>0} (Δ + Λ(λ)) / λ``. For a
    sequence model ``p^n`` with budget ``nΔ`` and additive reward the solution
    is ``φ_{λ*}^{⊗n}`` with the same ``λ*`` and reward ``n Λ'(λ*)`` (Yang et
    al., ISIT 2024).

    Args:
      p: reference probabilities, shape ``(..., k)``.
      r: per-token rewards, shape ``(..., k)``.
      delta: KL budget ``Δ >= 0``, broadcasting against the batch.

    Returns:
      A :class:`KLRLResult` (policy, ``λ*``, reward, KL).

    >>> import asymalign as aa
    >>> res = aa.kl_rl([0.7, 0.2, 0.1], [0.0, 1.0, 2.0], 10.0)  # >= Δ_max
    >>> res.policy.tolist(), float(res.reward)
    ([0.0, 0.0, 1.0], 2.0)
    """
    lam = solve_lambda(p, r, delta)
    p, r, lam = _prep(p, r, lam)
    policy = jnp.exp(_log_tilt(p, r, lam))
    mean, _, kl = _moments(p, r, lam)
    return KLRLResult(policy=policy, lam=lam, reward=mean, kl=kl)


def kl_regularized(p: ArrayLike, r: ArrayLike, beta: ArrayLike) -> jax.Array:
    r"""Solution of the KL-regularised problem (THEORY.md §3).

    .. math:: \arg\max_q\ E_q r - β\,\mathrm{KL}(q \| p) = φ_{1/β}

    ``beta`` must be ``> 0``; ``beta = inf`` returns ``p``. Yang et al.
    (ISIT 2024).

    Args:
      p: reference probabilities, shape ``(..., k)``.
      r: per-token rewards, shape ``(..., k)``.
      beta: regularisation strength ``β > 0``, broadcasting against the batch.

    Returns:
      The optimal policy ``φ_{1/β}``, shape ``batch + (k,)``.

    >>> import asymalign as aa
    >>> aa.kl_regularized([0.5, 0.5], [0.0, 1.0], float("inf")).tolist()
    [0.5, 0.5]
    """
    check_nonneg(beta, "beta")
    if jnp.ndim(beta) == 0 and is_concrete(beta) and float(beta) == 0:
        raise ValueError("beta must be > 0 (beta = 0 is the unconstrained argmax; use lam=inf)")
    return tilt(p, r, 1.0 / jnp.asarray(beta, nx.float_dtype(p, r, beta)))
