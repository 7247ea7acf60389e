"""Markov references (THEORY.md §14): best-of-N vs KL-RL with memory, and Rényi cross-entropy rates.

(a) For a two-state and a four-state chain, best-of-N with ``log N = nΔ``
(exact law of ``R_n`` over the chain's paths) against the exact finite-``n``
KL-RL solution ``q_{λ_n}`` and its limit (the Doob transform at ``λ*``):
per-token reward and ``KL(π_N ‖ q_{λ_n})/n`` against ``n``, with the
memoryless model of the same stationary marginal on the same axes.
(b) ``(1/n) H_α(P^n; Q^n)``, exact for finite ``n`` (transfer matrix, NumPy
float64), converging to the Perron-root rate ``log ρ(P ∘ Q^{α-1})/(1-α)``.
"""

from __future__ import annotations

import numpy as np

import asymalign as aa
from asymalign import markov as mk

from ._common import COLORS, Result, Table, pad_model, plain_log_ticks

NAME = "markov"

CHAINS = {
    "two-state": (
        [[0.9, 0.1], [0.3, 0.7]],
        [0.0, 1.0],
    ),
    "four-state": (
        [[0.5, 0.3, 0.0, 0.2], [0.1, 0.5, 0.4, 0.0], [0.0, 0.2, 0.5, 0.3], [0.6, 0.0, 0.1, 0.3]],
        [0.0, 1.0, 2.0, 3.0],
    ),
}
RENYI_P = [[0.7, 0.3, 0.0], [0.2, 0.5, 0.3], [0.4, 0.1, 0.5]]
RENYI_Q = [[0.5, 0.25, 0.25], [0.3, 0.4, 0.3], [0.2, 0.2, 0.6]]


def _stationary(P):
    w, v = np.linalg.eig(np.asarray(P).T)
    pi = np.real(v[:, np.argmin(np.abs(w - 1.0))])
    return pi / pi.sum()


def _renyi_finite(P, Q, mu, nu, alpha, ns):
    """``(1/n) H_α(P^n; Q^n)`` for every ``n`` in ``ns`` (one forward pass, float64)."""
    P, Q = np.asarray(P), np.asarray(Q)
    m = np.where(P > 0, P * np.where(Q > 0, Q, 1.0) ** (alpha - 1.0), 0.0)
    v = mu * nu ** (alpha - 1.0)
    out, logz = {}, 0.0
    for n in range(1, max(ns) + 1):
        if n > 1:
            v = v @ m
            s = v.sum()
            logz += np.log(s)
            v = v / s
        if n in ns:
            out[n] = (logz + np.log(v.sum())) / (1.0 - alpha) / n
    return np.array([out[n] for n in ns])


def _slope(x, y):
    x, y = np.log(np.asarray(x, float)), np.log(np.abs(np.asarray(y, float)))
    return float(np.polyfit(x, y, 1)[0])


