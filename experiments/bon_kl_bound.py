"""``log N - (N-1)/N`` bounds KL(π_N || p^n), tight only without ties (THEORY.md §6).

Exact ``KL(π_N||p^n) = Σ_s B_N(s) log(B_N(s)/P_n(s))`` (``law_kl(best_of_n(law, log N), law)``) for N from
1 to 10^6, for references whose reward law has heavy ties (few levels) and
almost none (45 451 distinct levels with tiny probabilities; 11 476 in a quick run).
"""

from __future__ import annotations

import numpy as np

import asymalign as aa

from ._common import COLORS, Result, Table, new_figure, plain_log_ticks, reward_law

NAME = "bon_kl_bound"

SQRT2 = float(np.sqrt(2.0))


def _models(quick: bool) -> dict:
    """``{label: (p, r, n)}``. The last reference has ``(n+1)(n+2)/2`` distinct levels
    (``a + b√2``); quick runs use n = 150 instead of 300 (11 476 levels instead of 45 451)."""
    n = 150 if quick else 300
    levels = f"{(n + 1) * (n + 2) // 2:,}".replace(",", " ")
    return {
        "Bernoulli(1/2), n = 1: 2 levels (all ties)": ([0.5, 0.5], [0.0, 1.0], 1),
        "Bernoulli(0.3), n = 64: 65 levels": ([0.7, 0.3], [0.0, 1.0], 64),
        "4 letters, integer r, n = 64: 193 levels": ([0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 2.0, 3.0], 64),
        f"3 letters, r = (0, 1, √2), n = {n}: {levels} levels (almost no ties)": (
            [1 / 3, 1 / 3, 1 / 3],
            [0.0, 1.0, SQRT2],
            n,
        ),
    }


def compute(key, *, quick: bool = False) -> Result:
    del key  # exact computation
    log_n = np.concatenate([[0.0], np.linspace(np.log(1.5), np.log(1e6), 30 if quick else 80)])
    t = Table()
    n_grid = np.exp(log_n)
    bound = np.asarray(aa.bon_kl_bound(log_n))
    t.add("kl", "bound log N − (N−1)/N", n_grid, bound)
    summary = {}
    params = dict(log_N_grid=[0.0, float(log_n[-1]), log_n.size], models={})
    size = 16384 if quick else 65536  # the largest reference's levels, padded: one compilation for all four
    for label, (p, r, n) in _models(quick).items():
        law = aa.pad_law(reward_law(p, r, n), size)
        kl = np.asarray(aa.law_kl(aa.best_of_n(law, log_n), law))
        t.add("kl", label, n_grid, kl)
        gap = bound - kl
        t.add("gap", label, n_grid[1:], np.maximum(gap[1:], 1e-16))
        params["models"][label] = dict(p=p, r=r, n=n, num_levels=int(np.isfinite(np.asarray(law.log_prob)).sum()))
        summary[label] = dict(
            max_bound_minus_kl=float(gap.max()), min_bound_minus_kl=float(gap.min()), gap_at_N_1e6=float(gap[-1])
        )
    return Result(NAME, t, params, dict(bound_minus_exact=summary))


def plot(result: Result):
    t = result.table
    fig, axes = new_figure(2, 1, width=5.8, height=4.6)
    ax = axes[0, 0]
    x, y, _ = t.get("kl", "bound log N − (N−1)/N")
    ax.plot(x, y, "k--", lw=2, label=r"bound $\log N - (N-1)/N$")
    models = [s for s in t.series("kl") if not s.startswith("bound")]
    for i, s in enumerate(models):
        x, y, _ = t.get("kl", s)
        ax.plot(x, y, "-", color=COLORS[i], lw=1.5, label=s)
    ax.set_xscale("log")
    ax.set_xlabel("number of samples N")
    ax.set_ylabel(r"exact KL$(\pi_N \,\|\, p^{\otimes n})$  [nats, whole sequence]")
    ax.set_title("exact best-of-N KL against the quoted formula")
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[0, 1]
    for i, s in enumerate(models):
        x, y, _ = t.get("gap", s)
        ax.plot(x, y, "-", color=COLORS[i], lw=1.5, label=s)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of samples N")
    ax.set_ylabel(r"$\log N - (N-1)/N - $ KL$(\pi_N\|p^{\otimes n})$  [nats]")
    ax.set_title("the gap is always ≥ 0; it is large with ties, small without")
    ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(
        r"$\log N - (N-1)/N$ is an upper bound on KL$(\pi_N\|p^{\otimes n})$, tight only when "
        "the reward law has (almost) no ties"
    )
    return plain_log_ticks(fig)
