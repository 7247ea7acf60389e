r"""Information measures on a finite alphabet (THEORY.md §2 and §5).

All functions reduce over the last axis and broadcast leading axes. Zeros are
handled by the usual conventions: ``0 log 0 = 0`` and ``0 log(0/0) = 0``; a
quantity whose support condition fails is ``+inf`` (e.g. ``KL(q||p)`` with
``q(x) > 0 = p(x)``). ``alpha`` may be any real ``>= 0`` including ``inf``;
``alpha = 1`` gives the Shannon limit exactly.

Rényi cross-entropy follows Thierrin, Alajaji and Linder (Entropy 2022):

.. math:: H_α(q; s) = \frac{1}{1-α} \log \sum_x q(x) s(x)^{α-1}.

The package is built around Yang, Salamatian, Sun, Suresh and Beirami,
"Asymptotics of Language Model Alignment" (ISIT 2024, arXiv 2404.01730).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from . import _numerics as nx
from ._jit import jit
from ._validate import check_nonneg, check_prob

__all__ = [
    "kl",
    "cross_entropy",
    "entropy",
    "renyi_divergence",
    "renyi_entropy",
    "renyi_cross_entropy",
]


def _pair(q, p, qn, pn):
    check_prob(q, qn)
    check_prob(p, pn)
    if np.shape(q)[-1:] != np.shape(p)[-1:]:
        raise ValueError(
            f"{qn} and {pn} must have the same alphabet size (last axis), got {np.shape(q)[-1]} and {np.shape(p)[-1]}"
        )
    dt = nx.float_dtype(q, p)
    return nx.broadcast_batch([jnp.asarray(q, dt), jnp.asarray(p, dt)])


def _with_alpha(q, p, alpha):
    """``(q, p, α)`` broadcast to one batch shape (``α`` validated, in ``q``'s dtype)."""
    check_nonneg(alpha, "alpha")
    return nx.broadcast_batch([q, p], [jnp.asarray(alpha, q.dtype)])


# ---------------------------------------------------------------------------
# private kernels (no validation; alpha may be any real, used by §5 identities)
# ---------------------------------------------------------------------------


@jit
def _kl(q, p):
    logq, logp = nx.masked_log(q), nx.masked_log(p)
    bad = jnp.any((q > 0) & (p <= 0), axis=-1)
    val = jnp.sum(nx.xlogy_masked(q, logq - jnp.where(p > 0, logp, 0.0)), axis=-1)
    return jnp.where(bad, jnp.inf, val)


@jit
def _cross_entropy(q, s):
    logs = nx.masked_log(s)
    bad = jnp.any((q > 0) & (s <= 0), axis=-1)
    val = -jnp.sum(nx.xlogy_masked(q, jnp.where(s > 0, logs, 0.0)), axis=-1)
    return jnp.where(bad, jnp.inf, val)


@jit
def _renyi_cross_entropy(q, s, alpha):
    """``H_α(q; s)`` for any real ``α`` (``±inf`` and ``1`` as limits)."""
    a_last = alpha
    alpha = alpha[..., None]
    logq, logs = nx.masked_log(q), nx.masked_log(s)
    on_q = q > 0
    # Generic α: log Σ_{q>0} q s^{α-1}; s = 0 contributes +inf (α<1) or 0 (α>1).
    e = alpha - 1.0
    e_safe = jnp.where(e == 0, 1.0, e)
    term = jnp.where(s > 0, e_safe * jnp.where(s > 0, logs, 0.0), jnp.where(e_safe < 0, jnp.inf, -jnp.inf))
    lse = logsumexp(jnp.where(on_q, logq + term, -jnp.inf), axis=-1)
    one_m = 1.0 - a_last
    generic = lse / jnp.where(one_m == 0, 1.0, one_m)
    shannon = _cross_entropy(q, s)
    # α = +inf: -log max_{q>0} s;  α = -inf: -log min_{q>0} s.
    smax = jnp.max(jnp.where(on_q, s, -jnp.inf), axis=-1)
    smin = jnp.min(jnp.where(on_q, s, jnp.inf), axis=-1)
    at_inf = -nx.masked_log(smax)
    at_minf = -nx.masked_log(smin)
    out = jnp.where(a_last == 1, shannon, generic)
    out = jnp.where(jnp.isposinf(a_last), at_inf, out)
    return jnp.where(jnp.isneginf(a_last), at_minf, out)


@jit
def _renyi_divergence(q, p, alpha):
    """``D_α(q||p) = log Σ q^α p^{1-α} / (α - 1)`` for any real ``α``."""
    a_last = alpha
    alpha = alpha[..., None]
    logq, logp = nx.masked_log(q), nx.masked_log(p)
    both = (q > 0) & (p > 0)
    only_q = (q > 0) & (p <= 0)
    # On q>0, p=0: q^α p^{1-α} is +inf for α > 1 and 0 for α < 1.
    t = jnp.where(both, alpha * jnp.where(both, logq, 0.0) + (1.0 - alpha) * jnp.where(both, logp, 0.0), -jnp.inf)
    t = jnp.where(only_q & (alpha > 1), jnp.inf, t)
    lse = logsumexp(t, axis=-1)
    am1 = a_last - 1.0
    generic = lse / jnp.where(am1 == 0, 1.0, am1)
    # α = 0: -log p(supp q);  α = inf: log max q/p.
    ratio = jnp.where(both, jnp.where(both, logq, 0.0) - jnp.where(both, logp, 0.0), -jnp.inf)
    ratio = jnp.where(only_q, jnp.inf, ratio)
    at_inf = jnp.max(ratio, axis=-1)
    out = jnp.where(a_last == 1, _kl(q, p), generic)
    return jnp.where(jnp.isposinf(a_last), at_inf, out)


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def kl(q: ArrayLike, p: ArrayLike) -> jax.Array:
    r"""Kullback–Leibler divergence (THEORY.md §2).

    .. math:: \mathrm{KL}(q \| p) = \sum_x q(x) \log \frac{q(x)}{p(x)}

    ``+inf`` when some ``q(x) > 0 = p(x)``; ``0 log 0 = 0``. The budget of
    KL-constrained RL (Yang et al., ISIT 2024).

    Args:
      q, p: probability vectors, shape ``(..., k)`` (batch axes broadcast).

    Returns:
      ``KL(q || p) >= 0`` with the broadcast batch shape.

    >>> import asymalign as aa
    >>> float(aa.kl([0.5, 0.5], [0.5, 0.5]))
    0.0
    """
    return _kl(*_pair(q, p, "q", "p"))


def cross_entropy(q: ArrayLike, s: ArrayLike) -> jax.Array:
    r"""Shannon cross-entropy (THEORY.md §5), the ``α -> 1`` limit of :func:`renyi_cross_entropy`.

    .. math:: H(q; s) = -\sum_x q(x) \log s(x)

    ``+inf`` when some ``q(x) > 0 = s(x)``. Yang et al. (ISIT 2024).

    Args:
      q, s: probability vectors, shape ``(..., k)`` (batch axes broadcast).

    Returns:
      ``H(q; s)`` with the broadcast batch shape.

    >>> import asymalign as aa
    >>> round(float(aa.cross_entropy([1.0, 0.0], [0.5, 0.5])), 12)  # = log 2
    0.69314718056
    """
    return _cross_entropy(*_pair(q, s, "q", "s"))


def entropy(p: ArrayLike) -> jax.Array:
    r"""Shannon entropy (THEORY.md §2).

    .. math:: H(p) = -\sum_x p(x) \log p(x), \qquad 0 \log 0 = 0.

    Args:
      p: probability vector(s), shape ``(..., k)``.

    Returns:
      ``H(p)`` with the batch shape.

    >>> import asymalign as aa
    >>> round(float(aa.entropy([0.25, 0.25, 0.25, 0.25, 0.0])), 12)  # = log 4
    1.38629436112
    """
    check_prob(p, "p")
    p = jnp.asarray(p, nx.float_dtype(p))
    return _cross_entropy(p, p)


def renyi_divergence(q: ArrayLike, p: ArrayLike, alpha: ArrayLike) -> jax.Array:
    r"""Rényi divergence of order ``α >= 0`` (THEORY.md §2).

    .. math:: D_α(q\|p) = \frac{1}{α-1} \log \sum_x q(x)^α p(x)^{1-α}

    Limits: ``α = 1`` is ``KL(q||p)``; ``α = inf`` is ``log max_x q(x)/p(x)``;
    ``α = 0`` is ``-log p(supp q)``. ``+inf`` when ``α >= 1`` and ``q`` is not
    absolutely continuous w.r.t. ``p``. For a tilt,
    ``D_α(φ_μ || p) = (Λ(αμ) - α Λ(μ)) / (α - 1)`` (Yang et al., ISIT 2024).

    Args:
      q, p: probability vectors, shape ``(..., k)``.
      alpha: order ``α >= 0`` (``inf`` allowed), broadcasting against the batch.

    Returns:
      ``D_α(q || p)`` with the broadcast batch shape.

    >>> import asymalign as aa
    >>> q, p = [0.9, 0.1], [0.5, 0.5]
    >>> bool(abs(aa.renyi_divergence(q, p, 1.0) - aa.kl(q, p)) < 1e-15)
    True
    """
    return _renyi_divergence(*_with_alpha(*_pair(q, p, "q", "p"), alpha))


def renyi_entropy(p: ArrayLike, alpha: ArrayLike) -> jax.Array:
    r"""Rényi entropy of order ``α >= 0`` (THEORY.md §2).

    .. math:: H_α(p) = \frac{1}{1-α} \log \sum_x p(x)^α

    ``α = 0``: ``log |supp p|``; ``α = 1``: Shannon entropy; ``α = inf``:
    ``-log max p``. Equals ``renyi_cross_entropy(p, p, α)``.

    Args:
      p: probability vector(s), shape ``(..., k)``.
      alpha: order ``α >= 0`` (``inf`` allowed), broadcasting against the batch.

    Returns:
      ``H_α(p)`` with the broadcast batch shape.

    >>> import asymalign as aa
    >>> round(float(aa.renyi_entropy([0.5, 0.25, 0.25], float("inf"))), 12)  # = log 2
    0.69314718056
    """
    check_prob(p, "p")
    p = jnp.asarray(p, nx.float_dtype(p))
    return _renyi_cross_entropy(*_with_alpha(p, p, alpha))


def renyi_cross_entropy(q: ArrayLike, s: ArrayLike, alpha: ArrayLike) -> jax.Array:
    r"""Rényi cross-entropy of ``q`` relative to ``s`` (THEORY.md §5).

    .. math:: H_α(q; s) = \frac{1}{1-α} \log \sum_x q(x)\, s(x)^{α-1},
              \qquad α \ge 0,\ α \ne 1,

    after Thierrin, Alajaji and Linder (Entropy 2022). ``α = 1`` gives the
    Shannon cross-entropy ``-Σ q log s``; ``α = inf`` gives
    ``-log max_{q>0} s``. ``+inf`` when ``α <= 1`` and some ``q(x) > 0 = s(x)``,
    or when ``s`` vanishes on all of ``supp q``. With ``q_r = e^r / C`` the
    reward's own distribution, ``ψ_λ(t) = t log C - t H_{1+t}(φ_λ; q_r)``
    (Yang et al., ISIT 2024).

    Args:
      q, s: probability vectors, shape ``(..., k)``.
      alpha: order ``α >= 0`` (``inf`` allowed), broadcasting against the batch.

    Returns:
      ``H_α(q; s)`` with the broadcast batch shape.

    >>> import asymalign as aa
    >>> q, s = [0.5, 0.5], [0.25, 0.75]
    >>> bool(abs(aa.renyi_cross_entropy(q, s, 1.0) - aa.cross_entropy(q, s)) < 1e-15)
    True
    """
    return _renyi_cross_entropy(*_with_alpha(*_pair(q, s, "q", "s"), alpha))
