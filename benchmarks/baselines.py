r"""Plain NumPy/SciPy implementations: what a careful researcher would write.

These are the baselines of ``benchmarks/run.py``. They compute the same
quantities as asymalign (THEORY.md §3, §5, §6, §7, §8) without JAX:

* vectorised NumPy wherever the work is naturally vectorised;
* SciPy's scalar root finder / minimiser (``brentq``, ``minimize_scalar``)
  one instance at a time where the problem is a scalar root or minimum;
* log-space everywhere the tails matter (``gammaln``, ``logaddexp``
  accumulations, ``log1p``/``expm1``), and an exponentially tilted FFT
  convolution power (``scipy.fft``) for lattice laws.

Inner scalar loops use a hand-written stable log-sum-exp
(``m + log Σ e^{z-m}``) instead of ``scipy.special.logsumexp``: on an
8-vector the SciPy function costs ~80 µs per call against ~7 µs, and a careful
researcher would notice. Nothing here imports JAX or asymalign.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft
from scipy.optimize import brentq, minimize_scalar
from scipy.special import gammaln, logsumexp

__all__ = [
    "solve_lambda",
    "solve_lambda_vectorised",
    "rate_function",
    "bernoulli_log_law",
    "lattice_log_law_one_tilt",
    "bon_vs_klrl",
    "simulate_bon",
]


# ---------------------------------------------------------------------------
# §3: λ* by brentq, one instance at a time
# ---------------------------------------------------------------------------


def _tilt_kl_fn(p, r):
    """``K(λ) = KL(φ_λ || p)`` for one model, shifted by ``r_max`` for stability."""
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
    """``λ*`` with ``KL(φ_{λ*} || p) = Δ`` for a batch: ``brentq`` per instance.

    ``p``, ``r``: ``(B, k)``; ``delta``: ``(B,)``. Returns ``(B,)``.
    """
    p = np.asarray(p, float)
    r = np.asarray(r, float)
    delta = np.asarray(delta, float)
    out = np.empty(delta.shape[0])
    for i in range(delta.shape[0]):
        out[i] = _solve_one(p[i], r[i], delta[i])
    return out


def solve_lambda_vectorised(p, r, delta, iters: int = 200):
    """A stronger NumPy baseline (not in the issue): bisection on ``log λ``,
    vectorised over the whole batch (shown next to ``brentq`` for honesty).

    Assumes ``0 < Δ < Δ_max`` and ``p > 0``.
    """
    p = np.asarray(p, float)
    r = np.asarray(r, float)
    delta = np.asarray(delta, float)
    logp = np.log(p)
    u = r - r.max(axis=1, keepdims=True)
    span = -u.min(axis=1)

    def K(lam):
        z = logp + lam[:, None] * u
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        s = e.sum(axis=1)
        return lam * np.einsum("bk,bk->b", e, u) / s - (m[:, 0] + np.log(s))

    lo = np.full(delta.shape, -40.0)  # log(λ · span)
    hi = np.full(delta.shape, 40.0)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = K(np.exp(mid) / span) < delta
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
        if np.all(hi - lo < 1e-15 * np.maximum(1.0, np.abs(hi))):
            break
    return np.exp(0.5 * (lo + hi)) / span


# ---------------------------------------------------------------------------
# §5: rate function by scalar minimisation, one instance at a time
# ---------------------------------------------------------------------------


def _rate_one(p, r, x):
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
    """Cramér rate ``I_0(x) = sup_t [t x - Λ(t)]`` for a batch of ``(model, x)``
    pairs: ``scipy.optimize.minimize_scalar`` (Brent) per instance."""
    p = np.asarray(p, float)
    r = np.asarray(r, float)
    x = np.asarray(x, float)
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = _rate_one(p[i], r[i], x[i])
    return out


# ---------------------------------------------------------------------------
# §7: exact laws of r_n
# ---------------------------------------------------------------------------


def bernoulli_log_law(q: float, n: int):
    """``log P(M_n = j)``, ``j = 0..n``, ``M_n ~ Binomial(n, q)``, via ``gammaln``."""
    j = np.arange(n + 1, dtype=float)
    return gammaln(n + 1.0) - gammaln(j + 1.0) - gammaln(n - j + 1.0) + j * math.log(q) + (n - j) * math.log1p(-q)


def lattice_log_law_one_tilt(w, n: int, theta: float, rel_floor: float = 1e-12):
    """``log P(M_n = s)`` for ``M_n`` a sum of ``n`` i.i.d. draws of ``w`` on
    ``{0..span}``, by ONE exponentially tilted FFT convolution power.

    ``P_n(s) = Q(s) exp(-θ s + n Λ_w(θ))`` with ``Q = (w_θ)^{*n}`` from an
    inverse real FFT of ``rfft(w_θ)^n`` (length ``>= n·span + 1``: no
    aliasing). The FFT has absolute accuracy ``~1e-16 · max Q``, so ``log P``
    is relatively accurate only where ``Q >= rel_floor · max Q`` (a window of
    roughly ±7 tilted standard deviations around ``n Λ_w'(θ)``); elsewhere
    this returns ``-inf``. Choose ``θ = λ*`` for best-of-N at ``log N = nΔ``.
    """
    w = np.asarray(w, float)
    span = w.size - 1
    m = np.arange(span + 1, dtype=float)
    with np.errstate(divide="ignore"):
        logw = np.log(w)
    lam_w = logsumexp(logw + theta * m)
    w_th = np.exp(logw + theta * m - lam_w)
    L = n * span + 1
    nfft = sfft.next_fast_len(L, real=True)
    chi = sfft.rfft(w_th, nfft)
    q = sfft.irfft(chi**n, nfft)[:L]
    ok = q >= rel_floor * q.max()
    s = np.arange(L, dtype=float)
    logp = np.full(L, -np.inf)
    logp[ok] = np.log(q[ok]) - theta * s[ok] + n * lam_w
    return logp


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


def bon_level_log_law(logp, log_n, log_f_below=None):
    """``log B_N(s) = log(F(s)^N - F(s-)^N)`` over levels with log-probabilities
    ``logp`` (THEORY.md §6), ``N log F`` computed as ``-exp(log N + log(-log F))``.

    ``logp`` may be ``-inf`` at the bottom for levels whose mass is unknown
    (lumped below); ``log F`` is then taken as ``log1p(-S)`` from the top,
    which is exact whenever ``S(s) <= 1/2`` there. Levels with ``S > 1/2``
    use the bottom-up cumulative sum.
    """
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


def _level_kl(log_q, log_p):
    on = np.isfinite(log_q)
    return float(np.sum(np.exp(log_q[on]) * (log_q[on] - log_p[on])))


def bon_vs_klrl(p, r, n: int, delta: float):
    """Exact best-of-N at ``log N = nΔ`` next to KL-RL (THEORY.md §3, §6, §7).

    Bernoulli / two-point models use the exact binomial law (``gammaln``);
    integer rewards on ``{0..span}`` use one tilted FFT at ``θ = λ*``
    (:func:`lattice_log_law_one_tilt`). Returns per-token
    ``(lam, rl_reward, bon_reward, bon_kl, bon_kl_to_tilt)``.
    """
    p = np.asarray(p, float)
    r = np.asarray(r, float)
    lam = _solve_one(p, r, delta)
    logp_tok = np.log(p)
    lam_tok = logsumexp(logp_tok + lam * r)  # Λ(λ*)
    rl_reward = float(np.dot(np.exp(logp_tok + lam * r - lam_tok), r))
    log_n = n * delta
    if p.size == 2:
        lo, hi = sorted(r)
        q = p[int(np.argmax(r))]
        logp = bernoulli_log_law(q, n)
        levels = n * lo + (hi - lo) * np.arange(n + 1, dtype=float)
    else:
        m = np.rint(r).astype(int)
        if not np.allclose(m, r) or m.min() != 0:
            raise ValueError("the lattice baseline expects integer rewards 0..span")
        w = np.bincount(m, weights=p)
        logp = lattice_log_law_one_tilt(w, n, lam)
        levels = np.arange(logp.size, dtype=float)
    on = np.isfinite(logp)
    lo_i, hi_i = np.flatnonzero(on)[[0, -1]]
    logp, levels = logp[lo_i : hi_i + 1], levels[lo_i : hi_i + 1]
    log_b = bon_level_log_law(logp, log_n)
    b = np.exp(log_b)
    reward = float(np.dot(b, levels)) / n
    kl_ref = _level_kl(log_b, logp) / n
    log_tilt = logp + lam * levels - n * lam_tok
    kl_tilt = _level_kl(log_b, log_tilt) / n
    return lam, rl_reward, reward, kl_ref, kl_tilt


# ---------------------------------------------------------------------------
# §8: Monte-Carlo best-of-N with numpy.random.Generator
# ---------------------------------------------------------------------------


def simulate_bon(seed, p, r, n: int, num_samples: int, num_trials: int, chunk_tokens: int = 1 << 22):
    """Best-of-N by simulation: per trial draw ``N x n`` tokens from ``p``
    (inverse CDF: ``searchsorted`` on uniforms), sum rewards, keep the best.

    Returns the best total reward of each trial, shape ``(num_trials,)``.
    Trials are processed in chunks of about ``chunk_tokens`` tokens.
    """
    rng = np.random.default_rng(seed)
    p = np.asarray(p, float)
    r = np.asarray(r, float)
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    per_trial = num_samples * n
    step = max(1, chunk_tokens // per_trial)
    out = np.empty(num_trials)
    for t0 in range(0, num_trials, step):
        t1 = min(num_trials, t0 + step)
        u = rng.random((t1 - t0, num_samples, n))
        idx = np.searchsorted(cdf, u, side="right")
        np.minimum(idx, p.size - 1, out=idx)
        out[t0:t1] = r[idx].sum(axis=-1).max(axis=-1)
    return out
