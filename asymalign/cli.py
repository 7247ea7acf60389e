"""The ``asymalign`` command: list and reproduce the experiments (figures + data).

::

    asymalign list
    asymalign reproduce [--quick] [--only NAME ...] [--out DIR] [--seed S] [--jobs J]
                        [--compile-cache DIR | --no-compile-cache]
    asymalign sweep CONFIG.toml [...]

``reproduce`` writes, for each experiment, ``DIR/NAME.png``, ``DIR/NAME.pdf``,
``DIR/NAME.csv`` (the plotted data) and ``DIR/NAME.json`` (all parameters, the
seed, package versions, the JAX backend and devices, and derived numbers).
Runs are deterministic for a given seed, whatever ``--jobs`` (experiments run
in that many processes, this one and spawned workers, by default one per CPU core;
the ``asymalign`` script, :mod:`_asymalign_cli`, starts the first worker before it
imports this package); float64 is enabled.

Where the experiments are: ``list`` needs only the package (names and
descriptions live in :mod:`asymalign._registry`). The experiment code lives in
the repository's ``experiments/`` folder, which is not part of an installed
wheel; ``reproduce`` imports it (through the ordinary import system) from, in
order: ``$ASYMALIGN_EXPERIMENTS``; the source checkout the package was imported
from (``pip install -e .``); ``./experiments`` in the working directory (a
clone after ``pip install .``).

``reproduce`` and ``sweep`` use JAX's persistent compilation cache, by default
in ``~/.cache/asymalign/jax``; ``--compile-cache DIR`` or
``ASYMALIGN_COMPILE_CACHE=DIR`` moves it, ``--no-compile-cache`` or
``ASYMALIGN_COMPILE_CACHE=off`` turns it off (see :mod:`asymalign._compile_cache`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import zlib
from pathlib import Path

from ._jit import jit

_PROG = "asymalign"


class CLIError(Exception):
    """An error reported as one line on stderr with a non-zero exit status."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # raised in a reproduce worker process: keep the status
        return (CLIError, (str(self), self.status))


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of usage + message
        raise CLIError(f"{message} (see '{_PROG} --help')", 2)


def _version() -> str:
    from . import __version__

    return __version__


EXPERIMENTS_ENV = "ASYMALIGN_EXPERIMENTS"
_GET_THEM = (
    "get them with a source checkout of the asymalign repository "
    "(git clone, then 'pip install -e .' in it, or run from the clone's root)"
)


def experiments_dir() -> Path:
    """The ``experiments/`` folder of the source checkout this package was imported from."""
    return Path(__file__).resolve().parent.parent / "experiments"


def _is_experiments_dir(d: Path) -> bool:
    return (d / "__init__.py").is_file() and (d / "_common.py").is_file()


def find_experiments() -> Path:
    """The experiments folder: ``$ASYMALIGN_EXPERIMENTS``, else the checkout's, else ``./experiments``.

    Raises:
      CLIError: one line saying where they were expected and how to get them.
    """
    env = os.environ.get(EXPERIMENTS_ENV)
    if env:
        d = Path(env).expanduser().resolve()
        if _is_experiments_dir(d):
            return d
        raise CLIError(f"{EXPERIMENTS_ENV}={env} is not an experiments folder (no __init__.py and _common.py)", 1)
    candidates = [experiments_dir(), Path.cwd() / "experiments"]
    for d in candidates:
        if _is_experiments_dir(d):
            return d.resolve()
    raise CLIError(
        f"experiments folder not found: the experiments are not part of the installed package; "
        f"expected at {candidates[0]} (source checkout) or ./experiments, or set {EXPERIMENTS_ENV}=DIR; {_GET_THEM}",
        1,
    )


def load_experiments():
    """Import the repository's ``experiments`` package (its ``load`` and ``EXPERIMENTS``).

    The ordinary import system does the work: the folder's parent is on
    ``sys.path`` only while the package itself is imported (its modules are
    then found through the package's ``__path__``); nothing is injected into
    ``sys.modules`` by hand.
    """
    d = find_experiments()
    init = d / "__init__.py"
    mod = sys.modules.get("experiments")
    if mod is not None:
        if Path(getattr(mod, "__file__", "") or "").resolve() == init:
            return mod
        raise CLIError(
            f"another module named 'experiments' is already imported ({getattr(mod, '__file__', mod)}); "
            f"run 'asymalign reproduce' in a fresh process",
            1,
        )
    root = str(d.parent)
    sys.path.insert(0, root)
    try:
        importlib.invalidate_caches()
        mod = importlib.import_module("experiments")
    finally:
        try:
            sys.path.remove(root)
        except ValueError:  # pragma: no cover - removed by the imported code
            pass
    if Path(mod.__file__).resolve() != init:  # pragma: no cover - a namespace clash
        raise CLIError(f"imported 'experiments' from {mod.__file__}, expected {init}", 1)
    return mod


