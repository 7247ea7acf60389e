r"""Measures of level policies: calibrated reward, win rates, KL and mean (THEORY.md §10, §11).

Every measure takes :class:`~asymalign.RewardLaw` level laws over the same
levels (see :mod:`asymalign.levels`); re-exported from there and from the
package.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.typing

from ._buckets import device_array, unpad
from ._jit import jit
from ._level_base import _check_law, _check_log_n, _check_same_levels
from ._level_kernels import _bon_log_law, _bon_log_law_worst, _broadcast, _level_kl, _pad, _tails, _win_from_tails
from .sequence_laws import RewardLaw

__all__ = ["calibrated_reward", "win_rate", "inference_win_rate", "law_kl", "law_mean"]


def _calibrated(levels, log_prob):
    t = _tails(levels, log_prob)
    return jnp.exp(t.log_f_prev) + 0.5 * jnp.exp(t.log_pg)


def _win(levels, log_a, log_b):
    return _win_from_tails(_tails(levels, log_b), log_a)


def _inference_win(levels, log_q, log_ref, log_n, worst):
    bon = jax.lax.cond(worst, _bon_log_law_worst, _bon_log_law, levels, log_q, log_n)
    ref = jax.lax.cond(worst, _bon_log_law_worst, _bon_log_law, levels, log_ref, log_n)
    return _win(levels, bon, ref)


_vec_calibrated = jit(jnp.vectorize(_calibrated, signature="(l),(l)->(l)"))
_vec_win = jit(jnp.vectorize(_win, signature="(l),(l),(l)->()"))
_vec_inference_win = jit(jnp.vectorize(_inference_win, signature="(l),(l),(l),(),()->()"))
_level_kl_jit = jit(_level_kl)  # one compilation per shape, not one per eager operation


@jit
def _law_mean(levels, log_prob):
    on = log_prob > -jnp.inf
    return jnp.sum(jnp.where(on, jnp.exp(log_prob) * levels, 0.0), axis=-1)


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
    rows, _ = _broadcast(_pad(device_array(law.levels, dt), device_array(law.log_prob)))
    return unpad(_vec_calibrated(*rows), length)


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
    levels, log_a = _pad(device_array(law_a.levels, dt), device_array(law_a.log_prob, dt))
    _, log_b = _pad(device_array(law_b.levels, dt), device_array(law_b.log_prob, dt), levels.shape[-1])
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
    levels, log_q = _pad(device_array(law.levels, dt), device_array(law.log_prob, dt))
    _, log_ref = _pad(device_array(ref.levels, dt), device_array(ref.log_prob, dt), levels.shape[-1])
    rows, scalars = _broadcast((levels, log_q, log_ref), (device_array(log_num_samples, dt), device_array(worst)))
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
    return _level_kl_jit(*_broadcast((law_a.log_prob, law_b.log_prob))[0])  # promotes the dtypes inside


def law_mean(law: RewardLaw) -> jax.Array:
    r"""Expected total reward ``E r_n = Σ_s q(s) s`` of a level law (THEORY.md §10).

    Divide by ``law.n`` for the per-token reward.

    >>> import asymalign as aa
    >>> float(aa.law_mean(aa.reward_law([0.5, 0.5], [0.0, 1.0], 4)))
    2.0
    """
    _check_law(law)
    (levels, log_prob), _ = _broadcast((law.levels, law.log_prob))
    return _law_mean(levels, log_prob)
