"""Large deviations of the reward: exact finite-n tail exponents converge to I_λ (THEORY.md §5).

Under ``φ_λ^n``, ``R_n = r_n/n``. The exact law of ``r_n`` (``reward_law``,
tilted by ``level_tilt``) gives ``-(1/n) log P(R_n >= x)`` above the
mean and ``-(1/n) log P(R_n <= x)`` below it; both converge to the Cramér
rate function ``I_λ(x)``, shown from its KL form (``rate_function``) and from
a numerical Legendre transform of ``ψ_λ(t) = Λ(λ+t) - Λ(λ)``.
"""

from __future__ import annotations

import numpy as np

import asymalign as aa

from ._common import COLORS, Result, Table, new_figure, plain_log_ticks, reward_law

NAME = "ldp"


def tail_exponents(p, r, lam, n, x, length=None):
    """``-(1/n) log P(R_n >= x)`` for ``x >`` mean, ``-(1/n) log P(R_n <= x)`` below, under φ_λ^n."""
    law = reward_law(p, r, n)
    if length is not None:  # zero-probability padding: one compiled tilt for every n
        law = aa.pad_law(law, length)
    lam = float(lam)  # φ_λ^n on the levels: score sign(λ)·s, temperature 1/|λ|
    lev = np.asarray(law.levels)
    logp = np.asarray(aa.level_tilt(law, np.sign(lam) * lev, 1.0 / abs(lam) if lam else np.inf).log_prob)
    up = np.logaddexp.accumulate(logp[::-1])[::-1]  # log P(r_n >= levels[i])
    lo = np.logaddexp.accumulate(logp)  # log P(r_n <= levels[i])
    mean = float(aa.tilt_reward(p, r, lam))
    tol = 1e-9 * n
    i_up = np.clip(np.searchsorted(lev, n * x - tol, side="left"), 0, lev.size - 1)
    i_lo = np.clip(np.searchsorted(lev, n * x + tol, side="right") - 1, 0, lev.size - 1)
    return np.where(x >= mean, -up[i_up] / n, -lo[i_lo] / n)


def compute(key, *, quick: bool = False) -> Result:
    del key  # exact computation, no randomness
    # The 4-letter reference of `frontier` (shares its compiled exact laws).
    p = np.array([0.4, 0.3, 0.2, 0.1])  # host arrays (jnp.array compiles per shape)
    r = np.array([0.0, 1.0, 2.0, 3.0])
    lam = 0.5
    ns = (16, 64, 256) if quick else (16, 64, 256, 1024, 4096)
    mean = float(aa.tilt_reward(p, r, lam))
    x = np.linspace(0.03, 2.97, 99)
    t = Table()
    rate = np.asarray(aa.rate_function(p, r, x, lam))
    t.add("tails", "I_λ(x), KL form KL(φ_λ+t_x‖φ_λ)", x, rate)
    # Legendre transform on a grid of t (coarser x grid, shown as markers).
    xl = x[::6]
    tg = np.linspace(-40.0, 40.0, 8001)
    psi = np.asarray(aa.scaled_cgf(p, r, tg, lam))
    leg = np.max(xl[:, None] * tg[None, :] - psi[None, :], axis=1)
    t.add("tails", "I_λ(x), Legendre transform sup_t [tx − ψ_λ(t)]", xl, leg)
    interior = np.abs(x - mean) > 0.1
    gaps = {}
    length = 1 << (max(ns) * int(np.ptp(r))).bit_length()  # every law padded to one length
    for n in ns:
        e = tail_exponents(p, r, lam, n, x, length)
        t.add("tails", f"n = {n}", x, e)
        gaps[n] = float(np.max(np.abs(e - rate)[interior]))
    nn = np.array(ns, float)
    t.add("gap", "max_x |exponent − I_λ(x)|", nn, np.array([gaps[n] for n in ns]))
    t.add("gap", "reference slope (log n)/(2n)", nn, np.log(nn) / (2 * nn))
    params = dict(
        p=p,
        r=r,
        lam=lam,
        ns=ns,
        x_grid=[float(x[0]), float(x[-1]), x.size],
        legendre_t_grid=[-40.0, 40.0, 8001],
        gap_excludes_mean_window=0.1,
        mean_reward_under_tilt=mean,
    )
    summary = dict(
        max_gap_by_n={str(n): g for n, g in gaps.items()},
        max_legendre_vs_kl_form=float(np.max(np.abs(leg - rate[::6]))),
    )
    return Result(NAME, t, params, summary)


def plot(result: Result):
    t = result.table
    fig, axes = new_figure(2, 1, width=5.6, height=4.5)
    ax = axes[0, 0]
    ns = [s for s in t.series("tails") if s.startswith("n = ")]
    for i, s in enumerate(ns):
        x, y, _ = t.get("tails", s)
        ax.plot(x, y, "-", color=COLORS[i + 1], lw=1.2, label=s + " (exact)")
    x, y, _ = t.get("tails", "I_λ(x), KL form KL(φ_λ+t_x‖φ_λ)")
    ax.plot(x, y, "k-", lw=2.2, label=r"$I_\lambda(x)$, KL form KL$(\varphi_{\lambda+t_x}\|\varphi_\lambda)$")
    x, y, _ = t.get("tails", "I_λ(x), Legendre transform sup_t [tx − ψ_λ(t)]")
    ax.plot(x, y, "o", mfc="none", color="k", ms=6, label=r"$I_\lambda(x)$, Legendre $\sup_t\,[tx-\psi_\lambda(t)]$")
    mean = result.params["mean_reward_under_tilt"]
    ax.axvline(mean, color="0.5", ls=":", lw=1, label=r"mean $\Lambda'(\lambda)$")
    ax.set_xlabel(r"per-token reward level $x$")
    ax.set_ylabel(
        r"$-\frac{1}{n}\log P(R_n \geq x)$ (right), $-\frac{1}{n}\log P(R_n \leq x)$ (left)  [nats]", fontsize=9
    )
    ax.set_title(r"exact tail exponents under $\varphi_\lambda^{\otimes n}$, both tails")
    ax.legend(fontsize=8, loc="upper center")

    ax = axes[0, 1]
    x, y, _ = t.get("gap", "max_x |exponent − I_λ(x)|")
    ax.plot(x, y, "o-", color=COLORS[0], label=r"$\max_x |{-\frac{1}{n}}\log P - I_\lambda(x)|$ (exact)")
    x, y, _ = t.get("gap", "reference slope (log n)/(2n)")
    ax.plot(x, y, "k--", lw=1, label=r"$\log(n)/(2n)$ (reference)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length n (tokens)")
    ax.set_ylabel("largest gap to the rate function  [nats per token]")
    ax.set_title("the gap shrinks like O(log n / n)")
    ax.legend(fontsize=8)
    fig.suptitle(
        r"Large deviations: $-\frac{1}{n}\log P(R_n \geq x) \to I_\lambda(x) = "
        r"\mathrm{KL}(\varphi_{\lambda+t_x} \| \varphi_\lambda)$   "
        r"($p = (.4, .3, .2, .1)$, $r = (0, 1, 2, 3)$, $\lambda = 0.5$)"
    )
    return plain_log_ticks(fig)
