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

from ._validate import check_nonneg, check_real, is_concrete
from .best_of_n import (
    _bon_log_law,
    _bon_log_law_worst,
    _broadcast,
    _level_kl,
    _log1mexp_neg_exp,
    _log_softplus,
    _pad,
    _tails,
    _win_from_tails,
)
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


def _check_law(law, name: str = "law") -> None:
    if not isinstance(law, RewardLaw):
        raise ValueError(f"{name} must be a RewardLaw (from asymalign.reward_law), got {type(law).__name__}")


def _check_same_levels(law_a, law_b, name_a: str, name_b: str) -> None:
    """Two laws must be level laws of the same reference: same levels, ``n`` and model."""
    _check_law(law_a, name_a)
    _check_law(law_b, name_b)
    la, lb = np.shape(law_a.levels)[-1], np.shape(law_b.levels)[-1]
    if la != lb:
        raise ValueError(f"{name_a} and {name_b} must be over the same levels, got {la} and {lb} levels")
    if law_a.n != law_b.n:
        raise ValueError(f"{name_a} and {name_b} must have the same n, got {law_a.n} and {law_b.n}")
    fa, fb = law_a.fingerprint, law_b.fingerprint
    if fa is not None and fb is not None and fa != fb:
        raise ValueError(f"{name_a} and {name_b} come from different models (fingerprints {fa} and {fb})")
    if is_concrete(law_a.levels, law_b.levels):
        a, b = np.asarray(law_a.levels), np.asarray(law_b.levels)
        try:
            same = np.array_equal(*np.broadcast_arrays(a, b))
        except ValueError:
            same = False
        if not same:
            raise ValueError(f"{name_a} and {name_b} must be over the same levels (level values differ)")


def _check_log_n(log_num_samples) -> None:
    check_real(log_num_samples, "log_num_samples", allow_inf=True)
    check_nonneg(log_num_samples, "log_num_samples")


def _like(law: RewardLaw, log_prob) -> RewardLaw:
    """A law over ``law``'s levels with the given log-probabilities (levels broadcast to its shape)."""
    log_prob = jnp.asarray(log_prob)
    levels = jnp.broadcast_to(law.levels, jnp.broadcast_shapes(jnp.shape(law.levels), log_prob.shape))
    return RewardLaw(levels, jnp.broadcast_to(log_prob, levels.shape), law.n, law.fingerprint)


def _apply(kernel, law: RewardLaw, *params, rows=()) -> RewardLaw:
    """Pad ``law`` (and the per-level ``rows``) to its bucket, broadcast, run the
    vectorised ``kernel(levels, log_prob, *rows, *params)``, slice back."""
    length = law.levels.shape[-1]
    dt = law.log_prob.dtype
    levels, log_prob = _pad(jnp.asarray(law.levels, dt), jnp.asarray(law.log_prob))
    padded = [_pad(levels[..., :length], jnp.asarray(x, dt))[1] for x in rows]  # zeros would do; -inf is harmless
    padded = [jnp.where(jnp.isfinite(x), x, 0.0) for x in padded]
    arrays, scalars = _broadcast((levels, log_prob, *padded), [jnp.asarray(x, dt) for x in params])
    return _like(law, kernel(*arrays, *scalars)[..., :length])


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


def _calibrated(levels, log_prob):
    t = _tails(levels, log_prob)
    return jnp.exp(t.log_f_prev) + 0.5 * jnp.exp(t.log_pg)


def _win(levels, log_a, log_b):
    return _win_from_tails(_tails(levels, log_b), log_a)


def _inference_win(levels, log_q, log_ref, log_n, worst):
    bon = jax.lax.cond(worst, _bon_log_law_worst, _bon_log_law, levels, log_q, log_n)
    ref = jax.lax.cond(worst, _bon_log_law_worst, _bon_log_law, levels, log_ref, log_n)
    return _win(levels, bon, ref)


