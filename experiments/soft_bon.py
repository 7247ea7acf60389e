"""Soft best-of-N and Best-of-Poisson, exactly: rates in N and the sequence cut-off (THEORY.md §10, §12).

One token (4-letter reference, ``τ = 1``): soft best-of-N targets the tilt
``φ = φ_{1/τ}``; the exact ``KL(φ || SBoN_N)`` falls like ``C/N^2`` with
``C = (exp(2 D_3(φ||p)) - exp(2 D_2(φ||p)))/2`` (§12), well inside the
``O(1/N)`` bound ``log(1 + χ²(φ||p)/N) <= χ²/N`` (Jensen on the
self-normalised weights). Sequences (Bernoulli reference, ``λ = 1/τ = 1``):
with ``log N = n c``, the per-token ``KL(SBoN_N || φ_λ^n)/n`` tends to
``KL(φ_{λ*(c)} || φ_λ)`` below the cut-off ``c = KL(φ_λ||p)`` (soft best-of-N
behaves like best-of-N with budget ``c``) and to 0 above it; the per-token
rewards of best-of-N and Best-of-Poisson (``N = 1 + Poisson(N - 1)``) follow
the KL-RL curve ``Λ'(λ*(c))`` alike.
"""

from __future__ import annotations

import math

import numpy as np

import asymalign as aa

from ._common import COLORS, Result, Table, new_figure, plain_log_ticks, reward_law

NAME = "soft_bon"

P1, R1 = [0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 2.0, 3.0]  # one token
PS, RS = [0.7, 0.3], [0.0, 1.0]  # sequences
TAU = 1.0


LENGTH = 128  # one padded law length for the one-token law and every sequence law: one compilation each


def _one_token(t: Table, quick: bool):
    law = aa.pad_law(reward_law(P1, R1, 1), LENGTH)
    phi = aa.level_tilt(law, law.levels, TAU)
    # quick: 7 values of N (the batch size of the sequence part, so both share one compiled kernel)
    k = np.arange(2, 15, 2) if quick else np.arange(1, 19)
    num = 2.0**k
    q = aa.soft_best_of_n(law, np.log(num), TAU)
    kl_fwd = np.asarray(aa.law_kl(phi, q))
    kl_rev = np.asarray(aa.law_kl(q, phi))
    p, f = np.asarray(P1), np.asarray(phi.prob)[: len(P1)]
    d2 = float(np.log(np.sum(f**2 / p)))
    d3 = 0.5 * float(np.log(np.sum(f**3 / p**2)))
    const = 0.5 * (math.exp(2 * d3) - math.exp(2 * d2))
    chi2 = math.exp(d2) - 1.0
    t.add("one token", "KL(φ‖SBoN_N), exact", num, kl_fwd)
    t.add("one token", "KL(SBoN_N‖φ), exact", num, kl_rev)
    t.add("one token", "§12 constant / N²", num, const / num**2)
    t.add("one token", "bound log(1 + χ²/N)", num, np.log1p(chi2 / num))
    big = num >= num[-1] / 2**6  # the fit: N from 2^(k_max - 6) on
    slope = float(np.polyfit(np.log(num[big]), np.log(kl_fwd[big]), 1)[0])
    return dict(
        slope_loglog=slope,
        constant_theory=const,
        n2_times_kl_at_largest_N=float(kl_fwd[-1] * num[-1] ** 2),
        n2_times_reverse_kl_at_largest_N=float(kl_rev[-1] * num[-1] ** 2),
        chi2=chi2,
        renyi_d2=d2,
        renyi_d3=d3,
    )


