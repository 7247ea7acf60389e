r"""Gold reward of the KL-RL tilt on the proxy, its Goodhart peak, and the Gao et al. fits (THEORY.md §13).

The KL-RL optimum for the proxy ``r`` at any budget is the tilt
``φ_λ^{⊗n}`` (§3), so its gold reward is ``n E_{φ_λ} g`` and
``d/dλ E_{φ_λ} g = Cov_{φ_λ}(r, g)``: the gold peaks where that covariance
vanishes. Gao, Schulman, Hilton (ICML 2023, arXiv 2210.10760) fit gold against
``d = sqrt(KL)`` with ``d(α - βd)`` (best-of-N) and ``d(α - β log d)`` (RL).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import _numerics as nx
from ._buckets import device_array
from ._jit import jit
from ._validate import check_model, check_positive_int, check_real, is_concrete
from .goodhart import check_gold, gold_pushforward
from .tilting import _moments, tilt

__all__ = ["GoodhartPeak", "GaoFit", "tilt_gold", "tilt_gold_covariance", "goodhart_peak", "fit_gao"]


class GoodhartPeak(NamedTuple):
    """Where the gold reward of the proxy tilt peaks (THEORY.md §13).

    Attributes:
      lam: ``λ† >= 0`` with ``Cov_{φ_λ†}(r, g) = 0`` (the first positive root;
        ``0`` if ``Cov_p(r, g) <= 0``, ``+inf`` if the covariance never
        changes sign).
      kl: per-token KL ``K(λ†) = KL(φ_λ† || p)``.
      d: ``sqrt(n K(λ†))``, the peak on the Gao et al. axis.
      gold: total gold at the peak, ``n E_{φ_λ†} g``.
      gain: ``gold - n E_p g``.
      alpha, beta: small-``d`` coefficients, ``G - n μ_g = α d - β d^2 + O(d^3)``.
    """

    lam: jax.Array
    kl: jax.Array
    d: jax.Array
    gold: jax.Array
    gain: jax.Array
    alpha: jax.Array
    beta: jax.Array


class GaoFit(NamedTuple):
    """Least-squares fit of a Gao et al. form: coefficients, residuals ``gold - fit``, their RMS."""

    alpha: jax.Array
    beta: jax.Array
    residuals: jax.Array
    rms: jax.Array


_MIN_ALPHABET = 128  # reduced models are padded to a power of two >= this: one compilation for most models


def _reduce_pad(p, r, g):
    """Concrete ``(p, r, g)`` -> the proxy push-forward with the mean gold per letter (exact for
    every quantity here, THEORY.md §7, §13), padded with zero-probability letters to a
    power-of-two alphabet (at least :data:`_MIN_ALPHABET`), so that one compiled kernel
    serves models of every size up to the bucket. Zero-probability letters are outside
    ``supp p`` and change no tilt, moment or covariance."""
    values, weights, gbar, _ = gold_pushforward(p, r, g)
    k = values.size
    size = max(_MIN_ALPHABET, 1 << max(k - 1, 0).bit_length())
    fill = size - k
    return (
        np.concatenate([weights, np.zeros(fill)]),
        np.concatenate([values, np.full(fill, values[0])]),
        np.concatenate([gbar, np.zeros(fill)]),
    )


def _prep3(p, r, g, lam):
    dt = nx.float_dtype(p, r, g, lam)
    if is_concrete(p, r, g, lam):
        p, r, g = _reduce_pad(p, r, g)
        return tuple(device_array(x, dt) for x in (p, r, g, lam))
    return tuple(jnp.asarray(x, dt) for x in (p, r, g, lam))


def _tilt_gold_cov(p, r, g, lam):
    phi = tilt(p, r, lam)
    pos = p > 0
    gz = jnp.broadcast_to(jnp.where(pos, g, 0.0), phi.shape)
    rz = jnp.broadcast_to(jnp.where(pos, r, 0.0), phi.shape)
    eg = jnp.sum(phi * gz, axis=-1)
    er = jnp.sum(phi * rz, axis=-1)
    cov = jnp.sum(phi * (rz - er[..., None]) * (gz - eg[..., None]), axis=-1)
    return eg, cov


_tilt_gold_cov_jit = jit(_tilt_gold_cov)


@jit
def _tilt_gold_jit(p, r, g, lam, nf):
    return nf * _tilt_gold_cov(p, r, g, lam)[0]


def tilt_gold(p: ArrayLike, r: ArrayLike, g: ArrayLike, lam: ArrayLike, n: int = 1) -> jax.Array:
    r"""Gold reward of the KL-RL tilt on the proxy: ``n E_{φ_λ} g`` (THEORY.md §13).

    ``φ_λ ∝ p e^{λ r}`` is the KL-RL optimum for the proxy ``r`` (§3); on
    sequences ``φ_λ^{⊗n}``, whose total gold is ``n E_{φ_λ} g``. ``lam`` may
    be an array (broadcast) and ``±inf`` (the arg-max / arg-min set of ``r``).
    Jittable, differentiable.

    Args:
      p: reference, shape ``(k,)``. r: proxy reward. g: gold reward.
      lam: tilt parameter(s). n: sequence length.

    Returns:
      Total gold reward, shape of ``lam``.

    >>> import asymalign as aa
    >>> float(aa.tilt_gold([0.5, 0.5], [0.0, 1.0], [2.0, 0.0], 0.0, n=3))
    3.0
    """
    n = check_positive_int(n, "n")
    check_model(p, r)
    if is_concrete(g):
        check_gold(g, p)
    check_real(lam, "lam", allow_inf=True)
    p, r, g, lam = _prep3(p, r, g, lam)
    return _tilt_gold_jit(p, r, g, lam, float(n))


def tilt_gold_covariance(p: ArrayLike, r: ArrayLike, g: ArrayLike, lam: ArrayLike) -> jax.Array:
    r"""``Cov_{φ_λ}(r, g) = d/dλ E_{φ_λ} g`` (THEORY.md §13). Jittable.

    >>> import asymalign as aa
    >>> float(aa.tilt_gold_covariance([0.5, 0.5], [0.0, 1.0], [0.0, 2.0], 0.0))
    0.5
    """
    check_model(p, r)
    if is_concrete(g):
        check_gold(g, p)
    check_real(lam, "lam", allow_inf=True)
    return _tilt_gold_cov_jit(*_prep3(p, r, g, lam))[1]


@jit
def _peak(p, r, g, nf):
    pos = p > 0
    rmin, rmax = nx.support_range(p, r)
    scale = jnp.maximum(rmax - rmin, jnp.finfo(p.dtype).tiny)
    # grid in a sinh-stretched variable: λ from 0 to sinh(40)/scale
    v = jnp.linspace(0.0, nx._SINH_V, 2049, dtype=p.dtype)
    lam_grid = jnp.sinh(v) / scale
    _, cov = _tilt_gold_cov(p, r, g, lam_grid)
    # First grid point where the covariance is clearly negative. At huge λ the
    # tilt sits on the arg-max set and the computed covariance is rounding
    # noise around 0 (either sign), hence the relative threshold.
    neg = (cov < -1e-10 * jnp.max(jnp.abs(cov))).at[0].set(cov[0] <= 0)
    j = jnp.argmax(neg)  # 0 if Cov_p(r, g) <= 0
    found = jnp.any(neg)
    lo0 = lam_grid[jnp.maximum(j - 1, 0)]
    hi0 = lam_grid[j]

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        c = _tilt_gold_cov(p, r, g, mid)[1]
        return jnp.where(c > 0, mid, lo), jnp.where(c > 0, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 200, body, (lo0, hi0))
    lam = jnp.where(cov[0] <= 0, 0.0, jnp.where(found, 0.5 * (lo + hi), jnp.inf))
    eg, _ = _tilt_gold_cov(p, r, g, lam)
    kl = _moments(p, r, lam)[2]
    # small-d coefficients at λ = 0 (moments of p)
    w = jnp.where(pos, p, 0.0)
    rz, gz = jnp.where(pos, r, 0.0), jnp.where(pos, g, 0.0)
    mr, mg = jnp.sum(w * rz), jnp.sum(w * gz)
    dr, dg = rz - mr, gz - mg
    var = jnp.sum(w * dr * dr)
    c0 = jnp.sum(w * dr * dg)
    k3 = jnp.sum(w * dr**3)
    krrg = jnp.sum(w * dr * dr * dg)
    alpha = jnp.sqrt(2.0 * nf) * c0 / jnp.sqrt(var)
    beta = -krrg / var + (2.0 / 3.0) * c0 * k3 / var**2
    return GoodhartPeak(lam, kl, jnp.sqrt(nf * kl), nf * eg, nf * (eg - mg), alpha, beta)


def goodhart_peak(p: ArrayLike, r: ArrayLike, g: ArrayLike, n: int = 1) -> GoodhartPeak:
    r"""The Goodhart peak of the proxy tilt and its small-``d`` expansion (THEORY.md §13).

    ``λ†`` solves ``Cov_{φ_λ†}(r, g) = 0`` (the first root on ``λ > 0``:
    the first grid point of a 2049-point grid in ``v = asinh(λ (r_max - r_min))``
    where the covariance is below ``-1e-10`` times its largest magnitude on
    the grid, then 200 bisection steps; ``+inf`` when there is none). Per-token ``λ†`` and ``K(λ†)`` do not depend
    on ``n``; the total KL is ``n K(λ†)``. Small-``d`` expansion of the exact
    tilt curve (``d = sqrt(n K(λ))``):

    .. math::
       G - n μ_g = α d - β d^2 + O(d^3), \quad α = \sqrt{2n}\, Cov_p(r, g) / σ_r,
       \quad β = -κ_{rrg}/σ_r^2 + \tfrac23 Cov_p(r, g) κ_3(r) / σ_r^4,

    ``κ_{rrg} = E_p[(r-μ_r)^2 (g-μ_g)]``: the best-of-N shape of Gao et al.
    near 0, not ``d log d``. Concrete inputs are first reduced exactly to the
    proxy push-forward with the mean gold per proxy letter (so ``k = 20 000``
    words cost as much as their ~10-70 proxy levels); jittable inner solve;
    needs a non-constant proxy.

    Args:
      p, r, g: reference, proxy and gold per token (shape ``(k,)``).
      n: sequence length (scales ``d``, ``gold``, ``gain`` and ``α``).

    Returns:
      :class:`GoodhartPeak`.

    >>> import asymalign as aa
    >>> pk = aa.goodhart_peak([0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, -1.0])
    >>> round(float(pk.lam), 6), round(float(pk.gain), 4)
    (0.262043, 0.028)
    """
    n = check_positive_int(n, "n")
    check_model(p, r)
    check_gold(g, p)
    dt = nx.float_dtype(p, r, g)
    if is_concrete(p, r, g):
        # Exact reduction (§7, §13): Cov_φ(r, g) = Cov_φ(r, ḡ(r)) and every moment
        # used here depends on g only through its p-mean per proxy letter.
        if gold_pushforward(p, r, g)[0].size < 2:
            raise ValueError("r must take at least two values on supp p (a constant proxy has no tilt)")
        p, r, g = _reduce_pad(p, r, g)
        p, r, g, nf = (device_array(x, dt) for x in (p, r, g, float(n)))
    else:
        p, r, g, nf = (jnp.asarray(x, dt) for x in (p, r, g, float(n)))
    return _peak(p, r, g, nf)


def fit_gao(d: ArrayLike, gold: ArrayLike, form: str = "bon") -> GaoFit:
    r"""Least-squares fit of a Gao, Schulman, Hilton (2023) form to a gold curve.

    ``form="bon"``: ``gold ≈ d (α - β d)``; ``form="rl"``: ``gold ≈ d (α - β log d)``.
    Both are linear in ``(α, β)``, solved by ``lstsq`` (no intercept: pass the
    gold *gain* over the reference, ``G - G(0)``). At ``d = 0`` the RL
    regressor ``d log d`` takes its limit ``0`` (the point then only
    contributes its residual ``gold(0)``); THEORY.md §13 shows the exact
    KL-optimal curve has the ``bon`` shape near 0.

    Args:
      d: ``sqrt(KL)`` values ``>= 0`` (any shape; flattened).
      gold: gold gains, same shape.
      form: ``"bon"`` or ``"rl"``.

    Returns:
      :class:`GaoFit` ``(alpha, beta, residuals, rms)``.

    >>> import asymalign as aa, numpy as np
    >>> d = np.linspace(0, 2, 9); fit = aa.fit_gao(d, d * (1.5 - 0.5 * d))
    >>> round(float(fit.alpha), 9), round(float(fit.beta), 9)
    (1.5, 0.5)
    """
    if form not in ("bon", "rl"):
        raise ValueError(f"form must be 'bon' or 'rl', got {form!r}")
    if is_concrete(d, gold):
        da, ga = np.asarray(d), np.asarray(gold)
        if da.shape != ga.shape:
            raise ValueError(f"d and gold must have the same shape, got {da.shape} and {ga.shape}")
        if da.size < 2:
            raise ValueError("d must have at least two points to fit two coefficients")
        if not np.all(np.isfinite(da)) or np.any(da < 0):
            raise ValueError("d must be finite and >= 0")
        if not np.all(np.isfinite(ga)):
            raise ValueError("gold must be finite")
    dt = nx.float_dtype(d, gold)
    if is_concrete(d, gold):  # host NumPy (no compilation); same formulas
        alpha, beta, res, rms = _fit(np, np.asarray(d, dt), np.asarray(gold, dt), form)
        return GaoFit(*(device_array(np.asarray(x, dt)) for x in (alpha, beta, res, rms)))
    return GaoFit(*_fit(jnp, jnp.asarray(d, dt), jnp.asarray(gold, dt), form))


def _fit(xp, d, y, form):
    d, y = xp.ravel(d), xp.ravel(y)
    if form == "bon":
        second = d * d
    else:
        pos = d > 0
        second = xp.where(pos, d * xp.log(xp.where(pos, d, 1.0)), 0.0)
    x = xp.stack([d, -second], axis=1)
    coef = xp.linalg.lstsq(x, y, rcond=None)[0]
    res = y - x @ coef
    return coef[0], coef[1], res, xp.sqrt(xp.mean(res * res))
