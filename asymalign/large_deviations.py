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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from . import _numerics as nx
from ._validate import check_model, check_positive_int, check_real, is_concrete
from .information import _renyi_cross_entropy, _renyi_divergence
from .tilting import _log_partition, _log_tilt, _moments, _prep

__all__ = [
    "scaled_cgf",
    "scaled_cumulants",
    "rate_function",
    "reward_distribution",
    "cgf_via_renyi_cross_entropy",
    "cgf_via_renyi_divergence",
]


def _broadcast(p, r, *scalars):
    batch = jnp.broadcast_shapes(p.shape[:-1], r.shape[:-1], *(s.shape for s in scalars))
    k = p.shape[-1:]
    out = [jnp.broadcast_to(p, batch + k), jnp.broadcast_to(r, batch + k)]
    return out + [jnp.broadcast_to(s, batch) for s in scalars]


def scaled_cgf(p, r, t, lam=0.0):
    r"""Scaled CGF of the reward under ``φ_λ^n``: ``ψ_λ(t) = Λ(λ+t) - Λ(λ)``.

    THEORY.md §5; exact for every ``n`` (the model is memoryless). Convex in
    ``t``, ``ψ_λ(0) = 0``, ``ψ_λ'(0) = Λ'(λ)``.

    >>> import asymalign as aa
    >>> float(aa.scaled_cgf([0.5, 0.5], [0.0, 1.0], 0.0))
    0.0
    """
    check_model(p, r)
    check_real(t, "t")
    check_real(lam, "lam")
    p, r, t = _prep(p, r, t)
    lam = jnp.asarray(lam, t.dtype)
    return _log_partition(p, r, lam + t) - _log_partition(p, r, lam)


def scaled_cumulants(p, r, order: int, lam=0.0):
    r"""The first ``order`` scaled cumulants ``κ_j(r_n)/n = Λ^{(j)}(λ)``, ``j = 1..order``.

    THEORY.md §2 and §5: the derivatives of the log-partition function are the
    cumulants of ``r`` under ``φ_λ`` (mean, variance, third cumulant, …),
    computed by nested automatic differentiation of ``Λ``.

    Returns an array of shape ``batch + (order,)``.

    >>> import asymalign as aa
    >>> aa.scaled_cumulants([0.5, 0.5], [0.0, 1.0], 2).tolist()
    [0.5, 0.25]
    """
    check_model(p, r)
    order = check_positive_int(order, "order")
    check_real(lam, "lam")
    p, r, lam = _prep(p, r, lam)
    p, r, lam = _broadcast(p, r, lam)

    def f(l):
        return _log_partition(p, r, l)

    derivs = []
    g = f
    for _ in range(order):
        g = jax.grad(lambda l, g=g: jnp.sum(g(l)))
        derivs.append(g(lam))
    return jnp.stack(derivs, axis=-1)