_vec_bon = jax.jit(jnp.vectorize(_bon_log_law, signature="(l),(l),()->(l)"))
_vec_won = jax.jit(jnp.vectorize(_bon_log_law_worst, signature="(l),(l),()->(l)"))
_vec_bop = jax.jit(jnp.vectorize(_bop_log_law, signature="(l),(l),()->(l)"))
_vec_tilt = jax.jit(jnp.vectorize(_tilt_log_law, signature="(l),(l),(l),()->(l)"))
_vec_calibrated = jax.jit(jnp.vectorize(_calibrated, signature="(l),(l)->(l)"))
_vec_win = jax.jit(jnp.vectorize(_win, signature="(l),(l),(l)->()"))
_vec_inference_win = jax.jit(jnp.vectorize(_inference_win, signature="(l),(l),(l),(),()->()"))


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
    (log_p, score), (delta,) = _broadcast(
        (jnp.asarray(law.log_prob), jnp.asarray(score, dt)), (jnp.asarray(delta, dt),)
    )
    lam = _solve_lambda_b(jnp.exp(log_p), score, delta)
    beta = 1.0 / lam
    tilted = level_tilt(_like(law, log_p), score, jnp.where(beta > 0, beta, jnp.inf))
    # β = 0: P conditioned on the argmax set of the score.
    on = log_p > -jnp.inf
    top = jnp.max(jnp.where(on, score, -jnp.inf), axis=-1, keepdims=True)
    arg = on & (score == top)
    cond = jnp.where(arg, log_p, -jnp.inf)
    cond = cond - jax.scipy.special.logsumexp(cond, axis=-1, keepdims=True)
    log_q = jnp.where((beta == 0)[..., None], cond, tilted.log_prob)
    return LevelTilt(beta, _like(law, log_q))


# ---------------------------------------------------------------------------
# measures
# ---------------------------------------------------------------------------


def calibrated_reward(law: RewardLaw) -> jax.Array:
    r"""The calibrated reward ``C(s) = F(s-) + P(s)/2`` over the levels (THEORY.md §11).

    The reference's mid-CDF (Balashankar et al. 2025): ``E_P C = 1/2``, and
    the standard win rate of a level policy ``q`` against ``P`` is linear,
    ``win_rate(q, P) = E_q C``. Equal levels get the same ``C``.

    >>> import asymalign as aa
    >>> aa.calibrated_reward(aa.reward_law([0.5, 0.5], [0.0, 1.0], 1)).tolist()
    [0.25, 0.75]
    """
    _check_law(law)
    length = law.levels.shape[-1]
    dt = law.log_prob.dtype
    rows, _ = _broadcast(_pad(jnp.asarray(law.levels, dt), jnp.asarray(law.log_prob)))
    return _vec_calibrated(*rows)[..., :length]


def win_rate(law_a: RewardLaw, law_b: RewardLaw) -> jax.Array:
    r"""Win rate of level policy ``a`` against ``b``, ties counting one half (THEORY.md §10).

    .. math:: W(a > b) = P(S_a > S_b) + \tfrac12 P(S_a = S_b)
              = \sum_s a(s)\,[B(s-) + \tfrac12 b(s)],

    ``B`` the CDF of ``b``, independent draws. ``win_rate(a, b) + win_rate(b, a) = 1``;
    near 1 the loss ``Σ a(s)[1 - B(s) + b(s)/2]`` is computed instead, so both
    ends keep relative accuracy. Best-of-N's win rate against the reference is
    ``win_rate(best_of_n(law, L), law)`` (``N/(N+1)`` without ties).

    >>> import asymalign as aa
    >>> law = aa.reward_law([0.5, 0.5], [0.0, 1.0], 1)
    >>> float(aa.win_rate(aa.best_of_n(law, jnp.log(2.0)), law))
    0.625
    """
    _check_same_levels(law_a, law_b, "law_a", "law_b")
    dt = jnp.result_type(law_a.log_prob, law_b.log_prob)
    levels, log_a = _pad(jnp.asarray(law_a.levels, dt), jnp.asarray(law_a.log_prob, dt))
    _, log_b = _pad(jnp.asarray(law_b.levels, dt), jnp.asarray(law_b.log_prob, dt), levels.shape[-1])
    return _vec_win(*_broadcast((levels, log_a, log_b))[0])