def _add_compile_cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compile-cache",
        metavar="DIR",
        default=None,
        help="JAX persistent compilation cache (default: $ASYMALIGN_COMPILE_CACHE, else ~/.cache/asymalign/jax)",
    )
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="no persistent compilation cache (or ASYMALIGN_COMPILE_CACHE=off)",
    )


def _setup_compile_cache(args) -> str | None:
    """Turn on the persistent compilation cache for ``reproduce`` / ``sweep`` (see :mod:`._compile_cache`)."""
    from ._compile_cache import enable_compile_cache

    if getattr(args, "no_compile_cache", False):
        return None
    path = enable_compile_cache(getattr(args, "compile_cache", None))
    if path is None:  # disabled by the environment: tell the sweep too
        args.no_compile_cache = True
    else:
        args.compile_cache = path
    return path


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=_PROG,
        description="Reproduce the figures and data of the asymptotics-of-alignment study.",
    )
    parser.add_argument("--version", action="version", version=f"{_PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("list", help="list the experiments, one line each")
    rep = sub.add_parser(
        "reproduce",
        help="run experiments and write NAME.png/.pdf/.csv/.json",
        description="Run the experiments and write DIR/NAME.png, .pdf, .csv (plotted data) and "
        ".json (parameters, seed, versions, backend).",
    )
    rep.add_argument("--quick", action="store_true", help="smaller n and trials, same plots (< 60 s)")
    rep.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    rep.add_argument("--out", default="figures", metavar="DIR", help="output folder (default: figures/)")
    rep.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    rep.add_argument(
        "--jobs",
        "-j",
        type=_positive_int,
        default=None,
        metavar="J",
        help="worker processes (default: one per CPU core, at most one per experiment; 1: in this process)",
    )
    _add_compile_cache_args(rep)
    from .sweep.cli import add_sweep_parser

    add_sweep_parser(sub)
    return parser


def _environment() -> dict:
    import importlib.metadata as md

    import jax

    versions = {"python": platform.python_version(), "asymalign": _version()}
    for pkg in ("jax", "jaxlib", "optax", "numpy", "scipy", "matplotlib"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "versions": versions,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_enable_x64": bool(jax.config.jax_enable_x64),
        "platform": platform.platform(),
    }


def _check_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".asymalign-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise CLIError(f"cannot write to output directory '{out}': {e.strerror or e}", 1) from None


def _experiment_key(seed: int, name: str):
    """A per-experiment key that does not depend on which others are selected:
    ``fold_in(key(seed), crc32(name) & 0x7FFFFFFF)``."""
    import numpy as np

    return _fold_in_key(np.int64(seed), np.uint32(zlib.crc32(name.encode()) & 0x7FFFFFFF))


@jit  # one cached executable instead of four eager operations, each compiled in every process
def _fold_in_key(seed, data):
    import jax

    return jax.random.fold_in(jax.random.key(seed), data)


_PNG_DPI = 150


def _save(result, fig, out: Path, meta: dict, to_jsonable) -> list[Path]:
    name = result.name
    paths = [out / f"{name}.{ext}" for ext in ("png", "pdf", "csv", "json")]
    engine = fig.get_layout_engine()
    if engine is not None:
        # Lay the figure out once, at the PNG's resolution, for both files: savefig would lay it
        # out inside a whole draw without rendering. Measured: the twelve quick figures took 1.1 s
        # less in one process; both files are byte-identical to savefig's (checked for each one).
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        fig.set_dpi(_PNG_DPI)
        FigureCanvasAgg(fig)
        engine.execute(fig)
        fig.set_layout_engine("none")
    fig.savefig(paths[0], dpi=_PNG_DPI, metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "Producer": None, "Creator": None})
    result.table.write_csv(paths[2])
    doc = {
        "experiment": name,
        **meta,
        "params": to_jsonable(result.params),
        "summary": to_jsonable(result.summary),
    }
    paths[3].write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return paths


