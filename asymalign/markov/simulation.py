r"""Monte-Carlo best-of-N over paths of a Markov chain (THEORY.md §8, §14).

For each of ``num_trials`` trials, ``N = num_samples`` paths ``y_1 ~ μ``,
``y_i ~ P(y_{i-1}, ·)`` are drawn, scored by ``R_n = Σ r(y_i)``, and one of
highest score is kept (lowest with ``worst=True``; ties: the first drawn). The
exact twin is ``best_of_n(markov.reward_law(chain, r, n), log N)``.

Sampling: each token is one uint32 word ``u`` inverted through integer CDF
thresholds ``t_j = round(2^32 F_row(j))`` of its row (``μ`` for the first
token), i.e. the chain rounded to a resolution of ``2^-32``; zero-probability
transitions are never drawn. Random stream: trial ``i`` uses
``fold_in(key, i)``; its paths come in fixed blocks of
``B = min(N, max(1, 4096 // n))``, block ``b`` from ``fold_in(fold_in(key, i), b)``
(a ``(n, B)`` array of words). Blocks are processed in chunks (``lax.scan``
with a running best) and trials in ``vmap``-ped chunks (``lax.map``), so about
``chunk_size`` tokens exist at once, and the result is bit-identical for
every ``chunk_size``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .. import _numerics as nx
from .._jit import jit
from .._validate import check_positive_int
from ..simulation import BoNSimulation
from .chain import MarkovChain, _check_chain_reward

__all__ = ["simulate_bon"]

_BLOCK_TOKENS = 4096
_DEFAULT_CHUNK = 1 << 20


def _thresholds(rows: np.ndarray):
    """uint32 thresholds ``t_j`` (``j < k-1``) per row and a mask of those equal to ``2^32``."""
    cum = np.cumsum(np.asarray(rows, np.float64), axis=-1)[..., :-1]
    t = np.round(np.clip(cum, 0.0, 1.0) * 2.0**32)
    full = t >= 2.0**32
    return jnp.asarray(np.where(full, 0, t).astype(np.uint32)), jnp.asarray(full)


def _draw(words, thr, full):
    """Token = number of thresholds ``<= u`` (a full threshold is never passed)."""
    return jnp.sum((words[:, None] >= thr) & ~full, axis=-1).astype(jnp.int32)


@functools.partial(jit, static_argnames=("n", "num_samples", "num_trials", "plan", "worst", "return_tokens"))
def _simulate(key, tp, fp, ti, fi, r, *, n, num_samples, num_trials, plan, worst, return_tokens):
    block, bpc, num_chunks, tpc, num_trial_chunks = plan
    score = -r if worst else r
    neg_inf = jnp.asarray(-jnp.inf, r.dtype)

    def draw_block(trial_key, b):
        words = jax.random.bits(jax.random.fold_in(trial_key, b), (n, block), jnp.uint32)
        y0 = _draw(words[0], ti, fi)

        def step(carry, w):
            prev, s = carry
            y = _draw(w, tp[prev], fp[prev])
            return (y, s + score[y]), y

        (_, s), ys = jax.lax.scan(step, (y0, score[y0]), words[1:])
        toks = jnp.concatenate([y0[None], ys], axis=0) if return_tokens else None
        valid = b * block + jnp.arange(block) < num_samples
        return jnp.where(valid, s, neg_inf), toks

    def trial(i):
        trial_key = jax.random.fold_in(key, i)

        def step(carry, c):
            best, best_toks = carry
            b = c * bpc + jnp.arange(bpc)
            s, toks = jax.vmap(draw_block, in_axes=(None, 0))(trial_key, b)
            flat = s.reshape(-1)
            j = jnp.argmax(flat)
            better = flat[j] > best
            best = jnp.where(better, flat[j], best)
            if return_tokens:
                best_toks = jnp.where(better, toks[j // block, :, j % block], best_toks)
            return (best, best_toks), None

        init = (neg_inf, jnp.zeros((n,), jnp.int32) if return_tokens else None)
        (best, toks), _ = jax.lax.scan(step, init, jnp.arange(num_chunks))
        return (-best if worst else best), toks

    idx = jnp.arange(num_trial_chunks * tpc).reshape(num_trial_chunks, tpc)
    rewards, toks = jax.lax.map(jax.vmap(trial), idx)
    rewards = rewards.reshape(-1)[:num_trials]
    if return_tokens:
        toks = toks.reshape(-1, n)[:num_trials]
    return rewards, toks


def _check_key(key):
    dt, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    typed = dt is not None and jnp.issubdtype(dt, jax.dtypes.prng_key) and shape == ()
    if not (typed or (dt == jnp.uint32 and shape == (2,))):
        raise ValueError(
            "key must be a single JAX PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)), "
            f"got {type(key).__name__} with shape {shape}"
        )


def _plan(n, num_samples, num_trials, chunk_size):
    block = max(1, min(num_samples, _BLOCK_TOKENS // n))
    num_blocks = -(-num_samples // block)
    bpc = min(num_blocks, max(1, chunk_size // (block * n)))
    num_chunks = -(-num_blocks // bpc)
    bpc = -(-num_blocks // num_chunks)
    tpc = min(num_trials, max(1, chunk_size // (bpc * block * n)))
    num_trial_chunks = -(-num_trials // tpc)
    tpc = -(-num_trials // num_trial_chunks)
    return (block, bpc, num_chunks, tpc, num_trial_chunks)


def simulate_bon(
    key,
    chain: MarkovChain,
    r: ArrayLike,
    n: int,
    num_samples: int,
    num_trials: int,
    *,
    worst: bool = False,
    return_tokens: bool = False,
    chunk_size: int | None = None,
) -> BoNSimulation:
    r"""Simulate best-of-N (or worst-of-N) over length-``n`` paths of a chain (THEORY.md §8, §14).

    Returns the same :class:`~asymalign.BoNSimulation` as
    :func:`asymalign.simulate_bon`: ``rewards`` ``(num_trials,)`` and, with
    ``return_tokens=True``, the chosen paths ``(num_trials, n)``. Key first;
    bit-identical for every ``chunk_size`` (see the module docstring).
    The chain must be concrete (its rows are rounded to ``2^-32`` on the host).

    >>> import jax, jax.numpy as jnp
    >>> from asymalign.markov import MarkovChain
    >>> ch = MarkovChain(jnp.array([[0.9, 0.1], [0.3, 0.7]]), jnp.array([0.5, 0.5]))
    >>> sim = simulate_bon(jax.random.key(0), ch, jnp.array([0.0, 1.0]), 8, 4, 100, return_tokens=True)
    >>> sim.rewards.shape, bool(jnp.all(sim.tokens.sum(axis=1) == sim.rewards))
    ((100,), True)
    """
    _check_key(key)
    _check_chain_reward(chain, r)
    n = check_positive_int(n, "n")
    num_samples = check_positive_int(num_samples, "num_samples")
    num_trials = check_positive_int(num_trials, "num_trials")
    chunk_size = _DEFAULT_CHUNK if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
    tp, fp = _thresholds(np.asarray(chain.transition))
    ti, fi = _thresholds(np.asarray(chain.initial)[None, :])
    r = jnp.asarray(r, nx.float_dtype(r))
    rewards, toks = _simulate(
        key,
        tp,
        fp,
        ti,
        fi,
        r,
        n=n,
        num_samples=num_samples,
        num_trials=num_trials,
        plan=_plan(n, num_samples, num_trials, chunk_size),
        worst=bool(worst),
        return_tokens=bool(return_tokens),
    )
    return BoNSimulation(rewards, toks if return_tokens else None)