@jax.jit
def _rate_function(p, r, x, lam):
    rmin, rmax = nx.support_range(p, r)
    span = rmax - rmin
    scale = jnp.where(span > 0, span, 1.0)
    inside = (x > rmin) & (x < rmax)
    x_in = jnp.where(inside, x, 0.5 * (rmin + rmax))

    # The root finder sees no tangents (cheap to differentiate); derivatives
    # of μ are attached below by the implicit function theorem.
    p_s, r_s, x_s = (jax.lax.stop_gradient(a) for a in (p, r, x_in))

    # Solve Λ'(μ) = x in logit coordinates, G(μ) = log(Λ'(μ) - r_min) -
    # log(r_max - Λ'(μ)) - log((x - r_min)/(r_max - x)): both distances are sums
    # of nonnegative terms (no cancellation) and G is close to linear in μ at
    # both ends, so Newton converges in a handful of steps from μ = λ.
    on_s = p_s > 0
    log_up = jnp.where(on_s & (r_s > rmin[..., None]), jnp.log(jnp.where(on_s, r_s - rmin[..., None], 1.0)), -jnp.inf)
    log_dn = jnp.where(on_s & (r_s < rmax[..., None]), jnp.log(jnp.where(on_s, rmax[..., None] - r_s, 1.0)), -jnp.inf)
    target = jnp.log(x_s - rmin) - jnp.log(rmax - x_s)

    def g_and_dg(mu):
        logphi = _log_tilt(p_s, r_s, mu)
        a = logsumexp(logphi + log_up, axis=-1)  # log(Λ'(μ) - r_min)
        b = logsumexp(logphi + log_dn, axis=-1)  # log(r_max - Λ'(μ))
        var = _moments(p_s, r_s, mu)[1]
        return a - b - target, var * (jnp.exp(-a) + jnp.exp(-b))

    scale_s = jax.lax.stop_gradient(scale)
    tol = 16 * jnp.finfo(x_s.dtype).eps * jnp.maximum(1.0, jnp.abs(target))
    big = jnp.sinh(nx._SINH_V) / scale_s
    mu0 = jnp.clip(jax.lax.stop_gradient(lam) + jnp.zeros_like(x_s), -big, big)
    mu = nx.safeguarded_newton(g_and_dg, mu0, 1.0 / scale_s, tol, lo=-big, hi=big)
    # I is stationary in t (envelope theorem), so first derivatives need no
    # dt; second derivatives (∂²I/∂x² = 1/Λ''(λ+t_x)) do. Implicit function
    # theorem on Λ'(μ; p, r) = x, attached without changing the value:
    # dμ = (dx - ∂_{p,r} Λ'(μ)) / Λ''(μ).
    mu = jax.lax.stop_gradient(mu)
    mean_mu, var_mu, _ = _moments(p, r, mu)
    res = mean_mu - x_in
    var_s = jax.lax.stop_gradient(jnp.where(var_mu > 0, var_mu, 1.0))
    mu = mu - (res - jax.lax.stop_gradient(res)) / var_s
    t = mu - lam

    logphi = _log_tilt(p, r, lam)
    on = p > 0
    a = jnp.where(on, t[..., None] * (r - x_in[..., None]), 0.0)
    # Near the mean (|a| small) the log1p/expm1 form keeps relative accuracy of
    # the O(t^2) result; elsewhere the log-sum-exp form cannot overflow.
    small = jnp.all(jnp.abs(a) <= 1.0, axis=-1)
    a_s = jnp.where(small[..., None], a, 0.0)
    phi = jnp.exp(logphi)
    s1 = jnp.sum(jnp.where(on, phi * jnp.expm1(a_s), 0.0), axis=-1)
    val_small = -jnp.log1p(jnp.maximum(s1, -0.5))
    val_big = -logsumexp(jnp.where(on, logphi + a, -jnp.inf), axis=-1)
    val_inside = jnp.maximum(jnp.where(small, val_small, val_big), 0.0)

    # Boundary values: -log φ_λ(A) at r_max, likewise at r_min.
    at_max = (r == rmax[..., None]) & on
    at_min = (r == rmin[..., None]) & on
    # (clamped at 0: with φ_λ(A) = 1 rounding may leave -1e-16)
    b_max = jnp.maximum(-logsumexp(jnp.where(at_max, logphi, -jnp.inf), axis=-1), 0.0)
    b_min = jnp.maximum(-logsumexp(jnp.where(at_min, logphi, -jnp.inf), axis=-1), 0.0)
    out = jnp.where(inside, val_inside, jnp.inf)
    out = jnp.where(x == rmax, b_max, out)
    return jnp.where(x == rmin, b_min, out)


@jax.jit
def _rate_function_blocks(p, r, x, lam):
    return nx.map_blocks(_rate_function, (p, r, x, lam), (1, 1, 0, 0))