def default_jobs(num_experiments: int) -> int:
    """Worker processes for ``reproduce``: one per available CPU core, at most one per experiment."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, num_experiments))


def _run_one(name: str, out: Path, quick: bool, seed: int, env: dict):
    """Compute, plot and save one experiment; returns its ``Result``."""
    exps = load_experiments()
    mod = exps.load(name)
    t0 = time.perf_counter()
    res = mod.compute(_experiment_key(seed, name), quick=quick)
    fig = mod.plot(res)
    elapsed = time.perf_counter() - t0
    meta = {
        "description": exps.EXPERIMENTS[name],
        "seed": seed,
        "quick": quick,
        "elapsed_s": round(elapsed, 3),
        **env,
    }
    try:
        _save(res, fig, out, meta, exps._common.to_jsonable)
    except OSError as e:
        raise CLIError(f"cannot write outputs of '{name}' to '{out}': {e.strerror or e}", 1) from None
    import matplotlib.pyplot as plt

    plt.close(fig)
    return res


def _worker_import() -> None:
    """A ``reproduce`` worker process's start (the pool's initializer): float64, the Agg
    backend, and a fast exit. It needs no arguments, so that the ``asymalign`` script
    can start a worker before this process knows its own (:mod:`_asymalign_cli`)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")
    import atexit

    atexit.register(_exit_at_once)  # registered last, so it runs first


def _use_caches(jax_cache: str | None, executable_cache: str | None) -> None:
    """The calling process's compilation caches, in a worker (before its first compilation)."""
    import jax

    from . import _jit

    if jax_cache is not None and jax.config.jax_compilation_cache_dir != jax_cache:
        from ._compile_cache import MIN_COMPILE_TIME_S

        jax.config.update("jax_compilation_cache_dir", jax_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
    if _jit.executable_cache_dir() != executable_cache:
        _jit.set_executable_cache_dir(executable_cache)


def _run_in_worker(caches: tuple, name: str, out: Path, quick: bool, seed: int, env: dict):
    """:func:`_run_one` in a worker process, with the calling process's caches."""
    _use_caches(*caches)
    return _run_one(name, out, quick, seed, env)


def _new_pool(workers: int):
    """A pool of ``workers`` spawned processes (JAX is not fork-safe), started as experiments are handed out."""
    import concurrent.futures as cf
    import multiprocessing as mp

    return cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_import)


def _discard_pool(pool) -> None:
    """Stop a pool that will not be used, without waiting for its workers to finish starting."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):  # CPython's pool keeps them there
        proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _exit_at_once() -> None:
    """A worker's exit: its results are sent and its cache entries written when made, so skip
    the interpreter's teardown of JAX and matplotlib (about 0.7 s, which ``reproduce`` waits for)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _done(name: str, result, bar) -> None:
    """Advance the progress bar; an experiment's ``skipped`` note gets its own line above it."""
    skipped = result.summary.get("skipped") if isinstance(result.summary, dict) else None
    if skipped:
        bar.write(str(skipped), file=sys.stderr)
    bar.set_postfix_str(name)
    bar.update()


def _run_in_workers(names, jobs: int, out: Path, quick: bool, seed: int, env: dict, bar, pool=None) -> dict:
    """``reproduce`` in this process and ``jobs - 1`` spawned worker processes, costliest experiment first.

    Each experiment goes to the first process that is free. This process has
    imported JAX already, so it starts at once while the workers start up (about
    2 s on 2 CPU cores), unless ``pool`` (from the ``asymalign`` script, with at
    least ``jobs - 1`` workers) started them earlier; a thread hands the workers
    their experiments. An error in a worker (or its death) stops the run after
    this process's current experiment, as one error.
    """
    import concurrent.futures as cf
    import threading

    import jax

    from . import _jit
    from ._registry import COLD_COST_S

    todo = sorted(names, key=lambda n: -COLD_COST_S.get(n, 0.0))
    lock = threading.Lock()
    results: dict = {}
    failures: list[BaseException] = []

    def take():
        with lock:
            return todo.pop(0) if todo and not failures else None

    def record(name, result):
        with lock:
            results[name] = result
            _done(name, result, bar)

    caches = (jax.config.jax_compilation_cache_dir or None, _jit.executable_cache_dir())
    if pool is None:
        pool = _new_pool(jobs - 1)

    def submit(name):
        running[pool.submit(_run_in_worker, caches, name, out, quick, seed, env)] = name

    mine = take()  # this process starts first: it takes the costliest experiment
    running = {}  # the workers' share (at most jobs - 1 at a time), handed out by a thread of this process
    for _ in range(jobs - 1):
        if (name := take()) is not None:
            submit(name)

    def feed():
        while running:
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                name = running.pop(fut)
                try:
                    record(name, fut.result())
                except cf.process.BrokenProcessPool:
                    with lock:
                        failures.append(
                            CLIError(
                                f"a worker process died while running '{name}' (or another experiment); "
                                "rerun with --jobs 1 to see the error in this process",
                                1,
                            )
                        )
                    return
                except BaseException as e:  # an experiment's error, raised in the worker
                    with lock:
                        failures.append(e)
                    return
                if (name := take()) is not None:
                    submit(name)

    feeder = threading.Thread(target=feed, name="asymalign-reproduce-workers", daemon=True)
    try:
        feeder.start()
        while mine is not None:
            record(mine, _run_one(mine, out, quick, seed, env))
            mine = take()
        feeder.join()
        if failures:
            raise failures[0]
    except BaseException:
        with lock:
            todo.clear()  # the thread hands out nothing more
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return {name: results[name] for name in names}


