r"""The exact law of the total reward ``r_n`` under ``p^n`` (THEORY.md §7).

``reward_law(p, r, n)`` returns a :class:`RewardLaw`: the sorted distinct
levels of ``r_n`` and their exact log-probabilities. Two exact methods:

* **types** (any real rewards, small alphabets): a sequence's reward depends
  only on its counts ``c`` (``Σ c = n``),
  ``log P(c) = log n! - Σ log c_x! + Σ c_x log p(x)``, level ``c · r``; equal
  levels are merged. ``C(n+k-1, k-1)`` types.
* **lattice** (rewards ``a + h m`` with integer ``m``, detected
  automatically): ``r_n = n a + h M_n`` and the law of ``M_n`` is the n-fold
  convolution power of the per-token law ``w``. Plain FFT keeps only absolute
  accuracy, so the tails that best-of-N needs would be lost. Instead the law
  is computed under many exponential tilts,
  ``P_n(s) = Q_n^θ(s) exp(-θ s + n Λ_w(θ))``, where ``Q_n^θ = (w_θ)^{*n}`` is
  evaluated by an inverse FFT of its characteristic function
  ``(Σ_m w_θ(m) e^{-iωm})^n`` in a window of ``M`` levels around its mean
  ``n Λ_w'(θ)``; each level takes the value from the tilt under which it is
  closest to the centre (largest ``Q/max Q``). Tilts are spaced evenly in
  ``u(θ) = √n ∫ √Λ_w''(θ) dθ`` (window centres about 3 standard deviations
  apart), so every level, from the bottom to the very top, is read where
  the FFT has full *relative* accuracy. Cost ``O(J M log M)`` with
  ``J ≈ √n u_max / 3`` tilts and ``M = O(span √n)``: about ``n log n``.
  Levels that no sequence reaches (gaps of the lattice) are found exactly
  by a coin-change recursion and get ``log_prob = -inf``.

First, whatever the method, the model is reduced to the push-forward of ``p``
through ``r`` (zero-probability letters dropped, equal rewards merged).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, logsumexp

from . import _numerics as nx
from ._validate import check_model, check_positive_int, is_concrete

__all__ = [
    "RewardLaw",
    "reward_law",
    "pushforward",
    "law_from_lattice",
    "law_from_types",
    "check_law",
]

# Relative tolerance for merging equal rewards / levels and for lattice detection.
_MERGE_RTOL = 1e-12
_LATTICE_RTOL = 1e-9
_MAX_TYPES = 3_000_000
_MAX_LATTICE_LEVELS = 50_000_000
# Window-centre spacing in units of the tilted standard deviation (2 * z0).
_CENTRE_SPACING = 3.0
# Aliasing control: half-window = span * sqrt(_ALIAS_LOG * n / 2) (Hoeffding).
_ALIAS_LOG = 80.0


@dataclasses.dataclass(frozen=True)
class RewardLaw:
    """Exact law of the total reward ``r_n`` of a length-``n`` sequence (THEORY.md §7).

    A JAX pytree: ``levels`` and ``log_prob`` are array leaves (so laws can be
    stacked and ``vmap``-ed), ``n`` and ``fingerprint`` are static.

    Attributes:
      levels: total-reward levels, sorted ascending, shape ``(L,)``. Laws from
        :func:`reward_law` have distinct levels; laws from
        :func:`law_from_types` may repeat a level (the best-of-N functions
        treat equal levels as one).
      log_prob: ``log P(r_n = level)``; ``-inf`` for unreachable levels.
      n: sequence length.
      fingerprint: identifies the model (push-forward of ``p`` through ``r``)
        the law was built from, or ``None``.
    """

    levels: jax.Array
    log_prob: jax.Array
    n: int
    fingerprint: str | None = None

    @property
    def prob(self):
        """``P(r_n = level)``."""
        return jnp.exp(self.log_prob)


jax.tree_util.register_dataclass(RewardLaw, data_fields=["levels", "log_prob"], meta_fields=["n", "fingerprint"])


# ---------------------------------------------------------------------------
# push-forward and model fingerprint (host side)
# ---------------------------------------------------------------------------


def pushforward(p, r):
    """Per-token reward law: distinct rewards on ``supp p`` and their probabilities.

    THEORY.md §7: the law of ``r_n`` depends on ``(p, r)`` only through the
    push-forward of ``p`` by ``r``. Rewards equal to within a relative
    ``1e-12`` are merged. Host-side (NumPy) helper.

    Returns:
      ``(values, weights)``: sorted distinct rewards and their probabilities
      (float64 NumPy arrays).
    """
    check_model(p, r)
    p = np.asarray(p, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    if p.ndim != 1 or r.ndim != 1:
        raise ValueError(f"p and r must be 1-D for a single model, got shapes {p.shape} and {r.shape}")
    keep = p > 0
    v, w = r[keep], p[keep]
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    tol = _MERGE_RTOL * max(1.0, float(np.max(np.abs(v))))
    new_group = np.concatenate([[True], np.diff(v) > tol])
    starts = np.flatnonzero(new_group)
    values = v[starts]
    weights = np.add.reduceat(w, starts)
    return values, weights / weights.sum()


def _fingerprint(values, weights) -> str:
    data = np.concatenate([np.round(values, 12), np.round(weights, 12)]).tobytes()
    return hashlib.sha1(data).hexdigest()[:16]


def model_fingerprint(p, r) -> str:
    """Fingerprint of the push-forward of ``p`` through ``r`` (for :func:`check_law`)."""
    return _fingerprint(*pushforward(p, r))


def check_law(law, p=None, r=None, n=None, name: str = "law") -> None:
    """Raise ``ValueError`` if ``law`` was not built for the model ``(p, r)`` / length ``n``."""
    if not isinstance(law, RewardLaw):
        raise ValueError(f"{name} must be a RewardLaw (from asymalign.reward_law), got {type(law).__name__}")
    if n is not None and law.n != n:
        raise ValueError(f"{name} was built for n = {law.n}, not n = {n}")
    if p is not None and r is not None and law.fingerprint is not None:
        if not is_concrete(p, r):
            return
        if model_fingerprint(p, r) != law.fingerprint:
            raise ValueError(f"{name} was built from another model (p, r); rebuild it with reward_law(p, r, n)")


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
# types method
# ---------------------------------------------------------------------------


def _compositions(n: int, k: int) -> np.ndarray:
    """All ``c`` in ``N^k`` with ``Σ c = n`` (rows), vectorised stars and bars."""
    if k == 1:
        return np.array([[n]], dtype=np.int64)
    # Build column by column: rows of partial sums.
    parts = np.zeros((1, 0), dtype=np.int64)
    remaining = np.array([n], dtype=np.int64)
    for _ in range(k - 1):
        counts = remaining + 1
        idx = np.repeat(np.arange(parts.shape[0]), counts)
        offs = np.arange(idx.size) - np.repeat(np.cumsum(counts) - counts, counts)
        parts = np.concatenate([parts[idx], offs[:, None]], axis=1)
        remaining = remaining[idx] - offs
    return np.concatenate([parts, remaining[:, None]], axis=1)


def num_types(n: int, k: int) -> int:
    """``C(n+k-1, k-1)``: the number of types of length-``n`` sequences over ``k`` letters."""
    return math.comb(n + k - 1, k - 1)


def _types_arrays(log_w, values, n):
    comps = _compositions(n, int(log_w.shape[-1]))
    c = jnp.asarray(comps, dtype=log_w.dtype)
    logp = gammaln(n + 1.0) - jnp.sum(gammaln(c + 1.0), axis=-1) + jnp.sum(nx.xlogy_masked(c, log_w), axis=-1)
    levels = c @ values
    return levels, logp


def law_from_types(p, r, n: int) -> RewardLaw:
    r"""Jittable types-method law of ``r_n`` (THEORY.md §7), levels *not* merged.

    ``log P(c) = log n! - Σ log c_x! + Σ c_x log p(x)`` for every type ``c``,
    level ``c · r``, sorted by level. ``p`` and ``r`` may be traced (``n`` and
    the alphabet size are static). Tied levels are kept as separate entries;
    the best-of-N functions handle them exactly. For merged, distinct levels
    use :func:`reward_law`.
    """
    n = check_positive_int(n, "n")
    check_model(p, r)
    dt = nx.float_dtype(p, r)
    p = jnp.asarray(p, dt)
    r = jnp.asarray(r, dt)
    if num_types(n, p.shape[-1]) > _MAX_TYPES:
        raise ValueError(
            f"n = {n} with k = {p.shape[-1]} letters has {num_types(n, p.shape[-1])} types "
            f"(> {_MAX_TYPES}); use a lattice reward or smaller n"
        )
    levels, logp = _types_arrays(nx.masked_log(p), r, n)
    order = jnp.argsort(levels)
    levels, logp = levels[order], logp[order]
    # Mathematically equal levels (c · r summed in different orders, e.g.
    # 0.1 + 0.2 vs 0.3) may differ by rounding: snap each run of levels within
    # the merge tolerance onto its first value, as reward_law merges them, so
    # that the best-of-N functions see one tie group.
    tol = _MERGE_RTOL * n * jnp.maximum(1.0, jnp.max(jnp.abs(r)))
    new = jnp.concatenate([jnp.ones((1,), bool), jnp.diff(levels) > tol])
    first = jax.lax.cummax(jnp.where(new, jnp.arange(levels.shape[-1]), 0))
    return RewardLaw(levels=levels[first], log_prob=logp, n=n)


def _types_law_host(values, weights, n):
    """Types method in NumPy float64 (no compilation): ``log c!`` from an
    ``lgamma`` table, then equal levels merged with ``logaddexp.reduceat``."""
    comps = _compositions(n, values.size)
    log_fact = np.array([math.lgamma(c + 1.0) for c in range(n + 1)])
    log_w = np.log(weights)
    logp = log_fact[n] - log_fact[comps].sum(axis=-1) + comps @ log_w
    levels = comps @ values
    order = np.argsort(levels, kind="stable")
    levels, logp = levels[order], logp[order]
    tol = _MERGE_RTOL * n * max(1.0, float(np.max(np.abs(values))))
    starts = np.flatnonzero(np.concatenate([[True], np.diff(levels) > tol]))
    out_lp = np.logaddexp.reduceat(logp, starts) if starts.size < levels.size else logp
    return levels[starts], out_lp


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


def _window_reader(log_w, n: int, M: int):
    """``window(θ) -> (centre, ratio, Q)``: the tilted law ``Q = (w_θ)^{*n}`` on
    the ``M`` levels ``centre - M//2 .. centre + M//2 - 1`` from one inverse
    FFT, ``centre = round(n Λ_w'(θ))``, and ``ratio = Q / max Q`` (THEORY.md §7).
    Then ``P_n(s) = Q(s) e^{-θ s + n Λ_w(θ)}``."""
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
        # n-th power by repeated squaring (static n) cannot overflow and its
        # relative error grows only like log2(n) ulps (no large-phase trig).
        q = jnp.fft.irfft(jax.lax.integer_pow(table @ ph.astype(cdt), n), n=M)
        q = q[(centre + t_idx) % M]  # the circular law read around the centre
        return centre, q / jnp.max(q), q

    return window


def _best_windows(log_w, n: int, thetas, M: int, base, size: int):
    """Best reading of levels ``base .. base + size - 1`` over the tilts
    ``thetas``: each level takes its value from the window where ``Q/max Q``
    is largest; unreachable levels get ``-inf``. Returns ``(log P, score)``
    with ``score = log(Q/max Q)`` there (relative error ~``1e-16 e^{-score}``)."""
    span = log_w.shape[-1] - 1
    dt = log_w.dtype
    window = _window_reader(log_w, n, M)
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


def _lattice_log_law_dp(log_w, n: int):
    """Exact log-space convolution power by ``n`` one-token steps,
    ``P_{j+1}(s) = logsumexp_m P_j(s - m) + log w(m)``: cost ``O(n^2 span^2)``,
    relative accuracy at every level whatever the shape of the law. The
    fallback for laws the tilted windows cannot resolve (deep dips, e.g. a
    letter of probability 1e-30)."""
    span = log_w.shape[-1] - 1
    L = n * span + 1
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


_fisher_length_jit = jax.jit(_fisher_length_grid)  # n traced: one compilation per alphabet size


def _host_thetas(log_w, n: int) -> np.ndarray:
    """The full law's tilts (as :func:`_lattice_thetas`), their number
    ``√n u_max / 3 + 2`` found from the Fisher length, computed without a
    compilation per number of tilts."""
    th, u = (np.asarray(a) for a in _fisher_length_jit(log_w, jnp.asarray(float(n), log_w.dtype)))
    num_tilts = int(math.ceil(math.sqrt(n) * float(u[-1]) / _CENTRE_SPACING)) + 2
    return np.interp(np.linspace(0.0, u[-1], num_tilts), u, th)


def _pad_tilts(thetas: np.ndarray) -> jax.Array:
    """Tilts padded to a bucket by repeating the last (a repeated window
    changes nothing: only a strictly better score replaces a reading)."""
    size = _bucket(thetas.size, 8)
    return jnp.asarray(np.concatenate([thetas, np.full(size - thetas.size, thetas[-1])]))


def _lattice_from_thetas(log_w, n: int, thetas, fft_size: int):
    """Full lattice law from given tilts: ``(log P normalised, score)``."""
    logp, score = _best_windows(log_w, n, thetas, fft_size, 0, n * (log_w.shape[-1] - 1) + 1)
    return logp - logsumexp(logp), score


def law_from_lattice(log_w, n: int, a=0.0, h=1.0, num_tilts: int | None = None) -> RewardLaw:
    r"""Jittable lattice-method law of ``r_n = n a + h M_n`` (THEORY.md §7).

    Args:
      log_w: log-probabilities of the per-token lattice index ``m = 0..span``
        (shape ``(span+1,)``; ``-inf`` for absent indices, but ``m = 0`` and
        ``m = span`` must have positive probability). May be traced.
      n: sequence length (static).
      a, h: lattice offset and step (may be traced).
      num_tilts: number of tilted windows (static). ``None`` uses
        :func:`default_num_tilts`, a bound that covers any model; the
        host-side :func:`reward_law` computes the exact need instead.

    Returns:
      A :class:`RewardLaw` on all ``n·span + 1`` lattice levels (unreachable
      ones with ``log_prob = -inf``), each with relative accuracy ~1e-10 in
      float64 for laws without deep dips. Unlike :func:`reward_law`, this
      jittable path has no fallback for levels no tilt resolves (a letter
      with a tiny probability such as 1e-20 makes the law far from
      log-concave; those levels may lose relative accuracy).
    """
    n = check_positive_int(n, "n")
    log_w = jnp.asarray(log_w, nx.float_dtype(log_w))
    span = log_w.shape[-1] - 1
    if num_tilts is None:
        num_tilts = default_num_tilts(n, span)
    L = n * span + 1
    logp = _lattice_log_law(log_w, n, int(num_tilts), _fft_size(n, span))
    levels = n * jnp.asarray(a, log_w.dtype) + jnp.asarray(h, log_w.dtype) * jnp.arange(L, dtype=log_w.dtype)
    return RewardLaw(levels=levels, log_prob=logp, n=n)


# ---------------------------------------------------------------------------
# public constructor
# ---------------------------------------------------------------------------


def reward_law(p, r, n: int, method: str = "auto") -> RewardLaw:
    r"""Exact law of the total reward ``r_n = Σ r(y_i)`` under ``p^n`` (THEORY.md §7).

    Host-side constructor (its output size depends on the data, so it is not
    jittable itself; the returned :class:`RewardLaw` is a pytree that every
    best-of-N function accepts under ``jit``/``vmap``). For jittable
    construction from traced ``p`` see :func:`law_from_lattice` and
    :func:`law_from_types`.

    Args:
      p: reference probabilities, shape ``(k,)``; zeros allowed.
      r: per-token rewards, shape ``(k,)``; ties allowed.
      n: sequence length ``>= 1``.
      method: ``"types"``, ``"lattice"`` or ``"auto"`` (two distinct rewards:
        types, i.e. the binomial law; rewards on a lattice ``a + h m``:
        lattice; otherwise types when ``C(n+k-1, k-1) <= 3e6``).

    Returns:
      ``RewardLaw`` with sorted distinct ``levels`` (only reachable ones) and
      exact ``log_prob`` (float64), normalised in log space. On the lattice
      path, levels that no tilted window resolves to relative accuracy ~1e-9
      (deep dips from a letter of tiny probability) are detected and the law
      is recomputed by exact log-space convolution when ``n² span²`` is
      affordable (else a warning says how accurate they are).

    >>> import asymalign as aa
    >>> law = aa.reward_law([0.5, 0.5], [0.0, 1.0], 2)
    >>> law.levels.tolist(), law.prob.round(12).tolist()
    ([0.0, 1.0, 2.0], [0.25, 0.5, 0.25])
    """
    n = check_positive_int(n, "n")
    if method not in ("auto", "types", "lattice"):
        raise ValueError(f"method must be 'auto', 'types' or 'lattice', got {method!r}")
    values, weights = pushforward(p, r)
    fp = _fingerprint(values, weights)
    k = values.size
    lattice = _detect_lattice(values) if k > 1 else (float(values[0]), 1.0, np.zeros(1, np.int64))
    if lattice is not None and int(lattice[2][-1]) * n + 1 > _MAX_LATTICE_LEVELS:
        lattice = None
    if method == "auto":
        if k <= 2 or (lattice is None and num_types(n, k) <= _MAX_TYPES):
            method = "types"
        elif lattice is not None:
            method = "lattice"
        else:
            raise ValueError(
                f"r is not on a lattice and n = {n} with {k} distinct rewards has "
                f"{num_types(n, k)} types (> {_MAX_TYPES}); no exact method applies"
            )
    if method == "types":
        if num_types(n, k) > _MAX_TYPES:
            raise ValueError(f"method='types': {num_types(n, k)} types for n = {n}, k = {k} exceeds {_MAX_TYPES}")
        levels, logp = _types_law_host(values, weights, n)
        logp = logp - np.logaddexp.reduce(logp)
        return RewardLaw(jnp.asarray(levels), jnp.asarray(logp), n, fp)
    if lattice is None:
        raise ValueError("method='lattice': the rewards on supp p are not on a lattice a + h*m")
    a, h, span, log_w = _lattice_log_w(lattice, weights)
    if span == 0:
        return RewardLaw(jnp.asarray([n * a]), jnp.zeros(1), n, fp)
    thetas = _pad_tilts(_host_thetas(log_w, n))
    logp, score = (np.asarray(a) for a in _lattice_jit(log_w, n, thetas, _fft_size(n, span)))
    if np.min(score) < _MIN_SCORE:
        if float(n) * n * (span + 1) ** 2 <= _MAX_DP_WORK:
            logp = np.asarray(_lattice_dp_jit(log_w, n))
        else:
            warnings.warn(
                f"reward_law: {int(np.sum(score < _MIN_SCORE))} lattice levels are only resolved to "
                f"relative accuracy ~{1e-16 * math.exp(-float(np.min(score))):.1e} (a letter with a tiny "
                "probability makes the law non-log-concave); the exact log-space fallback would cost "
                f"n^2 span^2 = {float(n) * n * (span + 1) ** 2:.1e} operations",
                stacklevel=2,
            )
    idx = np.flatnonzero(np.isfinite(logp))
    levels = n * a + h * idx.astype(np.float64)
    return RewardLaw(jnp.asarray(levels), jnp.asarray(logp[idx]), n, fp)


def _lattice_log_w(lattice, weights):
    """``(a, h, span, log w)``: per-token log-law of the lattice index ``m``."""
    a, h, m = lattice
    span = int(m[-1])
    log_w = np.full(span + 1, -np.inf)
    log_w[m] = np.log(weights)
    return a, h, span, jnp.asarray(log_w)


_lattice_jit = jax.jit(_lattice_from_thetas, static_argnums=(1, 3))
_lattice_dp_jit = jax.jit(_lattice_log_law_dp, static_argnums=(1,))


def _bucket(length: int, minimum: int = 64) -> int:
    """Padded length: powers of two (at least ``minimum``), so kernels compile O(log L) times."""
    return max(minimum, 1 << (length - 1).bit_length())
