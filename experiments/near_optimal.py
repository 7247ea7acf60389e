"""Near-optimal means close: KL(q || φ_λ) <= λ·(reward gap) inside the budget (THEORY.md §4).

For every ``q``: ``KL(q||φ_λ) = KL(q||p) - λ E_q r + Λ(λ)``; with ``Δ = K(λ)``
this is ``[KL(q||p) - Δ] + λ [E_{φ_λ} r - E_q r]``, so a policy within the
KL budget whose reward is ``ε`` below the optimum is within ``λ ε`` of the
tilt. Shown for many random policies and for two optimiser trajectories.
"""

from __future__ import annotations

import jax
import numpy as np

import asymalign as aa

from ._common import COLORS, Result, Table, new_figure, plain_log_ticks, tex

NAME = "near_optimal"


def compute(key, *, quick: bool = False) -> Result:
    p = np.array([0.45, 0.25, 0.15, 0.1, 0.05])  # host arrays (jnp.array compiles per shape)
    r = np.array([0.0, 1.0, 0.5, 2.0, 3.0])
    delta = 0.3
    num_policies = 1500 if quick else 3000
    steps = 600 if quick else 3000
    sol = aa.kl_rl(p, r, delta)
    lam = float(sol.lam)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    # Random policies around the tilted family: log q = log p + λ' r + s·noise.
    lam_mix = jax.random.uniform(k1, (num_policies,), minval=0.0, maxval=2.0 * lam)
    scale = jax.random.uniform(k2, (num_policies,), minval=0.0, maxval=1.5) ** 2
    noise = jax.random.normal(k3, (num_policies, p.shape[0]))
    # host-side glue (eager jnp operations would compile one executable each)
    lam_mix, scale, noise = (np.asarray(a) for a in (lam_mix, scale, noise))
    logits = np.log(p)[None, :] + lam_mix[:, None] * r[None, :] + scale[:, None] * noise
    q = np.exp(logits - logits.max(axis=-1, keepdims=True))
    q = q / q.sum(axis=-1, keepdims=True)

    phi = sol.policy
    log_z, reward = float(aa.log_partition(p, r, lam)), float(sol.reward)

    def stats(q):
        kl_p = aa.kl(q, p)  # a batch of q: one call
        kl_phi = aa.kl(q, phi)
        kl_p, kl_phi, q = np.asarray(kl_p), np.asarray(kl_phi), np.asarray(q)
        gap = reward - q @ r
        rhs = kl_p - lam * (q @ r) + log_z
        return kl_p, kl_phi, lam * gap, rhs

    kl_p, kl_phi, lgap, rhs = stats(q)
    feas = kl_p <= delta
    t = Table()
    pos = lgap > 0
    t.add("bound", "random q with KL(q‖p) ≤ Δ", lgap[feas & pos], kl_phi[feas & pos])
    t.add("bound", "random q with KL(q‖p) > Δ", lgap[~feas & pos], kl_phi[~feas & pos])
    # Optimiser trajectories from the reference towards φ_λ*.
    con = aa.optimize_constrained_policy(p, r, delta, num_steps=steps)
    reg = aa.optimize_policy(p, r, 1.0 / lam, num_steps=steps)
    traj = {}
    for name, res in [("Lagrangian trajectory (budget Δ)", con), ("KL-regularised trajectory (β = 1/λ*)", reg)]:
        tk_p, tk_phi, tl, trhs = stats(np.asarray(res.policies)[:: max(1, steps // 300)])
        ok = (tl > 1e-12) & (tk_phi > 1e-14)
        t.add("bound", name, tl[ok], tk_phi[ok])
        traj[name] = dict(max_kl_to_ref=float(tk_p.max()), final_kl_to_tilt=float(tk_phi[-1]))
    xs = np.concatenate([t.get("bound", n)[0] for n in t.series("bound")])
    grid = np.logspace(np.log10(xs.min()), np.log10(xs.max()), 50)
    t.add("bound", "bound KL(q‖φ_λ) = λ·gap", grid, grid)

    # Exact identity: direct KL(q||φ_λ) against KL(q||p) - λ E_q r + Λ(λ).
    t.add("identity", "random q", rhs, kl_phi)
    resid = np.abs(kl_phi - rhs)
    params = dict(
        p=p,
        r=r,
        delta=delta,
        lam_star=lam,
        num_policies=num_policies,
        policy_sampler="log q = log p + U(0, 2λ*)·r + U(0,1.5)^2·N(0, I)",
        optimiser_steps=steps,
    )
    summary = dict(
        num_feasible=int(feas.sum()),
        bound_violations_feasible=int(np.sum(kl_phi[feas] > lgap[feas] + 1e-12)),
        max_identity_residual=float(resid.max()),
        trajectories=traj,
    )
    return Result(NAME, t, params, summary)


def plot(result: Result):
    t = result.table
    fig, axes = new_figure(2, 1, width=5.6, height=4.6)
    ax = axes[0, 0]
    styles = {
        "random q with KL(q‖p) ≤ Δ": dict(marker=".", ls="none", ms=3, color=COLORS[0], alpha=0.6),
        "random q with KL(q‖p) > Δ": dict(marker=".", ls="none", ms=3, color="0.7", alpha=0.5),
        "Lagrangian trajectory (budget Δ)": dict(marker="o", ms=2.5, ls="none", color=COLORS[1]),
        "KL-regularised trajectory (β = 1/λ*)": dict(marker="s", ms=2.5, ls="none", color=COLORS[2]),
        "bound KL(q‖φ_λ) = λ·gap": dict(ls="--", lw=1.2, color="k"),
    }
    for s in t.series("bound"):
        x, y, _ = t.get("bound", s)
        ax.plot(x, y, label=tex(s), **styles[s])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$\lambda^*\,(E_{\varphi_{\lambda^*}} r - E_q r)$   [λ* × reward gap per token]")
    ax.set_ylabel(r"KL$(q \,\|\, \varphi_{\lambda^*})$  [nats per token]")
    ax.set_title(
        "every policy within the KL budget (blue) lies below the bound;\n"
        "optimiser iterates converge to the tilt (KL → 0)",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left")

    ax = axes[0, 1]
    x, y, _ = t.get("identity", "random q")
    ax.plot(x, y, ".", ms=3, color=COLORS[0], label="random q")
    lo, hi = max(min(x.min(), y.min()), 1e-8), max(x.max(), y.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    resid = np.max(np.abs(x - y))
    ax.text(0.97, 0.05, f"max |difference| = {resid:.1e}", transform=ax.transAxes, ha="right", fontsize=9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"KL$(q\|p) - \lambda^* E_q r + \Lambda(\lambda^*)$   [nats per token]")
    ax.set_ylabel(r"KL$(q \,\|\, \varphi_{\lambda^*})$ computed directly  [nats per token]")
    ax.set_title("the identity of THEORY §4 holds exactly")
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(tex("Near-optimal means close: KL(q‖p) ≤ Δ and reward gap ε  ⇒  KL(q‖φ_λ*) ≤ λ*ε"))
    return plain_log_ticks(fig)
