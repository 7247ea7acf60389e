"""The ``asymalign sweep`` subcommand (wired into :mod:`asymalign.cli`).

``asymalign sweep CONFIG.toml [--out DIR] [--chunk-size M] [--no-resume] [--no-parquet]``
runs :func:`asymalign.sweep.run_sweep`; multi-host runs add
``--coordinator HOST:PORT --num-processes P --process-id I`` (or set
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, or
pass ``--distributed`` to let JAX detect SLURM / Open MPI / Kubernetes), and
``--distributed-timeout SECONDS`` (or ``ASYMALIGN_DISTRIBUTED_TIMEOUT``): if a
process dies, the others exit with status 3 and a one-line message within that
time; rerun the same command to resume. Also runnable on its own:
``python -m asymalign.sweep CONFIG.toml [...]``.
"""

from __future__ import annotations

import argparse
import os
import sys

from .distributed import DEFAULT_TIMEOUT_S, TIMEOUT_ENV_VAR

__all__ = ["add_sweep_parser", "run_sweep_command", "main"]

_DESCRIPTION = """\
Evaluate KL-RL, exact best-of-N and large-deviation quantities on a grid of
references x rewards x n x delta x x, sharded over every JAX device (and every
host under jax.distributed). Writes DIR/results.csv (one row per grid point),
DIR/results.npz, DIR/results.parquet (if pyarrow is installed) and
DIR/meta.json. Finished chunks are saved as they complete:
rerun the same command after an interruption to compute only what is missing.
"""


def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``sweep`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "sweep",
        help="parameter sweep from a TOML config, sharded over devices and hosts, resumable",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="sweep config (TOML), e.g. experiments/sweeps/example.toml")
    p.add_argument("--out", metavar="DIR", default=None, help="output directory (default: out/sweeps/<config name>)")
    p.add_argument(
        "--chunk-size",
        metavar="M",
        type=int,
        default=None,
        help="grid points per chunk: bounds memory, and is the unit of resumption "
        "(default: the config's chunk_size, else 256)",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="discard results already in DIR (also needed to reuse DIR for a changed config)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-parquet", action="store_true", help="do not write results.parquet (CSV and NPZ only)")
    p.add_argument(
        "--compile-cache",
        metavar="DIR",
        default=None,
        help="JAX persistent compilation cache (default: $ASYMALIGN_COMPILE_CACHE, else ~/.cache/asymalign/jax)",
    )
    p.add_argument("--no-compile-cache", action="store_true", help="do not use a compilation cache")
    g = p.add_argument_group("multi-host (jax.distributed)")
    g.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        default=None,
        help="address of process 0 (default: $JAX_COORDINATOR_ADDRESS)",
    )
    g.add_argument(
        "--num-processes", metavar="P", type=int, default=None, help="number of processes (default: $JAX_NUM_PROCESSES)"
    )
    g.add_argument(
        "--process-id",
        metavar="I",
        type=int,
        default=None,
        help="this process's index 0..P-1 (default: $JAX_PROCESS_ID)",
    )
    g.add_argument(
        "--distributed",
        action="store_true",
        help="initialise jax.distributed from the cluster environment (SLURM, Open MPI, ...)",
    )
    g.add_argument(
        "--distributed-timeout",
        metavar="SECONDS",
        type=float,
        default=None,
        help="if a process dies or stops answering, the others stop within this time "
        f"(default: ${TIMEOUT_ENV_VAR}, else {DEFAULT_TIMEOUT_S})",
    )
    p.set_defaults(func=run_sweep_command)
    return p


def run_sweep_command(args) -> int:
    """Run the ``sweep`` subcommand from parsed ``args``; returns the exit status."""
    from . import SweepConfigError, SweepDistributedError, init_distributed, load_config, run_sweep

    try:
        cfg = load_config(args.config)
    except SweepConfigError as e:
        print(f"asymalign sweep: error: {e}", file=sys.stderr)
        return 2
    if args.chunk_size is not None and args.chunk_size < 1:
        print(f"asymalign sweep: error: --chunk-size must be >= 1, got {args.chunk_size}", file=sys.stderr)
        return 2
    # jax.distributed must be initialised before JAX touches a device.
    try:
        init_distributed(
            args.coordinator,
            args.num_processes,
            args.process_id,
            auto=args.distributed,
            timeout=args.distributed_timeout,
        )
    except ValueError as e:
        print(f"asymalign sweep: error: {e}", file=sys.stderr)
        return 2
    out = args.out or os.path.join("out", "sweeps", cfg.name)
    cache = False if args.no_compile_cache else (args.compile_cache or True)
    try:
        res = run_sweep(
            cfg,
            out,
            chunk_size=args.chunk_size,
            resume=not args.no_resume,
            progress=not args.no_progress,
            compile_cache=cache,
            parquet=False if args.no_parquet else None,
        )
    except SweepConfigError as e:
        print(f"asymalign sweep: error: {e}", file=sys.stderr)
        return 2
    except SweepDistributedError as e:
        print(f"asymalign sweep: error: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Exit now: a normal exit would wait in jax.distributed's shutdown
        # barrier for the dead process (and then abort).
        os._exit(3)
    import jax

    if jax.process_index() == 0:
        print(
            f"asymalign sweep: {res.num_points} points ({res.computed_points} computed, "
            f"{res.resumed_points} resumed) in {res.wall_s:.1f} s -> {os.path.join(res.out_dir, 'results.csv')}"
        )
    return 0


def main(argv=None) -> int:
    """``python -m asymalign.sweep CONFIG.toml [...]``: the ``sweep`` subcommand on its own."""
    parser = argparse.ArgumentParser(prog="asymalign")
    sub = parser.add_subparsers(dest="command", required=True)
    add_sweep_parser(sub)
    args = parser.parse_args(["sweep", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
