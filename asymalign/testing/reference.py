r"""Float64 NumPy/SciPy reference twins: the independent numbers tests compare with.

Written the plain way a careful researcher would (no JAX, SciPy imported
lazily inside the functions), so a test that compares :mod:`asymalign` with
these compares two independent implementations. Single models are 1-D
arrays ``p``, ``r`` of length ``k`` (zeros in ``p`` allowed); the batch
functions :func:`solve_lambda` and :func:`rate_function` take ``(B, k)``
arrays and loop over instances (they are also the baselines of
``benchmarks/run.py``).

* tilts (THEORY.md §2–§3): :func:`log_partition`, :func:`tilt`,
  :func:`tilt_kl`, :func:`max_kl`, :func:`kl`, :func:`solve_lambda`
  (``brentq``);
* large deviations (§5): :func:`rate_function` (Brent minimisation);
* exact laws of ``r_n`` (§7): :func:`brute_force_law` (all ``k^n``
  sequences), :func:`types_law` (stars and bars), :func:`merge_levels`;
* best-of-N (§6): :func:`bon_level_log_law`, :func:`level_kl`.

>>> import numpy as np
>>> from asymalign.testing import reference as ref
>>> p, r = np.array([0.7, 0.2, 0.1]), np.array([0.0, 1.0, 2.0])
>>> lam = ref.solve_lambda(p, r, 0.1)
>>> round(ref.tilt_kl(p, r, float(lam)), 12)
0.1
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "log_partition",
    "tilt",
    "tilt_kl",
    "kl",
    "max_kl",
    "solve_lambda",
    "rate_function",
    "merge_levels",
    "brute_force_law",
    "types_law",
    "bon_level_log_law",
    "level_kl",
]


# ---------------------------------------------------------------------------
# §2–§3: the tilted family, one model
# ---------------------------------------------------------------------------


def _shift(p, r, lam):
    s = p > 0
    c = r[s].max() if lam >= 0 else r[s].min()
    return s, c, lam * (r[s] - c)


def log_partition(p, r, lam: float) -> float:
    """``Λ(λ) = λ c + log Σ p e^{λ (r - c)}`` (``c`` the extreme reward on ``supp p``)."""
    from scipy.special import logsumexp

    p, r = np.asarray(p, float), np.asarray(r, float)
    s, c, a = _shift(p, r, lam)
    return float(lam * c + logsumexp(a, b=p[s]))


def tilt(p, r, lam: float) -> np.ndarray:
    """``φ_λ ∝ p e^{λ r}``; ``λ = ±inf``: ``p`` conditioned on the argmax/argmin set."""
    from scipy.special import logsumexp

    p, r = np.asarray(p, float), np.asarray(r, float)
    s = p > 0
    if np.isinf(lam):
        ext = r[s].max() if lam > 0 else r[s].min()
        q = np.where(s & (r == ext), p, 0.0)
        return q / q.sum()
    _, _, a = _shift(p, r, lam)
    out = np.zeros_like(p)
    out[s] = np.exp(np.log(p[s]) + a - logsumexp(a, b=p[s]))
    return out


def kl(q, p) -> float:
    """``KL(q || p) = Σ q log(q/p)`` (``scipy.special.rel_entr``; ``inf`` off ``supp p``)."""
    from scipy.special import rel_entr

    return float(np.sum(rel_entr(np.asarray(q, float), np.asarray(p, float))))


def tilt_kl(p, r, lam: float) -> float:
    """``K(λ) = KL(φ_λ || p)``."""
    return kl(tilt(p, r, lam), p)


def max_kl(p, r) -> float:
    """``Δ_max = -log p(A)``, ``A`` the argmax of ``r`` on ``supp p``."""
    p, r = np.asarray(p, float), np.asarray(r, float)
    s = p > 0
    return float(-np.log(p[s & (r == r[s].max())].sum()))


def _tilt_kl_fn(p, r):
    """``K(λ)`` for one model, shifted by ``r_max`` (hand-written log-sum-exp: fast on small k)."""
    on = p > 0
    logp = np.log(p[on])
    u = r[on] - r[on].max()

    def K(lam):
        z = logp + lam * u
        m = z.max()
        e = np.exp(z - m)
        s = e.sum()
        return lam * np.dot(e, u) / s - (m + math.log(s))

    return K


def _solve_one(p, r, delta):
    from scipy.optimize import brentq

    on = p > 0
    rs = r[on]
    rmax = rs.max()
    dmax = -math.log(p[on][rs == rmax].sum())
    if delta == 0:
        return 0.0
    if delta >= dmax:
        return math.inf
    K = _tilt_kl_fn(p, r)
    span = rmax - rs.min()
    hi = 1.0 / span
    while K(hi) < delta:  # bracket by doubling
        hi *= 2.0
    return brentq(lambda lam: K(lam) - delta, 0.0, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps)


def solve_lambda(p, r, delta):
    """``λ*`` with ``KL(φ_{λ*} || p) = Δ`` (``0`` at ``Δ = 0``, ``inf`` for ``Δ >= Δ_max``).

    ``scipy.optimize.brentq`` per instance on a bracket found by doubling.
    ``p``, ``r``: ``(k,)`` or ``(B, k)``; ``delta`` scalar or ``(B,)``.
    """
    p, r = np.asarray(p, float), np.asarray(r, float)
    single = p.ndim == 1
    p, r = np.atleast_2d(p), np.atleast_2d(r)
    delta = np.broadcast_to(np.asarray(delta, float), p.shape[:1])
    out = np.array([_solve_one(p[i], r[i], delta[i]) for i in range(p.shape[0])])
    return out[0] if single else out


# ---------------------------------------------------------------------------
# §5: rate function
# ---------------------------------------------------------------------------


def _rate_one(p, r, x):
    from scipy.optimize import minimize_scalar

    on = p > 0
    logp = np.log(p[on])
    rs = r[on]
    rmin, rmax = rs.min(), rs.max()
    if x < rmin or x > rmax:
        return math.inf
    if x == rmax:
        return -math.log(p[on][rs == rmax].sum())
    if x == rmin:
        return -math.log(p[on][rs == rmin].sum())
    c = 0.5 * (rmin + rmax)
    rc = rs - c  # centring keeps Λ(t) - t x well scaled
    xc = x - c

    def f(t):  # Λ(t) - t x, convex; I(x) = -min_t f
        z = logp + t * rc
        m = z.max()
        return m + math.log(np.exp(z - m).sum()) - t * xc

    res = minimize_scalar(f, method="brent", options={"xtol": 1e-12})
    return max(-res.fun, 0.0)


def rate_function(p, r, x):
    """Cramér rate ``I_0(x) = sup_t [t x - Λ(t)]``: ``minimize_scalar`` (Brent) per instance.

    ``p``, ``r``: ``(k,)`` or ``(B, k)``; ``x`` scalar or ``(B,)``. About
    ``1e-9`` relative (Brent's tolerance on ``t``); use mpmath for more.
    """
    p, r = np.asarray(p, float), np.asarray(r, float)
    single = p.ndim == 1
    p, r = np.atleast_2d(p), np.atleast_2d(r)
    x = np.broadcast_to(np.asarray(x, float), p.shape[:1])
    out = np.array([_rate_one(p[i], r[i], x[i]) for i in range(p.shape[0])])
    return out[0] if single else out


# ---------------------------------------------------------------------------
# §7: exact laws of r_n
# ---------------------------------------------------------------------------


def merge_levels(levels, log_prob, rtol: float = 1e-9):
    """Sort levels, drop ``-inf`` ones and merge levels equal within ``rtol`` (log-space sums)."""
    levels, log_prob = np.asarray(levels, float), np.asarray(log_prob, float)
    keep = log_prob > -np.inf
    levels, log_prob = levels[keep], log_prob[keep]
    order = np.argsort(levels, kind="stable")
    levels, log_prob = levels[order], log_prob[order]
    tol = rtol * max(1.0, float(np.max(np.abs(levels))))
    starts = np.flatnonzero(np.concatenate([[True], np.diff(levels) > tol]))
    return levels[starts], np.logaddexp.reduceat(log_prob, starts)


def brute_force_law(p, r, n: int):
    """``(levels, log P)`` of ``r_n`` by enumerating all ``k^n`` sequences (small ``k^n`` only)."""
    p, r = np.asarray(p, float), np.asarray(r, float)
    k = p.size
    seqs = np.array(list(itertools.product(range(k), repeat=n)), dtype=np.int64).reshape(-1, n)
    with np.errstate(divide="ignore"):
        logp = np.log(p)[seqs].sum(axis=1)
    return merge_levels(r[seqs].sum(axis=1), logp)


def _compositions(n: int, k: int) -> np.ndarray:
    """All count vectors ``c`` in ``N^k`` with ``Σ c = n`` (stars and bars by ``itertools.combinations``)."""
    rows = []
    for bars in itertools.combinations(range(n + k - 1), k - 1):
        b = (-1, *bars, n + k - 1)
        rows.append([b[i + 1] - b[i] - 1 for i in range(k)])
    return np.array(rows, dtype=np.int64).reshape(-1, k)


def types_law(p, r, n: int):
    """``(levels, log P)`` of ``r_n`` from the types: ``log n! - Σ log c_x! + Σ c_x log p(x)`` at ``c · r``."""
    from scipy.special import gammaln

    p, r = np.asarray(p, float), np.asarray(r, float)
    c = _compositions(n, p.size)
    with np.errstate(divide="ignore"):
        lp = np.log(p)
    with np.errstate(invalid="ignore"):
        terms = np.where(c > 0, c * lp, 0.0)
    logp = gammaln(n + 1.0) - gammaln(c + 1.0).sum(axis=1) + terms.sum(axis=1)
    return merge_levels(c @ r, logp)


# ---------------------------------------------------------------------------
# §6: best-of-N in log space
# ---------------------------------------------------------------------------


def _log1mexp(x):
    x = np.minimum(x, 0.0)
    with np.errstate(divide="ignore"):
        return np.where(x > -math.log(2), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def _log_cum_from_top(logp):
    """``log S(s) = log P(level > s)`` from the top down (reversed accumulate)."""
    with np.errstate(invalid="ignore"):
        ge = np.logaddexp.accumulate(logp[::-1])[::-1]  # log P(level >= s)
    return np.concatenate([ge[1:], [-np.inf]])


def bon_level_log_law(log_prob, log_num_samples: float):
    """``log B_N(s) = log(F(s)^N - F(s-)^N)`` over sorted distinct levels (THEORY.md §6).

    ``N log F`` is computed as ``-exp(log N + log(-log F))``. ``log_prob`` may
    be ``-inf`` at the bottom for levels whose mass is unknown (lumped
    below); ``log F`` is then taken as ``log1p(-S)`` from the top, which is
    exact whenever ``S(s) <= 1/2`` there. Levels with ``S > 1/2`` use the
    bottom-up cumulative sum.
    """
    logp = np.asarray(log_prob, float)
    log_n = float(log_num_samples)
    log_s = _log_cum_from_top(logp)
    with np.errstate(invalid="ignore"):
        log_f_bottom = np.logaddexp.accumulate(logp)
    upper = log_s < -math.log(2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # log(-log F): from S in the upper half (log(-log1p(-S)) ~ log S for tiny S)
        small = log_s < -30
        lnlf_up = np.where(small, log_s, np.log(-np.log1p(-np.exp(np.where(small, -1.0, log_s)))))
        lnlf_lo = np.log(-np.minimum(log_f_bottom, -1e-300))
        lnlf = np.where(upper, lnlf_up, lnlf_lo)
        lnlf[-1] = -np.inf  # F = 1 at the top
        a = -np.exp(log_n + lnlf)  # N log F(s)
        # D(s) = log F(s) - log F(s-) = log1p(P(s) / F(s-)), F(s-) = F(s) - P(s)
        log_f_prev_bottom = np.concatenate([[-np.inf], log_f_bottom[:-1]])
        log_f_prev = np.where(upper, _log1mexp(np.logaddexp(log_s, logp)), log_f_prev_bottom)
        z = logp - log_f_prev
        log_d = np.where(z < -30, z, np.log(np.log1p(np.exp(np.minimum(z, 700)))))
        log_b = a + _log1mexp(-np.exp(log_n + log_d))
    return np.where(np.isfinite(logp), log_b, -np.inf)


def level_kl(log_q, log_p) -> float:
    """``KL(q || p) = Σ_{q>0} q (log q - log p)`` between two laws on the same levels."""
    log_q, log_p = np.asarray(log_q, float), np.asarray(log_p, float)
    on = np.isfinite(log_q)
    return float(np.sum(np.exp(log_q[on]) * (log_q[on] - log_p[on])))
