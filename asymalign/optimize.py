r"""KL-regularised and KL-constrained policy optimisation with optax (THEORY.md §9).

A cross-check of the closed forms of §3 by plain optimisation. The policy is
``q = softmax(θ)`` restricted to the support of ``p`` (logits off the support
are ignored, so ``KL(q || p)`` stays finite), and

.. math::

    J_β(θ) = E_q r - β\,\mathrm{KL}(q \| p), \qquad
    \arg\max_q J_β = φ_{1/β} .

Three drivers, all jittable ``lax.scan`` loops over a static number of steps:

* :func:`optimize_policy` — exact gradients ``∇_θ J_β`` by autodiff;
* :func:`reinforce_policy` — sampled score-function (REINFORCE) gradients with
  a leave-one-out baseline, ``ĝ = (1/m) Σ_i (f(y_i) - b_i) ∇_θ log q(y_i)``,
  ``f = r - β log(q/p)``, ``b_i = mean_{j≠i} f(y_j)`` (unbiased);
* :func:`optimize_constrained_policy` — the budgeted problem
  ``max E_q r  s.t. KL(q||p) <= Δ`` through its Lagrangian
  ``L(θ, μ) = E_q r - μ (KL(q||p) - Δ)``, ascent in ``θ``, descent in
  ``log μ``; converges to ``φ_{λ*}`` with ``λ* = 1/μ*`` (§3).

Each returns a :class:`PolicyOptResult` holding the whole trajectory, so the
distance to the closed form can be plotted against steps.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from . import _numerics as nx
from ._validate import check_model, check_nonneg, check_positive_int, is_concrete

__all__ = [
    "PolicyOptResult",
    "policy_objective",
    "optimize_policy",
    "reinforce_policy",
    "reinforce_gradient",
    "optimize_constrained_policy",
]


class PolicyOptResult(NamedTuple):
    """Trajectory of a policy optimisation (THEORY.md §9).

    Attributes:
      policy: final policy ``q = softmax(θ)``, shape ``(k,)``.
      logits: final logits ``θ``, shape ``(k,)`` (off-support entries are
        carried along but ignored).
      policies: policy after each step, shape ``(num_steps, k)``.
      objective: the exact objective after each step, shape ``(num_steps,)``:
        ``E_q r - β KL(q||p)`` for the regularised drivers, the Lagrangian
        ``E_q r - μ (KL(q||p) - Δ)`` for the constrained one.
      lam: the tilt parameter the iterate is aiming at after each step,
        shape ``(num_steps,)``: ``1/β`` (constant) for the regularised
        drivers, ``1/μ_t`` for the constrained one.
    """

    policy: jax.Array
    logits: jax.Array
    policies: jax.Array
    objective: jax.Array
    lam: jax.Array


# ---------------------------------------------------------------------------
# private pieces
# ---------------------------------------------------------------------------


def _log_q(logits, p):
    """``log softmax(θ)`` over ``supp p``; ``-inf`` off the support (grad-safe)."""
    on = p > 0
    z = jnp.where(on, logits, -jnp.inf)
    zmax = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    zs = jnp.where(on, logits - zmax, 0.0)
    lse = jnp.log(jnp.sum(jnp.where(on, jnp.exp(zs), 0.0), axis=-1, keepdims=True))
    return jnp.where(on, zs - lse, -jnp.inf)


def _kl_and_reward(logits, p, r):
    logq = _log_q(logits, p)
    q = jnp.exp(logq)
    logp = nx.masked_log(p)
    on = p > 0
    diff = jnp.where(on, logq - jnp.where(on, logp, 0.0), 0.0)
    kl = jnp.sum(jnp.where(on, q * diff, 0.0), axis=-1)
    reward = jnp.sum(jnp.where(on, q * r, 0.0), axis=-1)
    return kl, reward


def _objective(logits, p, r, beta):
    kl, reward = _kl_and_reward(logits, p, r)
    return reward - beta * kl


def _prep(p, r, *scalars):
    dt = nx.float_dtype(p, r, *scalars)
    return [jnp.asarray(x, dt) for x in (p, r, *scalars)]


def _init_logits(p, init_logits):
    if init_logits is None:
        # Start at the reference: softmax(log p) = p.
        return jnp.where(p > 0, nx.masked_log(p), 0.0)
    init = jnp.asarray(init_logits, p.dtype)
    if is_concrete(init) and init.shape != p.shape:
        raise ValueError(f"init_logits must have shape {p.shape}, got {init.shape}")
    return init


def _check_common(p, r, num_steps):
    check_model(p, r)
    if np.ndim(p) != 1:
        raise ValueError(f"p must be a single distribution of shape (k,), got shape {jnp.shape(p)}")
    return check_positive_int(num_steps, "num_steps")


def _check_beta(beta):
    check_nonneg(beta, "beta", allow_inf=False)
    if is_concrete(beta) and float(beta) == 0:
        raise ValueError("beta must be > 0")


# Default optimisers are cached so that repeated calls hit the jit cache
# (optax transformations are static arguments, hashed by identity).
@functools.cache
def _default_adam(lr):
    return optax.adam(lr)


@functools.cache
def _default_sgd(lr):
    return optax.sgd(lr)


@functools.cache
def _default_cosine_adam(num_steps):
    return optax.adam(optax.cosine_decay_schedule(0.05, num_steps, alpha=0.01))


def _scan_opt(step, state, num_steps):
    return jax.lax.scan(step, state, None, length=num_steps)


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def policy_objective(logits: ArrayLike, p: ArrayLike, r: ArrayLike, beta: ArrayLike) -> jax.Array:
    r"""KL-regularised objective of a softmax policy (THEORY.md §3, §9).

    .. math:: J_β(θ) = E_q r - β\,\mathrm{KL}(q \| p), \qquad q = \mathrm{softmax}(θ) \text{ on } \mathrm{supp}\, p

    ``q`` lives on ``supp p`` (logits elsewhere are ignored). Maximised by
    ``q = φ_{1/β}``, where its value is ``β Λ(1/β)`` (Yang et al., ISIT 2024).
    Differentiable in ``logits`` (``jax.grad`` gives the exact policy gradient).

    Args:
      logits: ``θ``, shape ``(k,)``.
      p: reference, shape ``(k,)`` (zeros allowed).
      r: per-token reward, shape ``(k,)``.
      beta: regularisation strength ``β > 0``.

    Returns:
      ``J_β(θ)``, a scalar.

    >>> import jax.numpy as jnp, asymalign as aa
    >>> p, r = jnp.array([0.5, 0.5]), jnp.array([0.0, 1.0])
    >>> bool(jnp.isclose(aa.policy_objective(jnp.log(aa.tilt(p, r, 1.0)), p, r, 1.0),
    ...                  aa.log_partition(p, r, 1.0)))
    True
    """
    check_model(p, r)
    p, r, beta, logits = _prep(p, r, beta, logits)
    return _objective(logits, p, r, beta)


def optimize_policy(
    p: ArrayLike,
    r: ArrayLike,
    beta: ArrayLike,
    *,
    num_steps: int = 500,
    optimizer: optax.GradientTransformation | None = None,
    init_logits: ArrayLike | None = None,
) -> PolicyOptResult:
    r"""Maximise ``E_q r - β KL(q || p)`` over ``q = softmax(θ)`` with exact gradients.

    .. math:: \max_θ\ E_q r - β\,\mathrm{KL}(q \| p), \qquad q = \mathrm{softmax}(θ)

    THEORY.md §9: converges to the closed form ``φ_{1/β}`` (:func:`kl_regularized`;
    Yang et al., ISIT 2024).
    Gradients come from ``jax.grad`` of :func:`policy_objective`; the loop is a
    ``lax.scan`` of ``num_steps`` optax updates starting from ``θ = log p``
    (the reference) unless ``init_logits`` is given.

    Args:
      p: reference, shape ``(k,)`` (zeros allowed).
      r: per-token reward, shape ``(k,)``.
      beta: regularisation strength ``β > 0``.
      num_steps: number of optimiser steps (static).
      optimizer: an optax transformation (it *minimises* ``-J``); default
        ``optax.adam(0.05)``.
      init_logits: starting logits, shape ``(k,)``.

    Returns:
      A :class:`PolicyOptResult` with the whole trajectory.

    >>> import asymalign as aa
    >>> res = aa.optimize_policy([0.7, 0.2, 0.1], [0.0, 1.0, 2.0], 1.0, num_steps=2000)
    >>> float(aa.kl(res.policy, aa.kl_regularized([0.7, 0.2, 0.1], [0.0, 1.0, 2.0], 1.0))) < 1e-6
    True
    """
    num_steps = _check_common(p, r, num_steps)
    _check_beta(beta)
    p, r, beta = _prep(p, r, beta)
    opt = _default_adam(0.05) if optimizer is None else optimizer
    theta0 = _init_logits(p, init_logits)
    return _optimize_policy(p, r, beta, theta0, opt=opt, num_steps=num_steps)


@functools.partial(jax.jit, static_argnames=("opt", "num_steps"))
def _optimize_policy(p, r, beta, theta0, *, opt, num_steps):
    loss = lambda th: -_objective(th, p, r, beta)  # noqa: E731

    def step(carry, _):
        th, st = carry
        g = jax.grad(loss)(th)
        upd, st = opt.update(g, st, th)
        th = optax.apply_updates(th, upd)
        return (th, st), (jnp.exp(_log_q(th, p)), -loss(th))

    (th, _), (qs, obj) = _scan_opt(step, (theta0, opt.init(theta0)), num_steps)
    lam = jnp.full((num_steps,), 1.0, p.dtype) / beta
    return PolicyOptResult(qs[-1], th, qs, obj, lam)


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


@functools.partial(jax.jit, static_argnames=("opt", "num_steps", "m", "baseline"))
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


def optimize_constrained_policy(
    p: ArrayLike,
    r: ArrayLike,
    delta: ArrayLike,
    *,
    num_steps: int = 3000,
    optimizer: optax.GradientTransformation | None = None,
    dual_optimizer: optax.GradientTransformation | None = None,
    init_logits: ArrayLike | None = None,
    init_multiplier: ArrayLike = 1.0,
) -> PolicyOptResult:
    r"""``max E_q r  s.t.  KL(q||p) <= Δ`` through its Lagrangian (THEORY.md §3, §9).

    .. math:: L(θ, μ) = E_q r - μ\,(\mathrm{KL}(q\|p) - Δ), \qquad μ = e^{ν} > 0,

    by simultaneous gradient ascent in ``θ`` and descent in ``ν = log μ``
    (exact gradients, two optax transformations; the default plain-SGD dual
    step avoids the limit cycles Adam produces on the multiplier). For fixed ``μ`` the
    maximiser is ``φ_{1/μ}``; at the saddle point ``KL(φ_{1/μ*}||p) = Δ``, so
    the iterate converges to the KL-RL solution ``φ_{λ*}``, ``λ* = 1/μ*``
    (:func:`kl_rl`). Requires ``0 < Δ < Δ_max`` (at ``Δ >= Δ_max`` the
    optimum ``λ* = inf`` is only approached, never reached). Yang et al.
    (ISIT 2024) for the closed form.

    Args:
      p, r: reference and reward, shape ``(k,)``.
      delta: KL budget ``Δ > 0``.
      num_steps: number of steps (static).
      optimizer: primal optax transformation (default ``optax.adam(0.05)``).
      dual_optimizer: for ``ν = log μ`` (default ``optax.sgd(0.05)``).
      init_logits: starting logits (default ``log p``).
      init_multiplier: starting ``μ > 0``.

    Returns:
      :class:`PolicyOptResult` whose ``objective`` is the Lagrangian and whose
      ``lam`` is ``1/μ_t``.

    >>> import asymalign as aa
    >>> p, r = [0.7, 0.2, 0.1], [0.0, 1.0, 2.0]
    >>> res = aa.optimize_constrained_policy(p, r, 0.2)
    >>> float(aa.kl(res.policy, aa.kl_rl(p, r, 0.2).policy)) < 1e-6
    True
    """
    num_steps = _check_common(p, r, num_steps)
    check_nonneg(delta, "delta", allow_inf=False)
    check_nonneg(init_multiplier, "init_multiplier", allow_inf=False)
    if is_concrete(init_multiplier) and float(init_multiplier) == 0:
        raise ValueError("init_multiplier must be > 0")
    p, r, delta, mu0 = _prep(p, r, delta, init_multiplier)
    opt = _default_adam(0.05) if optimizer is None else optimizer
    dual = _default_sgd(0.05) if dual_optimizer is None else dual_optimizer
    theta0 = _init_logits(p, init_logits)
    return _constrained(p, r, delta, theta0, jnp.log(mu0), opt=opt, dual=dual, num_steps=num_steps)


@functools.partial(jax.jit, static_argnames=("opt", "dual", "num_steps"))
def _constrained(p, r, delta, theta0, nu0, *, opt, dual, num_steps):
    def lagrangian(th, nu):
        kl, reward = _kl_and_reward(th, p, r)
        return reward - jnp.exp(nu) * (kl - delta)

    def step(carry, _):
        th, nu, st, dst = carry
        g_th, g_nu = jax.grad(lagrangian, argnums=(0, 1))(th, nu)
        upd, st = opt.update(-g_th, st, th)  # ascent in θ
        dupd, dst = dual.update(g_nu, dst, nu)  # descent in ν
        th = optax.apply_updates(th, upd)
        nu = optax.apply_updates(nu, dupd)
        return (th, nu, st, dst), (jnp.exp(_log_q(th, p)), lagrangian(th, nu), jnp.exp(-nu))

    carry = (theta0, nu0, opt.init(theta0), dual.init(nu0))
    (th, _, _, _), (qs, obj, lam) = _scan_opt(step, carry, num_steps)
    return PolicyOptResult(qs[-1], th, qs, obj, lam)
