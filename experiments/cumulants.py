"""Scaled CGF as a Rényi cross-entropy, and scaled cumulants against simulation (THEORY.md §5).

``ψ_λ(t) = Λ(λ+t) - Λ(λ)`` equals ``t log C - t H_{1+t}(φ_λ; q_r)`` (Rényi
cross-entropy with the reward's own distribution ``q_r = e^r / C``) and
``(α-1)[Λ(λ) + D_α(φ_λ||p)]``, ``α = 1 + t/λ``. Its derivatives at 0 are the
scaled cumulants ``κ_j(r_n)/n = Λ^{(j)}(λ)`` (autodiff), compared with the
unbiased sample cumulants (k-statistics) of ``r_n`` simulated under
``φ_λ^n`` with ``simulate_bon`` (``N = 1``).
"""

from __future__ import annotations

import jax
import numpy as np

import asymalign as aa

from ._common import COLORS, Result, Table, plain_log_ticks

NAME = "cumulants"


def k_statistics(x):
    """Unbiased estimators ``k_1..k_4`` of the first four cumulants of a sample."""
    x = np.asarray(x, np.float64)
    m = x.size
    mu = x.mean()
    c = x - mu
    m2, m3, m4 = (c**2).mean(), (c**3).mean(), (c**4).mean()
    k2 = m / (m - 1) * m2
    k3 = m**2 / ((m - 1) * (m - 2)) * m3
    k4 = m**2 * ((m + 1) * m4 - 3 * (m - 1) * m2**2) / ((m - 1) * (m - 2) * (m - 3))
    return np.array([mu, k2, k3, k4])


def compute(key, *, quick: bool = False) -> Result:
    p = np.array([0.5, 0.3, 0.2])  # host arrays (jnp.array compiles per shape)
    r = np.array([0.0, 1.0, 2.0])
    lams = (0.5, 1.5)
    lam_sim = 0.5
    ns = (1, 16) if quick else (1, 4, 16, 64)
    trials = 20_000 if quick else 200_000
    batches = 20
    t = Table()
    tg = np.linspace(-3.0, 3.0, 121)
    tm = tg[::8]
    err = {}
    for lam in lams:
        psi = np.asarray(aa.scaled_cgf(p, r, tg, lam))
        t.add("cgf", f"λ = {lam}: ψ_λ(t) = Λ(λ+t) − Λ(λ)", tg, psi)
        ce = np.asarray(aa.cgf_via_renyi_cross_entropy(p, r, tm, lam))
        t.add("cgf", f"λ = {lam}: t log C − t H_{{1+t}}(φ_λ; q_r)", tm, ce)
        dv = np.asarray(aa.cgf_via_renyi_divergence(p, r, tm, lam))
        t.add("cgf", f"λ = {lam}: (α−1)[Λ(λ) + D_α(φ_λ‖p)]", tm, dv)
        err[f"λ = {lam}"] = float(max(np.max(np.abs(ce - psi[::8])), np.max(np.abs(dv - psi[::8]))))
    exact = np.asarray(aa.scaled_cumulants(p, r, 4, lam_sim))
    phi = aa.tilt(p, r, lam_sim)
    keys = jax.random.split(key, len(ns))
    est = np.zeros((len(ns), 4))
    se = np.zeros((len(ns), 4))
    for i, (k, n) in enumerate(zip(keys, ns, strict=False)):
        x = np.asarray(aa.simulate_bon(k, phi, r, n, 1, trials).rewards)
        est[i] = k_statistics(x) / n
        kb = np.stack([k_statistics(b) / n for b in np.split(x, batches)])
        se[i] = kb.std(axis=0, ddof=1) / np.sqrt(batches)
    nn = np.array(ns, float)
    zscores = {}
    for j in range(4):
        t.add(f"kappa{j + 1}", "exact Λ^(j)(λ) (autodiff)", nn[[0, -1]], np.full(2, exact[j]))
        t.add(f"kappa{j + 1}", "simulated k-statistic / n", nn, est[:, j], se[:, j])
        zscores[f"kappa{j + 1}"] = ((est[:, j] - exact[j]) / se[:, j]).tolist()
    params = dict(
        p=p,
        r=r,
        cgf_lams=lams,
        t_grid=[-3.0, 3.0, tg.size],
        sim_lam=lam_sim,
        ns=ns,
        trials_per_n=trials,
        stderr_batches=batches,
    )
    summary = dict(
        max_abs_difference_of_cgf_forms=err, exact_scaled_cumulants=exact, z_scores_simulated_vs_exact=zscores
    )
    return Result(NAME, t, params, summary)


def plot(result: Result):
    t = result.table
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 5.4), layout="constrained")
    gs = fig.add_gridspec(2, 3, width_ratios=[1.5, 1, 1])
    ax = fig.add_subplot(gs[:, 0])
    lams = result.params["cgf_lams"]
    for i, lam in enumerate(lams):
        ser = [s for s in t.series("cgf") if s.startswith(f"λ = {lam}:")]
        x, y, _ = t.get("cgf", ser[0])
        ax.plot(
            x,
            y,
            "-",
            color=COLORS[i],
            lw=2,
            label=rf"$\lambda={lam}$: $\psi_\lambda(t)=\Lambda(\lambda+t)-\Lambda(\lambda)$",
        )
        x, y, _ = t.get("cgf", ser[1])
        ax.plot(
            x,
            y,
            "o",
            mfc="none",
            ms=8,
            color=COLORS[i],
            label=rf"$\lambda={lam}$: $t\log C - t\,H_{{1+t}}(\varphi_\lambda; q_r)$",
        )
        x, y, _ = t.get("cgf", ser[2])
        ax.plot(
            x,
            y,
            "x",
            ms=6,
            color=COLORS[i],
            label=rf"$\lambda={lam}$: $(\alpha-1)[\Lambda(\lambda)+D_\alpha(\varphi_\lambda\|p)]$",
        )
    ax.set_xlabel("t")
    ax.set_ylabel(r"scaled CGF $\psi_\lambda(t) = \frac{1}{n}\log E\, e^{t r_n}$  [nats per token]")
    ax.set_title("the scaled CGF is a Rényi cross-entropy")
    ax.legend(fontsize=7.5, loc="upper left")
    names = ["mean", "variance", "3rd cumulant", "4th cumulant"]
    for j in range(4):
        ax = fig.add_subplot(gs[j // 2, 1 + j % 2])
        x, y, _ = t.get(f"kappa{j + 1}", "exact Λ^(j)(λ) (autodiff)")
        ax.plot(x, y, "k-", lw=1.5, label=rf"exact $\Lambda^{{({j + 1})}}(\lambda)$ (autodiff)")
        x, y, e = t.get(f"kappa{j + 1}", "simulated k-statistic / n")
        ax.errorbar(x, y, yerr=2 * e, fmt="o", color=COLORS[1], capsize=3, label="simulated, ±2 s.e.")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length n (tokens)")
        ax.set_ylabel(rf"$\kappa_{j + 1}(r_n)/n$  [per token]")
        ax.set_title(f"scaled {names[j]}", fontsize=10)
        if j == 0:
            ax.legend(fontsize=7)
    fig.suptitle(
        rf"Cumulants of the reward under $\varphi_\lambda^{{\otimes n}}$: exact for every n "
        rf"(simulation at $\lambda = {result.params['sim_lam']}$, $p = (.5,.3,.2)$, $r = (0,1,2)$)"
    )
    return plain_log_ticks(fig)
