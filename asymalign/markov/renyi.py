r"""Rényi information rates of Markov chains (THEORY.md §14).

For chains ``P``, ``Q`` on the same states (Rached, Alajaji & Campbell 2001;
Thierrin, Alajaji & Linder 2022), with ``∘`` elementwise and ``0^a = 0``:

* cross-entropy rate ``H_α(P; Q) = log ρ(P ∘ Q^{∘(α-1)}) / (1 - α)``,
* divergence rate ``D_α(P ‖ Q) = log ρ(P^{∘α} ∘ Q^{∘(1-α)}) / (α - 1)``,
* entropy rate ``H_α(P) = log ρ(P^{∘α}) / (1 - α)``.

They are the limits of ``(1/n)`` times the corresponding measures of the
path laws ``P^n``, ``Q^n`` and do not depend on the initial laws. As
``α → 1`` they tend to the Shannon rates ``-Σ π(x) P(x,y) log Q(x,y)``,
``Σ π(x) P(x,y) log(P(x,y)/Q(x,y))``, ``-Σ π(x) P(x,y) log P(x,y)`` (``π`` the
stationary law of ``P``), used within ``|α - 1| < 1e-7``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .. import _numerics as nx
from .._buckets import device_array
from .._jit import jit
from .._validate import check_nonneg, is_concrete
from .chain import MarkovChain, _perron_vectors, check_chain, log_perron_root

__all__ = ["renyi_cross_entropy_rate", "renyi_divergence_rate", "renyi_entropy_rate"]

_NEAR_ONE = 1e-7


def _matrix(x, name, ergodic=True):
    if isinstance(x, MarkovChain):
        check_chain(x, name, ergodic=ergodic)
        return x.transition
    if is_concrete(x):
        a = np.asarray(x)
        k = a.shape[-1] if a.ndim else 0
        check_chain(MarkovChain(a, np.full(k, 1.0 / max(k, 1))), name, ergodic=ergodic)
    return x


def _check_pair(P, Q):
    if is_concrete(P, Q) and np.shape(P) != np.shape(Q):
        raise ValueError(f"P and Q must have the same shape, got {np.shape(P)} and {np.shape(Q)}")


def _stationary(P):
    _, u = _perron_vectors(P, jnp.zeros((), P.dtype))
    return jnp.maximum(u, 0.0) / jnp.sum(jnp.maximum(u, 0.0))


def _log_rho(m):
    return log_perron_root(m)


def _prep2(P, Q, alpha):
    dt = nx.float_dtype(P, Q, alpha)
    return device_array(P, dt), device_array(Q, dt), device_array(alpha, dt)


def _cross(P, Q, alpha):
    lq = nx.masked_log(Q)
    pos = P > 0
    near = jnp.abs(alpha - 1.0) < _NEAR_ONE
    a = jnp.where(near, 0.5, alpha)
    # P ∘ Q^{α-1}: where P > 0 and Q = 0 the entry is 0 (α > 1) or +inf (α < 1)
    expo = jnp.where(pos, (a - 1.0) * jnp.where(pos & (Q > 0), lq, 0.0), -jnp.inf)
    expo = jnp.where(pos & (Q <= 0), jnp.where(a > 1.0, -jnp.inf, jnp.inf), expo)
    infinite = jnp.any(jnp.isposinf(expo))
    m = jnp.exp(jnp.where(jnp.isposinf(expo), 0.0, expo)) * P
    ratio = _log_rho(m) / (1.0 - a)
    pi = _stationary(P)
    shannon = -jnp.sum(pi[:, None] * nx.xlogy_masked(P, jnp.where(pos & (Q <= 0), -jnp.inf, lq)))
    shannon = jnp.where(jnp.any(pos & (Q <= 0)), jnp.inf, shannon)
    return jnp.where(near, shannon, jnp.where(infinite, jnp.inf, ratio))


def renyi_cross_entropy_rate(P: ArrayLike, Q: ArrayLike, alpha: ArrayLike) -> jax.Array:
    r"""Rényi cross-entropy rate ``H_α(P; Q) = log ρ(P ∘ Q^{∘(α-1)}) / (1 - α)`` (THEORY.md §14).

    ``P``, ``Q``: transition matrices (or :class:`MarkovChain`); ``P``
    irreducible and aperiodic. ``α >= 0``; ``α → 1`` gives the cross-entropy
    rate ``-Σ π P log Q``. ``+inf`` when ``α <= 1`` and ``Q`` forbids a
    transition ``P`` makes.

    >>> import jax.numpy as jnp
    >>> P = jnp.array([[0.5, 0.5], [0.5, 0.5]])
    >>> round(float(renyi_cross_entropy_rate(P, P, 2.0)), 12)  # log 2
    0.69314718056
    """
    P = _matrix(P, "P")
    Q = _matrix(Q, "Q", ergodic=False)
    _check_pair(P, Q)
    check_nonneg(alpha, "alpha", allow_inf=False)
    return _cross_jit(*_prep2(P, Q, alpha))


def _divergence(P, Q, alpha):
    lp, lq = nx.masked_log(P), nx.masked_log(Q)
    pos = P > 0
    bad = jnp.any(pos & (Q <= 0))
    near = jnp.abs(alpha - 1.0) < _NEAR_ONE
    a = jnp.where(near, 0.5, alpha)
    both = pos & (Q > 0)
    expo = jnp.where(both, a * jnp.where(both, lp, 0.0) + (1.0 - a) * jnp.where(both, lq, 0.0), -jnp.inf)
    # P > 0, Q = 0: Q^{1-α} is 0 for α < 1 and +inf for α > 1 (then the rate is +inf)
    ratio = _log_rho(jnp.exp(expo)) / (a - 1.0)
    ratio = jnp.where(bad & (a > 1.0), jnp.inf, ratio)
    pi = _stationary(P)
    kl = jnp.sum(pi[:, None] * jnp.where(both, P * (jnp.where(both, lp, 0.0) - jnp.where(both, lq, 0.0)), 0.0))
    kl = jnp.where(bad, jnp.inf, kl)
    return jnp.maximum(jnp.where(near, kl, ratio), 0.0)


def renyi_divergence_rate(P: ArrayLike, Q: ArrayLike, alpha: ArrayLike) -> jax.Array:
    r"""Rényi divergence rate ``D_α(P ‖ Q) = log ρ(P^{∘α} ∘ Q^{∘(1-α)}) / (α - 1)`` (THEORY.md §14).

    ``α → 1`` gives the KL rate ``Σ π P log(P/Q)``. ``α >= 0``.

    >>> import jax.numpy as jnp
    >>> P = jnp.array([[0.9, 0.1], [0.2, 0.8]])
    >>> float(renyi_divergence_rate(P, P, 0.5))
    0.0
    """
    P = _matrix(P, "P")
    Q = _matrix(Q, "Q", ergodic=False)
    _check_pair(P, Q)
    check_nonneg(alpha, "alpha", allow_inf=False)
    return _divergence_jit(*_prep2(P, Q, alpha))


def renyi_entropy_rate(P: ArrayLike, alpha: ArrayLike) -> jax.Array:
    r"""Rényi entropy rate ``H_α(P) = log ρ(P^{∘α}) / (1 - α)`` (THEORY.md §14); ``α → 1``: ``-Σ π P log P``.

    >>> import jax.numpy as jnp
    >>> P = jnp.array([[0.5, 0.5], [0.5, 0.5]])
    >>> round(float(renyi_entropy_rate(P, 3.0)), 12)
    0.69314718056
    """
    P = _matrix(P, "P")
    check_nonneg(alpha, "alpha", allow_inf=False)
    P, _, alpha = _prep2(P, P, alpha)
    return _cross_jit(P, P, alpha)


_cross_jit = jit(_cross)
_divergence_jit = jit(_divergence)
