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
import numpy as np
from jax.typing import ArrayLike

from . import _numerics as nx
from ._buckets import call_bucketed
from ._tilt_core import (  # noqa: F401  (best_of_n, levels, goodhart_tilt import _moments, _prep, _solve_lambda_b from here)
    _log_partition,
    _log_tilt,
    _max_kl,
    _moments,
    _prep,
    _solve_lambda_b,
    _tilt,
    _tilt_kl,
)
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
    check_model(p, r)
    check_real(lam, "lam", allow_inf=True)
    return _tilt(*_prep(p, r, lam))


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
    policy = _tilt(p, r, lam)
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
    dt = nx.float_dtype(p, r, beta)
    if is_concrete(beta):  # on the host: an eager division would compile once per shape
        with np.errstate(divide="ignore"):  # β = 0 in an array: λ = inf, the argmax
            return tilt(p, r, 1.0 / np.asarray(beta, dt))
    return tilt(p, r, 1.0 / jnp.asarray(beta, dt))
