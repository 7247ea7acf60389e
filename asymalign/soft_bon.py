r"""Exact soft best-of-N on reward levels (Verdun et al., ISIT 2025; THEORY.md §12).

Soft best-of-N draws ``N`` sequences and keeps ``Y_j`` with probability
``w_j / Σ_i w_i``, ``w = exp(r_n / τ)``. Its level law, for any ``N``
(with ``1/x = ∫_0^∞ e^{-tx} dt``):

.. math:: q(s) = N P(s)\, w_s \int_0^\infty e^{-t w_s} M(t)^{N-1}\,dt, \qquad
          M(t) = \sum_s P(s)\, e^{-t w_s},

with ``w_s = exp((s - s_max)/τ) <= 1``. In ``u = log t`` the integrand of
level ``s`` is ``exp(u + log w_s - e^{u + log w_s}) M(e^u)^{N-1}``: a Gumbel
bump centred at ``u = -log w_s`` times a factor that falls from 1 to 0 where
``(N-1)(-log M(e^u))`` crosses 1. Between these features every integrand is
``C e^u`` up to a relative ``e^{-30}`` (or negligible), so the integral is

* Gauss–Legendre panels (16 nodes each, 14 panels over ``[-32, 7]``) in a
  window around each *feature centre*: the ``L`` bump centres
  ``-log w_s`` and the ``L + 1`` cut-off centres ``-log K``,
  ``K = (N-1) Σ_{t below} P(t) w_t / F(below)`` (where the factor
  ``exp(-K e^u)`` switches off between two bumps); overlapping windows are
  clipped so that no stretch is counted twice;
* the exact integral of the log-linear interpolant across each gap between
  windows, and ``f(a_0)`` for ``(-∞, a_0]`` (exact for ``C e^u``).

Everything is in log space (``M^{N-1} = exp(-exp(log(N-1) + log(-log M)))``
with ``-log M`` from ``1 - M`` accumulated directly), so ``log N`` up to
``1e6`` and ``τ`` from ``1e-3`` to ``1e3`` keep relative accuracy per level.
Accuracy as measured: see :func:`soft_best_of_n`.
Cost ``O(L^2)`` per law (``2L + 1`` windows of 224 nodes, each summing over
the ``L`` levels), mapped over windows in blocks to bound memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.typing
import numpy as np
from jax.scipy.special import logsumexp

from . import _numerics as nx
from ._level_base import _apply, _check_law, _check_log_n
from ._level_kernels import _cum_logsumexp, _log1mexp_neg_exp, _log_neg_log1m
from ._validate import check_real, is_concrete
from .sequence_laws import RewardLaw

__all__ = ["soft_best_of_n"]

# Window around each feature centre, relative to it: [-_A, _B].
_EDGES = np.array([-32.0, -24.0, -17.0, -12.0, -8.0, -5.0, -3.0, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 5.0, 7.0])
_A, _B = -float(_EDGES[0]), float(_EDGES[-1])
_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_WINDOW_BLOCK = 16


def _lse(x, axis):
    """``logsumexp`` that is ``-inf`` with a zero (not NaN) gradient when every term is ``-inf``."""
    empty = jnp.all(x == -jnp.inf, axis=axis, keepdims=True)
    out = logsumexp(jnp.where(empty, 0.0, x), axis=axis, keepdims=True)
    return jnp.squeeze(jnp.where(empty, -jnp.inf, out), axis=axis)


def _log_exprel(d):
    """``log((e^d - 1)/d)``, stable for every real ``d`` (``0`` at ``d = 0``)."""
    small = jnp.abs(d) < 1e-8
    ds = jnp.where(small, 1.0, d)
    pos = ds + jnp.log(-jnp.expm1(-jnp.abs(ds))) - jnp.log(jnp.abs(ds))
    neg = jnp.log(-jnp.expm1(-jnp.abs(ds))) - jnp.log(jnp.abs(ds))
    return jnp.where(small, 0.5 * d, jnp.where(d > 0, pos, neg))


def _sbon_log_law(levels, log_prob, log_n, temperature):
    """Soft best-of-N log-law of one 1-D law (see the module docstring)."""
    dt = log_prob.dtype
    on = log_prob > -jnp.inf
    top = jnp.max(jnp.where(on, levels, -jnp.inf))
    lw = jnp.where(on, (levels - top) / temperature, 0.0)  # log w_s <= 0
    lp = jnp.where(on, log_prob, -jnp.inf)
    has_others = log_n > 0
    log_nm1 = jnp.where(has_others, log_n + nx.log1mexp(-jnp.where(has_others, log_n, 1.0)), 0.0)  # log(N - 1)

    def log_f(u):
        """``log`` of the integrand without the factor ``N P(s)``, shape ``(len(u), L)``."""
        x = u[:, None] + lw[None, :]  # u + log w_s
        l1m = _lse(lp[None, :] + _log1mexp_neg_exp(x), axis=-1)  # log(1 - M)
        log_m = _lse(lp[None, :] - jnp.exp(x), axis=-1)  # log M
        lnlm = jnp.where(
            l1m < -0.6931471805599453,
            _log_neg_log1m(jnp.where(l1m < -0.6931471805599453, l1m, -1.0)),
            jnp.log(-jnp.minimum(log_m, -1e-300)),
        )
        log_e = jnp.where(has_others, -jnp.exp(jnp.minimum(log_nm1 + lnlm, 700.0)), 0.0)  # log M^{N-1}
        return x - jnp.exp(jnp.minimum(x, 700.0)) + log_e[..., None]

    # Feature centres: bumps at -log w_s; cut-offs at -log K (clipped into range).
    # The node layout carries no gradient (the integral does not depend on it),
    # so it is computed from stopped inputs, and -inf - (-inf) is never formed.
    sg_lw, sg_lp, sg_nm1 = jax.lax.stop_gradient((lw, lp, log_nm1))
    c_bump = -sg_lw
    lpw = jnp.where(on, sg_lp + sg_lw, -jnp.inf)
    below_pw = jnp.concatenate([jnp.full((1,), -jnp.inf, dt), _cum_logsumexp(lpw)[:-1]])
    below_p = jnp.concatenate([jnp.full((1,), -jnp.inf, dt), _cum_logsumexp(sg_lp)[:-1]])
    fin = jnp.isfinite(below_p) & jnp.isfinite(below_pw)
    ratio = jnp.where(fin, jnp.where(fin, below_pw, 0.0) - jnp.where(fin, below_p, 0.0), -jnp.inf)
    log_k = jnp.concatenate([sg_nm1 + ratio, (sg_nm1 + logsumexp(lpw))[None]])
    log_k = jnp.where(has_others & ~jnp.isnan(log_k), log_k, -jnp.inf)
    c_hi = jnp.max(c_bump)
    c_cut = jnp.where(jnp.isfinite(log_k), -log_k, c_hi)
    lo_all = jnp.minimum(jnp.min(c_cut), 0.0)
    centres = jax.lax.stop_gradient(jnp.sort(jnp.clip(jnp.concatenate([c_bump, c_cut]), lo_all, c_hi)))
    prev_end = jnp.concatenate([jnp.full((1,), -jnp.inf, dt), centres[:-1] + _B])
    a = jnp.maximum(centres - _A, prev_end)  # regions [a_i, b_i] are disjoint
    b = centres + _B
    edges = jnp.asarray(_EDGES, dt)
    gx, gw = jnp.asarray(_GL_X, dt), jnp.asarray(_GL_W, dt)

    def window(args):
        z, ai, bi = args
        lo = jnp.clip(z + edges[:-1], ai, bi)
        hi = jnp.clip(z + edges[1:], ai, bi)
        mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        u = (mid[:, None] + half[:, None] * gx[None, :]).reshape(-1)
        lwt = jnp.where(
            half[:, None] > 0,
            jnp.log(jnp.where(half[:, None] > 0, half[:, None], 1.0)) + jnp.log(gw)[None, :],
            -jnp.inf,
        )
        body = _lse(log_f(u) + lwt.reshape(-1)[:, None], axis=0)
        ends = log_f(jnp.stack([ai, bi]))
        return body, ends[0], ends[1]

    body, f_a, f_b = jax.lax.map(window, (centres, a, b), batch_size=_WINDOW_BLOCK)
    # Gaps (b_{i-1}, a_i): exact integral of the log-linear interpolant.
    gap = a[1:] - b[:-1]
    l1, l2 = f_b[:-1], f_a[1:]
    fin = jnp.isfinite(l1) & jnp.isfinite(l2) & (gap[:, None] > 0)
    l1, l2 = jnp.where(fin, l1, 0.0), jnp.where(fin, l2, 0.0)
    d = l2 - l1
    gaps = jnp.where(fin, jnp.log(jnp.where(gap[:, None] > 0, gap[:, None], 1.0)) + l1 + _log_exprel(d), -jnp.inf)
    tail = f_a[0]  # ∫_{-inf}^{a_0} C e^u du = f(a_0)
    total = _lse(jnp.concatenate([body, gaps, tail[None]], axis=0), axis=0)
    return jnp.where(on, log_n + lp + total, -jnp.inf)


_vec_sbon = jax.jit(jnp.vectorize(_sbon_log_law, signature="(l),(l),(),()->(l)"))


def soft_best_of_n(
    law: RewardLaw, log_num_samples: jax.typing.ArrayLike, temperature: jax.typing.ArrayLike
) -> RewardLaw:
    r"""Law of the level chosen by soft best-of-N (Verdun et al., ISIT 2025; THEORY.md §12).

    Draw ``N`` samples from ``law`` and keep sample ``j`` with probability
    ``w_j / Σ_i w_i``, ``w = exp(s / τ)``:

    .. math:: q(s) = N P(s)\, w_s \int_0^\infty e^{-t w_s} M(t)^{N-1}\,dt,
              \qquad M(t) = \sum_s P(s) e^{-t w_s}.

    ``N = 1`` (``log N = 0``) is the identity; ``N -> inf`` tends to the tilt
    ``P e^{s/τ}`` (``φ_{1/τ}^n`` for the reference law); ``τ -> 0`` tends to
    best-of-N, ``τ -> inf`` to ``law``. The 1-D integral is computed in
    ``log t`` by Gauss–Legendre panels around every feature of the integrand
    and exact log-linear pieces between them (module docstring). Measured in
    float64: machine precision against enumeration of all N-tuples (N <= 4,
    τ from 1e-3 to 1e3), total mass 1 to 1e-12 for ``log N <= 1e3`` and to
    1e-10 at ``log N = 1e6`` (there the input itself and the nodes near
    ``log t = -1e6`` are rounded at that level), and the ``1/N^2`` rate with
    the §12 constant to 5e-5 at N = 2^18. Cost ``O(L^2)`` for ``L`` levels.
    Jittable, vmappable and differentiable in ``law.log_prob``,
    ``log_num_samples`` and ``temperature`` (the quadrature nodes carry no
    gradient; the integral does not depend on them).

    Args:
      law: a :class:`~asymalign.RewardLaw` (or stacked laws).
      log_num_samples: ``log N >= 0``.
      temperature: ``τ > 0``.

    Returns:
      The level law of soft best-of-N.

    >>> import asymalign as aa
    >>> law = aa.reward_law([0.5, 0.5], [0.0, 1.0], 1)
    >>> q = aa.soft_best_of_n(law, jnp.log(2.0), 1.0).prob  # two draws
    >>> bool(abs(q[1] - (0.25 + 0.5 * np.e / (1 + np.e))) < 1e-12)  # (1,1), or (0,1)/(1,0) won w.p. e/(1+e)
    True
    """
    _check_law(law)
    _check_log_n(log_num_samples)
    check_real(temperature, "temperature")
    if is_concrete(temperature) and np.any(np.asarray(temperature) <= 0):
        raise ValueError(f"temperature must be > 0, got {np.min(np.asarray(temperature))!r}")
    return _apply(_vec_sbon, law, log_num_samples, temperature)
