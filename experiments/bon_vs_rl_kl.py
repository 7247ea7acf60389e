"""Best-of-N and the KL-RL tilt become indistinguishable per token (THEORY.md §6).

With ``log N = nΔ``, ``KL(π_N || φ_{λ*}^n)/n -> 0`` as ``n -> ∞``. Exact lines
come from the level laws (``best_of_n``, ``level_tilt``,
``law_kl``); Monte-Carlo points average the exact log-density ratio
``log π_N(y)/φ_{λ*}^n(y)`` over best-of-N draws simulated by
``simulate_bon`` (at the integer ``N = round(e^{nΔ})``, whose exact value is
shown as open markers). The un-normalised KL keeps growing, roughly like
``½ log n``; its fitted slope against ``log n`` is reported.
"""

from __future__ import annotations

import jax
import numpy as np

import asymalign as aa

from ._common import COLORS, Result, Table, new_figure, plain_log_ticks, reward_law

NAME = "bon_vs_rl_kl"


def compute(key, *, quick: bool = False) -> Result:
    # host arrays: jnp.array of a list compiles a small executable per shape
    p, r = np.array([0.7, 0.3]), np.array([0.0, 1.0])
    deltas = np.array([0.05, 0.2, 0.5])
    ns = [2**j for j in range(0, 9 if quick else 13)]
    mc_ns = [2, 8] if quick else [1, 2, 4, 8, 16]
    trials = 1000 if quick else 4000
    max_tokens_per_trial = 2000
    fit_from = 32 if quick else 256
    lam = np.asarray(aa.solve_lambda(p, r, deltas))
    kl_tilt = np.stack([np.asarray(aa.bon_vs_klrl(p, r, n, deltas).bon_kl_to_tilt) for n in ns])  # (n, Δ)
    t = Table()
    nn = np.array(ns, float)
    slopes, mc_rows = {}, []
    keys = jax.random.split(key, len(mc_ns) * len(deltas)).reshape(len(mc_ns), len(deltas))
    for j, d in enumerate(np.asarray(deltas)):
        lab = f"Δ = {d:g}"
        t.add("per_token", f"{lab}, exact", nn, kl_tilt[:, j])
        total = kl_tilt[:, j] * nn
        t.add("total", f"{lab}, exact", np.log(nn), total)
        big = nn >= fit_from
        slope, icpt = np.polyfit(np.log(nn[big]), total[big], 1)
        slopes[lab] = float(slope)
        t.add("total", f"{lab}, fit", np.log(nn[big]), slope * np.log(nn[big]) + icpt)
        xs, ys, es, ex = [], [], [], []
        for i, n in enumerate(mc_ns):
            num = max(1, int(round(float(np.exp(n * d)))))
            if num * n > max_tokens_per_trial:
                continue
            law = aa.pad_law(reward_law(p, r, n))
            bon = aa.best_of_n(law, np.log(float(num)))
            tilted = aa.level_tilt(law, law.levels, 1.0 / float(lam[j]))  # φ_λ^n on the levels
            lb, lt = np.asarray(bon.log_prob), np.asarray(tilted.log_prob)
            on = lb > -np.inf  # log π_N/φ^n at each level, on the host (padding: 0, never drawn)
            g = np.where(on, lb - np.where(on, lt, 0.0), 0.0)
            sim = aa.simulate_bon(keys[i, j], p, r, n, num, trials)
            idx = np.searchsorted(np.asarray(law.levels), np.asarray(sim.rewards))
            est = aa.mc_mean(g[idx] / n)
            exact_int = float(aa.law_kl(bon, tilted)) / n
            xs.append(n)
            ys.append(float(est.mean))
            es.append(float(est.stderr))
            ex.append(exact_int)
            mc_rows.append(
                dict(delta=float(d), n=n, N=num, mc=float(est.mean), stderr=float(est.stderr), exact=exact_int)
            )
        if xs:
            t.add("per_token", f"{lab}, Monte Carlo (N = round(e^nΔ))", xs, ys, es)
            t.add("per_token", f"{lab}, exact at N = round(e^nΔ)", xs, ex)
    params = dict(
        p=p,
        r=r,
        deltas=deltas,
        lam_star=lam,
        ns=ns,
        mc_ns=mc_ns,
        mc_trials=trials,
        mc_max_tokens_per_trial=max_tokens_per_trial,
        slope_fit_from_n=fit_from,
    )
    summary = dict(
        slope_of_total_kl_vs_log_n=slopes,
        kl_to_tilt_per_token_at_largest_n={
            f"Δ = {d:g}": float(v) for d, v in zip(np.asarray(deltas), kl_tilt[-1], strict=False)
        },
        monte_carlo=mc_rows,
    )
    return Result(NAME, t, params, summary)


