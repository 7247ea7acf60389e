"""Float32 path on an accelerator: every public numerical function runs in float32,
is NaN-free on valid input, and agrees with the float64 reference to float32 accuracy.

    python benchmarks/gpu_float32_check.py [--json PATH]
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import asymalign as aa  # noqa: E402


def cases(dt):
    key = jax.random.key(0)
    k1, k2, k3 = jax.random.split(key, 3)
    B = 4096
    P = jax.random.dirichlet(k1, jnp.ones(8), (B,)).astype(dt)
    P = P / P.sum(-1, keepdims=True)
    R = jax.random.normal(k2, (B, 8)).astype(dt)
    u = jax.random.uniform(k3, (B,)).astype(dt)
    D = (u * 0.9 * aa.max_kl(P, R)).astype(dt)
    X = (R.min(-1) + (0.05 + 0.9 * u) * (R.max(-1) - R.min(-1))).astype(dt)
    p3 = jnp.asarray([0.6, 0.3, 0.1], dt)
    r3 = jnp.asarray([0.0, 1.0, 2.0], dt)
    law = aa.law_from_lattice(jnp.log(p3), 1024)
    out = {
        "solve_lambda": aa.solve_lambda(P, R, D),
        "tilt_kl": aa.tilt_kl(P, R, aa.solve_lambda(P, R, D)),
        "kl_rl_reward": aa.kl_rl(P, R, D).reward,
        "rate_function": aa.rate_function(P, R, X),
        "scaled_cumulants": aa.scaled_cumulants(P, R, 4),
        "renyi_cross_entropy": aa.renyi_cross_entropy(P, jnp.flip(P, -1), jnp.asarray(2.0, dt)),
        "lattice_law_n1024": law.log_prob,
        "bon_reward": aa.law_mean(aa.best_of_n(law, jnp.asarray(1024 * 0.2, dt))) / 1024,
        "bon_kl": aa.law_kl(aa.best_of_n(law, jnp.asarray(1024 * 0.2, dt)), law) / 1024,
        "bon_win_rate": aa.win_rate(aa.best_of_n(law, jnp.asarray(1024 * 0.2, dt)), law),
    }
    small = aa.law_from_lattice(jnp.log(p3), 256)
    out["soft_best_of_n"] = aa.soft_best_of_n(small, jnp.asarray([1.0, 20.0, 1e3], dt), jnp.asarray(2.0, dt)).prob
    out["best_of_poisson"] = aa.best_of_poisson(small, jnp.asarray(30.0, dt)).prob
    out["infalign_optimum_win"] = aa.infalign_optimum(
        aa.law_from_lattice(jnp.log(p3), 16), jnp.log(jnp.asarray(4.0, dt)), jnp.asarray([0.05, 0.5], dt)
    ).win_rate
    res = aa.bon_vs_klrl(p3, r3, 4096, jnp.asarray(0.2, dt))  # the window-law path
    out["bon_vs_klrl_reward"] = res.bon_reward
    out["bon_vs_klrl_kl"] = res.bon_kl
    sim = aa.simulate_bon(jax.random.key(1), p3, r3, 16, 256, 512)
    out["simulate_bon_mean"] = aa.mc_mean(sim.rewards).mean / 16
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    ref = {k: np.asarray(v, np.float64) for k, v in cases(jnp.float64).items()}
    f32 = {k: np.asarray(v) for k, v in cases(jnp.float32).items()}
    report = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}
    ok = True
    for k in ref:
        a, b = f32[k].astype(np.float64), ref[k]
        fin = np.isfinite(b)
        nan = bool(np.isnan(a).any())
        rel = float(np.max(np.abs(a[fin] - b[fin]) / np.maximum(1.0, np.abs(b[fin])))) if fin.any() else 0.0
        report[k] = {"dtype": str(f32[k].dtype), "nan": nan, "max_rel_err_vs_f64": rel}
        ok &= (not nan) and str(f32[k].dtype) == "float32"
        print(f"{k:22s} dtype={f32[k].dtype} nan={nan} max_rel_err={rel:.2e}")
    report["ok"] = ok
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