def _sequences(t: Table, quick: bool):
    lam = 1.0 / TAU
    cut = float(aa.tilt_kl(PS, RS, lam))
    cs = np.linspace(0.1, 2.0, 7 if quick else 10) * cut
    ns = (16, 64) if quick else (16, 64, 256, 1024)
    phi = np.asarray(aa.tilt(PS, RS, lam))
    dense = np.linspace(cs[0], cs[-1], 200)
    # λ*(c) on the grid and on the dense curve in one solve (one compilation)
    lam_all = np.asarray(aa.solve_lambda(PS, RS, np.concatenate([cs, np.minimum(dense, cut)])))
    lam_c, lam_d = lam_all[: cs.size], lam_all[cs.size :]
    tilts = aa.tilt(PS, RS, lam_d)  # (200, 2)
    limit = np.asarray(aa.kl(tilts, np.broadcast_to(phi, tilts.shape)))
    t.add("sequence KL", "limit n → ∞", dense, limit)
    t.add("sequence reward", "KL-RL Λ'(λ*(c))", dense, np.asarray(aa.kl_rl(PS, RS, dense).reward))
    out = dict(cutoff_c=cut, c=cs, lambda_star=lam_c, n={})
    # quick: one padded length for every n (one compilation); full: each n in its own bucket
    length = LENGTH if quick else None
    for i, n in enumerate(ns):
        law = aa.pad_law(reward_law(PS, RS, n), length)
        log_n = n * cs
        target = aa.level_tilt(law, law.levels, TAU)
        sbon = aa.soft_best_of_n(law, log_n, TAU)
        kl = np.asarray(aa.law_kl(sbon, target)) / n
        t.add("sequence KL", f"soft best-of-N, n = {n}", cs, kl)
        rew_b = np.asarray(aa.law_mean(aa.best_of_n(law, log_n))) / n
        rew_p = np.asarray(aa.law_mean(aa.best_of_poisson(law, np.expm1(log_n)))) / n
        rew_s = np.asarray(aa.law_mean(sbon)) / n
        t.add("sequence reward", f"best-of-N, n = {n}", cs, rew_b)
        t.add("sequence reward", f"Best-of-Poisson, n = {n}", cs, rew_p)
        t.add("sequence reward", f"soft best-of-N, n = {n}", cs, rew_s)
        out["n"][str(n)] = dict(kl_per_token=kl, bon_reward=rew_b, bop_reward=rew_p, sbon_reward=rew_s)
        del i
    return out


def compute(key, *, quick: bool = False) -> Result:
    del key  # exact computation
    t = Table()
    summary = dict(one_token=_one_token(t, quick), sequences=_sequences(t, quick))
    params = dict(one_token=dict(p=P1, r=R1, tau=TAU), sequences=dict(p=PS, r=RS, tau=TAU))
    return Result(NAME, t, params, summary)


def plot(result: Result):
    t = result.table
    fig, axes = new_figure(3, 1, width=4.8, height=4.2)
    ax = axes[0, 0]
    looks = {
        "KL(φ‖SBoN_N), exact": ("o-", COLORS[0]),
        "KL(SBoN_N‖φ), exact": ("s-", COLORS[1]),
        "§12 constant / N²": ("--", "black"),
    }
    for s in t.series("one token"):
        x, y, _ = t.get("one token", s)
        fmt, color = looks.get(s, (":", "grey"))
        ax.plot(x, y, fmt, color=color, ms=3, lw=1.2, label=s)
    one = result.summary["one_token"]
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of samples N")
    ax.set_ylabel("KL  [nats]")
    ax.set_title(f"one token: slope {one['slope_loglog']:.3f} (−2 predicted)", fontsize=9)
    ax.legend(fontsize=7)
    cut = result.summary["sequences"]["cutoff_c"]
    for ax, panel, ylabel in (
        (axes[0, 1], "sequence KL", "KL(SBoN_N ‖ φ_λ^n) / n  [nats per token]"),
        (axes[0, 2], "sequence reward", "expected reward per token"),
    ):
        series = t.series(panel)
        ns = sorted({s.split("n = ")[1] for s in series if "n = " in s}, key=int)
        for s in series:
            x, y, _ = t.get(panel, s)
            if "n = " not in s:
                ax.plot(x, y, "k-", lw=2.0, label=s)
                continue
            j = ns.index(s.split("n = ")[1])
            kind = s.split(",")[0]
            ls = {"soft best-of-N": "o-", "best-of-N": "s--", "Best-of-Poisson": "^:"}[kind]
            ax.plot(x, y, ls, color=COLORS[j % len(COLORS)], ms=3.5, lw=1.0, label=s)
        ax.axvline(cut, color="grey", ls="-.", lw=1.0, label=f"cut-off c = KL(φ_λ‖p) = {cut:.3f}")
        ax.set_xlabel("c = log N / n")
        ax.set_ylabel(ylabel)
        if panel == "sequence reward":  # room below the curves for a two-column legend (many n in the full run)
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo - (0.25 + 0.05 * len(ns)) * (hi - lo), hi)
            ax.legend(fontsize=6, ncol=2, loc="lower right")
        else:
            ax.legend(fontsize=6)
    axes[0, 1].set_title("soft best-of-N reaches its target only for c ≥ KL(φ_λ‖p)", fontsize=9)
    axes[0, 2].set_title("best-of-N and Best-of-Poisson follow the KL-RL curve", fontsize=9)
    fig.suptitle("Soft best-of-N and Best-of-Poisson on exact reward laws (THEORY §12)", fontsize=10)
    return plain_log_ticks(fig)
