r"""Window laws for best-of-N: the law of ``r_n`` only where best-of-N has mass (THEORY.md §6, §7).

Host-side helpers used by :func:`~asymalign.bon_vs_klrl` when no law is given:
Chernoff cutoffs of the tilted laws ``φ_λ^n``, the exact binomial window for
two rewards, and tilted FFT windows of the lattice law (§7) for lattices.
"""

from __future__ import annotations

import math

import numpy as np

from . import _numerics as nx
from ._jit import SMALL_ELEMENTS_HEAVY, jit
from ._lattice import _host_bisect, _power_bits
from .sequence_laws import (
    _MAX_LATTICE_LEVELS,
    _MIN_SCORE,
    RewardLaw,
    _best_windows,
    _bucket,
    _detect_lattice,
    _fft_size,
    _fingerprint,
    _host_thetas,
    _lattice_log_w,
    _pad_tilts,
)

# Each side of a window law leaves out tilted mass at most e^-_WINDOW_BOUND.
_WINDOW_BOUND = 60.0


def _chernoff_cutoffs(values, log_w, lam_lo: float, lam_hi: float, kappa: float):
    r"""Per-token rewards ``x_lo <= Λ'(λ_lo)``, ``x_hi >= Λ'(λ_hi)`` with
    ``I_λ(x) = κ``, where ``I_λ(x) = I(x) - λx + Λ(λ)`` is the rate function of
    the tilted model ``φ_λ`` (THEORY.md §4), so that by Chernoff
    ``φ_{λ_lo}^n(r_n < n x_lo) <= e^{-nκ}`` and ``φ_{λ_hi}^n(r_n > n x_hi) <= e^{-nκ}``.
    With ``x = Λ'(t)``: ``I_λ(Λ'(t)) = (t-λ)Λ'(t) - Λ(t) + Λ(λ)``, monotone in
    ``|t - λ|``: bisected in ``t = λ ± sinh(v) / (r_max - r_min)``; where it
    never reaches ``κ`` the cutoff is ``r_min`` / ``r_max``. Host-side NumPy
    (float64; both sides at once): a first call compiles nothing for it."""
    values, log_w = np.asarray(values, np.float64), np.asarray(log_w, np.float64)
    lam = np.array([lam_hi, lam_lo], np.float64)
    shift = np.array([values[-1], values[0]])  # every log-sum-exp shifted by the nearer end
    sign = np.array([1.0, -1.0])  # t = λ + sign · x
    scale = values[-1] - values[0]
    centred = values - shift[:, None]
    log_z_lam = np.logaddexp.reduce(log_w + lam[:, None] * centred, axis=1)

    def excess(x):  # (I_λ(Λ'(t)), Λ'(t)) at t = λ + sign x, both sides
        z = log_w + (lam + sign * x)[:, None] * centred
        log_z = np.logaddexp.reduce(z, axis=1, keepdims=True)
        mean = np.sum(np.exp(z - log_z) * centred, axis=1)
        return sign * x * mean - log_z[:, 0] + log_z_lam, shift + mean

    v = np.full(2, nx._SINH_V)
    x = np.sinh(_host_bisect(lambda u: excess(np.sinh(u) / scale)[0] - kappa, np.zeros(2), v)) / scale
    never = excess(np.sinh(v) / scale)[0] < kappa
    cut = np.where(never, np.array([values[-1], values[0]]), excess(x)[1])
    return float(cut[1]), float(cut[0])


def _binomial_window(w1: float, n: int, lo: int, hi: int) -> np.ndarray:
    """``log P(M_n = j)``, ``M_n ~ Binomial(n, w1)``, for ``j = lo..hi``, in
    float64 NumPy whatever JAX's precision: ``log C(n, j)`` as ``log C(n, lo)``
    (``lgamma``) plus a cumulative sum of ``log((n-t+1)/t)``, never as a
    difference of ``lgamma`` values of size ``n log n``."""
    t = np.arange(lo + 1, hi + 1, dtype=np.float64)
    log_c0 = math.lgamma(n + 1.0) - math.lgamma(lo + 1.0) - math.lgamma(n - lo + 1.0)
    log_c = log_c0 + np.concatenate([[0.0], np.cumsum(np.log((n - t + 1.0) / t))])
    j = np.arange(lo, hi + 1, dtype=np.float64)
    return log_c + j * math.log(w1) + (n - j) * math.log1p(-w1)


# n and the first level traced; FFT size, window length and power bit count
# static (all bucketed): one compilation per bucket of n, not per n (issue 11).
_window_bucketed = jit(_best_windows, static_argnums=(3, 5, 6), small_elements=SMALL_ELEMENTS_HEAVY)


def _window_jit(log_w, n: int, thetas, fft_size: int, base: int, size: int):
    """:func:`_best_windows` of levels ``base .. base + size - 1`` with ``n`` traced."""
    return _window_bucketed(log_w, np.int32(n), thetas, fft_size, np.int32(base), size, _power_bits(n))


