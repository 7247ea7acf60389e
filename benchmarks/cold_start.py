"""Time to first result in FRESH processes (issue 11): what a notebook user meets first.

For each main public function at the README quick-start sizes, three fresh
Python processes each time:

* ``cold``: ``import asymalign`` + the first call, JAX's persistent
  compilation cache pointed at an EMPTY directory (every kernel compiles);
* ``warm``: the same in a new process with that cache now filled (JAX's
  persistent compilation cache and the package's executable cache, both
  turned on by ``enable_compile_cache``);
* ``baseline``: ``import numpy, scipy`` + the plain NumPy/SciPy way
  (``benchmarks/baselines.py``) on the same inputs.

Each process reports its import time, first-call time and compilation count
(``jax.monitoring``); the median over ``repeats`` runs is kept. The CLI runs
``asymalign reproduce --quick`` and ``asymalign sweep experiments/sweeps/example.toml``
cold and warm the same way (full/quick scale only: about a minute each).

``--experiments`` profiles each experiment of ``reproduce --quick`` alone
(``--only NAME``) in a fresh process, cold then warm: wall time, executables
built, seconds in XLA compilation, persistent-cache hits, and the seconds
spent tracing and lowering (which the persistent cache does not save), from
``jax.monitoring``.

Run alone::

    python benchmarks/cold_start.py [--repeats 3] [--only solve_lambda ...] [--cli] [--experiments [NAME ...]]
                                    [--json PATH]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(_HERE)

# README quick start: p = (0.6, 0.3, 0.1), r = (0, 1, 2), Δ = 0.2, n = 1024.
_SETUP = """
P = [0.6, 0.3, 0.1]
R = [0.0, 1.0, 2.0]
"""

# name -> (asymalign code, baseline code or None); both leave the result in `out`.
FUNCTIONS = {
    "solve_lambda": (
        "out = aa.solve_lambda(P, R, 0.2)",
        "out = bl.solve_lambda(np.array([P]), np.array([R]), np.array([0.2]))",
    ),
    "rate_function": (
        "out = aa.rate_function(P, R, 1.0)",
        "out = bl.rate_function(np.array([P]), np.array([R]), np.array([1.0]))",
    ),
    "reward_law": (
        "out = aa.reward_law(P, R, 1024).log_prob",
        "out = bl.lattice_log_law_one_tilt(np.array(P), 1024, 0.0)",
    ),
    "bon_vs_klrl": (
        "out = aa.bon_vs_klrl(P, R, 1024, 0.2).bon_reward",
        "out = bl.bon_vs_klrl(np.array(P), np.array(R), 1024, 0.2)",
    ),
    "simulate_bon": (
        "out = aa.simulate_bon(jax.random.key(0), P, R, n=8, num_samples=4096, num_trials=2000).rewards",
        "out = bl.simulate_bon(0, np.array(P), np.array(R), 8, 4096, 2000)",
    ),
    "best_of_n": (
        "out = aa.best_of_n(aa.reward_law(P, R, 1024), 204.8).log_prob",
        "out = bl.bon_level_log_law(bl.lattice_log_law_one_tilt(np.array(P), 1024, 0.0), 204.8)",
    ),
    "soft_best_of_n": ("out = aa.soft_best_of_n(aa.reward_law(P, R, 64), 5.0, 1.0).log_prob", None),
    "infalign_optimum": ("out = aa.infalign_optimum(aa.reward_law(P, R, 64), 2.0, 0.5).win_rate", None),
}

_CHILD_ASYMALIGN = """
import json, os, sys, time
t0 = time.perf_counter()
import jax
jax.config.update("jax_enable_x64", True)
import asymalign as aa
from asymalign._compile_cache import CompileCounter, enable_compile_cache
cache = os.environ.get("COLD_START_CACHE")
if cache:
    enable_compile_cache(cache)
t1 = time.perf_counter()
{setup}
if not hasattr(aa, {fn!r}):
    print("COLD_START_JSON" + json.dumps({{"missing": True}})); sys.exit(0)
with CompileCounter() as c:
    {code}
    jax.block_until_ready(out)
