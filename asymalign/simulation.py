r"""Monte-Carlo best-of-N and its relatives: genuine simulators (THEORY.md §8, §12, §13).

:func:`simulate_bon` draws, for each of ``num_trials`` independent trials,
``N = num_samples`` sequences of ``n`` i.i.d. tokens from the sampling law
``p``, scores each by its total (proxy) reward ``r_n(y) = Σ_i r(y_i)`` and
keeps one. It never uses the exact law of ``r_n``, so it is an independent
check of the exact machinery (THEORY.md §6, §7, §10–§13). Selection rules:

- best-of-N (default): one of highest reward; the chosen level has law
  ``B_N(s) = F(s)^N - F(s-)^N``; worst-of-N (``worst=True``): one of lowest
  reward, ``W_N(s) = (1 - F(s-))^N - (1 - F(s))^N``. Ties: the first drawn.
- soft best-of-N (``temperature=τ``, THEORY.md §12): ``Y_j`` with probability
  ``w_j / Σ_i w_i``, ``w = exp(r_n / τ)`` (``exp(-r_n / τ)`` with
  ``worst=True``), by the Gumbel-max rule ``argmax_j r_n(Y_j)/τ + G_j``,
  ``G_j`` i.i.d. standard Gumbel (``jax.random.gumbel``, exact up to the
  rounding of the float dtype; prefer float64 for small selection probabilities).
- Best-of-Poisson (:func:`simulate_best_of_poisson`, §12): ``N = 1 +
  Poisson(μ)`` drawn per trial (``jax.random.poisson``), then any rule above;
  exact, never truncated: each trial draws blocks until it has ``N`` samples.
- From an aligned model: pass it as the sampling law, e.g. best-of-N from the
  tilt ``φ_λ`` is ``simulate_bon(key, tilt(p, r, lam), r, ...)`` (its level
  law is ``best_of_n`` of the tilt's law, §10); the sampler rounds any law to
  ``2^-32`` exactly as it does ``p``.
- Gold reward (§13): with a per-token ``g`` the gold ``G_n = Σ_i g(y_i)`` of
  the chosen sequence is returned too; selection is always by the proxy ``r``.

:func:`simulate_draws` returns the proxy and gold totals of every draw (for the
unbiased estimator :func:`~asymalign.bon_gold_unbiased`).

Sampling: see :mod:`asymalign.sampling` (every token has the law ``c / 2^32``,
``p`` rounded to ``2^-32``; alias tables up to ``k = 2^20`` tokens).

Memory and reproducibility. Trials are processed in chunks of ``vmap``-ped
trials, and inside a trial the samples are drawn in chunks with a running
best, so at most about ``chunk_size`` tokens exist at once whatever ``N · n ·
num_trials`` is. The random stream does not depend on the chunking: trial
``i`` uses ``t_i = fold_in(key, i)``, and its samples come in fixed blocks of
``B = min(N, max(1, 4096 // n))`` sequences, block ``b`` drawn from ``k_b =
fold_in(t_i, b)`` (its Gumbel noise from ``fold_in(k_b, 1)``; the Poisson count
of trial ``i`` from ``fold_in(t_i, 2^32 - 1)``). Results are therefore
bit-identical for every ``chunk_size``, and the hard and soft rules (and
:func:`simulate_draws` with ``num_draws = N``) see the same sequences.

Compilation (issue 11): the words of block ``b`` are the first ``G·B`` of a
prefix-stable ``jax.random.bits`` draw (``G`` units per sequence), so the
simulators can hold them in static padded sizes with ``n``, ``B`` and ``N``
traced (:func:`~asymalign._sim_kernel._traced_plan`): one executable per
power-of-two bucket of ``n`` and of ``N``, the same samples bit for bit.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.typing
import numpy as np

from . import _numerics as nx
from ._buckets import bucket, device_array
from ._sim_kernel import (
    _BLOCK_TOKENS,
    _DEFAULT_CHUNK,
    _draws,
    _group_tables,
    _group_tables_host,
    _plan,
    _poisson_bucket,
    _samples_plan,
    _simulate,
    _traced_plan,
)
from ._validate import check_model, check_nonneg, check_positive_int, check_reward, is_concrete
from .sampling import _group_size, make_sampler

__all__ = [
    "BoNSimulation",
    "Draws",
    "simulate_bon",
    "simulate_best_of_poisson",
    "simulate_draws",
]

_ = _group_size  # re-exported for benchmarks/cases.py

# Largest Poisson mean (N stays far inside int32).
_MAX_POISSON_MEAN = 1e9


class BoNSimulation(NamedTuple):
    """Output of :func:`simulate_bon` and :func:`simulate_best_of_poisson`.

    Attributes:
      rewards: proxy total reward ``r_n`` of the chosen sequence, one per trial,
        shape ``(num_trials,)``, in the float dtype of ``r``.
      tokens: the chosen sequences, shape ``(num_trials, n)``, int32; ``None``
        unless ``return_tokens=True``.
      gold: gold total ``G_n = Σ_i g(y_i)`` of the chosen sequence,
        ``(num_trials,)`` in the float dtype of ``g``; ``None`` without ``g``.
      num_drawn: ``N`` of each trial, ``(num_trials,)`` int32 (constant for
        :func:`simulate_bon`, ``1 + Poisson(μ)`` for Best-of-Poisson).
    """

    rewards: jax.Array
    tokens: jax.Array | None
    gold: jax.Array | None = None
    num_drawn: jax.Array | None = None


class Draws(NamedTuple):
    """Output of :func:`simulate_draws`: proxy totals ``rewards`` and gold totals
    ``gold`` (``None`` without ``g``) of every draw, shape ``(num_trials, num_draws)``."""

    rewards: jax.Array
    gold: jax.Array | None


# ---------------------------------------------------------------------------
# public API: validation, then the jitted kernels
# ---------------------------------------------------------------------------


def _check_key(key, name="key"):
    dt = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    typed = dt is not None and jnp.issubdtype(dt, jax.dtypes.prng_key) and shape == ()
    raw = dt == jnp.uint32 and shape == (2,)
    if not (typed or raw):
        raise ValueError(
            f"{name} must be a single JAX PRNG key (jax.random.key(seed) or "
            f"jax.random.PRNGKey(seed)), got {type(key).__name__} with shape {shape}"
        )


def _check_vector(x, name):
    if np.ndim(x) != 1:
        raise ValueError(f"{name} must be a 1-D vector, got shape {np.shape(x)}")


def _prepare(key, p, r, g, n, num_trials, chunk_size):
    """Validate the common arguments; return ``(r, g, n, num_trials, chunk_size, group, sampler)``."""
    _check_key(key)
    _check_vector(p, "p")
    _check_vector(r, "r")
    check_model(p, r)
    if g is not None:
        _check_vector(g, "g")
        check_reward(g, p, "g", "p")
        g = device_array(g, nx.float_dtype(g))
    n = check_positive_int(n, "n")
    num_trials = check_positive_int(num_trials, "num_trials")
    chunk_size = _DEFAULT_CHUNK if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
    r = device_array(r, nx.float_dtype(r))
    group, sampler = make_sampler(p, n)
    return r, g, n, num_trials, chunk_size, group, sampler


def _temperature(temperature, dtype):
    if temperature is None:
        return False, device_array(np.ones((), dtype))
    if is_concrete(temperature):
        t = np.asarray(temperature)
        if t.ndim != 0 or not np.issubdtype(t.dtype, np.number) or np.isnan(t) or not t > 0:
            raise ValueError(f"temperature must be a real number > 0 (or None for hard best-of-N), got {temperature!r}")
    return True, device_array(temperature, dtype)


def _run(key, p, r, n, num_samples, num_trials, *, poisson_mean, worst, temperature, g, return_tokens, chunk_size):
    r, g, n, num_trials, chunk_size, group, sampler = _prepare(key, p, r, g, n, num_trials, chunk_size)
    soft, temperature = _temperature(temperature, r.dtype)
    poisson = poisson_mean is not None
    sizing = _poisson_bucket(poisson_mean) if poisson else bucket(num_samples)
    kw = dict(worst=bool(worst), soft=soft, poisson=poisson, return_tokens=bool(return_tokens), group=group)
    mean = device_array(poisson_mean if poisson else 0.0, r.dtype)
    samples = None if poisson else np.int32(num_samples)
    traced = _traced_plan(n, sizing, num_trials, chunk_size, r.shape[0], group)
    if traced is not None:
        # n and N traced: one compilation per bucket of n and of N (issue 11).
        shape, plan = traced
        sizes = (np.int32(n), np.int32(min(sizing, 2**30) if poisson else num_samples))
        tables = None
        if group:
            tables = (
                _group_tables_host(sampler.alias, r, g, n, group)
                if is_concrete(sampler.alias, r, g)
                else _group_tables(sampler.alias, r, g, sizes[0], group=group)
            )
        rewards, tokens, gold, counts = _simulate(
            key, sampler, r, g, mean, temperature, n=0, num_samples=0, num_trials=num_trials, plan=plan,
            samples=samples, shape=shape, sizes=sizes, tables=tables, **kw
        )  # fmt: skip
        if tokens is not None:  # padded to shape.tokens: cut to n (on the host when concrete)
            tokens = device_array(np.asarray(tokens)[:, :n]) if is_concrete(tokens) else tokens[:, :n]
        return BoNSimulation(rewards, tokens, gold, counts)
    # N traced when it does not fix the block size: one compilation per bucket of N.
    plan = None if poisson else _samples_plan(n, num_samples, num_trials, chunk_size)
    if plan is None:
        samples = None
        plan = _plan(n, sizing if poisson else num_samples, num_trials, chunk_size)
    out = _simulate(
        key,
        sampler,
        r,
        g,
        mean,
        temperature,
        n=n,
        num_samples=0 if poisson or samples is not None else num_samples,
        num_trials=num_trials,
        plan=plan,
        samples=samples,
        **kw,
    )
    return BoNSimulation(*out)


def simulate_bon(
    key: jax.Array,
    p: jax.typing.ArrayLike,
    r: jax.typing.ArrayLike,
    n: int,
    num_samples: int,
    num_trials: int,
    *,
    worst: bool = False,
    temperature: jax.typing.ArrayLike | None = None,
    g: jax.typing.ArrayLike | None = None,
    return_tokens: bool = False,
    chunk_size: int | None = None,
) -> BoNSimulation:
    r"""Simulate best-of-N, worst-of-N or soft best-of-N by genuine sampling (THEORY.md §8, §12).

    For each of ``num_trials`` independent trials, draws ``N = num_samples``
    sequences ``Y_1, …, Y_N ~ p^n`` (``N · n`` i.i.d. tokens from ``p``),
    scores them by ``r_n(y) = Σ_i r(y_i)`` and keeps

    - ``temperature=None``: one of highest score (lowest with ``worst=True``;
      among ties the first drawn). The chosen level has law ``B_N(s) = F(s)^N
      - F(s-)^N`` (``W_N`` for worst-of-N), THEORY.md §6 (Yang et al. 2024);
    - ``temperature=τ > 0``: ``Y_j`` with probability ``w_j / Σ_i w_i``,
      ``w_j = exp(± r_n(Y_j) / τ)`` (soft best-of-N, Verdun et al. 2025; ``-``
      with ``worst=True``), by Gumbel-max; level law ``soft_best_of_n`` (§12).

    With a gold reward ``g`` the gold total of the chosen sequence is returned
    too (selection stays by ``r``; THEORY.md §13). To select from an aligned
    model pass it as ``p``: ``simulate_bon(key, tilt(p, r, lam), r, ...)``.
    The function never uses an exact law, so it checks the exact machinery.

    Compiled once per shape bucket: ``n`` and ``N`` are traced (one executable
    for every ``n`` in ``[2^a, 2^(a+1))`` and every ``N`` in ``(2^(b-1), 2^b]``,
    blocks padded to the bucket's largest), except where the sampler's group of
    tokens still grows with ``n`` (``n`` below the group size, e.g. ``n < 8``
    for ``k = 3``): then once per ``n`` (and per ``N`` when ``N < 4096 // n``).
    Static besides: ``num_trials``, ``worst``, ``soft``, ``return_tokens``,
    the alphabet size, whether ``g`` is given and whether ``p`` is concrete
    (the sampler: :mod:`asymalign.sampling`); ``temperature`` is not static.
    The samples do not depend on the bucket. Memory is bounded by chunking
    (about ``chunk_size`` tokens at once, default ``2^21``); the result is
    bit-identical for every ``chunk_size`` (module docstring).

    Args:
      key: a JAX PRNG key.
      p: sampling probabilities, shape ``(k,)``; zeros are never sampled.
      r: per-token proxy rewards, shape ``(k,)``; sums in its float dtype.
      n: sequence length (>= 1).
      num_samples: ``N``, sequences drawn per trial (>= 1).
      num_trials: independent trials (>= 1).
      worst: select the lowest reward instead (worst-of-N / soft worst-of-N).
      temperature: ``None`` (hard selection) or ``τ > 0`` (``inf`` allowed: uniform).
      g: optional per-token gold reward, shape ``(k,)``, finite.
      return_tokens: also return the chosen sequences.
      chunk_size: upper bound on the tokens drawn at once (memory only).

    Returns:
      :class:`BoNSimulation` ``(rewards, tokens, gold, num_drawn)``.

    Raises ``ValueError`` naming the argument for an invalid ``p``/``r``/``g``,
    a non-positive ``n``/``num_samples``/``num_trials``/``chunk_size``, a
    ``temperature <= 0`` or a bad key. Under an outer ``jit`` values are not checked.

    >>> import jax, asymalign as aa
    >>> p, r = jnp.array([0.5, 0.5]), jnp.array([0.0, 1.0])
    >>> sim = aa.simulate_bon(jax.random.key(0), p, r, n=4, num_samples=8,
    ...                       num_trials=2000, return_tokens=True, g=1.0 - r)
    >>> sim.rewards.shape, sim.tokens.shape
    ((2000,), (2000, 4))
    >>> bool(jnp.all(sim.tokens.sum(axis=1) == sim.rewards)), bool(jnp.all(sim.gold == 4 - sim.rewards))
    (True, True)
    >>> est = aa.mc_mean(sim.rewards)
    >>> F = jnp.array([1.0, 5, 11, 15, 16]) / 16  # CDF of r_4 ~ Binomial(4, 1/2)
    >>> exact = jnp.sum(jnp.arange(5) * (F**8 - jnp.append(0.0, F[:-1]) ** 8))  # Σ_s s B_N(s)
    >>> bool(abs(est.mean - exact) < 4 * est.stderr)  # probabilistic; fixed key
    True
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    return _run(
        key,
        p,
        r,
        n,
        num_samples,
        num_trials,
        poisson_mean=None,
        worst=worst,
        temperature=temperature,
        g=g,
        return_tokens=return_tokens,
        chunk_size=chunk_size,
    )


def simulate_best_of_poisson(
    key: jax.Array,
    p: jax.typing.ArrayLike,
    r: jax.typing.ArrayLike,
    n: int,
    mean: float,
    num_trials: int,
    *,
    worst: bool = False,
    temperature: jax.typing.ArrayLike | None = None,
    g: jax.typing.ArrayLike | None = None,
    return_tokens: bool = False,
    chunk_size: int | None = None,
) -> BoNSimulation:
    r"""Simulate Best-of-Poisson: ``N = 1 + Poisson(μ)`` per trial, then best-of-N (THEORY.md §12).

    Each trial draws its own ``N_t = 1 + Poisson(mean)`` and then selects
    exactly as :func:`simulate_bon` does (hard best/worst-of-N, or soft with
    ``temperature``; optional gold ``g``). Over trials the chosen level has law
    ``B_μ(s) = F(s) e^{-μ(1-F(s))} - F(s-) e^{-μ(1-F(s-))}`` (Khalaf et al.
    2025; ``best_of_poisson``). Exact, never truncated: a trial draws blocks of
    sequences until it has ``N_t`` of them (a ``while_loop``; a vmapped chunk of
    trials runs until its largest ``N_t``). ``num_drawn`` returns the ``N_t``.

    Compiled once per size class of ``mean`` (powers of two of ``1 + μ + 8√μ
    + 8``, which fix the block size) and bucket of ``n`` (as
    :func:`simulate_bon`); the value of ``mean`` is not static.

    Args:
      key, p, r, n, num_trials, worst, temperature, g, return_tokens, chunk_size:
        as for :func:`simulate_bon`.
      mean: ``μ >= 0`` (at most ``1e9``).

    Returns:
      :class:`BoNSimulation`.

    >>> import jax, asymalign as aa
    >>> p, r = jnp.array([0.5, 0.5]), jnp.array([0.0, 1.0])
    >>> sim = aa.simulate_best_of_poisson(jax.random.key(0), p, r, n=1, mean=3.0, num_trials=4000)
    >>> est = aa.mc_mean(sim.num_drawn)  # E N = 1 + μ
    >>> bool(abs(est.mean - 4.0) < 4 * est.stderr)  # probabilistic; fixed key
    True
    >>> est = aa.mc_mean(sim.rewards)  # P(best = 1) = 1 - F(0) e^{-μ(1 - F(0))} = 1 - e^{-1.5}/2
    >>> bool(abs(est.mean - (1 - jnp.exp(-1.5) / 2)) < 4 * est.stderr)
    True
    """
    check_nonneg(mean, "mean", allow_inf=False)
    if is_concrete(mean) and (np.ndim(mean) != 0 or float(mean) > _MAX_POISSON_MEAN):
        raise ValueError(f"mean must be a real number in [0, {_MAX_POISSON_MEAN:g}], got {mean!r}")
    return _run(
        key,
        p,
        r,
        n,
        0,
        num_trials,
        poisson_mean=mean,
        worst=worst,
        temperature=temperature,
        g=g,
        return_tokens=return_tokens,
        chunk_size=chunk_size,
    )


def simulate_draws(
    key: jax.Array,
    p: jax.typing.ArrayLike,
    r: jax.typing.ArrayLike,
    n: int,
    num_draws: int,
    num_trials: int,
    *,
    g: jax.typing.ArrayLike | None = None,
    chunk_size: int | None = None,
) -> Draws:
    r"""Proxy (and gold) totals of ``num_draws`` sequences ``~ p^n`` per trial (THEORY.md §8, §13).

    Draws exactly the sequences :func:`simulate_bon` would choose from with
    ``num_samples = num_draws`` and the same key (same blocks and stream), and
    returns all their totals ``r_n(Y_j)`` (and ``G_n(Y_j)``): the input of the
    unbiased best-of-N estimators (:func:`~asymalign.bon_gold_unbiased`).
    Output memory is ``num_trials · num_draws`` values per total; tokens are
    drawn in chunks of about ``chunk_size``, bit-identically for every chunk size.

    Args:
      key, p, r, n, num_trials, g, chunk_size: as for :func:`simulate_bon`.
      num_draws: ``K``, sequences per trial (>= 1).

    Returns:
      :class:`Draws` ``(rewards, gold)``, each ``(num_trials, num_draws)`` (``gold`` ``None`` without ``g``).

    >>> import jax, asymalign as aa
    >>> p, r = jnp.array([0.5, 0.5]), jnp.array([0.0, 1.0])
    >>> d = aa.simulate_draws(jax.random.key(0), p, r, n=3, num_draws=16, num_trials=5, g=2 * r)
    >>> d.rewards.shape, bool(jnp.all(d.gold == 2 * d.rewards))
    ((5, 16), True)
    >>> best = aa.simulate_bon(jax.random.key(0), p, r, n=3, num_samples=16, num_trials=5).rewards
    >>> bool(jnp.all(d.rewards.max(axis=1) == best))
    True
    """
    num_draws = check_positive_int(num_draws, "num_draws")
    r, g, n, num_trials, chunk_size, group, sampler = _prepare(key, p, r, g, n, num_trials, chunk_size)
    block = max(1, min(num_draws, _BLOCK_TOKENS // n))
    num_blocks = -(-num_draws // block)
    bpb = min(num_blocks, max(1, chunk_size // (block * n)))
    tpb = min(num_trials, max(1, chunk_size // (bpb * block * n)))
    return Draws(
        *_draws(
            key,
            sampler,
            r,
            g,
            n=n,
            num_draws=num_draws,
            num_trials=num_trials,
            block=block,
            bpb=bpb,
            tpb=tpb,
            group=group,
        )
    )