def _window_law(values, weights, n: int, lam_lo: float, lam_hi: float):
    r"""The law of ``r_n`` only where the tilted laws ``φ_λ^n``, ``λ ∈ [λ_lo, λ_hi]``,
    put mass, for best-of-N at ``log N = nΔ`` with ``λ*(Δ)`` in that range.

    ``values, weights``: the push-forward of ``p`` through ``r``
    (:func:`~asymalign.pushforward`), computed once by the caller.

    Levels ``n x_lo <= s <= n x_hi`` (:func:`_chernoff_cutoffs`: each side
    leaves out tilted mass ``<= e^{-60}``) are computed exactly: the binomial
    law for two rewards; for a lattice, every other tilted window of the full
    law (§7) whose centre falls in the range, plus one on each side, with an
    FFT length sized for those tilts (:func:`_window_fft_size`). All the
    mass below is lumped into one extra level just below the range, so ``F``
    and ``S`` (hence ``B_N``, ``KL(π_N||p^n)``, the win rate) are exact on the
    range; the mass above is dropped (``<= e^{-60}`` under ``φ_λ^n``, hence
    also under ``π_N``: ``B_N(s) <= N P_n(s) <= φ_{λ*}^n(s)`` above the tilted
    mean). Host-side.

    Returns:
      ``(law, has_lump)`` (``law`` in NumPy arrays), or ``None`` when no such shortcut applies (not a
      lattice nor two rewards, infinite λ, a law with deep dips, or a range
      covering most levels, where the full :func:`reward_law` is as cheap).
    """
    if not (math.isfinite(lam_lo) and math.isfinite(lam_hi)):
        return None
    k = values.size
    if k < 2:
        return None
    # Two rewards are always a lattice (span 1: the binomial law).
    lattice = (float(values[0]), float(values[1] - values[0]), np.array([0, 1])) if k == 2 else _detect_lattice(values)
    if lattice is None or int(lattice[2][-1]) * n + 1 > _MAX_LATTICE_LEVELS:
        return None
    a, h, span, log_w = _lattice_log_w(lattice, weights)
    L = n * span + 1
    x_lo, x_hi = _chernoff_cutoffs(values, np.log(weights), lam_lo, lam_hi, _WINDOW_BOUND / n)
    i_lo = max(0, int(math.floor(n * (x_lo - a) / h)) - 1)
    i_hi = min(L - 1, int(math.ceil(n * (x_hi - a) / h)) + 1)
    if k == 2:
        idx = np.arange(i_lo, i_hi + 1)
        logp = _binomial_window(float(weights[1]), n, i_lo, i_hi)
    else:
        if 2 * (i_hi - i_lo + 1) > L:
            return None
        # Every other tilt of the full law (centres ~6 tilted sd apart, so each
        # level is read within ~3 sd of a centre: score >= ~-4.5), covering
        # [i_lo, i_hi] with one more on each side.
        thetas = _host_thetas(log_w, n)
        m = np.arange(span + 1)
        z = np.asarray(log_w)[None, :] + thetas[:, None] * m
        with np.errstate(invalid="ignore"):
            ph = np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True))
        mean = ph @ m
        centres = np.clip(np.round(n * mean), 0, L - 1)
        first = max(0, int(np.searchsorted(centres, i_lo, side="right")) - 1)
        last = min(centres.size - 1, int(np.searchsorted(centres, i_hi, side="left")))
        pick = np.unique(np.concatenate([np.arange(first, last + 1, 2), [last]]))
        sd = math.sqrt(n * float(np.max(ph[pick] @ (m * m) - mean[pick] ** 2)))
        fft_size = min(_fft_size(n, span), _window_fft_size(n, span, sd))
        if np.any(centres[pick] < i_lo - fft_size // 2) or np.any(centres[pick] > i_hi + fft_size // 2):
            return None
        size = i_hi - i_lo + 1
        logp, score = _window_jit(log_w, n, _pad_tilts(thetas[pick]), fft_size, i_lo, _bucket(size))
        logp, score = np.asarray(logp)[:size], np.asarray(score)[:size]
        if np.min(score) < _MIN_SCORE:
            return None
        idx = np.arange(i_lo, i_hi + 1)
    keep = np.isfinite(logp)
    idx, logp = idx[keep], logp[keep]
    levels = n * a + h * idx.astype(np.float64)
    has_lump = i_lo > 0
    if has_lump:
        total = min(float(np.logaddexp.reduce(logp)), 0.0)
        lump = math.log(-math.expm1(total)) if total < 0.0 else -math.inf
        levels = np.concatenate([[n * a + h * (i_lo - 1)], levels])
        logp = np.concatenate([[lump], logp])
    # Host arrays: the caller pads them in NumPy before the one device transfer.
    return RewardLaw(levels, logp, n, _fingerprint(values, weights)), has_lump


# Window laws: aliased mass at a read level below e^-_WINDOW_ALIAS_LOG (Bernstein).
_WINDOW_ALIAS_LOG = 60.0


def _window_fft_size(n: int, span: int, sd: float) -> int:
    """FFT length for windows of tilted laws with standard deviation ``<= sd``
    (levels): a level read within ``3 sd`` of a centre is aliased only with
    levels ``d`` further away, ``P(|r_n - c| >= d) <= 2 exp(-d^2 / (2(sd^2 + span d/3)))``
    (Bernstein, letters in ``[0, span]``) ``<= e^{-60}``. Sizes ``2^a`` or ``3·2^a``."""
    A = _WINDOW_ALIAS_LOG + math.log(2.0)
    d = A * span / 3.0 + math.sqrt((A * span / 3.0) ** 2 + 2.0 * A * sd * sd)
    need = int(math.ceil(2.0 * (d + 4.0 * sd)))
    sizes = [1 << a for a in range(6, 40)] + [3 << a for a in range(5, 39)]
    return min(size for size in sizes if size >= need)