t2 = time.perf_counter()
print("COLD_START_JSON" + json.dumps({{"import_s": t1 - t0, "first_call_s": t2 - t1, "total_s": t2 - t0,
                                     "compilations": c.count, "cache_hits": c.cache_hits}}))
"""

_CHILD_BASELINE = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import scipy.optimize, scipy.special, scipy.fft
t1 = time.perf_counter()
# benchmarks/baselines.py shares reference twins with the tests (they live in
# asymalign.testing): importing it is not part of what a NumPy user pays.
sys.path.insert(0, {here!r})
import baselines as bl
t1b = time.perf_counter()
{setup}
{code}
t2 = time.perf_counter()
print("COLD_START_JSON" + json.dumps({{"import_s": t1 - t0, "first_call_s": t2 - t1b,
                                     "total_s": (t1 - t0) + (t2 - t1b)}}))
"""


_CHILD_EXPERIMENT = """
import json, os, time, collections
t0 = time.perf_counter()
import jax
jax.config.update("jax_enable_x64", True)
import matplotlib
matplotlib.use("Agg")
from jax import monitoring
from asymalign import cli
from asymalign._compile_cache import enable_compile_cache
enable_compile_cache(os.environ["COLD_START_CACHE"])
exps = cli.load_experiments()
t1 = time.perf_counter()
stats = collections.Counter()
def on_duration(event, secs, **kw):
    stats[event.rsplit("/", 1)[-1]] += secs
    if event.endswith("backend_compile_duration"):
        stats["compilations"] += 1
def on_event(event, **kw):
    if event.endswith("cache_hits"):
        stats["cache_hits"] += 1
monitoring.register_event_duration_secs_listener(on_duration)
monitoring.register_event_listener(on_event)
mod = exps.load({name!r})
t2 = time.perf_counter()
res = mod.compute(cli._experiment_key(0, {name!r}), quick=True)
t3 = time.perf_counter()
fig = mod.plot(res)
fig.savefig(os.path.join(os.environ["COLD_START_OUT"], "f.png"), dpi=150)
fig.savefig(os.path.join(os.environ["COLD_START_OUT"], "f.pdf"))
t4 = time.perf_counter()
print("COLD_START_JSON" + json.dumps({{"import_s": t1 - t0, "compute_s": t3 - t2, "plot_save_s": t4 - t3,
    "total_s": t4 - t2, "compilations": stats["compilations"], "cache_hits": stats["cache_hits"],
    "compile_s": stats["backend_compile_duration"], "trace_s": stats["jaxpr_trace_duration"],
    "lower_s": stats["jaxpr_to_mlir_module_duration"]}}))
"""


