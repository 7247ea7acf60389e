"""The ``asymalign`` console script: ``reproduce``'s first worker starts before this process imports JAX.

``asymalign reproduce`` runs its experiments in this process and in spawned worker
processes (:func:`asymalign.cli.reproduce`), each of which must import JAX and the
package first (about 2 s on 2 CPU cores). Started after this process's own import,
a worker would leave a core idle for that long. This module is outside the package,
so importing it imports neither the package nor JAX: it starts the pool's first
worker, then imports :mod:`asymalign.cli` while the worker imports the same modules
on another core, and hands the pool to :func:`asymalign.cli.main`.

The command line is only looked at here, not parsed: a pool is started for
``reproduce`` unless ``--jobs 1`` (or help) is asked for or one CPU core is
available. :func:`asymalign.cli.main` parses the arguments, uses the pool when it
runs workers and shuts it down otherwise; a worker left unused costs CPU time, not
correctness.
"""

from __future__ import annotations

import os
import sys


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _wants_workers(argv: list[str]) -> bool:
    """Whether ``argv`` asks ``reproduce`` for worker processes, as far as it can be told without parsing it."""
    if not argv or argv[0] != "reproduce" or _cores() < 2:
        return False
    for i, arg in enumerate(argv):
        if arg in ("-h", "--help"):
            return False
        if arg in ("--jobs", "-j") and argv[i + 1 : i + 2] == ["1"]:
            return False
        if arg in ("--jobs=1", "-j1"):
            return False
    return True


def _import_worker() -> None:
    """A pool worker's start: import what every experiment needs."""
    from asymalign import cli

    cli._worker_import()


def _start_pool(workers: int | None = None):
    """A spawn-context pool of up to ``workers`` (default ``cores - 1``) processes, the first one already starting."""
    import concurrent.futures as cf
    import multiprocessing as mp

    workers = _cores() - 1 if workers is None else workers
    pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_import_worker)
    pool.submit(int)  # spawns one worker now; others are spawned as experiments are handed out
    return pool


def _exit_now(status: int):
    """End this process with ``status`` after its ``atexit`` handlers, without the interpreter's teardown.

    The teardown of a process that has run JAX and matplotlib (freeing every module's
    objects) takes about 0.5 s on 2 CPU cores, after all outputs are written and closed.
    The ``atexit`` handlers still run (JAX's backend shutdown, multiprocessing's and
    matplotlib's clean-up, ``weakref.finalize``), then the standard streams are flushed.
    """
    import atexit

    atexit._run_exitfuncs()  # what the interpreter runs first at exit (CPython; also used by IPython)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written
            pass
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``asymalign`` command; returns the exit status.

    Run as the script (``argv`` is ``None``), ``reproduce`` ends the process when it
    returns, skipping the interpreter's teardown (:func:`_exit_now`).
    """
    script = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    pool = _start_pool() if _wants_workers(argv) else None
    try:
        from asymalign import cli
    except KeyboardInterrupt:  # Ctrl-C while importing: as asymalign.cli.main reports it (the workers get it too)
        print("asymalign: interrupted", file=sys.stderr)
        return 130
    status = cli.main(argv, pool=pool)
    if script and argv[:1] == ["reproduce"]:
        _exit_now(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
