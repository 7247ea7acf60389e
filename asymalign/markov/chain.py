r"""Markov reference models: the chain pytree, its validation and the Perron root (THEORY.md §14).

A reference with memory emits ``y_1 ~ μ`` and ``y_i | y_{i-1} ~ P(y_{i-1}, ·)``,
so ``p(y_1..y_n) = μ(y_1) Π_i P(y_{i-1}, y_i)``. Every rate (scaled CGF,
cumulants, KL and Rényi rates) is the logarithm of the Perron root ``ρ`` of a
non-negative matrix. Here ``log ρ`` is computed by normalised repeated
squaring (``M^{2^j}`` tends to the rank-one ``ρ^{2^j} v uᵀ / uᵀv`` for a
primitive ``M``; 64 squarings make the direction exact to rounding) followed
by a Rayleigh quotient with the left and right Perron vectors, so the root is
selected by the Perron property, never by an eigensolver's ordering. Its
derivative is the classical ``d log ρ = uᵀ (dM) v / (ρ uᵀ v)`` (a
``custom_jvp``), with ``u`` and ``v`` the null vectors of ``M/ρ - I``
obtained from the bordered, non-singular system ``(M/ρ - I + 1 1ᵀ/k) v = 1/k``;
those solves are differentiable, so derivatives of every order are available.
"""

from __future__ import annotations

import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from .. import _numerics as nx
from .._buckets import device_array
from .._validate import check_prob, check_reward, is_concrete

__all__ = ["MarkovChain", "check_chain", "log_perron_root", "chain_fingerprint"]

_SQUARINGS = 64


@dataclasses.dataclass(frozen=True)
class MarkovChain:
    """A finite Markov chain: ``transition`` ``P`` (``k × k``, rows sum to 1) and ``initial`` ``μ`` (``k``).

    A JAX pytree (both fields are array leaves), so chains can be passed
    through ``jit`` and stacked for ``vmap``. Construct with
    ``MarkovChain(P, μ)``; the functions of :mod:`asymalign.markov` validate
    concrete chains at their boundary (:func:`check_chain`).

    >>> import jax.numpy as jnp
    >>> ch = MarkovChain(jnp.array([[0.9, 0.1], [0.2, 0.8]]), jnp.array([0.5, 0.5]))
    >>> ch.num_states
    2
    """

    transition: jax.Array
    initial: jax.Array

    @property
    def num_states(self) -> int:
        """``k``, the number of states (tokens)."""
        return int(np.shape(self.transition)[-1])

    @classmethod
    def memoryless(cls, p) -> MarkovChain:
        """The chain with identical rows ``P(x, ·) = p`` and ``μ = p`` (i.i.d. tokens)."""
        p = jnp.asarray(p)
        return cls(jnp.broadcast_to(p, p.shape[-1:] * 2), p)


jax.tree_util.register_dataclass(MarkovChain, data_fields=["transition", "initial"], meta_fields=[])


def _support_powers(a: np.ndarray, steps: int) -> np.ndarray:
    """Boolean ``a^steps > 0`` by repeated squaring."""
    out = np.eye(a.shape[0], dtype=bool)
    base = a.copy()
    while steps:
        if steps & 1:
            out = (out.astype(np.int64) @ base.astype(np.int64)) > 0
        base = (base.astype(np.int64) @ base.astype(np.int64)) > 0
        steps >>= 1
    return out


def check_chain(chain, name: str = "chain", ergodic: bool = False) -> None:
    """Validate a concrete :class:`MarkovChain` (``ValueError`` naming the rule).

    ``transition`` must be square with rows on the simplex (non-negative,
    summing to 1); ``initial`` a probability vector of length ``k``. With
    ``ergodic=True`` the chain must also be irreducible (``(I + A)^{k-1} > 0``
    for the support ``A``) and aperiodic (primitive: ``A^{(k-1)^2+1} > 0``,
    Wielandt's bound), which the rates of THEORY.md §14 need.
    """
    if not isinstance(chain, MarkovChain):
        raise ValueError(f"{name} must be an asymalign.markov.MarkovChain, got {type(chain).__name__}")
    P, mu = chain.transition, chain.initial
    if not is_concrete(P, mu):
        return
    shape = np.shape(P)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name}.transition must be a square k x k matrix, got shape {shape}")
    check_prob(P, f"{name}.transition (each row)")
    if np.shape(mu) != (shape[0],):
        raise ValueError(f"{name}.initial must have shape ({shape[0]},) to match the transition, got {np.shape(mu)}")
    check_prob(mu, f"{name}.initial")
    if ergodic:
        a = np.asarray(P) > 0
        k = shape[0]
        if not np.all(_support_powers(a | np.eye(k, dtype=bool), k - 1)):
            raise ValueError(f"{name} must be irreducible (every state reachable from every state) for rates")
        if not np.all(_support_powers(a, (k - 1) ** 2 + 1)):
            raise ValueError(f"{name} must be aperiodic (a primitive transition matrix) for rates")