def experiment_profile(name: str) -> dict:
    """One experiment of ``reproduce --quick`` in fresh processes: cold (empty cache), then warm."""
    tmp = tempfile.mkdtemp(prefix="asymalign-exp-")
    try:
        env = _env(os.path.join(tmp, "cache"))
        env["COLD_START_OUT"] = tmp
        script = _CHILD_EXPERIMENT.format(name=name)
        return {"cold": _child(script, env, timeout=1800), "warm": _child(script, env, timeout=1800)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _env(cache=None):
    env = {k: v for k, v in os.environ.items() if k not in ("ASYMALIGN_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    if cache:
        env["COLD_START_CACHE"] = cache
    return env


def _child(script, env, timeout=600):
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"cold-start child failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("COLD_START_JSON")][-1]
    rec = json.loads(line[len("COLD_START_JSON") :])
    rec["process_wall_s"] = wall
    return rec


def _median(recs, key):
    return statistics.median(r[key] for r in recs)


def first_result(name: str, repeats: int = 1) -> dict:
    """Cold / warm / baseline time to first result of one function (medians over ``repeats``)."""
    code, base = FUNCTIONS[name]
    script = _CHILD_ASYMALIGN.format(setup=_SETUP, fn=name.split("(")[0], code=code)
    cold, warm, basel = [], [], []
    for _ in range(repeats):
        cache = tempfile.mkdtemp(prefix="asymalign-cold-")
        try:
            cold.append(_child(script, _env(cache)))
            if cold[-1].get("missing"):
                return {"skipped": f"skipped: API missing (asymalign.{name})"}
            warm.append(_child(script, _env(cache)))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        if base is not None:
            basel.append(_child(_CHILD_BASELINE.format(here=_HERE, setup=_SETUP, code=base), _env()))
    rec = {
        "cold_s": _median(cold, "total_s"),
        "cold_first_call_s": _median(cold, "first_call_s"),
        "warm_s": _median(warm, "total_s"),
        "warm_first_call_s": _median(warm, "first_call_s"),
        "import_s": _median(warm, "import_s"),
        "compilations": cold[0]["compilations"],
        "warm_cache_hits": warm[0]["cache_hits"],
        "repeats": repeats,
    }
    if basel:
        rec["baseline_s"] = _median(basel, "total_s")
        rec["baseline_first_call_s"] = _median(basel, "first_call_s")
    return rec


def _cli_once(args, cache, workdir):
    env = _env()
    env["ASYMALIGN_COMPILE_CACHE"] = cache
    cmd = [sys.executable, "-m", "_asymalign_cli", *args]  # what the `asymalign` script runs
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def cli_cold_warm(which: str, repeats: int = 1) -> dict:
    """``reproduce --quick`` or the example sweep: cold (empty cache) and warm (second run), median of ``repeats``."""
    cold, warm = [], []
    for _ in range(repeats):
        tmp = tempfile.mkdtemp(prefix="asymalign-cli-")
        try:
            cache = os.path.join(tmp, "cache")
            if which == "reproduce":
                args = ["reproduce", "--quick", "--out", os.path.join(tmp, "figs")]
            else:
                config = os.path.join(REPO, "experiments", "sweeps", "example.toml")
                args = ["sweep", config, "--out", os.path.join(tmp, "sweep"), "--no-resume", "--no-progress"]
            cold.append(_cli_once(args, cache, REPO))
            warm.append(_cli_once(args, cache, REPO))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "cold_s": statistics.median(cold),
        "warm_s": statistics.median(warm),
        "runs_cold_s": cold,
        "runs_warm_s": warm,
        "repeats": repeats,
    }


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="+", choices=list(FUNCTIONS), metavar="NAME")
    ap.add_argument("--cli", action="store_true", help="also reproduce --quick and the example sweep")
    ap.add_argument(
        "--experiments", nargs="*", metavar="NAME", help="profile experiments of reproduce --quick (default: all)"
    )
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    out = {}
    if args.experiments is not None:
        from asymalign._registry import EXPERIMENTS

        print(
            f"{'experiment':14s} {'':5s} {'total':>7s} {'plot+save':>9s} {'compiles':>8s} {'compile':>8s} "
            f"{'hits':>5s} {'trace':>6s} {'lower':>6s}"
        )
        for name in args.experiments or EXPERIMENTS:
            rec = out[f"experiment/{name}"] = experiment_profile(name)
            for which in ("cold", "warm"):
                r = rec[which]
                print(
                    f"{name:14s} {which:5s} {r['total_s']:6.2f}s {r['plot_save_s']:8.2f}s {r['compilations']:8d} "
                    f"{r['compile_s']:7.2f}s {r['cache_hits']:5d} {r['trace_s']:5.2f}s {r['lower_s']:5.2f}s",
                    flush=True,
                )
        if not (args.only or args.cli):
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(out, f, indent=1)
            return 0
    for name in args.only or FUNCTIONS:
        rec = out[name] = first_result(name, args.repeats)
        if "skipped" in rec:
            print(f"{name:18s} {rec['skipped']}")
            continue
        base = f"{rec['baseline_s']:.2f} s" if "baseline_s" in rec else "—"
        print(
            f"{name:18s} cold {rec['cold_s']:6.2f} s ({rec['compilations']} compilations)  "
            f"warm {rec['warm_s']:6.2f} s ({rec['warm_cache_hits']} cache hits)  NumPy/SciPy {base}",
            flush=True,
        )
    if args.cli:
        for which in ("reproduce", "sweep"):
            rec = out[f"cli/{which}"] = cli_cold_warm(which, args.repeats)
            print(f"{which:18s} cold {rec['cold_s']:6.1f} s  warm {rec['warm_s']:6.1f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
