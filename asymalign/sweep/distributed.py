"""Multi-host sweeps: ``jax.distributed`` start-up, collectives, and failure of a process.

Every process runs the same program (SPMD): each evaluates the shards on its
own devices, results are all-gathered, and process 0 alone writes to the output
directory (it need not be shared).

If a process dies (killed, out of memory, a lost host), the others stop with a
:class:`SweepDistributedError` instead of waiting forever, within a bounded,
configurable time ``timeout`` (seconds; ``--distributed-timeout`` on the
command line, or the environment variable ``ASYMALIGN_DISTRIBUTED_TIMEOUT``):

* a collective with a dead peer fails as soon as its connection closes (a
  killed process on a live host), and the sweep raises at once;
* a silent peer (a lost host) misses its heartbeats: ``jax.distributed``'s
  coordination service declares it dead after ``timeout`` seconds
  (``heartbeat_timeout_seconds``) and terminates the survivors;
* ``initialization_timeout`` and ``shutdown_timeout_seconds`` are the same
  ``timeout``, so a process that never starts or never finishes is also bounded.

Finished chunks are on disk (process 0 writes each one atomically as it
completes), so rerunning the same command resumes with nothing lost.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["DEFAULT_TIMEOUT_S", "TIMEOUT_ENV_VAR", "SweepDistributedError", "init_distributed", "distributed_timeout"]

DEFAULT_TIMEOUT_S = 120
TIMEOUT_ENV_VAR = "ASYMALIGN_DISTRIBUTED_TIMEOUT"


class SweepDistributedError(RuntimeError):
    """Another process of a multi-host sweep died or stopped answering; rerun to resume."""


def distributed_timeout(timeout: float | None = None) -> int:
    """Seconds after which a dead or silent process stops the others: ``timeout``,
    else ``$ASYMALIGN_DISTRIBUTED_TIMEOUT``, else :data:`DEFAULT_TIMEOUT_S`.

    >>> distributed_timeout(30.5)
    31
    >>> distributed_timeout(0)
    Traceback (most recent call last):
    ...
    ValueError: timeout must be a number of seconds >= 1, got 0
    """
    where = "timeout"
    if timeout is None and os.environ.get(TIMEOUT_ENV_VAR):
        where, timeout = TIMEOUT_ENV_VAR, os.environ[TIMEOUT_ENV_VAR]
        try:
            timeout = float(timeout)
        except ValueError:
            raise ValueError(f"{where} must be a number of seconds >= 1, got {timeout!r}") from None
    if timeout is None:
        return DEFAULT_TIMEOUT_S
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 1:
        raise ValueError(f"{where} must be a number of seconds >= 1, got {timeout!r}")
    return int(np.ceil(timeout))


def init_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    timeout: float | None = None,
) -> bool:
    """Initialise ``jax.distributed`` for a multi-host sweep; call before any JAX computation.

    Values come from the arguments, else from the environment
    (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``),
    else from JAX's cluster auto-detection (SLURM, Open MPI, Kubernetes, …)
    when ``auto`` is true.

    Args:
      coordinator: ``HOST:PORT`` of process 0.
      num_processes: number of processes.
      process_id: this process's index ``0..P-1``.
      auto: let JAX detect the cluster.
      timeout: seconds after which a dead or silent process stops the others
        (heartbeat, start-up and shutdown timeouts; see
        :func:`distributed_timeout`).

    Returns:
      Whether it initialised anything (nothing is done for a single process).

    >>> init_distributed(num_processes=1)  # a single process: nothing to do
    False
    """
    import jax

    env = os.environ
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    seconds = distributed_timeout(timeout)
    if not auto and coordinator is None and num_processes is None and process_id is None:
        return False
    if not auto and num_processes == 1 and coordinator is None:
        return False
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=max(seconds, 1),
        heartbeat_timeout_seconds=seconds,
        shutdown_timeout_seconds=seconds,
    )
    return True


def lost_peer(err: BaseException, out_dir: str) -> SweepDistributedError:
    """The error a surviving process raises when a collective fails."""
    import jax

    first = (str(err).strip().splitlines() or [""])[0][:300]
    return SweepDistributedError(
        f"process {jax.process_index()} of {jax.process_count()}: another process of this sweep died or stopped "
        f"answering ({type(err).__name__}: {first}); finished chunks are saved in {out_dir}: "
        f"rerun the same command to resume"
    )


def broadcast_from_0(x: np.ndarray) -> np.ndarray:
    """Process 0's ``x`` on every process."""
    import jax

    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(x))


def gather(x) -> np.ndarray:
    """A globally sharded array as one host array on every process."""
    import jax

    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def barrier(name: str) -> None:
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
