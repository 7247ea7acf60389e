r"""Lattice kernels for the exact law of ``r_n`` (THEORY.md §7): tilted FFT windows.

For rewards ``a + h m`` (integer ``m = 0..span``) the total is
``r_n = n a + h M_n`` and the law of ``M_n`` is the ``n``-fold convolution
power of the per-token law ``w``. Plain FFT keeps only absolute accuracy, so
the law is read under many exponential tilts,
``P_n(s) = Q_n^θ(s) e^{-θ s + n Λ_w(θ)}`` with ``Q_n^θ = (w_θ)^{*n}`` from one
inverse FFT of ``(Σ_m w_θ(m) e^{-iωm})^n`` in a window of ``M`` levels around
``n Λ_w'(θ)``; each level takes its value from the window where it is closest
to the centre (:func:`_best_windows`). Tilts are spaced evenly in the Fisher
length ``u(θ) = √n ∫ √Λ_w''`` (:func:`_fisher_length_grid`). Unreachable
levels are found exactly by coin change (:func:`_mincoins`); the exact
log-space convolution (:func:`_lattice_log_law_dp`) is the fallback for deep
dips. Lattice detection (:func:`_detect_lattice`) runs on the host.

Compilation (issue 11): the host-side entry points (:func:`_lattice_jit`,
:func:`_lattice_dp_jit`, and the window law's) take ``n`` as a traced
integer; only the FFT size, the number of tilts, the output length and the
bit count of the power are static, each a power of two, so every ``n`` of a
bucket shares one executable. The output is cut to ``n·span + 1`` levels on
the host.

Private: the public constructors are in :mod:`asymalign.sequence_laws`
(``reward_law``, ``law_from_lattice``) and the best-of-N window law in
:mod:`asymalign._window_law`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from . import _numerics as nx
from ._buckets import device_array
from ._jit import SMALL_ELEMENTS_HEAVY, jit

# Relative tolerance for lattice detection.
_LATTICE_RTOL = 1e-9
# Window-centre spacing in units of the tilted standard deviation (2 * z0).
_CENTRE_SPACING = 3.0
# Aliasing control: half-window = span * sqrt(_ALIAS_LOG * n / 2) (Hoeffding).
_ALIAS_LOG = 80.0


# ---------------------------------------------------------------------------
# lattice detection (host side)
# ---------------------------------------------------------------------------


def _detect_lattice(values, max_den: int = 1000):
    """Return ``(a, h, m)`` with ``values ≈ a + h m`` (``m`` integers, gcd 1,
    ``m[0] = 0``) or ``None``."""
    if values.size == 1:
        return float(values[0]), 1.0, np.zeros(1, dtype=np.int64)
    d = values - values[0]
    t = d / d[1]
    for q in range(1, max_den + 1):
        tq = t * q
        m = np.round(tq)
        if np.all(np.abs(tq - m) <= _LATTICE_RTOL * np.maximum(1.0, np.abs(tq))):
            m = m.astype(np.int64)
            if np.any(np.diff(m) <= 0):
                # distinct rewards closer than the lattice tolerance would share
                # a lattice point (and one letter's weight would be lost)
                return None
            g = int(np.gcd.reduce(m))
            return float(values[0]), float(d[1] * g / q), m // g
    return None


# ---------------------------------------------------------------------------
# lattice method: windowed tilted FFT
# ---------------------------------------------------------------------------


def _fft_size(n: int, span: int) -> int:
    L = n * span + 1
    half = span * math.sqrt(_ALIAS_LOG * n / 2.0)
    need = min(L, 2 * int(math.ceil(half)) + 1)
    return max(64, 1 << int(math.ceil(math.log2(need))))


def _mincoins(mask, span: int, n: int, s):
    """Exact reachability of lattice levels ``s`` (an integer array): ``s`` is a
    sum of ``n`` letters of ``D = {m : w(m) > 0}`` (with ``0 ∈ D``) iff the
    fewest nonzero letters summing to ``s`` is ``<= n``. Coin change up to
    ``span^2``; beyond, an optimal representation always uses the largest
    letter ``span``."""
    B = span * span + span
    coins = jnp.arange(1, span + 1)
    usable = mask[1:]
    big = jnp.iinfo(jnp.int32).max // 4

    def body(t, dp):
        prev = dp[jnp.clip(t - coins, 0, B)]
        cand = jnp.where(usable & (coins <= t), prev + 1, big)
        return dp.at[t].set(jnp.minimum(jnp.min(cand), big))

    dp = jnp.full((B + 1,), big, dtype=jnp.int32).at[0].set(0)
    dp = jax.lax.fori_loop(1, B + 1, body, dp)
    q = jnp.maximum(0, -((B - s) // span))  # ceil((s - B)/span) for s > B
    base = dp[jnp.clip(s - q * span, 0, B)]
    count = jnp.where(base >= big, big, base + q)
    return count <= n


def _fisher_length_grid(log_w, n, grid: int = 4096):
    """Tilt range and the cumulative Fisher length ``u(θ) = ∫ √Λ''``."""
    span = log_w.shape[-1] - 1
    m = jnp.arange(span + 1, dtype=log_w.dtype)

    def mean_var(th):
        z = log_w + th * m
        lz = logsumexp(z)
        ph = jnp.exp(z - lz)
        mu = jnp.sum(ph * m)
        return mu, jnp.sum(ph * (m - mu) ** 2)

    mean_fn = jax.vmap(lambda th: mean_var(th)[0])
    lo_target = jnp.minimum(0.5 / n, 0.25 * span)
    hi_target = span - lo_target
    v = jnp.asarray(nx._SINH_V, log_w.dtype)

    def solve(target):
        return nx.sinh_bisect(lambda th: mean_fn(jnp.atleast_1d(th))[0] - target, 1.0, -v, v, 80)

    th_lo, th_hi = solve(lo_target), solve(hi_target)
    th = jnp.linspace(th_lo, th_hi, grid)
    var = jax.vmap(lambda t: mean_var(t)[1])(th)
    sd = jnp.sqrt(jnp.maximum(var, 0.0))
    u = jnp.concatenate([jnp.zeros(1, th.dtype), jnp.cumsum(0.5 * (sd[1:] + sd[:-1]) * jnp.diff(th))])
    return th, u


def _lattice_log_law(log_w, n: int, num_tilts: int, fft_size: int):
    """Jittable core: ``log P(M_n = s)``, ``s = 0..n·span`` (THEORY.md §7)."""
    return _lattice_log_law_scored(log_w, n, num_tilts, fft_size)[0]


def _tilt_stats(log_w, theta):
    """``(φ_θ, Λ_w(θ), Λ_w'(θ))`` of the per-token lattice index law."""
    m = jnp.arange(log_w.shape[-1], dtype=log_w.dtype)
    z = log_w + theta * m
    lam_w = logsumexp(z)
    ph = jnp.exp(z - lam_w)
    return ph, lam_w, jnp.sum(ph * m)


def _int_power(z, n, nbits: int | None = None):
    """``z**n`` by square-and-multiply (the algorithm of ``lax.integer_pow``).

    A static ``n`` goes to ``lax.integer_pow``. A traced integer ``n`` (``0 <=
    n < 2**nbits``, ``nbits`` static) runs the same multiplications: over the
    bits of ``n`` from the lowest, multiply the accumulator by the current
    square where the bit is set, then square. The accumulator starts at exactly
    ``1``, and ``1 · z = z`` exactly, so the result is the same as
    ``integer_pow``'s whatever ``nbits``: one executable serves every ``n``
    below ``2**nbits``.
    """
    if isinstance(n, int):
        return jax.lax.integer_pow(z, n)
    n = jnp.asarray(n, jnp.int32)

    def body(i, carry):
        acc, base = carry
        acc = jnp.where((n >> i) & 1 == 1, acc * base, acc)
        return acc, base * base

    return jax.lax.fori_loop(0, nbits, body, (jnp.ones_like(z), z))[0]


def _window_reader(log_w, n, M: int, nbits: int | None = None):
    """``window(θ) -> (centre, ratio, Q)``: the tilted law ``Q = (w_θ)^{*n}`` on
    the ``M`` levels ``centre - M//2 .. centre + M//2 - 1`` from one inverse
    FFT, ``centre = round(n Λ_w'(θ))``, and ``ratio = Q / max Q`` (THEORY.md §7).
    Then ``P_n(s) = Q(s) e^{-θ s + n Λ_w(θ)}``. ``n`` is a Python int, or a
    traced integer below ``2**nbits`` (:func:`_int_power`)."""
    span = log_w.shape[-1] - 1
    L = n * span + 1
    dt = log_w.dtype
    m = jnp.arange(span + 1, dtype=dt)
    omega = 2.0 * jnp.pi * jnp.fft.rfftfreq(M).astype(dt)  # [0, π]
    cdt = jnp.result_type(dt, jnp.complex64)
    # e^{-iωm} for all frequencies and letters, shared by every tilt.
    table = jnp.exp(-1j * (omega[:, None] * m[None, :]).astype(cdt))
    t_idx = jnp.arange(M) - M // 2  # window offsets

    def window(theta):
        ph, _, mu = _tilt_stats(log_w, theta)
        centre = jnp.clip(jnp.round(n * mu), 0, L - 1).astype(jnp.int32)
        # Characteristic function χ(ω) = Σ_m φ_θ(m) e^{-iωm}; |χ| <= 1, so its
        # n-th power by repeated squaring cannot overflow and its relative
        # error grows only like log2(n) ulps (no large-phase trig).
        q = jnp.fft.irfft(_int_power(table @ ph.astype(cdt), n, nbits), n=M)
        q = q[(centre + t_idx) % M]  # the circular law read around the centre
        return centre, q / jnp.max(q), q

    return window


def _best_windows(log_w, n, thetas, M: int, base, size: int, nbits: int | None = None):
    """Best reading of levels ``base .. base + size - 1`` over the tilts
    ``thetas``: each level takes its value from the window where ``Q/max Q``
    is largest; unreachable levels (also those above ``n·span``) get ``-inf``.
    Returns ``(log P, score)`` with ``score = log(Q/max Q)`` there (relative
    error ~``1e-16 e^{-score}``). ``n``: a Python int, or traced below
    ``2**nbits`` (static sizes ``M``, ``size``, ``nbits``: one executable for
    every ``n`` of a bucket)."""
    span = log_w.shape[-1] - 1
    dt = log_w.dtype
    window = _window_reader(log_w, n, M, nbits)
    pad = M + 1  # centres may lie up to M/2 outside the output range
    width = size + 2 * pad

    def step(carry, j_theta):
        best_ratio, best_q, best_j = carry
        j, theta = j_theta
        centre, ratio, q = window(theta)
        start = jnp.clip(centre - base - M // 2 + pad, 0, width - M)
        cur_r = jax.lax.dynamic_slice(best_ratio, (start,), (M,))
        better = ratio > cur_r
        best_ratio = jax.lax.dynamic_update_slice(best_ratio, jnp.where(better, ratio, cur_r), (start,))
        cur_q = jax.lax.dynamic_slice(best_q, (start,), (M,))
        best_q = jax.lax.dynamic_update_slice(best_q, jnp.where(better, q, cur_q), (start,))
        cur_j = jax.lax.dynamic_slice(best_j, (start,), (M,))
        best_j = jax.lax.dynamic_update_slice(best_j, jnp.where(better, j, cur_j), (start,))
        return (best_ratio, best_q, best_j), None

    init = (jnp.full((width,), -jnp.inf, dt), jnp.zeros((width,), dt), jnp.zeros((width,), jnp.int32))
    js = jnp.arange(thetas.shape[0], dtype=jnp.int32)
    (ratio, q, j), _ = jax.lax.scan(step, init, (js, thetas))
    ratio, q, j = ratio[pad : pad + size], q[pad : pad + size], j[pad : pad + size]
    lam_w = jax.vmap(lambda th: _tilt_stats(log_w, th)[1])(thetas)
    s = base + jnp.arange(size)
    reach = _mincoins(log_w > -jnp.inf, span, n, s)
    ok = reach & (q > 0)
    logp = jnp.where(ok, jnp.log(jnp.where(ok, q, 1.0)) - thetas[j] * s + n * lam_w[j], -jnp.inf)
    # A reachable level that no window reads as positive is unresolved: score -inf.
    score = jnp.where(ok, jnp.log(jnp.where(ok, ratio, 1.0)), jnp.where(reach, -jnp.inf, 0.0))
    return logp, score


def _lattice_thetas(log_w, n: int, num_tilts: int):
    """The tilts of the full law: evenly spaced in Fisher length ``u(θ)``."""
    th_grid, u = _fisher_length_grid(log_w, n)
    return jnp.interp(jnp.linspace(0.0, u[-1], num_tilts), u, th_grid)


def _lattice_log_law_scored(log_w, n: int, num_tilts: int, fft_size: int):
    """``(log P, score)``: ``score(s) = log(Q(s) / max Q)`` in the window that
    resolved level ``s``; the relative error there is about ``1e-16 e^{-score}``."""
    span = log_w.shape[-1] - 1
    L = n * span + 1
    dt = log_w.dtype
    if span == 0:
        return jnp.zeros((1,), dt), jnp.zeros((1,), dt)
    thetas = _lattice_thetas(log_w, n, num_tilts)
    logp, score = _best_windows(log_w, n, thetas, fft_size, 0, L)
    return logp - logsumexp(logp), score


def _lattice_log_law_dp(log_w, n, size: int | None = None):
    """Exact log-space convolution power by ``n`` one-token steps,
    ``P_{j+1}(s) = logsumexp_m P_j(s - m) + log w(m)``: cost ``O(n^2 span^2)``,
    relative accuracy at every level whatever the shape of the law. The
    fallback for laws the tilted windows cannot resolve (deep dips, e.g. a
    letter of probability 1e-30). Levels ``0 .. size - 1`` (default
    ``n·span + 1``, static ``n``); with a static ``size >= n·span + 1`` the
    number of steps ``n`` may be traced (levels above ``n·span`` stay ``-inf``)."""
    span = log_w.shape[-1] - 1
    L = n * span + 1 if size is None else size
    init = jnp.full((L + span,), -jnp.inf, log_w.dtype).at[span].set(0.0)

    def step(_, cur):
        shifted = jnp.stack([jax.lax.dynamic_slice(cur, (span - m,), (L,)) + log_w[m] for m in range(span + 1)])
        return cur.at[span:].set(logsumexp(shifted, axis=0))

    return jax.lax.fori_loop(0, n, step, init)[span:]


# Levels resolved at a score below this (Q/max Q < e^-16) may carry relative
# errors above ~1e-9 and are recomputed exactly when affordable.
_MIN_SCORE = -16.0
_MAX_DP_WORK = 3e8


def default_num_tilts(n: int, span: int) -> int:
    """A static number of tilts for :func:`law_from_lattice` when the model is
    traced: enough for a Fisher length of ``π·span`` (a generous bound)."""
    return int(math.ceil(math.sqrt(n) * math.pi * max(1, span) / _CENTRE_SPACING)) + 2


def _host_bisect(g, lo, hi, iters: int = nx._BISECT_ITERS):
    """:func:`~asymalign._numerics.bisect_increasing` in NumPy, elementwise over
    arrays of brackets (the same iteration, so the same root to rounding)."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = g(mid) <= 0
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _host_mean_var(log_w, theta, m):
    """Mean and variance of the tilted laws ``w_θ ∝ w e^{θ m}`` for each ``θ`` (NumPy,
    float64), in blocks of about 2^20 entries (the alphabet may be long)."""
    rows = max(1, (1 << 20) // m.size)
    mean, var = np.empty(theta.size), np.empty(theta.size)
    for i in range(0, theta.size, rows):
        z = log_w + theta[i : i + rows, None] * m
        ph = np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True))
        mean[i : i + rows] = mu = ph @ m
        var[i : i + rows] = np.sum(ph * (m - mu[:, None]) ** 2, axis=1)
    return mean, var


def _host_fisher_length_grid(log_w, n: int, grid: int = 4096):
    """:func:`_fisher_length_grid` in NumPy for a concrete ``log_w``: the same
    bisections and grid, without compiling a kernel per alphabet size (a
    first call of :func:`~asymalign.reward_law` pays no compilation for it)."""
    log_w = np.asarray(log_w, np.float64)
    span = log_w.size - 1
    m = np.arange(span + 1, dtype=np.float64)
    lo_target = min(0.5 / n, 0.25 * span)
    targets = np.array([lo_target, span - lo_target])
    v = np.full(2, nx._SINH_V)
    # the two ends at once: mean(θ) - target, increasing in θ = sinh(v)
    ends = np.sinh(_host_bisect(lambda x: _host_mean_var(log_w, np.sinh(x), m)[0] - targets, -v, v, 80))
    th = np.linspace(ends[0], ends[1], grid)
    sd = np.sqrt(np.maximum(_host_mean_var(log_w, th, m)[1], 0.0))
    return th, np.concatenate([[0.0], np.cumsum(0.5 * (sd[1:] + sd[:-1]) * np.diff(th))])


def _host_thetas(log_w, n: int) -> np.ndarray:
    """The full law's tilts (as :func:`_lattice_thetas`), their number
    ``√n u_max / 3 + 2`` found from the Fisher length (:func:`_host_fisher_length_grid`).

    Kept for the last 64 ``(log w, n)`` (read-only): the grid's bisections take about 5 ms
    of Python, which calls for one model and ``n`` at many Δ (a sweep, a figure) need once."""
    return _host_thetas_of(np.asarray(log_w, np.float64).tobytes(), int(n))


@functools.lru_cache(maxsize=64)
def _host_thetas_of(log_w_bytes: bytes, n: int) -> np.ndarray:
    th, u = _host_fisher_length_grid(np.frombuffer(log_w_bytes, np.float64), n)
    num_tilts = int(math.ceil(math.sqrt(n) * float(u[-1]) / _CENTRE_SPACING)) + 2
    thetas = np.interp(np.linspace(0.0, u[-1], num_tilts), u, th)
    thetas.flags.writeable = False
    return thetas


def _pad_tilts(thetas: np.ndarray) -> jax.Array:
    """Tilts padded to a bucket by repeating the last (a repeated window
    changes nothing: only a strictly better score replaces a reading)."""
    size = _bucket(thetas.size, 8)
    return device_array(np.concatenate([thetas, np.full(size - thetas.size, thetas[-1])]))


def _power_bits(n: int) -> int:
    """Static bit count of the traced power ``n`` (:func:`_int_power`): that of
    the next power of two, so every ``n`` of a bucket shares one executable."""
    return _bucket(n, 1).bit_length()


def _lattice_from_thetas(log_w, n, thetas, fft_size: int, size: int, nbits: int):
    """Full lattice law from given tilts on levels ``0 .. size - 1`` (``size >=
    n·span + 1``; levels above ``n·span`` are ``-inf``): ``(log P normalised,
    score)``. ``n`` traced below ``2**nbits``."""
    logp, score = _best_windows(log_w, n, thetas, fft_size, 0, size, nbits)
    return logp - logsumexp(logp), score


def _lattice_log_w(lattice, weights):
    """``(a, h, span, log w)``: per-token log-law of the lattice index ``m``."""
    a, h, m = lattice
    span = int(m[-1])
    log_w = np.full(span + 1, -np.inf)
    log_w[m] = np.log(weights)
    return a, h, span, device_array(log_w)


# n traced; the FFT size, output length (a power of two of n·span + 1) and
# power bit count are static: one compilation per bucket, not per n (issue 11).
_lattice_bucketed = jit(_lattice_from_thetas, static_argnums=(3, 4, 5), small_elements=SMALL_ELEMENTS_HEAVY)
_lattice_dp_bucketed = jit(_lattice_log_law_dp, static_argnums=(2,))


def _bucket(length: int, minimum: int = 64) -> int:
    """Padded length: powers of two (at least ``minimum``), so kernels compile O(log L) times."""
    return max(minimum, 1 << (length - 1).bit_length())


def _lattice_jit(log_w, n: int, thetas, fft_size: int):
    """Host-side full lattice law ``(log P, score)`` (NumPy, ``n·span + 1``
    levels) from padded tilts: the bucketed kernel, cut on the host."""
    span = log_w.shape[-1] - 1
    L = n * span + 1
    size = _bucket(L)
    # every n whose n·span + 1 fits in `size` has fewer bits than (size - 1) // span
    nbits = ((size - 1) // span).bit_length()
    logp, score = _lattice_bucketed(log_w, np.int32(n), thetas, fft_size, size, nbits)
    return np.asarray(logp)[:L], np.asarray(score)[:L]


def _lattice_dp_jit(log_w, n: int):
    """Host-side exact log-space law (:func:`_lattice_log_law_dp`, NumPy), bucketed in length."""
    L = n * (log_w.shape[-1] - 1) + 1
    return np.asarray(_lattice_dp_bucketed(log_w, np.int32(n), _bucket(L)))[:L]