def chain_fingerprint(chain, r) -> str:
    """A short hash of ``(P, μ, r)`` rounded to 12 digits (laws refuse other models)."""
    parts = [np.round(np.asarray(a, np.float64), 12).ravel() for a in (chain.transition, chain.initial, r)]
    return "markov:" + hashlib.sha1(np.concatenate(parts).tobytes()).hexdigest()[:16]


def _check_chain_reward(chain, r, ergodic=False):
    check_chain(chain, ergodic=ergodic)
    if is_concrete(r):
        if np.ndim(r) != 1:
            raise ValueError(f"r must be a 1-D per-token reward vector, got shape {np.shape(r)}")
        check_reward(r, chain.initial, "r", "chain.initial")


_MIN_STATES = 4  # concrete chains are padded to a power of two >= this many states


def padded_states(k: int) -> int:
    """The padded number of states of a concrete chain: the next power of two, at least 4."""
    return max(_MIN_STATES, 1 << max(k - 1, 0).bit_length())


def _prep(chain, r, *scalars):
    """``(P, μ, r, *scalars)`` as arrays of one floating dtype.

    Concrete chains are padded on the host to :func:`padded_states` states
    (so chains of 2, 3 and 4 states share one compiled kernel) with states no
    path can enter: zero columns and rows of ``P``, ``μ = 0``, and the reward
    of state 0. Such states add only exact zeros to every product, and the
    Perron root of the padded ``P D_λ`` and its (sum-normalised) Perron
    vectors restricted to the real states are those of the chain (THEORY.md §14).
    Per-state outputs must be cut back to ``chain.num_states``.
    """
    dt = nx.float_dtype(chain.transition, chain.initial, r, *scalars)
    arrays = (chain.transition, chain.initial, r)
    if is_concrete(*arrays, *scalars):  # host-side: no eager compilation per shape
        P, mu, rv = (np.asarray(a, np.float64) for a in arrays)
        k = P.shape[-1]
        size = padded_states(k)
        Pp = np.zeros((size, size))
        Pp[:k, :k] = P
        mup = np.concatenate([mu, np.zeros(size - k)])
        rp = np.concatenate([rv, np.full(size - k, rv[0])])
        return [device_array(x, dt) for x in (Pp, mup, rp)] + [device_array(s, dt) for s in scalars]
    out = [jnp.asarray(chain.transition, dt), jnp.asarray(chain.initial, dt), jnp.asarray(r, dt)]
    return out + [jnp.asarray(s, dt) for s in scalars]


# ---------------------------------------------------------------------------
# Perron root
# ---------------------------------------------------------------------------


def _perron_rank_one(m):
    """``M^{2^64}`` normalised (max entry 1): ``∝ v uᵀ`` for a primitive ``M``."""

    def body(_, b):
        b = b @ b
        return b / jnp.max(b)

    return jax.lax.fori_loop(0, _SQUARINGS, body, m / jnp.max(m))


def _log_rho_primal(m):
    b = _perron_rank_one(m)
    v = jnp.sum(b, axis=1)
    u = jnp.sum(b, axis=0)
    rho = (u @ m @ v) / (u @ v)
    return jnp.log(rho)


def _perron_vectors(m, log_rho):
    """Right and left Perron vectors (each summing to 1), by bordered solves."""
    k = m.shape[-1]
    a = m / jnp.exp(log_rho) - jnp.eye(k, dtype=m.dtype) + 1.0 / k
    rhs = jnp.full((k,), 1.0 / k, m.dtype)
    return jnp.linalg.solve(a, rhs), jnp.linalg.solve(a.T, rhs)


@jax.custom_jvp
def log_perron_root(m):
    r"""``log ρ(M)`` of a non-negative primitive matrix ``M`` (THEORY.md §14).

    Normalised repeated squaring gives the Perron direction, the Rayleigh
    quotient ``uᵀMv / uᵀv`` the root; derivatives follow
    ``d log ρ = uᵀ (dM) v / (ρ uᵀ v)`` to every order. Batch with ``vmap``.

    >>> import numpy as np
    >>> round(float(np.exp(log_perron_root(jnp.array([[0.5, 0.5], [0.2, 0.8]])))), 12)  # stochastic: ρ = 1
    1.0
    """
    return _log_rho_primal(m)


@log_perron_root.defjvp
def _log_perron_root_jvp(primals, tangents):
    (m,), (dm,) = primals, tangents
    lr = log_perron_root(m)
    v, u = _perron_vectors(m, lr)
    return lr, (u @ dm @ v) / (jnp.exp(lr) * (u @ v))


def _log_rho_tilted(P, r, lam):
    """``log ρ(P D_λ)``, ``D_λ = diag(e^{λ r})``, with the largest exponent factored out."""
    z = lam * r
    c = jax.lax.stop_gradient(jnp.max(z))
    return c + log_perron_root(P * jnp.exp(z - c)[None, :])
