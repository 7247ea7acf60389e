r"""The exact law of the total reward ``r_n`` under ``p^n`` (THEORY.md §7).

``reward_law(p, r, n)`` returns a :class:`RewardLaw`: the sorted distinct
levels of ``r_n`` and their exact log-probabilities. Two exact methods:

* **types** (any real rewards, small alphabets): a sequence's reward depends
  only on its counts ``c`` (``Σ c = n``),
  ``log P(c) = log n! - Σ log c_x! + Σ c_x log p(x)``, level ``c · r``; equal
  levels are merged. ``C(n+k-1, k-1)`` types.
* **lattice** (rewards ``a + h m`` with integer ``m``, detected
  automatically): ``r_n = n a + h M_n`` and the law of ``M_n`` is the n-fold
  convolution power of the per-token law, read from tilted FFT windows with
  full *relative* accuracy at every level (the kernels are in
  :mod:`asymalign._lattice`). Cost about ``n log n``.

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
from jax.scipy.special import gammaln
from jax.typing import ArrayLike

from . import _numerics as nx
from ._buckets import device_array
from ._jit import jit
from ._lattice import (  # noqa: F401  (_MIN_SCORE, _best_windows, _bucket, ... re-exported for _window_law)
    _MAX_DP_WORK,
    _MIN_SCORE,
    _best_windows,
    _bucket,
    _detect_lattice,
    _fft_size,
    _host_thetas,
    _lattice_dp_jit,
    _lattice_jit,
    _lattice_log_law,
    _lattice_log_w,
    _pad_tilts,
    default_num_tilts,
)
from ._validate import check_model, check_positive_int

__all__ = [
    "RewardLaw",
    "reward_law",
    "pushforward",
    "law_from_lattice",
    "law_from_types",
]

_exp = jit(jnp.exp)  # an executable per shape, cached like the package's kernels (eager jnp.exp is not)

# Relative tolerance for merging equal per-token rewards (a user's "equal").
_MERGE_RTOL = 1e-12
# Per-token relative tolerance for merging equal *levels* of r_n: rounding only
# (c · r summed in different orders; error <= k n eps max|r|), far below the
# gaps between distinct levels. With the reward tolerance (n · 1e-12) the runs of
# distinct levels 1e-11 apart (r = [0, 1e-11], n = 12) chained into one level,
# whose representative then depended on the direction (found by hypothesis).
_LEVEL_RTOL = 1e-14
_MAX_TYPES = 3_000_000
_MAX_LATTICE_LEVELS = 50_000_000


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
        return _exp(self.log_prob)


jax.tree_util.register_dataclass(RewardLaw, data_fields=["levels", "log_prob"], meta_fields=["n", "fingerprint"])


# ---------------------------------------------------------------------------
# push-forward and model fingerprint (host side)
# ---------------------------------------------------------------------------


def pushforward(p: ArrayLike, r: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-token reward law: distinct rewards on ``supp p`` and their probabilities (THEORY.md §7).

    .. math:: w(v) = p(\{x : r(x) = v\}), \qquad v \in r(\mathrm{supp}\, p)

    The law of ``r_n`` depends on ``(p, r)`` only through this push-forward of
    ``p`` by ``r`` (Yang et al., ISIT 2024). Rewards equal to within a
    relative ``1e-12`` are merged. Host-side (NumPy) helper.

    Args:
      p: reference probabilities, shape ``(k,)`` (zeros allowed).
      r: per-token rewards, shape ``(k,)``.

    Returns:
      ``(values, weights)``: sorted distinct rewards and their probabilities
      (float64 NumPy arrays).

    >>> import asymalign as aa
    >>> values, weights = aa.pushforward([0.2, 0.3, 0.5, 0.0], [1.0, 0.0, 1.0, 7.0])
    >>> values.tolist(), weights.tolist()
    ([0.0, 1.0], [0.3, 0.7])
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
    """Fingerprint of the push-forward of ``p`` through ``r`` (as ``RewardLaw.fingerprint``)."""
    return _fingerprint(*pushforward(p, r))


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


def law_from_types(p: ArrayLike, r: ArrayLike, n: int) -> RewardLaw:
    r"""Jittable types-method law of ``r_n`` (THEORY.md §7), levels *not* merged.

    .. math:: \log P(c) = \log n! - \sum_x \log c_x! + \sum_x c_x \log p(x)
              \quad\text{at level}\quad c \cdot r, \qquad \textstyle\sum_x c_x = n,

    for every type ``c``, sorted by level. ``p`` and ``r`` may be traced
    (``n`` and the alphabet size are static). Tied levels are kept as
    separate entries; the best-of-N functions handle them exactly. For merged,
    distinct levels use :func:`reward_law`. Yang et al. (ISIT 2024).

    Args:
      p: reference probabilities, shape ``(k,)``.
      r: per-token rewards, shape ``(k,)``.
      n: sequence length (static, ``>= 1``).

    Returns:
      A :class:`RewardLaw` with ``C(n+k-1, k-1)`` entries.

    >>> import asymalign as aa
    >>> law = aa.law_from_types([0.5, 0.5], [0.0, 1.0], 2)
    >>> law.levels.tolist(), law.prob.round(12).tolist()
    ([0.0, 1.0, 2.0], [0.25, 0.5, 0.25])
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
    tol = _LEVEL_RTOL * n * jnp.maximum(1.0, jnp.max(jnp.abs(r)))
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
    tol = _LEVEL_RTOL * n * max(1.0, float(np.max(np.abs(values))))
    starts = np.flatnonzero(np.concatenate([[True], np.diff(levels) > tol]))
    out_lp = np.logaddexp.reduceat(logp, starts) if starts.size < levels.size else logp
    return levels[starts], out_lp


def law_from_lattice(
    log_w: ArrayLike, n: int, a: ArrayLike = 0.0, h: ArrayLike = 1.0, num_tilts: int | None = None
) -> RewardLaw:
    r"""Jittable lattice-method law of ``r_n = n a + h M_n`` (THEORY.md §7).

    .. math:: P(M_n = s) = Q_n^θ(s)\, e^{-θ s + n Λ_w(θ)}, \qquad Q_n^θ = (w_θ)^{*n},

    each level read from the tilted FFT window where it is closest to the
    centre (full relative accuracy; Yang et al., ISIT 2024, for the law).

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

    >>> import jax.numpy as jnp, asymalign as aa
    >>> law = aa.law_from_lattice(jnp.log(jnp.array([0.5, 0.5])), 2)
    >>> law.levels.tolist(), law.prob.round(12).tolist()
    ([0.0, 1.0, 2.0], [0.25, 0.5, 0.25])
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


def reward_law(p: ArrayLike, r: ArrayLike, n: int, method: str = "auto") -> RewardLaw:
    r"""Exact law of the total reward ``r_n = Σ r(y_i)`` under ``p^n`` (THEORY.md §7).

    .. math:: P(r_n = s) = \sum_{y:\ r_n(y) = s} \prod_i p(y_i)

    (Yang et al., ISIT 2024: best-of-N and every level policy are functions of
    this law.)

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
        return RewardLaw(device_array(levels), device_array(logp), n, fp)
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
    return RewardLaw(device_array(levels), device_array(logp[idx]), n, fp)