def inference_win_rate(
    law: RewardLaw, ref: RewardLaw, log_num_samples: jax.typing.ArrayLike, *, worst: bool = False
) -> jax.Array:
    r"""Inference-time win rate ``W_T(q) = W(T(q) > T(P))`` of §11, ``T`` best-of-N (worst-of-N).

    Both sides are decoded with ``T`` (InfAlign, Balashankar et al. 2025):

    .. math:: W_{BoN}(q) = \sum_s [Q(s)^N - Q(s-)^N]\,[F(s)^N + F(s-)^N]/2 .

    The other convention, ``T(q)`` against plain samples of ``ref``, is
    ``win_rate(best_of_n(q, L), ref)``. ``log N = 0`` gives ``win_rate(q, ref)``.

    Args:
      law: the aligned level law ``q``.
      ref: the reference law ``P`` (same levels).
      log_num_samples: ``log N >= 0``.
      worst: worst-of-N decoding instead of best-of-N.

    >>> import asymalign as aa
    >>> ref = aa.reward_law([0.5, 0.5], [0.0, 1.0], 1)
    >>> float(aa.inference_win_rate(ref, ref, jnp.log(4.0)))
    0.5
    """
    _check_same_levels(law, ref, "law", "ref")
    _check_log_n(log_num_samples)
    dt = jnp.result_type(law.log_prob, ref.log_prob)
    levels, log_q = _pad(jnp.asarray(law.levels, dt), jnp.asarray(law.log_prob, dt))
    _, log_ref = _pad(jnp.asarray(ref.levels, dt), jnp.asarray(ref.log_prob, dt), levels.shape[-1])
    rows, scalars = _broadcast((levels, log_q, log_ref), (jnp.asarray(log_num_samples, dt), jnp.asarray(worst)))
    return _vec_inference_win(*rows, *scalars)


def law_kl(law_a: RewardLaw, law_b: RewardLaw) -> jax.Array:
    r"""``KL(a || b) = Σ_s a(s) log(a(s)/b(s))`` for two laws on the same levels (THEORY.md §10).

    For level policies this is the KL between the sequence policies:
    ``KL(π_N || p^n) = law_kl(best_of_n(law, L), law)``. ``+inf`` when ``a``
    puts mass where ``b`` has none.

    >>> import asymalign as aa
    >>> law = aa.reward_law([0.5, 0.5], [0.0, 1.0], 1)
    >>> kl = float(aa.law_kl(aa.best_of_n(law, jnp.log(2.0)), law))
    >>> bool(abs(kl - (0.75 * np.log(1.5) + 0.25 * np.log(0.5))) < 1e-15)
    True
    """
    _check_same_levels(law_a, law_b, "law_a", "law_b")
    dt = jnp.result_type(law_a.log_prob, law_b.log_prob)
    return _level_kl(*_broadcast((jnp.asarray(law_a.log_prob, dt), jnp.asarray(law_b.log_prob, dt)))[0])


def law_mean(law: RewardLaw) -> jax.Array:
    r"""Expected total reward ``E r_n = Σ_s q(s) s`` of a level law (THEORY.md §10).

    Divide by ``law.n`` for the per-token reward.

    >>> import asymalign as aa
    >>> float(aa.law_mean(aa.reward_law([0.5, 0.5], [0.0, 1.0], 4)))
    2.0
    """
    _check_law(law)
    (levels, log_prob), _ = _broadcast((law.levels, law.log_prob))
    on = log_prob > -jnp.inf
    return jnp.sum(jnp.where(on, jnp.exp(log_prob) * levels, 0.0), axis=-1)
