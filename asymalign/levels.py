r"""Policies on reward levels: alignment methods as maps from law to law (THEORY.md §10–§12).

Every method studied here (best-of-N, worst-of-N, Best-of-Poisson, soft
best-of-N, KL-RL on any score of the level, InfAlign) produces a policy

.. math:: π(y) = p^n(y)\, q(s) / P_n(s), \qquad s = r_n(y),

determined by its *level law* ``q``, a law over the same levels as the
reference law ``P_n``. Here such a ``q`` is a :class:`~asymalign.RewardLaw`
with the reference's levels, ``n`` and ``fingerprint`` and its own
``log_prob``. Every method maps a law to a law (applied to the reference law
it is the method on ``p^n``; applied to an aligned law, the method on top of
that alignment: best-of-N of a tilt is ``best_of_n(level_tilt(...), ...)``),
and every measure takes laws: ``KL(π_a||π_b) = law_kl(q_a, q_b)``,
``E_π r_n = law_mean(q)``, win rates by :func:`win_rate`.

All maps work in log space with relative accuracy in both tails (the kernels
of :mod:`asymalign.best_of_n`), take ``log N`` (up to ``1e6`` and beyond),
batch over stacked laws and parameters by broadcasting, are jittable and
differentiable where the math is smooth. Laws are padded to a power-of-two
length bucket inside (:func:`pad_law`), so each compiles once per bucket.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.typing
import numpy as np

from ._buckets import device_array
from ._jit import jit
from ._level_base import _apply, _check_law, _check_log_n, _like
from ._level_kernels import (
    _bon_log_law,
    _bon_log_law_worst,
    _broadcast,
    _log1mexp_neg_exp,
    _log_softplus,
    _pad,
    _tails,
)
from ._validate import check_nonneg, check_real, is_concrete
from .level_measures import calibrated_reward, inference_win_rate, law_kl, law_mean, win_rate
from .sequence_laws import RewardLaw
from .tilting import _solve_lambda_b

__all__ = [
    "pad_law",
    "best_of_n",
    "best_of_poisson",
    "level_tilt",
    "LevelTilt",
    "solve_level_tilt",
    "calibrated_reward",
    "win_rate",
    "inference_win_rate",
    "law_kl",
    "law_mean",
]


# ---------------------------------------------------------------------------
# validation and plumbing
# ---------------------------------------------------------------------------


def pad_law(law: RewardLaw, length: int | None = None) -> RewardLaw:
    r"""The same law padded with zero-probability copies of its top level (THEORY.md §10).

    Equal levels are one level and ``-inf`` entries carry no mass, so padding
    changes no quantity of this package (best-of-N, win rates, KLs, means,
    tilts); a common length lets a jitted function compile once for many
    laws (e.g. every ``n`` of a sweep) instead of once per length.

    Args:
      law: a :class:`~asymalign.RewardLaw` (stacked laws pad along the last axis).
      length: the padded length (``>=`` the current one); default: the
        power-of-two bucket (at least 64) of the current length.

    Returns:
      The padded law (same ``n`` and ``fingerprint``).

    >>> import asymalign as aa
    >>> law = aa.pad_law(aa.reward_law([0.5, 0.5], [0.0, 1.0], 3))
    >>> law.levels.shape, float(aa.law_mean(law))
    ((64,), 1.5)
    """
    _check_law(law)
    size = law.levels.shape[-1]
    if length is not None and (isinstance(length, bool) or not isinstance(length, int | np.integer) or length < size):
        raise ValueError(f"length must be an integer >= the law's length {size}, got {length!r}")
    levels, log_prob = _pad(jnp.asarray(law.levels), jnp.asarray(law.log_prob), length)
    return RewardLaw(levels, log_prob, law.n, law.fingerprint)


# ---------------------------------------------------------------------------
# kernels (one 1-D law each; vectorised over batches)
# ---------------------------------------------------------------------------


def _bop_log_law(levels, log_prob, mean):
    """``log B_μ(s)``: ``B_μ = G(F(s)) - G(F(s-))``, ``log G(F) = log F - μ S``,
    with the difference ``log F(s) - log F(s-) + μ P(s)`` computed directly."""
    t = _tails(levels, log_prob)
    a = t.log_f - mean * jnp.exp(t.log_s)
    log_d = jnp.logaddexp(_log_softplus(t.log_pg - t.log_f_prev), jnp.log(mean) + t.log_pg)
    log_group = a + _log1mexp_neg_exp(log_d)
    share = jnp.where(t.log_pg > -jnp.inf, log_prob - jnp.where(t.log_pg > -jnp.inf, t.log_pg, 0.0), -jnp.inf)
    return jnp.where(log_prob > -jnp.inf, log_group + share, -jnp.inf)


def _tilt_log_law(levels, log_prob, score, beta):
    on = log_prob > -jnp.inf
    top = jnp.max(jnp.where(on, score, -jnp.inf))
    z = jnp.where(on, log_prob + jnp.where(on, score - top, 0.0) / beta, -jnp.inf)
    return z - jax.scipy.special.logsumexp(z)


_vec_bon = jit(jnp.vectorize(_bon_log_law, signature="(l),(l),()->(l)"))
_vec_won = jit(jnp.vectorize(_bon_log_law_worst, signature="(l),(l),()->(l)"))
_vec_bop = jit(jnp.vectorize(_bop_log_law, signature="(l),(l),()->(l)"))
_vec_tilt = jit(jnp.vectorize(_tilt_log_law, signature="(l),(l),(l),()->(l)"))


# ---------------------------------------------------------------------------
# methods: law -> law
# ---------------------------------------------------------------------------


def best_of_n(law: RewardLaw, log_num_samples: jax.typing.ArrayLike, *, worst: bool = False) -> RewardLaw:
    r"""Law of the level chosen by best-of-N (worst-of-N) drawing from ``law`` (THEORY.md §6, §10).

    .. math:: B_N(s) = F(s)^N - F(s-)^N, \qquad
              W_N(s) = (1 - F(s-))^N - (1 - F(s))^N,

    with ``F`` the CDF of ``law``. Applied to the reference law this is
    best-of-N on ``p^n`` (the sequence law is ``π_N(y) = p^n(y) B_N(s)/P_n(s)``);
    applied to an aligned law, best-of-N decoding of that policy. ``log N = 0``
    is the identity, ``log N -> inf`` concentrates on the top (bottom) level.
    Log space throughout: ``N log F = -exp(log N + log(-log F))``, the upper
    tail of ``F`` accumulated from the top (Beirami et al. 2024; Yang et al.
    2024 for ``N = e^{nΔ}``).

    Args:
      law: a :class:`~asymalign.RewardLaw`, or stacked laws.
      log_num_samples: ``log N >= 0`` (broadcasts against the batch).
      worst: worst-of-N (keep the lowest reward) instead of best-of-N.

    Returns:
      The law of the chosen level, over ``law``'s levels.

    >>> import asymalign as aa
    >>> law = aa.reward_law([0.5, 0.5], [0.0, 1.0], 1)
    >>> aa.best_of_n(law, jnp.log(2.0)).prob.round(12).tolist()  # best of 2
    [0.25, 0.75]
    """
    _check_law(law)
    _check_log_n(log_num_samples)
    return _apply(_vec_won if worst else _vec_bon, law, log_num_samples)


def best_of_poisson(law: RewardLaw, mean: jax.typing.ArrayLike) -> RewardLaw:
    r"""Best-of-N with ``N = 1 + Poisson(mean)`` (Khalaf et al. 2025; THEORY.md §12).

    .. math:: B_μ(s) = F(s)\, e^{-μ (1 - F(s))} - F(s-)\, e^{-μ (1 - F(s-))}
              = \sum_{k \ge 0} e^{-μ} \tfrac{μ^k}{k!} B_{k+1}(s).

    Computed as ``e^{log F(s) - μ S(s)} (1 - e^{-D})`` with
    ``D = log(F(s)/F(s-)) + μ P(s)`` formed directly (no cancellation).

    Args:
      law: a :class:`~asymalign.RewardLaw`.
      mean: ``μ >= 0`` (``μ = 0`` is the identity).

    Returns:
      The law of the chosen level.

    >>> import asymalign as aa
    >>> law = aa.reward_law([0.5, 0.5], [0.0, 1.0], 1)
    >>> bool(round(float(aa.best_of_poisson(law, 1.0).prob[0]), 12) == round(0.5 * np.exp(-0.5), 12))
    True
    """
    _check_law(law)
    check_real(mean, "mean")
    check_nonneg(mean, "mean")
    return _apply(_vec_bop, law, mean)


def level_tilt(law: RewardLaw, score: jax.typing.ArrayLike, beta: jax.typing.ArrayLike) -> RewardLaw:
    r"""KL-RL on a score of the level: ``q(s) ∝ P(s) exp(score(s) / β)`` (THEORY.md §10, §11).

    The solution of ``max_q E_q score - β KL(q || P)`` over level laws (Korbak
    et al. 2022; Yang et al. 2024). ``score = law.levels`` is standard KL-RL,
    ``q = φ_{1/β}^n`` on the levels; ``score = calibrated_reward(law)`` (or a
    transform of it, :func:`~asymalign.transformed_reward`) is the
    calibrate-and-transform family of InfAlign (Balashankar et al. 2025).

    Args:
      law: a :class:`~asymalign.RewardLaw`.
      score: a finite score per level, shape ``(..., L)`` like ``law.levels``.
      beta: the temperature ``β > 0`` (``+inf`` gives ``law`` itself).

    Returns:
      The tilted law.

    >>> import asymalign as aa
    >>> law = aa.reward_law([0.5, 0.5], [0.0, 1.0], 1)
    >>> aa.level_tilt(law, law.levels, 1 / np.log(3.0)).prob.round(12).tolist()
    [0.25, 0.75]
    """
    _check_law(law)
    _check_score(law, score)
    check_real(beta, "beta", allow_inf=True)
    if is_concrete(beta) and np.any(np.asarray(beta) <= 0):
        raise ValueError(f"beta must be > 0, got {np.min(np.asarray(beta))!r}")
    return _apply(_vec_tilt, law, beta, rows=(score,))


def _check_score(law, score) -> None:
    if np.shape(score)[-1:] != np.shape(law.levels)[-1:]:
        raise ValueError(
            f"score must have one entry per level (last axis {np.shape(law.levels)[-1]}), got shape {np.shape(score)}"
        )
    check_real(score, "score")


class LevelTilt(NamedTuple):
    """Solution of :func:`solve_level_tilt`.

    Attributes:
      beta: the temperature ``β`` with ``KL(q || P) = Δ`` (``0`` when
        ``Δ >= Δ_max``, ``+inf`` when ``Δ = 0``).
      law: the tilted law ``q``.
    """

    beta: jax.Array
    law: RewardLaw


def solve_level_tilt(law: RewardLaw, score: jax.typing.ArrayLike, delta: jax.typing.ArrayLike) -> LevelTilt:
    r"""The level tilt ``q ∝ P exp(score/β)`` with ``KL(q || P) = Δ`` (THEORY.md §3, §11).

    A 1-D root in ``λ = 1/β``, solved by :func:`~asymalign.solve_lambda` with
    the levels as the alphabet and ``score`` as the reward: ``KL = K(λ)`` is
    increasing from 0 to ``Δ_max = -log P(argmax score)``. For
    ``Δ >= Δ_max`` the answer is ``P`` conditioned on the argmax set of
    ``score`` and ``β = 0`` (``λ = +inf``), as in :func:`~asymalign.kl_rl`.
    With ``score = law.levels`` this is the KL-RL solution ``φ_{λ*}^n`` on
    the levels, with ``β = 1/(n λ*)`` for the per-token budget ``Δ/n``.
    Levels with probability below the smallest normal float (``1e-308`` in
    float64) count as unreachable here.

    Args:
      law: a :class:`~asymalign.RewardLaw`.
      score: a finite score per level, shape ``(..., L)``.
      delta: the budget ``Δ >= 0`` on ``KL(q || law)`` (total, not per token).

    Returns:
      :class:`LevelTilt` ``(beta, law)``.

    >>> import asymalign as aa
    >>> law = aa.reward_law([0.7, 0.2, 0.1], [0.0, 1.0, 2.0], 2)
    >>> sol = aa.solve_level_tilt(law, law.levels, 0.3)
    >>> round(float(aa.law_kl(sol.law, law)), 10)
    0.3
    """
    _check_law(law)
    _check_score(law, score)
    check_real(delta, "delta", allow_inf=True)
    check_nonneg(delta, "delta")
    dt = law.log_prob.dtype
    (log_p, score), (delta,) = _broadcast((law.log_prob, device_array(score, dt)), (device_array(delta, dt),))
    beta, log_q = _solve_level_tilt(log_p, score, delta)
    return LevelTilt(beta, _like(law, log_q))


@jit
def _solve_level_tilt(log_p, score, delta):
    """``(β, log q)`` of :func:`solve_level_tilt` for broadcast arguments: one executable."""
    lam = _solve_lambda_b(jnp.exp(log_p), score, delta)
    beta = 1.0 / lam
    on = log_p > -jnp.inf
    tilted = _vec_tilt(log_p, log_p, score, jnp.where(beta > 0, beta, jnp.inf))  # (its first argument is unused)
    # β = 0: P conditioned on the argmax set of the score.
    top = jnp.max(jnp.where(on, score, -jnp.inf), axis=-1, keepdims=True)
    arg = on & (score == top)
    cond = jnp.where(arg, log_p, -jnp.inf)
    cond = cond - jax.scipy.special.logsumexp(cond, axis=-1, keepdims=True)
    return beta, jnp.where((beta == 0)[..., None], cond, tilted)
