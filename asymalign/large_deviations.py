r"""Large deviations of the reward under the tilted product model (THEORY.md §5).

Under ``φ_λ^n`` the per-token reward ``R_n = r_n / n`` has, exactly for every
``n``, the scaled cumulant generating function

.. math:: ψ_λ(t) = \frac1n \log E e^{t r_n} = Λ(λ + t) - Λ(λ),

scaled cumulants ``κ_j(r_n)/n = Λ^{(j)}(λ)`` and the Cramér rate function

.. math:: I_λ(x) = \sup_t [t x - ψ_λ(t)] = \mathrm{KL}(φ_{λ+t_x} \| φ_λ),
          \quad Λ'(λ + t_x) = x .

The growth rate of the cumulants is a Rényi cross-entropy between the aligned
model and the reward's own distribution ``q_r = e^r / C``:
``ψ_λ(t) = t log C - t H_{1+t}(φ_λ; q_r)``, and equivalently
``ψ_λ(t) = (α - 1)[Λ(λ) + D_α(φ_λ || p)]`` with ``α = 1 + t/λ``.

Reference: Yang, Salamatian, Sun, Suresh and Beirami, "Asymptotics of Language
Model Alignment" (ISIT 2024, arXiv 2404.01730).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from . import _numerics as nx
from . import _solver as sv
from ._buckets import call_bucketed, device_array
from ._jit import jit
from ._tilt_core import _log_partition, _log_tilt, _moments, _prep
from ._validate import check_model, check_positive_int, check_real, is_concrete
from .information import _renyi_cross_entropy, _renyi_divergence

__all__ = [
    "scaled_cgf",
    "scaled_cumulants",
    "rate_function",
    "reward_softmax",
    "cgf_via_renyi_cross_entropy",
    "cgf_via_renyi_divergence",
]


def _broadcast(p, r, *scalars):
    return nx.broadcast_batch([p, r], scalars)


def scaled_cgf(p: ArrayLike, r: ArrayLike, t: ArrayLike, lam: ArrayLike = 0.0) -> jax.Array:
    r"""Scaled cumulant generating function of the reward under ``φ_λ^n`` (THEORY.md §5).

    .. math:: ψ_λ(t) = \frac1n \log E_{φ_λ^n} e^{t r_n} = Λ(λ+t) - Λ(λ)

    Exact for every ``n`` (the model is memoryless). Convex in ``t``,
    ``ψ_λ(0) = 0``, ``ψ_λ'(0) = Λ'(λ)``. Yang et al. (ISIT 2024), large
    deviations of the aligned model's reward.

    Args:
      p: reference probabilities, shape ``(..., k)``.
      r: per-token rewards, shape ``(..., k)``.
      t: the CGF's argument (real), broadcasting against the batch.
      lam: the tilt ``λ`` of the model ``φ_λ`` (``0``: the reference).

    Returns:
      ``ψ_λ(t)`` with the broadcast batch shape.

    >>> import asymalign as aa
    >>> float(aa.scaled_cgf([0.5, 0.5], [0.0, 1.0], 0.0))
    0.0
    """
    check_model(p, r)
    check_real(t, "t")
    check_real(lam, "lam")
    p, r, t = _prep(p, r, t)
    return _scaled_cgf(p, r, t, device_array(lam, t.dtype))


@jit
def _scaled_cgf(p, r, t, lam):
    shifted = lam + t
    # λ broadcast to the batch explicitly (rank promotion is an error in the tests)
    d = _log_partition(p, r, shifted) - _log_partition(p, r, jnp.broadcast_to(lam, shifted.shape))
    # ψ_λ(0) = 0 exactly, whatever the compiler made of the two sums (compiled for compile
    # speed, they differed by 2.8e-17); the derivatives at t = 0 are those of d.
    return d - jax.lax.stop_gradient(jnp.where(jnp.broadcast_to(t == 0, d.shape), d, 0.0))


def scaled_cumulants(p: ArrayLike, r: ArrayLike, order: int, lam: ArrayLike = 0.0) -> jax.Array:
    r"""The first ``order`` scaled cumulants of the reward under ``φ_λ^n`` (THEORY.md §2, §5).

    .. math:: κ_j(r_n)/n = Λ^{(j)}(λ), \qquad j = 1, …, \text{order}

    The derivatives of the log-partition function are the cumulants of ``r``
    under ``φ_λ`` (mean, variance, third cumulant, …), computed by nested
    automatic differentiation of ``Λ``. Yang et al. (ISIT 2024).

    Args:
      p: reference probabilities, shape ``(..., k)``.
      r: per-token rewards, shape ``(..., k)``.
      order: number of cumulants (static, ``>= 1``).
      lam: the tilt ``λ`` (``0``: the reference).

    Returns:
      Cumulants ``κ_1..κ_order`` (per token), shape ``batch + (order,)``.

    >>> import asymalign as aa
    >>> aa.scaled_cumulants([0.5, 0.5], [0.0, 1.0], 2).tolist()
    [0.5, 0.25]
    """
    check_model(p, r)
    order = check_positive_int(order, "order")
    check_real(lam, "lam")
    p, r, lam = _prep(p, r, lam)
    return _scaled_cumulants(p, r, lam, order)


@functools.partial(jit, static_argnums=3)
def _scaled_cumulants(p, r, lam, order):
    p, r, lam = _broadcast(p, r, lam)

    def f(l):
        return _log_partition(p, r, l)

    derivs = []
    g = f
    for _ in range(order):
        g = jax.grad(lambda l, g=g: jnp.sum(g(l)))
        derivs.append(g(lam))
    return jnp.stack(derivs, axis=-1)


@jax.custom_jvp
def _tilt_with_mean(p, r, x, mu0):
    """``μ`` with ``Λ'(μ) = x`` for ``r_min < x < r_max`` (started at ``mu0``).

    Solved in logit coordinates, ``G(μ) = log(Λ'(μ) - r_min) - log(r_max -
    Λ'(μ)) - log((x - r_min)/(r_max - x))``: both distances are sums of
    nonnegative terms (no cancellation) and ``G`` is close to linear in ``μ``
    at both ends. Halley steps (``Λ''``, ``Λ'''`` come with ``Λ'``) inside the
    bracket ``±sinh(40)/span``, by the solver core shared with ``λ*``
    (:mod:`asymalign._solver`).
    """
    sup = sv.support(p, r)
    x, mu0 = x[None], mu0[None]  # per-instance values as rows (1, ...) of the alphabet-first layout
    span = sup.rmax - sup.rmin
    scale = jnp.where(span > 0, span, 1.0)
    up = jnp.where(sup.on, sup.rt - sup.rmin, 0.0)
    dn = jnp.where(sup.on, sup.rmax - sup.rt, 0.0)
    target = jnp.log(x - sup.rmin) - jnp.log(sup.rmax - x)

    def step(mu):
        e, _ = sv.shifted_weights(sup, mu)
        s = jnp.sum(e, axis=0, keepdims=True)
        a = jnp.sum(e * up, axis=0, keepdims=True)  # s (Λ'(μ) - r_min)
        b = jnp.sum(e * dn, axis=0, keepdims=True)  # s (r_max - Λ'(μ))
        # Centred at the mean measured from the end the weights lean to (where
        # the heaviest letter sits at exactly 0), so Λ'' keeps relative accuracy
        # when φ_μ is nearly a point mass.
        var, k3 = sv.centred_moments(e, s, jnp.where(mu >= 0, b / s - dn, up - a / s))
        # (a constant reward has nothing to solve: G = 0 there)
        g = jnp.where(span > 0, jnp.log(a / b) - target, 0.0)
        ia, ib = s / a, s / b
        return (g, *sv.halley_step(mu, g, var * (ia + ib), k3 * (ia + ib) + var * var * (ib * ib - ia * ia)))

    # Bracket and start from the rewards next to the ends. At the top, with A
    # the argmax set, gap the distance to the next reward (mass p₂) and
    # Q = p(Aᶜ)/p(A): r_max - Λ'(μ) <= Q gap e^{-μ gap} for μ gap >= 1, so
    # μ* <= max(1, log(Q gap/(r_max - x)))/gap (likewise at the bottom). The
    # two-letter model {A, next} puts Λ'(μ) = x at μ = log(p₂ (1-β) / (p(A) β))
    # / gap with β = (r_max - x)/gap: the start when x lies beyond the next
    # reward (β < 1) and above the mean Λ'(μ₀); the gaussian start μ₀ otherwise.
    def end(dist, r_end):
        st = sv.end_stats(sup.on, dist, sup.pn)
        d_x = jnp.abs(r_end - x)
        bound = jnp.maximum(1.0, jnp.log(st.q_rest * st.gap / d_x)) / st.gap
        beta = d_x / st.gap
        start = jnp.where(beta < 1, jnp.log(st.p_next * (1 - beta) / (st.p_end * beta)) / st.gap, 0.0)
        return bound, start

    big = jnp.sinh(nx._SINH_V) / scale
    bound_hi, start_hi = end(dn, sup.rmax)
    bound_lo, start_lo = end(up, sup.rmin)
    hi = jnp.where(span > 0, jnp.minimum(2.0 * bound_hi, big), big)
    lo = jnp.where(span > 0, jnp.maximum(-2.0 * bound_lo, -big), -big)
    e0, _ = sv.shifted_weights(sup, mu0)
    above = jnp.sum(e0 * up, axis=0, keepdims=True) / jnp.sum(e0, axis=0, keepdims=True) < x - sup.rmin  # x > Λ'(μ₀)
    start = jnp.where(above, jnp.maximum(mu0, start_hi), jnp.minimum(mu0, -start_lo))
    tol = 16 * jnp.finfo(x.dtype).eps * jnp.maximum(1.0, jnp.abs(target))
    return sv.safeguarded_newton(step, jnp.clip(start, lo, hi), 1.0 / scale, tol, lo=lo, hi=hi)[0]


@_tilt_with_mean.defjvp
def _tilt_with_mean_jvp(primals, tangents):
    """Implicit function theorem on ``Λ'(μ; p, r) = x``:
    ``dμ = (dx - ∂_{p,r} Λ'(μ)) / Λ''(μ)``."""
    p, r, x, mu0 = primals
    dp, dr, dx, _ = tangents
    mu = _tilt_with_mean(p, r, x, mu0)
    _, dmean = jax.jvp(lambda p_, r_: _moments(p_, r_, mu)[0], (p, r), (dp, dr))
    var = _moments(p, r, mu)[1]
    return mu, (dx - dmean) / jnp.where(var > 0, var, 1.0)


@jit
def _rate_function(p, r, x, lam):
    rmin, rmax = nx.support_range(p, r)
    inside = (x > rmin) & (x < rmax)
    x_in = jnp.where(inside, x, 0.5 * (rmin + rmax))
    # I is stationary in t (envelope theorem), so first derivatives need no
    # dt; second derivatives (∂²I/∂x² = 1/Λ''(λ+t_x)) do: μ = λ + t_x carries
    # them by the implicit function theorem.
    mu = _tilt_with_mean(p, r, x_in, jax.lax.stop_gradient(lam))
    t = mu - lam

    sup = sv.support(p, r)
    on, rt, pn = sup.on, sup.rt, sup.pn
    # per-instance values as rows (1, ...) of the alphabet-first layout
    x_in, lam, mu, t = x_in[None], lam[None], mu[None], t[None]
    e_lam, c_lam = sv.shifted_weights(sup, lam)
    s_lam = jnp.sum(e_lam, axis=0, keepdims=True)
    a = jnp.where(on, t * (rt - x_in), 0.0)
    # I = -log E_{φ_λ} e^{t (r - x)}. Near the mean (|a| small) the log1p/expm1
    # form keeps relative accuracy of the O(t^2) result; elsewhere the sum is
    # written through the tilt at μ, e^{κ} Σ e_μ / Σ e_λ, which cannot overflow.
    small = jnp.all(jnp.abs(a) <= 1.0, axis=0, keepdims=True)
    a_s = jnp.where(small, a, 0.0)
    s1 = jnp.sum(e_lam * jnp.expm1(a_s), axis=0, keepdims=True) / s_lam
    val_small = -jnp.log1p(jnp.maximum(s1, -0.5))
    e_mu, c_mu = sv.shifted_weights(sup, mu)
    kappa = mu * (c_mu - x_in) + lam * (x_in - c_lam)  # μ c_μ - λ c_λ - t x, without cancellation
    val_big = jnp.log(s_lam) - jnp.log(jnp.sum(e_mu, axis=0, keepdims=True)) - kappa
    val_inside = jnp.maximum(jnp.where(small, val_small, val_big), 0.0)

    # Boundary values: -log φ_λ(A) at r_max (A the argmax set), likewise at r_min;
    # log φ_λ(A) = log(p(A)/max p) + λ (r_A - c) - log Σ e_λ.
    def boundary(r_end):
        at = on & (rt == r_end)
        log_pa = jnp.log(jnp.sum(jnp.where(at, pn, 0.0), axis=0, keepdims=True))
        # (clamped at 0: with φ_λ(A) = 1 rounding may leave -1e-16)
        return jnp.maximum(jnp.log(s_lam) - log_pa - lam * (r_end - c_lam), 0.0)

    out = jnp.where(inside, val_inside[0], jnp.inf)
    out = jnp.where(x == rmax, boundary(rmax[None])[0], out)
    return jnp.where(x == rmin, boundary(rmin[None])[0], out)


@jit
def _rate_function_blocks(p, r, x, lam):
    return sv.map_blocks(_rate_function, (p, r, x, lam), (1, 1, 0, 0))


def rate_function(p: ArrayLike, r: ArrayLike, x: ArrayLike, lam: ArrayLike = 0.0) -> jax.Array:
    r"""Cramér rate function of ``R_n = r_n/n`` under ``φ_λ^n`` (THEORY.md §5).

    .. math:: I_λ(x) = \sup_t [t x - Λ(λ+t) + Λ(λ)]
              = \mathrm{KL}(φ_{λ+t_x} \| φ_λ), \quad Λ'(λ+t_x) = x.

    ``P(R_n ≈ x) ≈ e^{-n I_λ(x)}`` (Yang et al., ISIT 2024). Convex, ``0``
    exactly at ``x = Λ'(λ)``, ``-log φ_λ(A)`` at ``x = r_max`` (``A`` the
    argmax set; likewise at ``r_min``) and ``+inf`` outside
    ``[r_min, r_max]``. Inside, ``t_x`` is found by bracketed Halley steps on
    ``log(Λ'(μ) - r_min) - log(r_max - Λ'(μ))`` (no cancellation, nearly
    linear in ``μ`` at both ends; started from the two-letter model at the
    nearer end when ``x`` lies beyond the next reward; the solver core is
    shared with :func:`asymalign.solve_lambda`), and the value is evaluated as
    ``-log E_{φ_λ} e^{t_x (r - x)}`` (``log1p``/``expm1`` near the mean,
    through the tilt at ``λ + t_x`` elsewhere), so it stays finite and
    accurate for ``x`` within ``1e-9`` of ``r_max``. Differentiable in ``x``,
    ``r``, ``p`` and ``λ`` inside the interval (envelope theorem:
    ``∂I/∂x = t_x``).

    Near the mean the problem itself is ill-conditioned (``I`` is quadratic
    in ``x - Λ'(λ)``): the relative error there is about
    ``eps |x| / |x - Λ'(λ)|``.

    Args:
      p: reference probabilities, shape ``(..., k)``.
      r: per-token rewards, shape ``(..., k)``.
      x: per-token reward level (``±inf`` allowed), broadcasting against the batch.
      lam: the tilt ``λ`` of the model ``φ_λ`` (``0``: the reference).

    Returns:
      ``I_λ(x) >= 0`` (``inf`` outside ``[r_min, r_max]``) with the broadcast batch shape.

    >>> import asymalign as aa
    >>> # Bernoulli(0.3), r = identity: I(x) = binary KL(x || 0.3)
    >>> round(float(aa.rate_function([0.7, 0.3], [0.0, 1.0], 0.5)), 6)
    0.087177
    """
    check_model(p, r)
    check_real(x, "x", allow_inf=True)
    check_real(lam, "lam")
    p, r, x = _prep(p, r, x)
    lam = device_array(lam, x.dtype)
    if not is_concrete(p, r, x, lam):
        p, r, x, lam = _broadcast(p, r, x, lam)
    # Concrete batches are broadcast on the host and padded to a power-of-two bucket: one compilation per bucket.
    return call_bucketed(_rate_function_blocks, (p, r, x, lam), (1, 1, 0, 0))


def reward_softmax(p: ArrayLike, r: ArrayLike) -> jax.Array:
    r"""The reward's own distribution: the softmax of ``r`` on ``supp p`` (THEORY.md §5).

    .. math:: q_r(x) = e^{r(x)} / C, \qquad C = \sum_{x:\, p(x) > 0} e^{r(x)},

    and ``q_r(x) = 0`` off the support. The growth rate of the reward's
    cumulants is a Rényi cross-entropy against it,
    ``ψ_λ(t) = t log C - t H_{1+t}(φ_λ; q_r)`` (Yang et al., ISIT 2024). It
    is *not* the law of the reward under ``p`` (that is :func:`asymalign.reward_law`).

    Args:
      p: reference probabilities, shape ``(..., k)`` (only its support is used).
      r: per-token rewards, shape ``(..., k)``.

    Returns:
      ``q_r``, shape ``batch + (k,)``.

    >>> import asymalign as aa
    >>> aa.reward_softmax([0.5, 0.5, 0.0], [0.0, 0.0, 5.0]).tolist()
    [0.5, 0.5, 0.0]
    """
    check_model(p, r)
    p, r, _ = _prep(p, r, 0.0)
    z = jnp.where(p > 0, r, -jnp.inf)
    return jnp.exp(z - logsumexp(z, axis=-1, keepdims=True))


def cgf_via_renyi_cross_entropy(p: ArrayLike, r: ArrayLike, t: ArrayLike, lam: ArrayLike = 0.0) -> jax.Array:
    r"""``ψ_λ(t)`` through the Rényi cross-entropy form (THEORY.md §5).

    .. math:: ψ_λ(t) = t \log C - t\, H_{1+t}(φ_λ; q_r),

    with ``q_r`` = :func:`reward_softmax` and ``C`` its normaliser (Yang et
    al., ISIT 2024; Rényi cross-entropy after Thierrin, Alajaji and Linder,
    Entropy 2022). Valid for every real ``t`` (orders ``1 + t < 0``
    included); equals :func:`scaled_cgf` up to rounding, which the test-suite
    checks.

    Args:
      p: reference probabilities, shape ``(..., k)``.
      r: per-token rewards, shape ``(..., k)``.
      t: the CGF's argument (real), broadcasting against the batch.
      lam: the tilt ``λ``.

    Returns:
      ``ψ_λ(t)`` with the broadcast batch shape.

    >>> import asymalign as aa
    >>> p, r = [0.7, 0.3], [0.0, 1.0]
    >>> bool(abs(aa.cgf_via_renyi_cross_entropy(p, r, 0.5) - aa.scaled_cgf(p, r, 0.5)) < 1e-14)
    True
    """
    check_model(p, r)
    check_real(t, "t")
    check_real(lam, "lam")
    p, r, t = _prep(p, r, t)
    lam = device_array(lam, t.dtype)
    return _cgf_via_renyi_cross_entropy(p, r, t, lam)


@jit
def _cgf_via_renyi_cross_entropy(p, r, t, lam):
    p, r, t, lam = _broadcast(p, r, t, lam)
    z = jnp.where(p > 0, r, -jnp.inf)
    log_c = logsumexp(z, axis=-1)
    q_r = jnp.exp(z - log_c[..., None])
    phi = jnp.exp(_log_tilt(p, r, lam))
    h = _renyi_cross_entropy(phi, q_r, 1.0 + t)
    return jnp.where(t == 0, 0.0, t * log_c - t * jnp.where(t == 0, 0.0, h))


def cgf_via_renyi_divergence(p: ArrayLike, r: ArrayLike, t: ArrayLike, lam: ArrayLike) -> jax.Array:
    r"""``ψ_λ(t)`` through the Rényi-divergence form (THEORY.md §5), ``λ != 0``.

    .. math:: ψ_λ(t) = (α - 1)\,[Λ(λ) + D_α(φ_λ \| p)], \qquad α = 1 + t/λ .

    Yang et al. (ISIT 2024). Equals :func:`scaled_cgf` up to rounding.

    Args:
      p: reference probabilities, shape ``(..., k)``.
      r: per-token rewards, shape ``(..., k)``.
      t: the CGF's argument (real), broadcasting against the batch.
      lam: the tilt ``λ != 0``.

    Returns:
      ``ψ_λ(t)`` with the broadcast batch shape.

    >>> import asymalign as aa
    >>> p, r = [0.7, 0.3], [0.0, 1.0]
    >>> bool(abs(aa.cgf_via_renyi_divergence(p, r, 0.5, 2.0) - aa.scaled_cgf(p, r, 0.5, 2.0)) < 1e-14)
    True
    """
    check_model(p, r)
    check_real(t, "t")
    check_real(lam, "lam")
    if jnp.ndim(lam) == 0 and is_concrete(lam) and float(lam) == 0:
        raise ValueError("lam must be nonzero for the Rényi-divergence form (α = 1 + t/λ)")
    p, r, t = _prep(p, r, t)
    lam = device_array(lam, t.dtype)
    return _cgf_via_renyi_divergence(p, r, t, lam)


@jit
def _cgf_via_renyi_divergence(p, r, t, lam):
    p, r, t, lam = _broadcast(p, r, t, lam)
    alpha = 1.0 + t / lam
    phi = jnp.exp(_log_tilt(p, r, lam))
    d = _renyi_divergence(phi, p, alpha)
    return jnp.where(t == 0, 0.0, (alpha - 1.0) * (_log_partition(p, r, lam) + jnp.where(t == 0, 0.0, d)))
