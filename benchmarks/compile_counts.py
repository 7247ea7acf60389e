"""Count XLA compilations per experiment of ``asymalign reproduce --quick`` (issue 11).

Usage::

    python benchmarks/compile_counts.py [--only NAME ...] [--full] [--json PATH] [--top K]
    python benchmarks/compile_counts.py --sizes [--json PATH]

Runs the experiments in one process, in ``reproduce`` order (as the CLI does:
later experiments reuse what earlier ones compiled), with the persistent
compilation cache OFF, and prints for each experiment the number of
executables built, the time spent building them, the wall time, and the most
frequently built names. Counts do not depend on machine load; times do.

``--sizes`` instead calls the size-dependent public functions for several
sizes in one process (README model ``p = (0.6, 0.3, 0.1)``, ``r = (0, 1, 2)``):
``reward_law`` at ``n = 64, 100, 128, 1000``, ``bon_vs_klrl`` at three ``n``,
``simulate_bon`` at three ``(n, N)`` in one bucket and three in different
buckets, and prints the compilations and the time of each first call, wall
and process CPU (less sensitive to other load; shape buckets: one
compilation per bucket, not per size).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def count(names=None, quick=True, top=8, seed=0):
    import jax

    jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from asymalign import cli
    from asymalign._compile_cache import CompileCounter

    exps = cli.load_experiments()
    names = names or list(exps.EXPERIMENTS)
    out = {}
    for name in names:
        mod = exps.load(name)
        t0 = time.perf_counter()
        with CompileCounter() as c:
            res = mod.compute(cli._experiment_key(seed, name), quick=quick)
            fig = mod.plot(res)
        wall = time.perf_counter() - t0
        plt.close(fig)
        out[name] = {
            "compilations": c.count,
            "compile_s": round(c.seconds, 3),
            "wall_s": round(wall, 3),
            "top": c.names.most_common(top),
        }
        print(f"{name:14s} {c.count:4d} compilations {c.seconds:7.2f} s of {wall:7.2f} s", flush=True)
        print("    " + ", ".join(f"{k} x{v}" for k, v in c.names.most_common(top)), flush=True)
    total = sum(v["compilations"] for v in out.values())
    print(f"total: {total} compilations, {sum(v['compile_s'] for v in out.values()):.1f} s")
    return out


# (label, code): each runs once, in order, in one process.
SIZES = [
    *((f"reward_law n={n}", f"aa.reward_law(P, R, {n}).log_prob") for n in (64, 100, 128, 1000)),
    *((f"bon_vs_klrl n={n}", f"aa.bon_vs_klrl(P, R, {n}, 0.2).bon_reward") for n in (100, 300, 1000)),
    *(
        (f"simulate_bon n={n} N={N}", f"aa.simulate_bon(jax.random.key(0), P, R, {n}, {N}, 2000).rewards")
        for n, N in ((8, 4096), (10, 3000), (12, 2500), (16, 500), (40, 200), (100, 64))
    ),
]


def count_sizes(cases=SIZES):
    import jax

    jax.config.update("jax_enable_x64", True)
    import asymalign as aa
    from asymalign._compile_cache import CompileCounter

    env = {"aa": aa, "jax": jax, "P": [0.6, 0.3, 0.1], "R": [0.0, 1.0, 2.0]}
    out = {}
    for label, code in cases:
        with CompileCounter() as c:
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(eval(code, env))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out[label] = {
            "compilations": c.count,
            "compile_s": round(c.seconds, 3),
            "first_call_s": round(wall, 3),
            "first_call_cpu_s": round(cpu, 3),
        }
        print(
            f"{label:28s} {c.count:3d} compilations {c.seconds:6.2f} s, first call {wall:6.2f} s ({cpu:6.2f} s CPU)",
            flush=True,
        )
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME")
    ap.add_argument("--full", action="store_true", help="full sizes instead of --quick")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--sizes", action="store_true", help="public functions at several sizes instead")
    args = ap.parse_args(argv)
    os.environ.setdefault("ASYMALIGN_COMPILE_CACHE", "off")
    res = count_sizes() if args.sizes else count(args.only, quick=not args.full, top=args.top)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
