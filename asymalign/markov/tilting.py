r"""Tilting a Markov reference: scaled CGF, KL-RL (finite ``n`` and the limit), rate function (THEORY.md §14).

With ``D_λ = diag(e^{λ r})`` the log-partition of ``R_n = Σ_i r(y_i)`` is
``Λ_n(λ) = log (μ ∘ e^{λ r})ᵀ (P D_λ)^{n-1} 1`` and the scaled CGF
``Λ(λ) = lim Λ_n/n = log ρ(P D_λ)`` (Perron root, :func:`log_perron_root`).
Its derivatives are the scaled cumulants; ``K(λ) = λΛ'(λ) - Λ(λ)`` is the KL
rate of the Doob transform (the limiting KL-RL policy) to ``P``.
Reference: Yang et al., "Asymptotics of Language Model Alignment" (ISIT 2024),
extended to references with memory; Dembo & Zeitouni, *Large Deviations*, §3.1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from .. import _numerics as nx
from .._buckets import device_array
from .._jit import jit
from .._validate import check_nonneg, check_positive_int, check_real, is_concrete
from ._solve import derivs2, far_tilt, solve_increasing
from .chain import MarkovChain, _check_chain_reward, _log_rho_tilted, _perron_vectors, _prep, log_perron_root

__all__ = [
    "scaled_cgf",
    "log_partition",
    "scaled_cumulants",
    "kl_rate",
    "solve_lambda",
    "doob_transform",
    "rate_function",
    "kl_rl",
    "MarkovKLRL",
]

_POWER_BITS = 48  # n < 2^48


def _cgf(P, r, lam):
    return _log_rho_tilted(P, r, lam)


def scaled_cgf(chain: MarkovChain, r: ArrayLike, t: ArrayLike, lam: ArrayLike = 0.0) -> jax.Array:
    r"""Scaled CGF of ``R_n`` under the tilted chain: ``Λ(λ+t) - Λ(λ)``, ``Λ(λ) = log ρ(P D_λ)`` (THEORY.md §14).

    ``lim (1/n) log E_{q_λ} e^{t R_n}``, the Perron root selected by the
    Perron property (not an eigensolver's ordering). Needs an irreducible
    aperiodic chain. Scalar ``t`` and ``lam``; ``vmap`` for grids.

    >>> import jax.numpy as jnp
    >>> ch = MarkovChain(jnp.array([[0.5, 0.5], [0.5, 0.5]]), jnp.array([0.5, 0.5]))
    >>> round(float(scaled_cgf(ch, jnp.array([0.0, 1.0]), 1.0)), 12)  # log((1 + e)/2)
    0.620114506958
    """
    _check_chain_reward(chain, r, ergodic=True)
    check_real(t, "t")
    check_real(lam, "lam")
    P, _, r, t, lam = _prep(chain, r, t, lam)
    return _scaled_cgf_jit(P, r, t, lam)


def _log_partition(P, mu, r, lam, n):
    """``Λ_n(λ)`` by binary powering of ``P D_λ`` in log space (``n`` may be traced).

    Log space, not a rescaled linear product: at the far tilt ``e^{λ(r - max r)}``
    underflows for every state a short path can reach when the best state is
    several steps away (or outside the support of ``μ``), and a linear product
    would turn that into ``0/0``."""
    z = lam * r
    log_m = nx.masked_log(P) + z[None, :]
    log_a = nx.masked_log(mu) + z
    e = jnp.asarray(n, jnp.int64 if jax.config.jax_enable_x64 else jnp.int32) - 1

    def body(i, s):
        vec, base = s
        bit = (e >> i) & 1
        vec = jnp.where(bit == 1, nx.logsumexp0(vec[:, None] + base, axis=0), vec)
        return vec, nx.logsumexp0(base[:, :, None] + base[None, :, :], axis=1)

    vec, _ = jax.lax.fori_loop(0, _POWER_BITS, body, (log_a, log_m))
    return nx.logsumexp0(vec, axis=0)


def log_partition(chain: MarkovChain, r: ArrayLike, lam: ArrayLike, n: int) -> jax.Array:
    r"""Exact finite-``n`` log-partition ``Λ_n(λ) = log E_p e^{λ R_n}`` (THEORY.md §14).

    ``Λ_n(λ) = log (μ ∘ e^{λr})ᵀ (P D_λ)^{n-1} 1``.

    Binary powering with a running log scale: ``O(k³ log n)``, exact to
    rounding for every ``n`` (``n`` is not a compile-time constant, so a jitted
    caller compiles once for all ``n``). Differentiable in ``λ``: ``Λ_n'`` is
    ``E_{q_λ} R_n``.

    >>> import jax.numpy as jnp
    >>> ch = MarkovChain(jnp.array([[0.5, 0.5], [0.5, 0.5]]), jnp.array([0.5, 0.5]))
    >>> round(float(log_partition(ch, jnp.array([0.0, 1.0]), 1.0, 3)), 10)  # 3 log((1 + e)/2)
    1.8603435209
    """
    _check_chain_reward(chain, r)
    check_real(lam, "lam")
    if is_concrete(n):
        check_positive_int(n, "n")
    P, mu, r, lam = _prep(chain, r, lam)
    return _log_partition_jit(P, mu, r, lam, n)


def scaled_cumulants(chain: MarkovChain, r: ArrayLike, order: int, lam: ArrayLike = 0.0) -> jax.Array:
    r"""The scaled cumulants ``lim κ_j(R_n)/n = Λ^{(j)}(λ)``, ``j = 1..order`` (THEORY.md §14).

    Nested autodiff of ``log ρ(P D_λ)`` through the Perron-root ``custom_jvp``:
    ``Λ'`` is the stationary mean reward of the tilted chain, ``Λ''`` the
    asymptotic variance of ``R_n/√n`` (including autocorrelations).
    Returns shape ``(order,)``.

    >>> import jax.numpy as jnp
    >>> ch = MarkovChain(jnp.array([[0.5, 0.5], [0.5, 0.5]]), jnp.array([0.5, 0.5]))
    >>> scaled_cumulants(ch, jnp.array([0.0, 1.0]), 2).round(12).tolist()
    [0.5, 0.25]
    """
    _check_chain_reward(chain, r, ergodic=True)
    order = check_positive_int(order, "order")
    check_real(lam, "lam")
    P, _, r, lam = _prep(chain, r, lam)
    return _cumulants_jit(P, r, lam, order)


def _kl_rate(P, r, lam):
    v, d, _ = derivs2(lambda x: _cgf(P, r, x), lam)
    return lam * d - v


def kl_rate(chain: MarkovChain, r: ArrayLike, lam: ArrayLike) -> jax.Array:
    r"""KL rate of the Doob transform to the reference: ``K(λ) = λ Λ'(λ) - Λ(λ)`` (THEORY.md §14).

    ``lim (1/n) KL(q_λ ‖ p)`` for the tilted path law ``q_λ ∝ p e^{λ R_n}``.

    >>> import jax.numpy as jnp
    >>> ch = MarkovChain(jnp.array([[0.5, 0.5], [0.5, 0.5]]), jnp.array([0.5, 0.5]))
    >>> float(kl_rate(ch, jnp.array([0.0, 1.0]), 0.0))
    0.0
    """
    _check_chain_reward(chain, r, ergodic=True)
    check_real(lam, "lam")
    P, _, r, lam = _prep(chain, r, lam)
    return _kl_rate_jit(P, r, lam)


def _solve_lambda(P, r, delta):
    far = far_tilt(r, P.dtype)
    kmax = _kl_rate(P, r, far)

    def gd(x):
        v, d, dd = derivs2(lambda y: _cgf(P, r, y), x)
        return x * d - v - delta, x * dd

    var0 = derivs2(lambda y: _cgf(P, r, y), jnp.zeros_like(delta))[2]
    x0 = jnp.sqrt(2.0 * delta / jnp.maximum(var0, 1e-300))
    lam = solve_increasing(gd, jnp.zeros_like(far), far, x0)
    return jnp.where(delta <= 0, 0.0, jnp.where(delta >= kmax, jnp.inf, lam))


def solve_lambda(chain: MarkovChain, r: ArrayLike, delta: ArrayLike) -> jax.Array:
    r"""``λ*`` with KL rate ``K(λ*) = λΛ'(λ) - Λ(λ) = Δ`` (per-token budget, ``n → ∞``; THEORY.md §14).

    Bracketed Newton on ``λ >= 0``. Returns ``+inf`` when ``Δ`` reaches the
    largest KL rate ``lim_{λ→∞} K(λ)`` (all mass on the maximum-mean cycles).
    Scalar ``delta``; ``jax.vmap`` over instances.

    >>> import jax.numpy as jnp
    >>> ch = MarkovChain(jnp.array([[0.9, 0.1], [0.3, 0.7]]), jnp.array([0.5, 0.5]))
    >>> r = jnp.array([0.0, 1.0])
    >>> lam = solve_lambda(ch, r, 0.05)
    >>> round(float(kl_rate(ch, r, lam)), 10)
    0.05
    """
    _check_chain_reward(chain, r, ergodic=True)
    check_nonneg(delta, "delta")
    P, _, r, delta = _prep(chain, r, delta)
    return _solve_lambda_jit(P, r, delta)


def doob_transform(chain: MarkovChain, r: ArrayLike, lam: ArrayLike) -> MarkovChain:
    r"""The limiting KL-RL policy: ``P̃(x, y) = P(x, y) e^{λ r(y)} v(y) / (ρ v(x))`` (THEORY.md §14).

    ``v`` is the right Perron vector of ``P D_λ``. The initial law is the
    limit of the finite-``n`` one, ``μ̃ ∝ μ ∘ e^{λ r} ∘ v``. Its KL rate to
    ``P`` is :func:`kl_rate` and its stationary mean reward ``Λ'(λ)``.

    >>> import jax.numpy as jnp
    >>> ch = MarkovChain(jnp.array([[0.9, 0.1], [0.3, 0.7]]), jnp.array([0.5, 0.5]))
    >>> d = doob_transform(ch, jnp.array([0.0, 1.0]), 1.0)
    >>> d.transition.sum(axis=1).round(12).tolist()
    [1.0, 1.0]
    """
    _check_chain_reward(chain, r, ergodic=True)
    check_real(lam, "lam")
    k = chain.num_states
    P, mu, r, lam = _prep(chain, r, lam)
    q, init = _doob_jit(P, mu, r, lam)
    if q.shape[-1] != k:  # padded states (never entered) cut off on the host
        q, init = device_array(np.asarray(q)[:k, :k]), device_array(np.asarray(init)[:k])
    return MarkovChain(q, init)


@jit
def _doob_jit(P, mu, r, lam):
    z = lam * r
    w = jnp.exp(z - jnp.max(z))
    m = P * w[None, :]
    lr = log_perron_root(m)
    v, _ = _perron_vectors(m, lr)
    v = jnp.maximum(v, 0.0)
    q = m * v[None, :]
    q = q / jnp.sum(q, axis=1, keepdims=True)
    init = mu * w * v
    return q, init / jnp.sum(init)


def _rate(P, r, x, lam):
    far = far_tilt(r, P.dtype)
    lam_fn = lambda y: _cgf(P, r, y)  # noqa: E731
    hi_mean = jax.grad(lam_fn)(lam + far)
    lo_mean = jax.grad(lam_fn)(lam - far)

    def gd(s):
        _, d, dd = derivs2(lam_fn, s)
        return d - x, dd

    s = solve_increasing(gd, lam - far, lam + far, lam)
    val = (s - lam) * x - lam_fn(s) + lam_fn(lam)
    tol = 1e3 * jnp.finfo(P.dtype).eps * (jnp.abs(hi_mean) + jnp.abs(lo_mean) + 1.0)
    outside = (x > hi_mean + tol) | (x < lo_mean - tol)
    return jnp.where(outside, jnp.inf, jnp.maximum(val, 0.0))


def rate_function(chain: MarkovChain, r: ArrayLike, x: ArrayLike, lam: ArrayLike = 0.0) -> jax.Array:
    r"""Gärtner–Ellis rate function of ``R_n/n`` under the tilted chain (THEORY.md §14).

    ``I_λ(x) = sup_t [t x - Λ(λ+t) + Λ(λ)]``.

    Solved at the tilt ``s`` with ``Λ'(s) = x`` (bracketed Newton); ``+inf``
    outside ``[Λ'(-∞), Λ'(+∞)]`` (the minimum and maximum cycle means).
    Scalar ``x``; ``vmap`` for grids.

    >>> import jax.numpy as jnp
    >>> ch = MarkovChain(jnp.array([[0.9, 0.1], [0.3, 0.7]]), jnp.array([0.5, 0.5]))
    >>> float(rate_function(ch, jnp.array([0.0, 1.0]), 0.25)) < 1e-12  # the mean
    True
    """
    _check_chain_reward(chain, r, ergodic=True)
    check_real(x, "x")
    check_real(lam, "lam")
    P, _, r, x, lam = _prep(chain, r, x, lam)
    return _rate_jit(P, r, x, lam)


class MarkovKLRL(NamedTuple):
    """Exact finite-``n`` KL-RL solution on a chain (:func:`kl_rl`).

    Attributes:
      lam: ``λ_n`` with ``λ Λ_n'(λ) - Λ_n(λ) = nΔ`` (``inf`` when ``nΔ`` reaches the maximum).
      reward: per-token reward ``Λ_n'(λ_n)/n = E_q R_n / n``.
      kl: per-token ``KL(q ‖ p)/n``.
      initial: ``q(y_1)``, shape ``(k,)``.
      transitions: ``q(y_i | y_{i-1})`` for ``i = 2..n``, shape ``(n-1, k, k)``.
    """

    lam: jax.Array
    reward: jax.Array
    kl: jax.Array
    initial: jax.Array
    transitions: jax.Array


def _finite_lambda(P, mu, r, n, delta):
    far = far_tilt(r, P.dtype)
    nn = jnp.asarray(n, P.dtype)

    def k_n(x):
        v, d, dd = derivs2(lambda y: _log_partition(P, mu, r, y, n), x)
        return x * d - v, x * dd

    kmax = k_n(far)[0]

    def gd(x):
        g, dg = k_n(x)
        return g - nn * delta, dg

    var0 = derivs2(lambda y: _log_partition(P, mu, r, y, n), jnp.zeros_like(delta))[2]
    x0 = jnp.sqrt(2.0 * nn * delta / jnp.maximum(var0, 1e-300))
    lam = solve_increasing(gd, jnp.zeros_like(far), far, x0)
    return jnp.where(delta <= 0, 0.0, jnp.where(nn * delta >= kmax, jnp.inf, lam)), far


def _messages(P, mu, r, lam, n: int):
    """Log backward messages ``h_i`` and the non-homogeneous transitions of ``q_λ``."""
    logP = nx.masked_log(P)
    z = lam * r

    def step(log_h, _):
        a = logP + (z + log_h)[None, :]  # (x, y)
        log_prev = logsumexp(a, axis=1)
        q = jnp.exp(a - log_prev[:, None])
        return log_prev - jnp.max(log_prev), q

    log_h1, qs = jax.lax.scan(step, jnp.zeros_like(r), None, length=n - 1, reverse=True)
    a1 = nx.masked_log(mu) + z + log_h1
    return jnp.exp(a1 - logsumexp(a1)), qs


def kl_rl(chain: MarkovChain, r: ArrayLike, n: int, delta: ArrayLike) -> MarkovKLRL:
    r"""Exact KL-RL on length-``n`` paths of a chain with budget ``nΔ`` (THEORY.md §14).

    The solution is ``q(y) = p(y) e^{λ_n R_n(y)} / Z_n(λ_n)`` with
    ``λ_n Λ_n'(λ_n) - Λ_n(λ_n) = nΔ``, a non-homogeneous Markov chain with
    ``q(y_i | y_{i-1}) = P(y_{i-1}, y_i) e^{λ r(y_i)} h_i(y_i) / h_{i-1}(y_{i-1})``
    (backward messages ``h_n = 1``, ``h_{i-1} = P D_λ h_i``, in log space).
    In the middle of long sequences the transitions approach the Doob
    transform :func:`doob_transform` at the same ``λ``. When ``nΔ`` reaches
    the maximum, ``lam = inf`` and the transitions are those at the largest
    finite tilt of the solver (the conditioned chain to rounding).

    >>> import jax.numpy as jnp
    >>> ch = MarkovChain(jnp.array([[0.9, 0.1], [0.3, 0.7]]), jnp.array([0.5, 0.5]))
    >>> sol = kl_rl(ch, jnp.array([0.0, 1.0]), 16, 0.05)
    >>> round(float(sol.kl), 10), sol.transitions.shape
    (0.05, (15, 2, 2))
    """
    _check_chain_reward(chain, r)
    n = check_positive_int(n, "n")
    check_nonneg(delta, "delta")
    k = chain.num_states
    P, mu, r, delta = _prep(chain, r, delta)
    if not is_concrete(P, mu, r, delta):
        return _kl_rl_jit(P, mu, r, delta, n)
    lam, lam_eval, reward, kl = _finite_solve_jit(P, mu, r, delta, n)
    # messages over a power-of-two number (>= 128) of steps: one compilation per bucket of n, not per n
    init, qs = _messages_bucketed(P, mu, r, lam_eval, n - 1, length=max(128, 1 << max(n - 2, 0).bit_length()))
    init, qs = device_array(np.asarray(init)[:k]), device_array(np.asarray(qs)[: n - 1, :k, :k])
    return MarkovKLRL(lam, reward, kl, init, qs)


def _kl_rl_jit(P, mu, r, delta, n):
    lam, lam_eval, reward, kl = _finite_solve_jit(P, mu, r, delta, n)
    init, qs = _messages_jit(P, mu, r, lam_eval, n)
    return MarkovKLRL(lam, reward, kl, init, qs)


@jit(static_argnames=("length",))
def _messages_bucketed(P, mu, r, lam, steps, *, length: int):
    """:func:`_messages` for ``n - 1 = steps <= length`` with the scan over ``length`` steps:
    the first ``length - steps`` (run first, in reverse) keep ``h = 1``; ``qs[:steps]`` is the result.
    Rows of padded states (never entered) are not meaningful."""
    logP = nx.masked_log(P)
    z = lam * r

    def step(log_h, i):
        a = logP + (z + log_h)[None, :]  # (x, y)
        log_prev = logsumexp(a, axis=1)
        q = jnp.exp(a - log_prev[:, None])
        return jnp.where(i < steps, log_prev - jnp.max(log_prev), log_h), q

    log_h1, qs = jax.lax.scan(step, jnp.zeros_like(r), jnp.arange(length), reverse=True)
    a1 = nx.masked_log(mu) + z + log_h1
    return jnp.exp(a1 - logsumexp(a1)), qs


@jit
def _finite_solve_jit(P, mu, r, delta, n):
    """``λ_n`` and its reward and KL per token (``n`` traced: one compilation for all ``n``)."""
    lam, far = _finite_lambda(P, mu, r, n, delta)
    lam_eval = jnp.where(jnp.isinf(lam), far, lam)
    v, d, _ = derivs2(lambda y: _log_partition(P, mu, r, y, n), lam_eval)
    nn = jnp.asarray(n, P.dtype)
    return lam, lam_eval, d / nn, (lam_eval * d - v) / nn


_messages_jit = jit(_messages, static_argnums=(4,))


# Jitted kernels: the chain and reward are arguments (not closed-over
# constants), so each compiles once per alphabet size and dtype.
@jit
def _scaled_cgf_jit(P, r, t, lam):
    return _cgf(P, r, lam + t) - _cgf(P, r, lam)


_log_partition_jit = jit(_log_partition)
_kl_rate_jit = jit(_kl_rate)
_solve_lambda_jit = jit(_solve_lambda)
_rate_jit = jit(_rate)


@jit(static_argnums=(3,))
def _cumulants_jit(P, r, lam, order):
    out, g = [], lambda x: _cgf(P, r, x)
    for _ in range(order):
        g = jax.grad(g)
        out.append(g(lam))
    return jnp.stack(out)