def plot(result: Result):
    t = result.table
    fig, axes = new_figure(2, 1, width=5.6, height=4.5)
    deltas = [s.split(",")[0] for s in t.series("per_token") if s.endswith(", exact")]
    ax = axes[0, 0]
    for i, lab in enumerate(deltas):
        c = COLORS[i]
        x, y, _ = t.get("per_token", f"{lab}, exact")
        ax.plot(x, y, "-", color=c, label=f"{lab}: exact, N = e^(nΔ)")
        mc = f"{lab}, Monte Carlo (N = round(e^nΔ))"
        if mc in t.series("per_token"):
            x, y, e = t.get("per_token", mc)
            ax.errorbar(
                x,
                y,
                yerr=2 * e,
                fmt="s",
                ms=4,
                color=c,
                capsize=3,
                label=f"{lab}: Monte Carlo ±2 s.e., N = round(e^(nΔ))",
            )
            x, y, _ = t.get("per_token", f"{lab}, exact at N = round(e^nΔ)")
            ax.plot(x, y, "o", mfc="none", ms=8, color=c)
    ax.plot([], [], "o", mfc="none", color="0.3", label="exact at the same integer N")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length n (tokens)")
    ax.set_ylabel(r"KL$(\pi_N \,\|\, \varphi_{\lambda^*}^{\otimes n}) / n$  [nats per token]")
    ax.set_title("per token, best-of-N approaches the KL-RL tilt")
    ax.legend(fontsize=7, loc="lower left")

    ax = axes[0, 1]
    slopes = result.summary["slope_of_total_kl_vs_log_n"]
    for i, lab in enumerate(deltas):
        x, y, _ = t.get("total", f"{lab}, exact")
        ax.plot(x, y, "o-", ms=3, color=COLORS[i], label=f"{lab}: exact")
        x, y, _ = t.get("total", f"{lab}, fit")
        ax.plot(x, y, "--", color="k", lw=1)
        ax.text(x[-1], y[-1], f"  slope {slopes[lab]:.2f}", fontsize=8, va="center")
    ax.plot([], [], "k--", lw=1, label=f"least-squares line (n ≥ {result.params['slope_fit_from_n']})")
    ax.set_xlabel("log n  (n = sequence length in tokens)")
    ax.set_ylabel(r"KL$(\pi_N \,\|\, \varphi_{\lambda^*}^{\otimes n})$  [nats, whole sequence]")
    ax.set_title("the un-normalised KL still grows, roughly like ½ log n")
    ax.legend(fontsize=8, loc="upper left")
    x0, x1 = ax.get_xlim()
    ax.set_xlim(x0, x1 + 0.12 * (x1 - x0))
    fig.suptitle(
        r"Best-of-N ($\log N = n\Delta$) vs the KL-RL solution: "
        r"KL$(\pi_N\|\varphi_{\lambda^*}^{\otimes n})/n \to 0$  (Bernoulli $p = 0.3$, $r$ = identity)"
    )
    return plain_log_ticks(fig)
