"""Reward–KL frontier: exact best-of-N at N = e^{nΔ} converges onto the KL-RL curve (THEORY.md §3, §6).

For each sequence length ``n`` and budget ``Δ``, best-of-N with ``log N = nΔ``
has exact per-token reward ``E_{π_N}[r_n]/n`` and KL ``KL(π_N||p^n)/n``
(``bon_vs_klrl``); the KL-RL optimum is the tilt curve
``Δ -> Λ'(λ*(Δ))`` (``kl_rl``). As ``n`` grows the BoN points move onto the
curve. Two references: a Bernoulli and a 4-letter model.
"""

from __future__ import annotations

import numpy as np

import asymalign as aa

from ._common import COLORS, Result, Table, new_figure, pad_model, plain_log_ticks

NAME = "frontier"

MODELS = {
    "Bernoulli p = (0.7, 0.3), r = (0, 1)": ([0.7, 0.3], [0.0, 1.0]),
    "4 letters p = (0.4, 0.3, 0.2, 0.1), r = (0, 1, 2, 3)": ([0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 2.0, 3.0]),
}


def compute(key, *, quick: bool = False) -> Result:
    del key  # exact computation
    ns = (1, 4, 16, 64, 256) if quick else (1, 4, 16, 64, 256, 1024, 4096)
    t = Table()
    gaps: dict[str, dict[str, float]] = {}
    params = dict(ns=ns, models={}, num_deltas=12, delta_range="[0.02, 0.9] × Δ_max")
    for label, (p, r) in MODELS.items():
        # the KL-RL side on the model padded with zero-probability letters (same optimum), all
        # budgets of a model in one call: one compiled solver for both models and every n
        pp, rp = pad_model(p, r)
        dmax = float(aa.max_kl(pp, rp))
        p, r = np.asarray(p, float), np.asarray(r, float)  # host arrays (jnp.asarray compiles per shape)
        params["models"][label] = dict(p=p, r=r, delta_max=dmax)
        dcurve = np.linspace(0.0, 0.999 * dmax, 200)
        deltas = np.linspace(0.02, 0.9, 12) * dmax
        bon = {}
        for n in ns:
            res = aa.bon_vs_klrl(p, r, n, deltas)
            bon[n] = (np.asarray(res.bon_kl), np.asarray(res.bon_reward))
        budgets = np.concatenate([dcurve] + [np.minimum(kl_n, 0.999999 * dmax) for kl_n, _ in bon.values()])
        rewards = np.asarray(aa.kl_rl(pp, rp, budgets).reward)
        t.add(label, "KL-RL optimum (exact tilts)", dcurve, rewards[: dcurve.size])
        gaps[label] = {}
        for i, (n, (kl_n, rew_n)) in enumerate(bon.items()):
            t.add(label, f"best-of-N, n = {n}", kl_n, rew_n)
            curve_at = rewards[dcurve.size + i * kl_n.size : dcurve.size + (i + 1) * kl_n.size]
            gaps[label][str(n)] = float(np.max(curve_at - rew_n))
        # n = 1 is left out: for a Bernoulli every law on the 2 letters is a tilt (gap 0).
        big = [n for n in ns if n > 1]
        t.add("gap", label, np.array(big, float), [gaps[label][str(n)] for n in big])
    summary = dict(max_reward_gap_to_klrl_curve=gaps, largest_n=ns[-1])
    return Result(NAME, t, params, summary)


def plot(result: Result):
    t = result.table
    labels = list(MODELS)
    fig, axes = new_figure(3, 1, width=4.7, height=4.3)
    for ax, label in zip(axes[0, :2], labels, strict=False):
        x, y, _ = t.get(label, "KL-RL optimum (exact tilts)")
        ax.plot(x, y, "k-", lw=2.2, label=r"KL-RL optimum $\Lambda'(\lambda^*)$ (exact tilts)")
        ns = [s for s in t.series(label) if s.startswith("best-of-N")]
        for i, s in enumerate(ns):
            x, y, _ = t.get(label, s)
            ax.plot(x, y, "o-", ms=3.5, lw=0.8, color=COLORS[i % len(COLORS)], label=s)
        ax.set_xlabel("KL to the reference  [nats per token]")
        ax.set_ylabel("expected reward  [per token]")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    ax = axes[0, 2]
    for i, label in enumerate(labels):
        x, y, _ = t.get("gap", label)
        ax.plot(x, y, "o-", color=COLORS[i], label=label.split(" p =")[0])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length n (tokens)")
    ax.set_ylabel("max over Δ of reward gap to the curve  [per token]")
    ax.set_title("distance of best-of-N to the KL-RL curve", fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle(r"Best-of-N with $N = e^{n\Delta}$ converges onto the KL-RL reward–KL frontier as $n \to \infty$")
    return plain_log_ticks(fig)