def rate_function(p, r, x, lam=0.0):
    r"""Cramér rate function of ``R_n = r_n/n`` under ``φ_λ^n`` (THEORY.md §5).

    .. math:: I_λ(x) = \sup_t [t x - Λ(λ+t) + Λ(λ)]
              = \mathrm{KL}(φ_{λ+t_x} \| φ_λ), \quad Λ'(λ+t_x) = x.

    Convex, ``0`` exactly at ``x = Λ'(λ)``, ``-log φ_λ(A)`` at ``x = r_max``
    (``A`` the argmax set; likewise at ``r_min``) and ``+inf`` outside
    ``[r_min, r_max]``. Inside, ``t_x`` is found by bracketed Newton steps on
    ``log(Λ'(μ) - r_min) - log(r_max - Λ'(μ))`` (no cancellation, nearly
    linear in ``μ`` at both ends), and the value is evaluated
    as ``-log E_{φ_λ} e^{t_x (r - x)}`` (``log1p``/``expm1`` near the mean), so
    it stays finite and accurate for ``x`` within ``1e-9`` of ``r_max``.
    Differentiable in ``x``, ``r``, ``p`` and ``λ`` inside the interval
    (envelope theorem: ``∂I/∂x = t_x``).

    Near the mean the problem itself is ill-conditioned (``I`` is quadratic
    in ``x - Λ'(λ)``): the relative error there is about
    ``eps |x| / |x - Λ'(λ)|``.

    >>> import asymalign as aa
    >>> # Bernoulli(0.3), r = identity: I(x) = binary KL(x || 0.3)
    >>> round(float(aa.rate_function([0.7, 0.3], [0.0, 1.0], 0.5)), 6)
    0.087177
    """
    check_model(p, r)
    check_real(x, "x", allow_inf=True)
    check_real(lam, "lam")
    p, r, x = _prep(p, r, x)
    lam = jnp.asarray(lam, x.dtype)
    p, r, x, lam = _broadcast(p, r, x, lam)
    return _rate_function_blocks(p, r, x, lam)


def reward_distribution(p, r):
    r"""The reward's own distribution ``q_r(x) = e^{r(x)} / C`` on ``supp p``,
    ``C = Σ_{x: p(x)>0} e^{r(x)}`` (THEORY.md §5); ``0`` off the support."""
    check_model(p, r)
    p, r, _ = _prep(p, r, 0.0)
    z = jnp.where(p > 0, r, -jnp.inf)
    return jnp.exp(z - logsumexp(z, axis=-1, keepdims=True))


def cgf_via_renyi_cross_entropy(p, r, t, lam=0.0):
    r"""``ψ_λ(t)`` through the Rényi cross-entropy form (THEORY.md §5):

    .. math:: ψ_λ(t) = t \log C - t\, H_{1+t}(φ_λ; q_r).

    Valid for every real ``t`` (orders ``1 + t < 0`` included); equals
    :func:`scaled_cgf` up to rounding, which the test-suite checks.
    """
    check_model(p, r)
    check_real(t, "t")
    check_real(lam, "lam")
    p, r, t = _prep(p, r, t)
    lam = jnp.asarray(lam, t.dtype)
    p, r, t, lam = _broadcast(p, r, t, lam)
    z = jnp.where(p > 0, r, -jnp.inf)
    log_c = logsumexp(z, axis=-1)
    q_r = jnp.exp(z - log_c[..., None])
    phi = jnp.exp(_log_tilt(p, r, lam))
    h = _renyi_cross_entropy(phi, q_r, 1.0 + t)
    return jnp.where(t == 0, 0.0, t * log_c - t * jnp.where(t == 0, 0.0, h))


def cgf_via_renyi_divergence(p, r, t, lam):
    r"""``ψ_λ(t)`` through the Rényi-divergence form (THEORY.md §5), ``λ != 0``:

    .. math:: ψ_λ(t) = (α - 1)\,[Λ(λ) + D_α(φ_λ \| p)], \qquad α = 1 + t/λ .
    """
    check_model(p, r)
    check_real(t, "t")
    check_real(lam, "lam")
    if jnp.ndim(lam) == 0 and is_concrete(lam) and float(lam) == 0:
        raise ValueError("lam must be nonzero for the Rényi-divergence form (α = 1 + t/λ)")
    p, r, t = _prep(p, r, t)
    lam = jnp.asarray(lam, t.dtype)
    p, r, t, lam = _broadcast(p, r, t, lam)
    alpha = 1.0 + t / lam
    phi = jnp.exp(_log_tilt(p, r, lam))
    d = _renyi_divergence(phi, p, alpha)
    return jnp.where(t == 0, 0.0, (alpha - 1.0) * (_log_partition(p, r, lam) + jnp.where(t == 0, 0.0, d)))