def compute(key, *, quick: bool = False) -> Result:
    del key  # exact computations only
    delta = 0.1
    ns = (8, 32, 128) if quick else (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    t = Table()
    summary: dict = {"delta": delta}
    # every law padded to one length (zero-probability copies of the top level change no
    # quantity): the level kernels compile once, not once per law length
    length = 1 << (max(ns) * max(int(np.ptp(r)) for _, r in CHAINS.values())).bit_length()
    for name, (P, r) in CHAINS.items():
        P, r = np.array(P), np.array(r)
        k = P.shape[0]
        pi = _stationary(P)
        chain = mk.MarkovChain(P, pi)  # host arrays (jnp.asarray compiles per shape)
        lam_inf = float(mk.solve_lambda(chain, r, delta))
        rew_inf = float(np.asarray(mk.scaled_cumulants(chain, r, 1, lam_inf))[0])
        pp, rp = pad_model(pi, r)  # zero-probability letters: both chains share one compiled solver
        lam_m = float(aa.solve_lambda(pp, rp, delta))
        rew_m = float(aa.tilt_reward(pp, rp, lam_m))
        rows = []
        for n in ns:
            law = aa.pad_law(mk.reward_law(chain, r, n), length)
            bon = aa.best_of_n(law, n * delta)
            sol = mk.kl_rl(chain, r, n, delta)
            q = aa.level_tilt(law, law.levels, 1.0 / float(sol.lam))
            law_m = aa.pad_law(aa.reward_law(pi, r, n), length)
            bon_m = aa.best_of_n(law_m, n * delta)
            q_m = aa.level_tilt(law_m, law_m.levels, 1.0 / lam_m)
            rows.append(
                (
                    float(aa.law_mean(bon)) / n,
                    float(sol.reward),
                    float(aa.law_kl(bon, q)) / n,
                    float(aa.law_mean(bon_m)) / n,
                    float(aa.law_kl(bon_m, q_m)) / n,
                    float(sol.lam),
                )
            )
        a = np.array(rows)
        nn = np.array(ns, float)
        t.add(f"reward/{name}", "Markov: best-of-N, log N = nΔ", nn, a[:, 0])
        t.add(f"reward/{name}", "Markov: finite-n KL-RL q_{λ_n}", nn, a[:, 1])
        t.add(f"reward/{name}", "Markov: limit Λ'(λ*) (Doob transform)", nn[[0, -1]], [rew_inf, rew_inf])
        t.add(f"reward/{name}", "memoryless (same marginal): best-of-N", nn, a[:, 3])
        t.add(f"reward/{name}", "memoryless: limit", nn[[0, -1]], [rew_m, rew_m])
        t.add("kl", f"{name} Markov: KL(π_N‖q_{{λ_n}})/n", nn, a[:, 2])
        t.add("kl", f"{name} memoryless: KL(π_N‖φ_λ*^n)/n", nn, a[:, 4])
        tail = slice(max(0, len(ns) - 4), None)
        summary[name] = dict(
            states=k,
            stationary_marginal=pi,
            lambda_star=lam_inf,
            lambda_n=a[:, 5],
            limit_reward=rew_inf,
            memoryless_lambda_star=lam_m,
            memoryless_limit_reward=rew_m,
            bon_reward_gap_at_largest_n=a[-1, 0] - rew_inf,
            memoryless_bon_reward_gap_at_largest_n=a[-1, 3] - rew_m,
            kl_per_token_at_largest_n=a[-1, 2],
            memoryless_kl_per_token_at_largest_n=a[-1, 4],
            fitted_slope_log_kl_per_token_vs_log_n=_slope(nn[tail], a[tail, 2]),
            memoryless_fitted_slope=_slope(nn[tail], a[tail, 4]),
            fitted_slope_log_reward_gap_vs_log_n=_slope(nn[tail], a[tail, 0] - rew_inf),
        )
    # (b) Rényi cross-entropy rates
    alphas = (0.5, 2.0, 4.0)
    ns_r = (1, 2, 4, 8, 16, 32, 64) if quick else (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    P, Q = np.array(RENYI_P), np.array(RENYI_Q)
    mu, nu = _stationary(P), np.full(3, 1.0 / 3.0)
    gaps = {}
    for alpha in alphas:
        rate = float(mk.renyi_cross_entropy_rate(P, Q, alpha))
        h = _renyi_finite(P, Q, mu, nu, alpha, ns_r)
        t.add("renyi", f"α = {alpha}: (1/n) H_α(P^n; Q^n)", np.array(ns_r, float), h)
        t.add("renyi", f"α = {alpha}: rate log ρ(P∘Q^(α-1))/(1-α)", [ns_r[0], ns_r[-1]], [rate, rate])
        gaps[f"alpha={alpha}"] = dict(
            rate=rate,
            gap_at_largest_n=h[-1] - rate,
            fitted_slope_log_gap_vs_log_n=_slope(ns_r[2:], h[2:] - rate),
        )
    summary["renyi_cross_entropy"] = gaps
    params = dict(
        chains={k: dict(transition=v[0], reward=v[1]) for k, v in CHAINS.items()},
        initial="stationary law of each chain",
        delta=delta,
        ns=ns,
        renyi_P=RENYI_P,
        renyi_Q=RENYI_Q,
        renyi_initial="stationary law of P, uniform for Q",
        alphas=alphas,
        renyi_ns=ns_r,
    )
    return Result(NAME, t, params, summary)


def plot(result: Result):
    from matplotlib.figure import Figure

    t = result.table
    fig = Figure(figsize=(17, 4.8), layout="constrained")
    axes = fig.subplots(1, 4)
    styles = ["o-", "s--", "-", "^:", "-"]
    colors = [COLORS[0], COLORS[1], "k", COLORS[2], "0.5"]
    for ax, name in zip(axes[:2], CHAINS, strict=False):
        for i, ser in enumerate(t.series(f"reward/{name}")):
            x, y, _ = t.get(f"reward/{name}", ser)
            ax.plot(
                x,
                y,
                styles[i],
                color=colors[i],
                lw=1.5 if i in (2, 4) else 1.2,
                ms=4,
                label=ser.replace("q_{λ_n}", r"$q_{\lambda_n}$"),
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length n (tokens)")
        ax.set_ylabel("expected reward per token")
        ax.set_title(f"{name} chain, Δ = {result.params['delta']} nats/token")
        ax.legend(fontsize=7)
    ax = axes[2]
    for i, ser in enumerate(t.series("kl")):
        x, y, _ = t.get("kl", ser)
        ax.plot(
            x,
            y,
            "o-" if "Markov" in ser else "^:",
            color=COLORS[i // 2],
            ms=4,
            label=ser.replace("q_{λ_n}", r"$q_{\lambda_n}$")
            .replace("φ_λ*^n", r"$\varphi_{\lambda^*}^{\otimes n}$")
            .replace("π_N", r"$\pi_N$"),
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length n (tokens)")
    ax.set_ylabel("KL per token [nats]")
    ax.set_title("best-of-N vs the KL-RL solution")
    ax.legend(fontsize=7)
    ax = axes[3]
    for i, alpha in enumerate(result.params["alphas"]):
        sers = [s for s in t.series("renyi") if s.startswith(f"α = {alpha}:")]
        x, y, _ = t.get("renyi", sers[0])
        ax.plot(x, y, "o", color=COLORS[i], ms=4, label=f"α = {alpha}: exact (1/n) H_α(P^n; Q^n)")
        x, y, _ = t.get("renyi", sers[1])
        ax.plot(x, y, "-", color=COLORS[i], lw=1, label=f"α = {alpha}: Perron-root rate")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length n (tokens)")
    ax.set_ylabel("Rényi cross-entropy per token [nats]")
    ax.set_title("Rényi cross-entropy rate of chains")
    ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("Markov references: does best-of-N still match KL-RL with memory? (exact laws over chain paths)")
    return plain_log_ticks(fig)
