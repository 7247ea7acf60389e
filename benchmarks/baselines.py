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
researcher would notice. The scalar-loop twins shared with the test-suite (``solve_lambda``,
``rate_function``, ``bon_level_log_law``) live in
:mod:`asymalign.testing.reference` (NumPy/SciPy only, no JAX code runs).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft
from scipy.special import gammaln, logsumexp

from asymalign.testing.reference import _solve_one, bon_level_log_law, rate_function, solve_lambda
from asymalign.testing.reference import level_kl as _level_kl

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
# §3: λ* (brentq per instance: asymalign.testing.reference.solve_lambda); vectorised bisection
# ---------------------------------------------------------------------------


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