def reproduce(names, out: Path, *, quick: bool, seed: int, progress: bool = True, jobs: int = 1, pool=None) -> dict:
    """Run ``names`` and write their outputs to ``out``; returns ``{name: Result}``.

    ``jobs > 1`` runs the experiments in this process and ``jobs - 1`` worker
    processes (each experiment's key depends only on the seed and its name, so
    the outputs are the same as with ``jobs = 1``); workers use the compilation
    cache this process has turned on. ``pool``: worker processes started
    earlier (by the ``asymalign`` script), used (and shut down) if it has
    ``jobs - 1`` of them at least; the caller stops it otherwise.
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")
    from tqdm import tqdm

    jobs = max(1, min(int(jobs), len(names)))
    if pool is not None and getattr(pool, "_max_workers", 0) < jobs - 1:  # CPython's pool size: too few
        pool = None
    load_experiments()
    _check_out_dir(out)
    env = _environment()
    results = {}
    bar = tqdm(total=len(names), desc="reproduce", unit="exp", disable=not progress, file=sys.stderr)
    t_all = time.perf_counter()
    try:
        if jobs == 1:
            for name in names:
                bar.set_postfix_str(name)
                results[name] = _run_one(name, out, quick, seed, env)
                _done(name, results[name], bar)
        else:
            results = _run_in_workers(names, jobs, out, quick, seed, env, bar, pool)
    finally:  # the bar's line ends before any error is printed
        bar.close()
    if progress:
        print(
            f"wrote {len(names)} experiment(s) to {out}/ in {time.perf_counter() - t_all:.1f} s",
            file=sys.stderr,
        )
    return results


def main(argv=None, *, pool=None) -> int:
    """Entry point of the ``asymalign`` command; returns the exit status.

    ``pool``: ``reproduce``'s worker processes, started by the ``asymalign``
    script before it imported this package (:mod:`_asymalign_cli`); stopped
    unless ``reproduce`` uses them.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        from ._registry import EXPERIMENTS

        if args.command == "list":
            width = max(len(n) for n in EXPERIMENTS)
            for name, desc in EXPERIMENTS.items():
                print(f"{name:<{width}}  {desc}")
            return 0
        if args.command == "sweep":
            _setup_compile_cache(args)
            return args.func(args)
        names = list(EXPERIMENTS)
        if args.only:
            unknown = [n for n in args.only if n not in EXPERIMENTS]
            if unknown:
                raise CLIError(f"unknown experiment {unknown[0]!r} (choose from: {', '.join(names)})", 2)
            names = [n for n in names if n in set(args.only)]
        load_experiments()  # fail early, in one line, when the experiments are not here
        _setup_compile_cache(args)
        jobs = default_jobs(len(names)) if args.jobs is None else args.jobs
        reproduce(names, Path(args.out), quick=args.quick, seed=args.seed, jobs=jobs, pool=pool)
        return 0
    except CLIError as e:
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        if pool is not None:  # unused, or used and shut down already
            _discard_pool(pool)


if __name__ == "__main__":
    # `python -m asymalign.cli`: run the package's module, not this __main__ copy, so that its
    # CLIError is the class that worker processes (which import asymalign.cli) raise.
    from asymalign import cli as _cli

    sys.exit(_cli.main())
