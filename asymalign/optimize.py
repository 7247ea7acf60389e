r"""KL-regularised and KL-constrained policy optimisation with optax (THEORY.md §9).

A cross-check of the closed forms of §3 by plain optimisation. The policy is
``q = softmax(θ)`` restricted to the support of ``p`` (logits off the support
are ignored, so ``KL(q || p)`` stays finite), and

.. math::

    J_β(θ) = E_q r - β\,\mathrm{KL}(q \| p), \qquad
    \arg\max_q J_β = φ_{1/β} .

Three drivers, all jittable ``lax.scan`` loops over a static number of steps:

* :func:`optimize_policy` — exact gradients ``∇_θ J_β`` by autodiff;
* :func:`reinforce_policy` (in :mod:`asymalign.reinforce`) — sampled score-function (REINFORCE) gradients with
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

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from ._jit import jit
from ._policy import (
    PolicyOptResult,
    _check_beta,
    _check_common,
    _default_adam,
    _default_sgd,
    _init_logits,
    _kl_and_reward,
    _log_q,
    _objective,
    _prep,
    _scan_opt,
)
from ._validate import check_model, check_nonneg, is_concrete
from .reinforce import reinforce_gradient, reinforce_policy  # re-exported: the REINFORCE drivers

__all__ = [
    "PolicyOptResult",
    "policy_objective",
    "optimize_policy",
    "reinforce_policy",
    "reinforce_gradient",
    "optimize_constrained_policy",
]


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


@functools.partial(jit, static_argnames=("opt", "num_steps"))
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
    return _constrained(p, r, delta, theta0, mu0, opt=opt, dual=dual, num_steps=num_steps)


@functools.partial(jit, static_argnames=("opt", "dual", "num_steps"))
def _constrained(p, r, delta, theta0, mu0, *, opt, dual, num_steps):
    nu0 = jnp.log(mu0)

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
