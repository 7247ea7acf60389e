"""Count XLA compilations per experiment of ``asymalign reproduce --quick`` (issue 11).

Usage::

    python benchmarks/compile_counts.py [--only NAME ...] [--full] [--json PATH] [--top K]

Runs the experiments in one process, in ``reproduce`` order (as the CLI does:
later experiments reuse what earlier ones compiled), with the persistent
compilation cache OFF, and prints for each experiment the number of
executables built, the time spent building them, the wall time, and the most
frequently built names. Counts do not depend on machine load; times do.
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME")
    ap.add_argument("--full", action="store_true", help="full sizes instead of --quick")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args(argv)
    os.environ.setdefault("ASYMALIGN_COMPILE_CACHE", "off")
    res = count(args.only, quick=not args.full, top=args.top)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
