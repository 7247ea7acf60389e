r"""Private pieces shared by the policy optimisers (THEORY.md §9).

The softmax policy on ``supp p`` (:func:`_log_q`), the exact objective
``J_β(θ) = E_q r - β KL(q || p)``, argument checks, default optax
transformations and the trajectory record :class:`PolicyOptResult`, used by
:mod:`asymalign.optimize` (exact gradients, the constrained problem) and
:mod:`asymalign.reinforce` (sampled gradients).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _numerics as nx
from ._buckets import device_array
from ._jit import jit
from ._validate import check_model, check_nonneg, check_positive_int, is_concrete


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
    return [device_array(x, dt) for x in (p, r, *scalars)]


@jit  # an executable, cached like the drivers (eager operations would compile one each)
def _reference_logits(p):
    return jnp.where(p > 0, nx.masked_log(p), 0.0)


def _init_logits(p, init_logits):
    if init_logits is None:
        # Start at the reference: softmax(log p) = p.
        return _reference_logits(p)
    init = device_array(init_logits, p.dtype)
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


def _described(tx, text: str):
    """``tx`` with a stable ``repr``: ``text`` and optax's version.

    An optax transformation is a tuple of closures, whose ``repr`` names memory
    addresses, so the executable cache (:mod:`._jit`) cannot store a kernel that takes
    one as a static argument: every process would trace, lower and compile it again
    (about 0.1-0.4 s a kernel). The defaults below are known by their parameters. Equal
    and hashed as ``tx`` itself.
    """
    text = f"optax {optax.__version__} {text}"
    described = type(type(tx).__name__, (type(tx),), {"__slots__": (), "__repr__": lambda self: text})
    return described(*tx)


# Default optimisers are cached so that repeated calls hit the jit cache
# (optax transformations are static arguments, hashed by identity).
@functools.cache
def _default_adam(lr):
    return _described(optax.adam(lr), f"adam({lr!r})")


@functools.cache
def _default_sgd(lr):
    return _described(optax.sgd(lr), f"sgd({lr!r})")


@functools.cache
def _default_cosine_adam(num_steps):
    return _described(
        optax.adam(optax.cosine_decay_schedule(0.05, num_steps, alpha=0.01)),
        f"adam(cosine_decay_schedule(0.05, {num_steps!r}, alpha=0.01))",
    )


def _scan_opt(step, state, num_steps):
    return jax.lax.scan(step, state, None, length=num_steps)
