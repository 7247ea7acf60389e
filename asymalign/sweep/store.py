"""The files of a sweep: atomic writes, the chunk store, and the results (CSV, NPZ, Parquet).

* Every finished chunk is written atomically (``tmp`` + ``fsync`` +
  ``os.replace``) to ``DIR/chunks/``, so a run killed at any moment (even
  mid-write) leaves only whole chunks; a rerun computes the missing ones.
* ``DIR/sweep-state.json`` records the config fingerprint and chunk size; a
  different config in the same directory is refused unless ``resume=False``.
* ``DIR/results.csv`` (floats written with ``repr``, so they round-trip
  exactly), ``DIR/results.npz`` (the same columns as arrays) and, when
  ``pyarrow`` is installed (extra ``asymalign[parquet]``),
  ``DIR/results.parquet`` (typed columns: int64, float64, string; blank
  parameters are nulls).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping

import numpy as np

from .config import SweepConfig, SweepConfigError
from .plan import BLANK_COLUMNS, Plan

__all__ = ["read_results", "write_results", "parquet_available"]

STATE_FILE = "sweep-state.json"
RESULT_FILES = ("results.csv", "results.npz", "results.parquet", "meta.json")


def _fsync_dir(path: str):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes):
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one."""
    d = os.path.dirname(path) or "."
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(d)


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def chunk_path(out_dir: str, chunk) -> str:
    gi, ci, _ = chunk
    return os.path.join(out_dir, "chunks", f"chunk-g{gi:04d}-c{ci:06d}.npz")


def load_chunk(path: str, chunk, plan: Plan, quantities) -> dict | None:
    """A finished chunk from disk, or ``None`` if absent or not the expected content."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
    except Exception:
        return None
    D, X = max(1, len(plan.deltas)), max(1, len(plan.xs))
    rows = np.concatenate([np.arange(u * D * X, (u + 1) * D * X) for u in chunk[2]])
    if "rows" not in data or not np.array_equal(data["rows"], rows):
        return None
    if any(q not in data or data[q].shape != rows.shape for q in quantities):
        return None
    return data


def _format(v) -> str:
    if isinstance(v, float | np.floating):
        return repr(float(v))
    if isinstance(v, np.integer):
        return str(int(v))
    return str(v)


def _csv_bytes(cols: Mapping[str, np.ndarray]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    names = list(cols)
    w.writerow(names)
    n = len(next(iter(cols.values())))
    blank = BLANK_COLUMNS
    for i in range(n):
        row = []
        for c in names:
            v = cols[c][i]
            if c in blank and ((isinstance(v, np.floating) and np.isnan(v)) or (isinstance(v, np.integer) and v < 0)):
                row.append("")
            else:
                row.append(_format(v))
        w.writerow(row)
    return buf.getvalue().encode()


def read_results(out_dir) -> dict[str, np.ndarray]:
    """Columns of a finished sweep (``DIR/results.npz``) as NumPy arrays, in row order.

    Blank parameters (a column that does not apply to a model) read as NaN
    (float columns) or -1 (integer columns). The same columns are in
    ``DIR/results.csv`` and, typed, in ``DIR/results.parquet``
    (``pandas.read_parquet``, ``polars.read_parquet``, ``pyarrow.parquet.read_table``).
    See :func:`~asymalign.sweep.run_sweep` for an example.
    """
    with np.load(os.path.join(os.fspath(out_dir), "results.npz")) as z:
        return {k: z[k] for k in z.files}


def parquet_available() -> bool:
    """Whether ``pyarrow`` is importable (then sweeps also write ``results.parquet``).

    >>> isinstance(parquet_available(), bool)
    True
    """
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def parquet_bytes(cols: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """The columns as a Parquet file (int64 / float64 / string; blank parameters as nulls)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for name, v in cols.items():
        mask = None
        if name in BLANK_COLUMNS:
            mask = np.isnan(v) if v.dtype.kind == "f" else (v < 0 if v.dtype.kind == "i" else None)
        if v.dtype.kind == "U":
            arrays[name] = pa.array(v.tolist(), type=pa.string())
        else:
            arrays[name] = pa.array(v, mask=mask)
    table = pa.table(arrays)
    if metadata:
        table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def write_results(out_dir: str, cols: Mapping[str, np.ndarray], *, parquet: bool | None = None, metadata=None):
    """Write ``results.npz``, ``results.csv`` and (if ``parquet``, default: when
    pyarrow is installed) ``results.parquet``, each atomically."""
    atomic_write(os.path.join(out_dir, "results.npz"), npz_bytes(cols))
    atomic_write(os.path.join(out_dir, "results.csv"), _csv_bytes(cols))
    if parquet is None:
        parquet = parquet_available()
    if parquet:
        atomic_write(os.path.join(out_dir, "results.parquet"), parquet_bytes(cols, metadata))


def _clear_dir(out_dir: str):
    cdir = os.path.join(out_dir, "chunks")
    if os.path.isdir(cdir):
        for f in os.listdir(cdir):
            os.remove(os.path.join(cdir, f))
    for f in (STATE_FILE, *RESULT_FILES):
        path = os.path.join(out_dir, f)
        if os.path.exists(path):
            os.remove(path)


def prepare_dir(out_dir: str, cfg: SweepConfig, chunk_size: int, resume: bool, explicit_chunk: bool) -> tuple[int, str]:
    """Process 0: check/create the state file. Returns ``(chunk_size, note)``."""
    os.makedirs(os.path.join(out_dir, "chunks"), exist_ok=True)
    for d in (out_dir, os.path.join(out_dir, "chunks")):
        for f in os.listdir(d):
            if f.endswith(".tmp"):  # left by a run killed mid-write
                os.remove(os.path.join(d, f))
    state_path = os.path.join(out_dir, STATE_FILE)
    note = ""
    if os.path.exists(state_path) and resume:
        with open(state_path) as f:
            state = json.load(f)
        if state.get("config_hash") != cfg.fingerprint():
            raise SweepConfigError(
                f"{out_dir} holds results of a different config (hash {state.get('config_hash')}, "
                f"this one {cfg.fingerprint()}); pass --no-resume to discard them, or choose another --out"
            )
        if state.get("chunk_size") != chunk_size:
            note = f"resuming with the chunk size of the earlier run ({state.get('chunk_size')}), not {chunk_size}"
            if not explicit_chunk:
                note = ""
            chunk_size = int(state["chunk_size"])
        return chunk_size, note
    if not resume:
        _clear_dir(out_dir)
        os.makedirs(os.path.join(out_dir, "chunks"), exist_ok=True)
    elif any(f.endswith(".npz") for f in os.listdir(os.path.join(out_dir, "chunks"))):
        raise SweepConfigError(f"{out_dir}/chunks holds chunk files but no {STATE_FILE}; pass --no-resume")
    state = {"config_hash": cfg.fingerprint(), "chunk_size": chunk_size, "config": cfg.canonical()}
    atomic_write(state_path, json.dumps(state, indent=1, allow_nan=True).encode())
    return chunk_size, note
