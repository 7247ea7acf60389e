"""Policy optimisation with optax converges to the closed-form tilts (THEORY.md §9).

``q = softmax(θ)`` maximises ``E_q r - β KL(q||p)`` by exact gradients (Adam)
and by sampled REINFORCE gradients (with and without the leave-one-out
baseline); the budgeted problem ``KL(q||p) <= Δ`` is solved through its
Lagrangian. Distances to the closed forms ``φ_{1/β}`` and ``φ_{λ*}`` are
plotted against optimisation steps.
"""

from __future__ import annotations

import jax
import numpy as np

import asymalign as aa

from ._common import COLORS, Result, Table, new_figure, plain_log_ticks, tex

NAME = "optimize"
FLOOR = 1e-16  # KL values below float64 resolution are shown at this floor


def compute(key, *, quick: bool = False) -> Result:
    p = np.array([0.45, 0.25, 0.15, 0.1, 0.05])  # host arrays (jnp.array compiles per shape)
    r = np.array([0.0, 1.0, 0.5, 2.0, 3.0])
    beta, delta = 1.0, 0.3
    steps = 600 if quick else 4000
    sample_sizes = (4, 32)
    phi = aa.kl_regularized(p, r, beta)
    sol = aa.kl_rl(p, r, delta)

    def dist(policies, target):
        return np.maximum(np.asarray(aa.kl(np.asarray(policies)[idx], target)), FLOOR)  # a batch of q: one call

    runs = {"exact gradient (Adam)": aa.optimize_policy(p, r, beta, num_steps=steps)}
    keys = jax.random.split(key, len(sample_sizes) + 1)
    for k, m in zip(keys, sample_sizes, strict=False):
        runs[f"REINFORCE m={m}, leave-one-out baseline"] = aa.reinforce_policy(k, p, r, beta, m, num_steps=steps)
    m = sample_sizes[-1]
    runs[f"REINFORCE m={m}, no baseline"] = aa.reinforce_policy(
        keys[-1], p, r, beta, m, num_steps=steps, baseline=False
    )
    con = aa.optimize_constrained_policy(p, r, delta, num_steps=steps)

    t = Table()
    # Log-spaced steps keep the CSV small; the curves look the same on a log axis.
    idx = np.unique(np.round(np.logspace(0, np.log10(steps), 400)).astype(int)) - 1
    x = idx + 1
    final = {}
    for name, res in runs.items():
        t.add("convergence", name + " → φ_{1/β}", x, dist(res.policies, phi))
        final[name] = float(aa.kl(res.policy, phi))
    t.add("convergence", f"Lagrangian, Δ={delta} → φ_λ*", x, dist(con.policies, sol.policy))
    final["Lagrangian"] = float(aa.kl(con.policy, sol.policy))
    t.add("multiplier", "λ_t = 1/μ_t (Lagrangian)", x, np.asarray(con.lam)[idx])
    t.add("multiplier", "λ* (closed form)", x[[0, -1]], np.full(2, float(sol.lam)))
    tok = np.arange(p.shape[0])
    t.add("policies", "reference p", tok, np.asarray(p))
    t.add("policies", "closed form φ_{1/β}", tok, np.asarray(phi))
    t.add("policies", "exact gradient (Adam)", tok, np.asarray(runs["exact gradient (Adam)"].policy))
    t.add(
        "policies",
        f"REINFORCE m={sample_sizes[0]}",
        tok,
        np.asarray(runs[f"REINFORCE m={sample_sizes[0]}, leave-one-out baseline"].policy),
    )
    t.add("policies", f"closed form φ_λ*, Δ={delta}", tok, np.asarray(sol.policy))
    t.add("policies", "Lagrangian", tok, np.asarray(con.policy))
    params = dict(
        p=p,
        r=r,
        beta=beta,
        delta=delta,
        num_steps=steps,
        reinforce_sample_sizes=sample_sizes,
        exact_optimizer="optax.adam(0.05)",
        reinforce_optimizer="optax.adam(cosine 0.05 -> 5e-4)",
        lagrangian_optimizers="primal optax.adam(0.05), dual optax.sgd(0.05) on log μ",
        init="θ = log p (the reference)",
        kl_floor=FLOOR,
    )
    summary = dict(final_kl_to_closed_form=final, lam_star=float(sol.lam), lam_final=float(np.asarray(con.lam)[-1]))
    return Result(NAME, t, params, summary)


def plot(result: Result):
    t = result.table
    fig, axes = new_figure(3, 1, width=4.6, height=4.0)
    ax = axes[0, 0]
    for i, s in enumerate(t.series("convergence")):
        x, y, _ = t.get("convergence", s)
        ls = ":" if "no baseline" in s else "-"
        ax.plot(x, y, ls, color=COLORS[i], lw=1.3, label=tex(s))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("optimisation step t")
    ax.set_ylabel(f"KL(q_t ‖ closed form)  [nats, floored at {FLOOR:g}]")
    ax.set_title("distance to the closed-form tilt")
    ax.legend(fontsize=7, loc="lower left")

    ax = axes[0, 1]
    x, y, _ = t.get("multiplier", "λ_t = 1/μ_t (Lagrangian)")
    ax.plot(x, y, color=COLORS[4], label="λ_t = 1/μ_t (Lagrangian)")
    x, y, _ = t.get("multiplier", "λ* (closed form)")
    ax.plot(x, y, "k--", label=tex("λ* with KL(φ_λ*‖p) = Δ"))
    ax.set_xscale("log")
    ax.set_xlabel("optimisation step t")
    ax.set_ylabel("tilt parameter λ  (1 / Lagrange multiplier)")
    ax.set_title(tex("λ_t = 1/μ_t converges to λ*"))
    ax.legend(fontsize=8)

    ax = axes[0, 2]
    ser = t.series("policies")
    w = 0.8 / len(ser)
    for i, s in enumerate(ser):
        x, y, _ = t.get("policies", s)
        hatch = "//" if "closed form" in s else None
        ax.bar(
            x + (i - (len(ser) - 1) / 2) * w,
            y,
            w,
            color=COLORS[i % len(COLORS)],
            label=s,
            hatch=hatch,
            edgecolor="white" if hatch else None,
        )
    ax.set_xlabel("token x")
    ax.set_ylabel("probability q(x)")
    ax.set_xticks(x)
    ax.set_title("final policies match the closed forms")
    ax.legend(fontsize=7)
    fig.suptitle(
        tex(
            "optax policy optimisation converges to the exponential tilts "
            "φ_{1/β} (KL-regularised) and φ_λ* (KL-constrained)"
        )
    )
    return plain_log_ticks(fig)
