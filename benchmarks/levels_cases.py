"""Benchmark case ``levels`` (issue 12): InfAlign optimum and soft best-of-N on laws with ~10^4 levels.

* ``infalign_optimum``: best-of-N decoding, ``N = 16``, on the lattice law of
  ``p = (0.5, 0.3, 0.2)``, ``r = (0, 1, 2)``, ``n = 5000`` (10 001 levels,
  bucket 16 384), 1024 budgets ``Δ`` log-spaced in ``[1e-3, 5]`` (the issue
  size; ``--quick``: 64). asymalign: one call with the whole batch (Newton's
  method on the fixed point ``σ = g(q(σ))``, conjugate gradients for the
  Newton system, budgets solved in increasing order from the previous
  optimum; module docstring of ``asymalign.infalign``). The NumPy version
  ``np_infalign`` runs the same algorithm (the strongest we have: the former
  damped fixed point needed 25-150 steps per budget and stopped short of the
  fixed point, ``|T(q) - q|_1`` up to 2e-5 at ``Δ = 5``), on the 10 001
  levels without padding and with linear-space dot products (no BLAS: a
  threaded BLAS dot is pathologically slow on busy shared cores). The first
  asymalign call (compilation included) is reported separately.
* ``soft_best_of_n``: Bernoulli reference ``p = 0.5`` (``r = (0, 1)``, levels
  ``0..n``), ``log N = log 16``, temperature ``τ = 1`` (per-sequence reward
  units), ``n = 10^3, 10^4, 10^5``. Both sides run the same windowed lattice
  algorithm (module docstring of ``asymalign.soft_bon``): O(L) terms, about
  ``450 L``. The NumPy version (``np_soft_bon_windowed``) is blocked over
  nodes and levels; the plain NumPy grid ``np_soft_bon`` (one uniform
  trapezoid grid in ``u = log t``, step 0.1, O(L T)) has an independent node
  layout and checks the accuracy at ``n = 10^3`` (it needs ~16 s at ``n = 10^4``
  and grows like ``n^2``). The first call (compilation included) is reported
  separately.

Times are the minimum over repeats after a warm-up (compile) call; the load
average is reported (2 shared cores). Agreement: max relative difference of
the win rates (InfAlign), max relative difference of ``q`` over levels with
``q > 1e-250`` (soft BoN).

Run: ``python benchmarks/levels_cases.py [--quick]`` (prints a markdown table),
or ``levels_cases(quick)`` returns a list of dicts.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import asymalign as aa  # noqa: E402

LOG_N = float(np.log(16.0))


def _time(fn, repeats):
    out = fn()  # warm-up / compile
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return min(ts), out


def _lse(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


# ---------------------------------------------------------------------------
# InfAlign optimum (best-of-N), NumPy
# ---------------------------------------------------------------------------


def _np_tilt(log_p, u, delta, x0):
    """``(log λ, log q)``: ``q ∝ p e^{λ u}`` (``u <= 0``) with ``KL(q||p) = Δ``.

    Safeguarded Newton on ``log KL(x) = log Δ`` in ``x = log λ`` (``dKL/dx =
    λ² Var_q u``), warm-started at ``x0``, inside a bracket, bisecting when a
    step would leave it or not halve the previous one (``rtsafe``); the same
    rule as asymalign's ``_tilt``. Dot products by ``np.sum(a * b)``: a threaded BLAS dot of 10^4
    entries takes milliseconds on busy shared cores."""

    def _dot(a, b):
        return np.sum(a * b)

    on = log_p > -np.inf
    arg = on & (u == 0)
    dmax = -_lse(np.where(arg, log_p, -np.inf))
    if delta >= dmax:
        return x0, np.where(arg, log_p + dmax, -np.inf)
    if delta <= 0:
        return x0, log_p.copy()
    lp, uo = log_p[on], u[on]
    span = max(-np.min(uo), 1e-300)
    lo, hi = -40.0 - np.log(span), 60.0 - np.log(span)
    x = min(max(x0, lo), hi) if np.isfinite(x0) else 0.5 * (lo + hi)
    step = np.inf
    for _ in range(100):
        lam = np.exp(x)
        z = lp + lam * uo
        lz = _lse(z)
        q = np.exp(z - lz)
        m1 = _dot(q, uo)
        kl = lam * m1 - lz
        dkl = lam * lam * _dot(q, (uo - m1) ** 2)
        f = np.log(kl / delta) if kl > 0 else -np.inf
        lo, hi = (x, hi) if kl < delta else (lo, x)
        xn = x - f * kl / dkl if dkl > 0 else np.nan
        newton = lo <= xn <= hi and abs(xn - x) <= 0.5 * step
        res = 1e-15 * max(1.0, abs(x))
        done = abs(f) <= 1e-13 or hi - lo <= res or (newton and abs(xn - x) <= res)
        x_new = xn if newton else (x if done else 0.5 * (lo + hi))
        step, x = abs(x_new - x), x_new
        if done:
            break
    z = np.where(on, log_p + np.exp(x) * u, -np.inf)
    return x, z - _lse(z)


def np_infalign(log_p, log_n, deltas, tol=1e-13, max_iter=100):
    """Win rates, laws and Newton steps of the best-of-N InfAlign optimum per budget (distinct levels).

    The algorithm of asymalign's solver, in NumPy: the score is
    ``g/N - g(K)/N = -Σ_{k>=t, k<K} (b(k) + b(k+1))/2 Q(k)^{N-1}``
    (``b`` the BoN(P) level law; positive terms in log space, so it keeps its
    accuracy where ``g/N`` rounds to 1); Newton steps on ``σ = -h(q(σ))`` with conjugate
    gradients in ``L²(q)`` on ``(I + Π λ M D_q) y = Π r`` (``M = L^T diag(m) L``,
    two cumulative sums), a step kept if it does not lower ``W`` (else halved)
    or if it is a full step of ``|Δq|_1 <= 1e-7``, until a full step has ``|Δq|_1 <= tol``;
    continuation over the sorted budgets (``W`` concave: unique optimum).
    """
    big_n = float(np.exp(log_n))
    half = np.log(0.5)

    def _dot(a, b):  # no BLAS (see _np_tilt)
        return np.sum(a * b)

    ninf = np.array([-np.inf])
    on = log_p > -np.inf

    @np.errstate(divide="ignore", invalid="ignore", over="ignore")
    def cdf(lq):  # log Q(k), log(1 - Q(k)), each where it is accurate
        lf = np.logaddexp.accumulate(lq)
        ls = np.concatenate([np.logaddexp.accumulate(lq[::-1])[::-1][1:], ninf])
        return np.where(ls < half, np.log1p(-np.exp(ls)), lf), ls

    @np.errstate(divide="ignore", invalid="ignore", over="ignore")
    def bon(lq, lf, n):  # log [Q(k)^n - Q(k-1)^n]
        lf_prev = np.concatenate([ninf, lf[:-1]])
        d = np.logaddexp(0.0, lq - lf_prev)  # log Q(k) - log Q(k-1) = log1p(q/Q(k-1))
        return np.where(lq > -np.inf, n * lf + np.log(-np.expm1(-n * d)), -np.inf)

    with np.errstate(divide="ignore", invalid="ignore"):
        lf_p, ls_p = cdf(log_p)
        lb = bon(log_p, lf_p, big_n)  # BoN(P)
        lfb, lsb = cdf(lb)
        lfb_prev = np.concatenate([ninf, np.logaddexp.accumulate(lb)[:-1]])
        log_loss_w = np.logaddexp(lsb, lb + half)  # 1 - A(k)
        log_win_w = np.logaddexp(lfb_prev, lb + half)  # A(k)
        log_c = np.concatenate([half + np.logaddexp(lb[:-1], lb[1:]), ninf])  # A(k+1) - A(k)
        score0 = np.where(on, -np.exp(np.logaddexp(ls_p, log_p + half)), 0.0)  # -(1 - C)

    @np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore")
    def evaluate(lq):  # (g/N - g(K)/N, W, m), from linear cumulative sums of q (as asymalign)
        q = np.exp(lq)
        f = np.cumsum(q)
        s = np.concatenate([np.cumsum(q[::-1])[::-1][1:], [0.0]])  # 1 - Q(k)
        f_prev = np.concatenate([[0.0], f[:-1]])
        pos = f > 0
        lf = np.where(s < 0.5, np.log1p(-s), np.log(np.where(pos, f, 1.0)))
        lf = np.where(pos, lf, 0.0)
        d = np.log1p(q / np.where(f_prev > 0, f_prev, 1.0))
        lbq = np.where(f_prev > 0, big_n * lf + np.log(-np.expm1(-big_n * d)), big_n * lf)
        lbq = np.where(pos & (q > 0), lbq, -np.inf)
        loss = np.exp(_lse(lbq + log_loss_w))
        w = 1.0 - loss if loss < 0.5 else np.exp(_lse(lbq + log_win_w))
        n_pow = (big_n - 1.0) * lf
        h = np.cumsum(np.where(pos | (big_n == 1), np.exp(log_c + n_pow), 0.0)[::-1])[::-1]
        ok = pos & (log_c > -np.inf) & (big_n > 1)
        m = np.where(ok, (big_n - 1.0) * np.exp(np.minimum(log_c + (big_n - 2.0) * lf, 700)), 0.0)
        return np.where(on, -h, 0.0), w, m

    def curvature(m, dq):
        return np.cumsum((m * np.cumsum(dq))[::-1])[::-1]

    def direction(score, lam, q, g, m):
        r = np.where(on, g - score, 0.0)
        if not np.isfinite(lam):
            return r
        s = np.where(on, score - _dot(q, score), 0.0)
        var = _dot(q, s * s)

        def proj(v):
            v = v - _dot(q, v)
            return v - s * (_dot(q, s * v) / var) if var > 0 else v

        b = proj(r)
        y, res, p = np.zeros_like(b), b, b
        rr = bb = _dot(q, b * b)
        tol = min(max(lam * np.sqrt(bb), 1e-10), 1e-2)  # inexact Newton, as asymalign
        for _ in range(200):
            if rr <= tol * tol * bb or rr == 0:
                break
            ap = p + proj(lam * curvature(m, q * p))
            alpha = rr / _dot(q, p * ap)
            y, res = y + alpha * p, res - alpha * ap
            rr, rr_old = _dot(q, res * res), rr
            p = res + (rr / rr_old) * p
        return r - lam * curvature(m, q * y)

    def tilt(score, delta, x):
        x, lq = _np_tilt(log_p, np.where(on, score - score[on].max(), 0.0), delta, x)
        lam = np.inf if delta >= -_lse(np.where(on & (score == score[on].max()), log_p, -np.inf)) else np.exp(x)
        return x, lam, lq

    order = np.argsort(deltas, kind="stable")
    wins, laws, iters = np.empty(len(deltas)), np.empty((len(deltas), log_p.size)), np.empty(len(deltas), int)
    score, x = score0, np.nan
    for i in order:
        delta = float(deltas[i])
        x, lam, lq = tilt(score, delta, x)
        q = np.exp(lq)
        g, w, m = evaluate(lq)
        d, t, change, it = direction(score, lam, q, g, m), 1.0, 1.0, 0
        while it < max_iter and delta > 0 and np.isfinite(lam):
            it += 1
            cand = np.where(on, score + t * d, 0.0)
            xc, lam_c, lqc = tilt(cand, delta, x)
            qc = np.exp(lqc)
            gc, wc, mc = evaluate(lqc)
            move = np.sum(np.abs(qc - q))
            if wc >= w - 1e-15 or (t == 1.0 and move <= 1e-7):
                full = t == 1.0
                stall = full and 0.5 * change < move < 1e-12
                score, x, lam, q, lq, w, g, m = cand, xc, lam_c, qc, lqc, wc, gc, mc
                if (full and move <= tol) or stall:
                    break
                d, t, change = direction(score, lam, q, g, m), min(1.0, 2.0 * t), move
            else:
                t *= 0.5
                if t < 1e-8:
                    break
        wins[i], laws[i], iters[i] = w, np.exp(lq), it
    return wins, laws, iters


# ---------------------------------------------------------------------------
# soft best-of-N, NumPy
# ---------------------------------------------------------------------------


def np_soft_bon(levels, log_p, log_n, temperature, h=0.1, block=256):
    """Soft best-of-N level law (THEORY.md §12) by one trapezoid grid in ``u = log t``, in log space."""
    big_n = np.exp(log_n)
    on = log_p > -np.inf
    lw = np.where(on, (levels - levels[on].max()) / temperature, 0.0)
    lp = np.where(on, log_p, -np.inf)

    @np.errstate(over="ignore")
    def log_m_pow(u):  # log M(e^u)^{N-1}, blocked over nodes
        out = np.empty(u.size)
        for j in range(0, u.size, block):
            x = u[j : j + block, None] + lw[None, :]
            out[j : j + block] = (big_n - 1.0) * _lse(lp[None, :] - np.exp(x), axis=1)
        return out

    lo, top = -40.0, float(-lw[on].min()) + 6.0
    coarse = np.arange(lo, top + 1.0, 1.0)
    dead = np.nonzero(log_m_pow(coarse) < -800.0)[0]
    hi = min(top, coarse[dead[0]] if dead.size else top)
    u = np.arange(lo, hi + h, h)
    log_c = u + log_m_pow(u) + np.log(h)
    log_c[0] -= np.log(2.0)
    log_i = np.full(levels.size, -np.inf)
    for j in range(0, u.size, block):  # log I(s) = log Σ_j c_j exp(-e^{u_j} w_s)
        with np.errstate(over="ignore"):
            t = log_c[j : j + block, None] - np.exp(u[j : j + block, None] + lw[None, :])
        log_i = np.logaddexp(log_i, _lse(t, axis=0))
    tail = lo + log_m_pow(np.array([lo]))[0]  # ∫_{-inf}^{u_0} e^u du (M ≈ 1, e^{-t w} ≈ 1 there)
    log_i = np.logaddexp(log_i, tail)
    return np.where(on, log_n + lp + lw + log_i, -np.inf), u.size


# ---------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------


def case_infalign(num_budgets, repeats):
    law = aa.reward_law([0.5, 0.3, 0.2], [0.0, 1.0, 2.0], 5000)
    deltas = np.geomspace(1e-3, 5.0, num_budgets)
    log_p = np.asarray(law.log_prob)

    def run_aa():
        o = aa.infalign_optimum(law, LOG_N, jnp.asarray(deltas))
        return np.asarray(o.win_rate), np.asarray(o.law.prob)

    t0 = time.perf_counter()
    run_aa()
    t_first = time.perf_counter() - t0  # compilation + one solve
    t_aa, (w_aa, q_aa) = _time(run_aa, repeats)
    t_np, (w_np, q_np, iters) = _time(lambda: np_infalign(log_p, LOG_N, deltas), repeats)
    return {
        "case": "levels/infalign_optimum",
        "size": f"L={law.levels.size}, {num_budgets} budgets, N=16",
        "asymalign_s": t_aa,
        "numpy_s": t_np,
        "asymalign_first_call_s": t_first,
        "asymalign_ms_per_budget": 1e3 * t_aa / num_budgets,
        "numpy_ms_per_budget": 1e3 * t_np / num_budgets,
        "max_rel_diff": float(np.max(np.abs(w_aa - w_np) / np.abs(w_np))),
        "max_l1_diff_q": float(np.max(np.sum(np.abs(q_aa - q_np), axis=-1))),
        "numpy_newton_steps_mean": float(iters.mean()),
        "numpy_newton_steps_max": int(iters.max()),
    }


def _np_log1mexp(x):
    """``log(1 - e^x)`` for ``x <= 0`` (Mächler 2012)."""
    x = np.minimum(x, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > -0.693, np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def np_soft_bon_windowed(levels, log_p, log_n, temperature, block=1 << 15):
    """The windowed lattice algorithm of ``asymalign.soft_bon`` (module docstring), in NumPy.

    Same node layout (reusing the package's NumPy-capable layout helpers),
    same prefix sums and per-level windows; blocked over nodes and levels.
    This is the strongest NumPy version: the plain grid above is O(L T).
    """
    from asymalign import soft_bon as sb

    h, a_, w_ = sb._H, sb._A, sb._W
    lw, lp, on = sb._scaled(np, levels, log_p, temperature)
    length = levels.size
    log_nm1 = float(sb._log_nm1(np, np.asarray(log_n)))
    has = log_n > 0
    with np.errstate(invalid="ignore", over="ignore"):
        cum_lp, cum_lpw = np.logaddexp.accumulate(lp), np.logaddexp.accumulate(lp + lw)
        tail_lp = np.logaddexp.accumulate(lp[::-1])[::-1]
    bump_start, starts = sb._window_starts(np, lw, on, log_nm1, cum_lp, cum_lpw)
    a, new, total = sb._union(np, starts)
    new = new.astype(np.int64)
    ends = np.cumsum(new)
    j = np.repeat(a + w_ - new, new) + (np.arange(int(total)) - np.repeat(ends - new, new))
    j_o = round(-log_nm1 / h) if has else 0.0
    o = j_o * h
    ur = (j - j_o) * h
    u = o + ur
    i0 = np.searchsorted(lw, -a_ - u, side="left")
    _, direct = sb._host_sizes(levels, log_p, log_n, temperature)
    offs = np.arange(direct)
    log_e = np.empty(j.size)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for b in range(0, j.size, block):
            ib, urb = i0[b : b + block], ur[b : b + block]
            prev = np.maximum(ib - 1, 0)
            log_f = np.where(ib > 0, cum_lp[prev], -np.inf)
            log_g = np.where(ib > 0, urb + cum_lpw[prev], -np.inf)
            idx = ib[:, None] + offs[None, :]
            ic = np.minimum(idx, length - 1)
            lpi = np.where(idx < length, lp[ic], -np.inf)
            x = np.minimum(o + urb[:, None] + lw[ic], 700.0)
            ex = np.exp(x)
            l1m_terms = lpi + np.where(x < -40, x, np.where(x > 7, 0.0, _np_log1mexp(-ex)))
            rest = np.where(ib + direct < length, tail_lp[np.minimum(ib + direct, length - 1)], -np.inf)
            log_m = np.logaddexp(log_f, _lse(lpi - ex, axis=1))
            l1m_rel = np.logaddexp(log_g, _lse(np.concatenate([l1m_terms, rest[:, None]], 1), axis=1) - o)
            l1m = o + l1m_rel
            small = l1m < -0.6931471805599453
            corr = np.where(l1m < -30, 0.0, np.log(-np.log1p(-np.exp(np.minimum(l1m, -0.69)))) - l1m)
            lnlm = np.where(small, (log_nm1 + o) + l1m_rel + corr, log_nm1 + np.log(-np.minimum(log_m, -1e-300)))
            log_e[b : b + block] = np.where(has, -np.exp(np.minimum(lnlm, 700.0)), 0.0)
        v = np.log(h) + ur + log_e
        # lattice sum of the log-linear interpolant between consecutive nodes
        d = np.diff(j).astype(float)
        l1, l2 = v[:-1], v[1:]
        sig = (l2 - l1) / d
        m = d - 1.0
        asig = np.maximum(np.abs(sig), 1e-300)
        ratio = np.where(
            np.abs(sig) < 1e-12,
            np.log(np.maximum(m, 1.0)),
            np.where(sig > 0, (m - 1.0) * sig, 0.0) + _np_log1mexp(-m * asig) - _np_log1mexp(-asig),
        )
        gap = np.where(d > 1, l1 + sig + ratio, -np.inf)
        t = np.logaddexp(v, np.concatenate([gap, [-np.inf]]))
        tail = v[0] - h - np.log(-np.expm1(-h))
        before = np.logaddexp(tail, np.concatenate([[-np.inf], np.logaddexp.accumulate(t)[:-1]]))
        ks = np.searchsorted(j, bump_start, side="left")
        log_i = np.empty(length)
        lblock = max(1, block // 8)
        for b in range(0, length, lblock):
            kb, lwb = ks[b : b + lblock], lw[b : b + lblock]
            idx = np.minimum(kb[:, None] + np.arange(w_)[None, :], j.size - 1)
            x = np.minimum(u[idx] + lwb[:, None], 700.0)
            terms = np.log(h) + (ur[idx] + lwb[:, None]) - np.exp(x) + log_e[idx]
            log_i[b : b + lblock] = np.logaddexp(lwb + before[np.minimum(kb, j.size - 1)], _lse(terms, axis=1))
    return np.where(on, (log_n + o) + lp + log_i, -np.inf), int(total)


def case_soft_bon(n, repeats, grid_check=False):
    """One soft BoN row: asymalign and the windowed NumPy twin; for small ``n`` also the
    plain O(L T) NumPy grid (an independent node layout) as an accuracy check."""
    law = aa.reward_law([0.5, 0.5], [0.0, 1.0], n)
    levels, log_p = np.asarray(law.levels), np.asarray(law.log_prob)

    def run_aa():
        return np.asarray(aa.soft_best_of_n(law, LOG_N, 1.0).log_prob)

    t_first = time.perf_counter()
    run_aa()
    t_first = time.perf_counter() - t_first
    t_aa, lq_aa = _time(run_aa, repeats)
    t_np, (lq_np, nodes) = _time(lambda: np_soft_bon_windowed(levels, log_p, LOG_N, 1.0), repeats)
    keep = lq_np > np.log(1e-250)
    row = {
        "case": "levels/soft_best_of_n",
        "size": f"Bernoulli n={n} (L={n + 1}), N=16, tau=1",
        "asymalign_s": t_aa,
        "numpy_s": t_np,
        "max_rel_diff": float(np.max(np.abs(np.expm1(lq_aa[keep] - lq_np[keep])))),
        "asymalign_first_call_s": t_first,
        "window_nodes": nodes,
        "mass_minus_1": float(np.sum(np.exp(lq_aa)) - 1.0),
    }
    if grid_check:
        t_grid, (lq_grid, _) = _time(lambda: np_soft_bon(levels, log_p, LOG_N, 1.0), 1)
        keep = lq_grid > np.log(1e-250)
        row["plain_grid_numpy_s"] = t_grid
        row["max_rel_diff_vs_plain_grid"] = float(np.max(np.abs(np.expm1(lq_aa[keep] - lq_grid[keep]))))
    return row


def levels_cases(quick: bool) -> list[dict]:
    """The ``levels`` benchmark rows (see the module docstring)."""
    rows = [case_infalign(64 if quick else 1024, 1)]
    ns = (1000, 10_000) if quick else (1000, 10_000, 100_000)
    sb = [case_soft_bon(n, 1 if n >= 10_000 else 3, grid_check=n <= 1000) for n in ns]
    rows += sb
    load = os.getloadavg()
    for r in rows:
        r["loadavg_1m"] = load[0]
    return rows


def _markdown(rows):
    lines = [
        "| case | size | asymalign (s) | NumPy (s) | max rel diff | extrapolated / notes |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        notes = [
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r.items()
            if k not in ("case", "size", "asymalign_s", "numpy_s", "max_rel_diff")
        ]
        lines.append(
            f"| {r['case']} | {r['size']} | {r['asymalign_s']:.3g} | {r['numpy_s']:.3g} | "
            f"{r['max_rel_diff']:.2e} | {'; '.join(notes)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(f"load average at start: {os.getloadavg()}")
    print(_markdown(levels_cases("--quick" in sys.argv)))
