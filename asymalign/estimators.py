r"""Monte-Carlo estimators with standard errors (THEORY.md §8, §13).

The simulators of :mod:`asymalign.simulation` return per-trial outcomes; the
functions here turn them into estimates with standard errors, to be compared
with the exact laws: :func:`mc_mean` (means, e.g. ``law_mean(best_of_n(...))``),
:func:`mc_level_frequencies` (level laws), :func:`mc_win_rate` (win rates) and
the unbiased best-of-N gold estimator of Nakano et al. (2021),
:func:`bon_gold_unbiased` / :func:`mc_bon_gold_unbiased`, which estimates the
gold reward of best-of-N for every ``N <= K`` from the same ``K`` draws.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.typing
import numpy as np
from jax.scipy.special import gammaln

from . import _numerics as nx
from ._buckets import device_array
from ._jit import jit
from ._validate import check_positive_int, check_real, is_concrete
from .simulation import _check_vector, simulate_bon, simulate_draws

__all__ = [
    "Estimate",
    "LevelFrequencies",
    "mc_mean",
    "mc_level_frequencies",
    "mc_win_rate",
    "bon_gold_unbiased",
    "mc_bon_gold_unbiased",
]


class Estimate(NamedTuple):
    """A Monte-Carlo estimate: ``mean`` and its standard error ``stderr``."""

    mean: jax.Array
    stderr: jax.Array


class LevelFrequencies(NamedTuple):
    """Empirical law over given levels: ``freq`` and its standard errors ``stderr``."""

    freq: jax.Array
    stderr: jax.Array


def _default_atol(dt, *scales):
    """``sqrt(eps) · max(1, max |scale|)``: far above summation round-off, far below level gaps."""
    scale = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(s)) for s in scales], jnp.asarray(1.0, dt))
    return jnp.sqrt(jnp.finfo(dt).eps) * scale


def _check_atol(atol):
    if atol is not None:
        check_real(atol, "atol")
        if is_concrete(atol) and np.any(np.asarray(atol) < 0):
            raise ValueError(f"atol must be >= 0, got {atol!r}")


def mc_mean(x: jax.typing.ArrayLike) -> Estimate:
    r"""Sample mean and its standard error along the last axis (trials).

    .. math:: \bar x = \frac1m \sum_t x_t, \qquad
              \mathrm{se} = \sqrt{\frac{1}{m(m-1)} \sum_t (x_t - \bar x)^2}

    With ``x = simulate_bon(...).rewards`` this estimates the best-of-N reward
    ``E_{π_N}[r_n] = Σ_s B_N(s) s`` (THEORY.md §6, §8). Needs ``m >= 2``.

    >>> import asymalign as aa
    >>> est = aa.mc_mean(jnp.array([1.0, 2.0, 3.0, 4.0]))
    >>> float(est.mean), round(float(est.stderr), 6)
    (2.5, 0.645497)
    """
    x = device_array(x)
    if x.ndim == 0 or x.shape[-1] < 2:
        raise ValueError(f"x must have at least 2 samples along its last axis, got shape {x.shape}")
    return _mean(x.astype(nx.float_dtype(x)))


@jit
def _mean(x):
    m = x.shape[-1]
    mean = jnp.mean(x, axis=-1)
    var = jnp.sum((x - mean[..., None]) ** 2, axis=-1) / (m - 1)
    return Estimate(mean, jnp.sqrt(var / m))


def mc_level_frequencies(
    rewards: jax.typing.ArrayLike, levels: jax.typing.ArrayLike, atol: jax.typing.ArrayLike | None = None
) -> LevelFrequencies:
    r"""How often each level was chosen, with binomial standard errors (THEORY.md §8).

    Each reward is matched to its nearest level and counted there if within
    ``atol`` (simulated sums and exact levels differ by floating round-off):

    .. math:: \hat B(s) = \frac1m \#\{t : |x_t - s| \le \mathrm{atol}\}, \qquad
              \mathrm{se}(s) = \sqrt{\hat B(s)(1 - \hat B(s)) / m}.

    Compare ``freq`` with ``exp(best_of_n(law, log N).log_prob)`` over
    ``law.levels`` (§6). Rewards matching no level are not counted, so
    ``1 - freq.sum()`` is the unmatched fraction. Default ``atol`` is
    ``sqrt(eps) · max(1, max|levels|)`` in the working dtype.

    Args:
      rewards: chosen total rewards, shape ``(m,)``.
      levels: sorted distinct levels, shape ``(L,)`` (e.g. ``reward_law(...).levels``).
      atol: matching tolerance (>= 0).

    >>> import asymalign as aa
    >>> lf = aa.mc_level_frequencies(jnp.array([0.0, 1.0, 1.0, 2.0]), jnp.array([0.0, 1.0, 2.0]))
    >>> lf.freq.tolist()
    [0.25, 0.5, 0.25]
    """
    _check_vector(rewards, "rewards")
    _check_vector(levels, "levels")
    if np.shape(rewards)[0] < 1 or np.shape(levels)[0] < 1:
        raise ValueError("rewards and levels must be non-empty")
    check_real(rewards, "rewards")
    check_real(levels, "levels")
    if is_concrete(levels) and np.any(np.diff(np.asarray(levels)) <= 0):
        raise ValueError("levels must be sorted strictly ascending (distinct levels)")
    _check_atol(atol)
    dt = nx.float_dtype(rewards, levels)
    x, lv = device_array(rewards, dt), device_array(levels, dt)
    atol = _default_atol(dt, lv) if atol is None else device_array(atol, dt)
    return _level_frequencies(x, lv, atol)


@jit
def _level_frequencies(x, lv, atol):
    dt = x.dtype
    m, num = x.shape[0], lv.shape[0]
    hi = jnp.clip(jnp.searchsorted(lv, x), 0, num - 1)
    lo = jnp.clip(hi - 1, 0, num - 1)
    idx = jnp.where(jnp.abs(x - lv[lo]) <= jnp.abs(x - lv[hi]), lo, hi)
    hit = jnp.abs(x - lv[idx]) <= atol
    freq = jnp.zeros(num, dt).at[idx].add(hit.astype(dt)) / m
    return LevelFrequencies(freq, jnp.sqrt(freq * (1 - freq) / m))


def mc_win_rate(
    key: jax.Array,
    rewards: jax.typing.ArrayLike,
    p: jax.typing.ArrayLike,
    r: jax.typing.ArrayLike,
    n: int,
    *,
    atol: jax.typing.ArrayLike | None = None,
) -> Estimate:
    r"""Win rate of the chosen sequences against fresh reference draws (THEORY.md §6, §8).

    For each trial ``t`` draws one independent ``Y'_t ~ p^n`` (with the same
    sampler as :func:`simulate_bon`) and scores

    .. math:: w_t = 1[x_t > r_n(Y'_t)] + \tfrac12 1[x_t = r_n(Y'_t)],

    so ``mean(w)`` estimates ``P(r(Y_N) > r(Y')) + ½ P(r(Y_N) = r(Y')) =
    Σ_s B_N(s) [F(s-) + ½ P_n(s)]`` (``win_rate(best_of_n(law, log N), law)``). Equality
    is up to ``atol`` (default ``sqrt(eps) · max(1, max|x|, max|r_n(Y')|)``).
    ``key`` must be independent of the one given to :func:`simulate_bon`
    (e.g. split it).

    Args:
      key: a JAX PRNG key.
      rewards: chosen total rewards ``x_t``, shape ``(num_trials,)``, num_trials >= 2.
      p, r: the model the rewards were simulated from.
      n: sequence length.
      atol: tie tolerance (>= 0).

    Returns:
      :class:`Estimate` of the win rate.

    >>> import jax, asymalign as aa
    >>> p, r = jnp.array([0.5, 0.5]), jnp.array([0.0, 1.0])
    >>> k1, k2 = jax.random.split(jax.random.key(1))
    >>> sim = aa.simulate_bon(k1, p, r, n=4, num_samples=8, num_trials=2000)
    >>> est = aa.mc_win_rate(k2, sim.rewards, p, r, n=4)
    >>> F = jnp.array([1.0, 5, 11, 15, 16]) / 16  # CDF of r_4 ~ Binomial(4, 1/2)
    >>> Fm = jnp.append(0.0, F[:-1])
    >>> exact = jnp.sum((F**8 - Fm**8) * (F + Fm) / 2)  # Σ_s B_N(s) [F(s) + F(s-)]/2
    >>> bool(abs(est.mean - exact) < 4 * est.stderr)  # probabilistic; fixed key
    True
    """
    _check_vector(rewards, "rewards")
    num_trials = np.shape(rewards)[0]
    if num_trials < 2:
        raise ValueError(f"rewards must hold at least 2 trials, got {num_trials}")
    check_real(rewards, "rewards")
    _check_atol(atol)
    ref = simulate_bon(key, p, r, n, 1, num_trials).rewards
    dt = nx.float_dtype(rewards, ref)
    x, ref = device_array(rewards, dt), ref.astype(dt)
    atol = _default_atol(dt, x, ref) if atol is None else device_array(atol, dt)
    return _win_scores(x, ref, atol)


@jit
def _win_scores(x, ref, atol):
    d = x - ref
    w = jnp.where(jnp.abs(d) <= atol, 0.5, jnp.where(d > 0, 1.0, 0.0)).astype(x.dtype)
    return _mean(w)


# ---------------------------------------------------------------------------
# unbiased best-of-N gold (Nakano et al. 2021)
# ---------------------------------------------------------------------------


def _check_num_samples(num_samples, num_draws: int, draws_name: str):
    """``num_samples`` as a 1-D int array (and whether it was a scalar); each in ``[1, num_draws]``."""
    a = np.asarray(num_samples)
    if a.ndim > 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        raise ValueError(f"num_samples must be an integer >= 1 or a 1-D array of them, got {num_samples!r}")
    if np.any(a < 1):
        raise ValueError(f"num_samples must be >= 1, got {a.min()}")
    if np.any(a > num_draws):
        raise ValueError(f"{draws_name} must be >= num_samples (K >= N draws), got K = {num_draws} < N = {a.max()}")
    return device_array(np.atleast_1d(a)), a.ndim == 0


def bon_gold_unbiased(
    rewards: jax.typing.ArrayLike,
    gold: jax.typing.ArrayLike,
    num_samples,
    *,
    worst: bool = False,
    atol: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    r"""Unbiased best-of-N gold from ``K >= N`` draws (Nakano et al. 2021; THEORY.md §13).

    Sort the ``K`` draws of each row by proxy, ``r_(1) <= … <= r_(K)``, with
    their gold ``g_(i)``; every ``N``-subset's best is its highest-ranked draw,
    and draw ``i`` is the best of ``C(i-1, N-1)`` of the ``C(K, N)`` subsets, so

    .. math:: \hat G_N = \sum_{i=N}^{K} \frac{\binom{i-1}{N-1}}{\binom{K}{N}} g_{(i)}

    (a U-statistic) has expectation exactly ``E[G_n(Y_N)]``, the gold of
    best-of-N (worst-of-N with ``worst=True``: sorted by ``-r``). Weights in
    log space with ``gammaln``. Ties in the proxy: draws whose sorted proxies
    differ by at most ``atol`` (default ``sqrt(eps) · max(1, max|rewards|)``,
    so floating round-off of equal levels counts as a tie) share the weight of
    their group equally — the average of the estimator over uniformly random
    tie-breaks, hence still unbiased for best-of-N with any tie rule that
    ignores the gold (e.g. the first drawn, as :func:`~asymalign.simulate_bon`).

    Args:
      rewards: proxy totals of the draws, shape ``(..., K)`` (e.g. ``simulate_draws(...).rewards``).
      gold: gold totals, same shape.
      num_samples: ``N``, an integer in ``[1, K]`` or a 1-D array of them.
      worst: estimate worst-of-N instead.
      atol: tie tolerance for the proxy (>= 0).

    Returns:
      The estimate per row: shape ``(...)``, or ``(..., len(num_samples))`` for an array.

    >>> import asymalign as aa
    >>> x, g = jnp.array([[0.3, 0.1, 0.2]]), jnp.array([[1.0, 2.0, 4.0]])
    >>> est = aa.bon_gold_unbiased(x, g, jnp.array([1, 2, 3]))  # mean; (4 + 2·1)/3; best
    >>> [round(v, 12) for v in est[0].tolist()]
    [2.333333333333, 2.0, 1.0]
    """
    if np.ndim(rewards) < 1 or np.shape(rewards) != np.shape(gold):
        raise ValueError(
            f"rewards and gold must have the same shape (..., K), got {np.shape(rewards)} and {np.shape(gold)}"
        )
    check_real(rewards, "rewards")
    check_real(gold, "gold")
    _check_atol(atol)
    nums, scalar = _check_num_samples(num_samples, np.shape(rewards)[-1], "the number of draws K")
    dt = nx.float_dtype(rewards, gold)
    x, g = device_array(rewards, dt), device_array(gold, dt)
    atol = _default_atol(dt, x) if atol is None else device_array(atol, dt)
    out = _nakano(x, g, nums, atol, bool(worst))
    return out[..., 0] if scalar else out


@functools.partial(jit, static_argnames="worst")
def _nakano(x, gold, nums, atol, worst):
    dt, k = x.dtype, x.shape[-1]
    key = -x if worst else x
    order = jnp.argsort(key, axis=-1, stable=True)
    xs = jnp.take_along_axis(key, order, axis=-1).reshape(-1, k)
    gs = jnp.take_along_axis(gold, order, axis=-1).reshape(-1, k)
    # Tie groups of the sorted proxy; each draw takes its group's mean gold.
    new = jnp.concatenate([jnp.ones((xs.shape[0], 1), bool), jnp.diff(xs, axis=-1) > atol], axis=-1)
    gid = jnp.cumsum(new, axis=-1) - 1
    seg = jax.vmap(lambda v, i: jax.ops.segment_sum(v, i, num_segments=k))
    sums, counts = seg(gs, gid), seg(jnp.ones_like(gs), gid)
    gbar = jnp.take_along_axis(sums, gid, axis=-1) / jnp.take_along_axis(counts, gid, axis=-1)
    # w_i = C(i-1, N-1) / C(K, N) for i = N..K (zero below N): the log of C(i-1, N-1)
    # up to a constant, normalised in log space (Σ_i C(i-1, N-1) = C(K, N)), so
    # the weights sum to 1 to rounding and N = K gives exactly the top draw.
    i = jnp.arange(1, k + 1, dtype=dt)[None, :]
    num = nums.astype(dt)[:, None]
    on = i >= num
    log_c = jnp.where(on, gammaln(i) - gammaln(jnp.where(on, i - num + 1, 1.0)), -jnp.inf)
    w = jnp.exp(log_c - jax.nn.logsumexp(log_c, axis=-1, keepdims=True))  # (M, K)
    out = jnp.matmul(gbar, w.T, precision=jax.lax.Precision.HIGHEST)
    return out.reshape(*x.shape[:-1], nums.shape[0])


def mc_bon_gold_unbiased(
    key: jax.Array,
    p: jax.typing.ArrayLike,
    r: jax.typing.ArrayLike,
    g: jax.typing.ArrayLike,
    n: int,
    num_samples,
    num_draws: int,
    num_trials: int,
    *,
    worst: bool = False,
    chunk_size: int | None = None,
) -> Estimate:
    r"""Best-of-N gold reward by the unbiased estimator, with its standard error (THEORY.md §13).

    Each trial draws ``K = num_draws`` sequences ``~ p^n``
    (:func:`~asymalign.simulate_draws`) and computes :func:`bon_gold_unbiased`;
    the estimate is the mean over trials and the standard error their spread
    (:func:`mc_mean`). The exact value is ``Σ_s q(s) m(s)`` with ``q`` the
    best-of-N level law and ``m(s) = E[G_n | R_n = s]`` (Nakano et al. 2021;
    Gao et al. 2023 use it for the overoptimisation curves). One set of draws
    serves every ``N <= K``: pass an array of ``num_samples``.

    Args:
      key, p, r, n, chunk_size: as for :func:`~asymalign.simulate_bon`.
      g: per-token gold reward, shape ``(k,)``.
      num_samples: ``N`` (int) or a 1-D array of them, each ``<= num_draws``.
      num_draws: ``K >= N`` draws per trial.
      num_trials: independent trials (>= 2).
      worst: worst-of-N instead.

    Returns:
      :class:`Estimate`, scalar or shape ``(len(num_samples),)``.

    >>> import jax, asymalign as aa
    >>> p, r, g = jnp.array([0.5, 0.5]), jnp.array([0.0, 1.0]), jnp.array([0.0, 2.0])
    >>> est = aa.mc_bon_gold_unbiased(jax.random.key(0), p, r, g, 1, jnp.array([1, 2]), 8, 500)
    >>> bool(jnp.all(jnp.abs(est.mean - jnp.array([1.0, 1.5])) < 4 * est.stderr))  # probabilistic
    True
    """
    if g is None:
        raise ValueError("g (the per-token gold reward) is required")
    num_draws = check_positive_int(num_draws, "num_draws")
    num_trials = check_positive_int(num_trials, "num_trials", minimum=2)
    _, scalar = _check_num_samples(num_samples, num_draws, "num_draws")
    draws = simulate_draws(key, p, r, n, num_draws, num_trials, g=g, chunk_size=chunk_size)
    est = bon_gold_unbiased(draws.rewards, draws.gold, num_samples, worst=worst)
    return mc_mean(est if scalar else est.T)
