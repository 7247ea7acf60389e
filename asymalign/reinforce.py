r"""KL-regularised policy optimisation with sampled REINFORCE gradients (THEORY.md §9).

:func:`reinforce_policy` maximises ``J_β(θ) = E_q r - β KL(q || p)`` over
``q = softmax(θ)`` with the unbiased score-function estimate and a
leave-one-out baseline (:func:`reinforce_gradient`),

.. math:: \hat g = \frac1m \sum_i (f(y_i) - b_i)\, ∇_θ \log q(y_i), \quad
          f = r - β \log\frac{q}{p}, \quad b_i = \frac{1}{m-1}\sum_{j≠i} f(y_j),

a jittable ``lax.scan`` over a static number of steps converging to the
closed form ``φ_{1/β}`` of §3 (Yang et al., ISIT 2024). The exact-gradient and
constrained drivers are in :mod:`asymalign.optimize`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from . import _numerics as nx
from ._jit import jit
from ._policy import (
    PolicyOptResult,
    _check_beta,
    _check_common,
    _default_cosine_adam,
    _init_logits,
    _log_q,
    _objective,
    _prep,
)
from ._validate import check_model, check_positive_int

__all__ = ["reinforce_policy", "reinforce_gradient"]


def reinforce_policy(
    key: jax.Array,
    p: ArrayLike,
    r: ArrayLike,
    beta: ArrayLike,
    num_samples: int,
    *,
    num_steps: int = 500,
    optimizer: optax.GradientTransformation | None = None,
    init_logits: ArrayLike | None = None,
    baseline: bool = True,
) -> PolicyOptResult:
    r"""Maximise ``E_q r - β KL(q || p)`` with sampled REINFORCE gradients.

    THEORY.md §9. Each step draws ``m = num_samples`` tokens ``y_i ~ q`` and
    uses the unbiased score-function estimate with a leave-one-out baseline

    .. math:: \hat g = \frac1m \sum_i (f(y_i) - b_i)\, ∇_θ \log q(y_i),
              \quad f = r - β \log\frac{q}{p},\quad
              b_i = \frac{1}{m-1}\sum_{j \ne i} f(y_j),

    (``E_q[∇ \log q] = 0`` removes the derivative of ``f`` itself). At the
    optimum ``f = r - β log(φ_{1/β}/p) = β Λ(1/β)`` is constant, so with the
    baseline the gradient noise vanishes there: the iterate converges to
    ``φ_{1/β}`` itself, not to a noise ball (far from it the noise is
    ``O(1/sqrt(m))`` per step).

    Args:
      key: a ``jax.random`` key (split inside, one key per step).
      p, r, beta: as in :func:`optimize_policy`.
      num_samples: tokens per step ``m >= 2`` (static).
      num_steps: number of steps (static).
      optimizer: optax transformation; default Adam with a cosine-decayed
        step size from ``0.05`` to ``5e-4``.
      init_logits: starting logits (default ``log p``).
      baseline: use the leave-one-out baseline (default). Without it
        (``b_i = 0``) the estimate is still unbiased but its noise does not
        vanish at the optimum, so the iterate only reaches a noise ball whose
        size is set by the final step size and ``m``.

    Returns:
      A :class:`PolicyOptResult` with the whole trajectory.

    >>> import jax, asymalign as aa
    >>> p, r = [0.7, 0.2, 0.1], [0.0, 1.0, 2.0]
    >>> res = aa.reinforce_policy(jax.random.key(0), p, r, 1.0, 64, num_steps=1000)
    >>> float(aa.kl(res.policy, aa.kl_regularized(p, r, 1.0))) < 1e-3
    True
    """
    num_steps = _check_common(p, r, num_steps)
    num_samples = check_positive_int(num_samples, "num_samples", minimum=2)
    _check_beta(beta)
    p, r, beta = _prep(p, r, beta)
    opt = _default_cosine_adam(num_steps) if optimizer is None else optimizer
    theta0 = _init_logits(p, init_logits)
    return _reinforce(key, p, r, beta, theta0, opt=opt, num_steps=num_steps, m=num_samples, baseline=bool(baseline))


def _reinforce_grad(key, th, p, r, beta, logp, m, baseline=True):
    """Leave-one-out REINFORCE estimate of ``∇_θ (-J_β)`` (the loss gradient)."""
    logq = _log_q(th, p)
    y = jax.random.categorical(key, jnp.where(p > 0, logq, -jnp.inf), shape=(m,))
    f = r[y] - beta * (logq[y] - logp[y])
    b = (jnp.sum(f) - f) / (m - 1) if baseline else 0.0
    adv = jax.lax.stop_gradient(f - b)

    def surrogate(t):
        return -jnp.mean(adv * _log_q(t, p)[y])

    return jax.grad(surrogate)(th)


def reinforce_gradient(
    key: jax.Array,
    logits: ArrayLike,
    p: ArrayLike,
    r: ArrayLike,
    beta: ArrayLike,
    num_samples: int,
    *,
    baseline: bool = True,
) -> jax.Array:
    r"""One REINFORCE estimate of ``∇_θ J_β`` with a leave-one-out baseline (THEORY.md §9).

    .. math:: \hat g = \frac1m \sum_i (f(y_i) - b_i)\, ∇_θ \log q(y_i), \quad y_i \sim q,
              \quad f = r - β \log\frac{q}{p}

    Unbiased: ``E[reinforce_gradient(...)] = jax.grad(policy_objective)(θ, p, r, β)``
    (see :func:`reinforce_policy` for the estimator), with or without the
    leave-one-out baseline ``b_i``. Williams (1992); Yang et al. (ISIT 2024)
    for the closed form it converges to.

    Args:
      key: a ``jax.random`` key.
      logits: ``θ``, shape ``(k,)``.
      p, r, beta: as in :func:`policy_objective`.
      num_samples: tokens drawn, ``m >= 2`` (static).
      baseline: use the leave-one-out baseline (default).

    Returns:
      The gradient estimate, shape ``(k,)`` (zero off ``supp p``).

    >>> import jax, asymalign as aa
    >>> p, r = [0.5, 0.5], [0.0, 1.0]
    >>> theta = jax.numpy.log(aa.kl_regularized(p, r, 1.0))  # the optimum: f is constant
    >>> g = aa.reinforce_gradient(jax.random.key(0), theta, p, r, 1.0, 8)
    >>> bool(abs(g).max() < 1e-12)
    True
    """
    check_model(p, r)
    num_samples = check_positive_int(num_samples, "num_samples", minimum=2)
    p, r, beta, logits = _prep(p, r, beta, logits)
    logp = jnp.where(p > 0, nx.masked_log(p), 0.0)
    return -_reinforce_grad(key, logits, p, r, beta, logp, num_samples, bool(baseline))


@functools.partial(jit, static_argnames=("opt", "num_steps", "m", "baseline"))
def _reinforce(key, p, r, beta, theta0, *, opt, num_steps, m, baseline):
    logp = jnp.where(p > 0, nx.masked_log(p), 0.0)

    def step(carry, k):
        th, st = carry
        g = _reinforce_grad(k, th, p, r, beta, logp, m, baseline)
        upd, st = opt.update(g, st, th)
        th = optax.apply_updates(th, upd)
        return (th, st), (jnp.exp(_log_q(th, p)), _objective(th, p, r, beta))

    keys = jax.random.split(key, num_steps)
    (th, _), (qs, obj) = jax.lax.scan(step, (theta0, opt.init(theta0)), keys)
    lam = jnp.full((num_steps,), 1.0, p.dtype) / beta
    return PolicyOptResult(qs[-1], th, qs, obj, lam)
