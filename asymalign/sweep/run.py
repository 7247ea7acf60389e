"""The sweep engine: evaluate chunks of units on every device of every host, resumably.

Each chunk is padded to a multiple of the global device count and evaluated
by one jitted, vmapped function whose inputs carry a
``NamedSharding(Mesh(jax.devices(), ("batch",)), PartitionSpec("batch"))``:
one CPU, one GPU, all devices of a host, or all devices of all hosts
(``jax.distributed``) run the same code. Inside, every unit becomes a
:class:`~asymalign.sweep.SweepUnit` and every requested quantity is called on
it (THEORY.md §3, §5, §6, §14).
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import sys
import time
from typing import NamedTuple

import numpy as np

from . import store
from .config import DEFAULT_CHUNK_SIZE, MAX_TYPES, SweepConfig, SweepConfigError
from .distributed import SweepDistributedError, barrier, broadcast_from_0, gather, lost_peer
from .plan import Plan, fused, make_plan, param_columns, x_values
from .quantities import SweepUnit

__all__ = ["SweepResult", "run_sweep"]


class SweepResult(NamedTuple):
    """What :func:`run_sweep` did.

    Attributes:
      out_dir: the output directory.
      num_points: grid points (rows of ``results.csv``).
      computed_points: points computed by this call.
      resumed_points: points read back from earlier, interrupted runs.
      wall_s: wall-clock seconds of this call.
    """

    out_dir: str
    num_points: int
    computed_points: int
    resumed_points: int
    wall_s: float


def _versions() -> dict:
    import jax
    import jaxlib

    try:
        from importlib.metadata import version

        aa_version = version("asymalign")
    except Exception:
        aa_version = "0+unknown"
    return {
        "asymalign": aa_version,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def _unit_fn(arrays, xs, deltas, *, kind, n, method, specs):
    """Every requested quantity of one unit, each of shape ``(D, X)`` (jittable).
    ``n``: static, or ``None`` with a traced ``arrays["n"]`` (fused groups)."""
    import jax.numpy as jnp

    if n is None and "n" in arrays:
        n = arrays["n"]
    unit = SweepUnit(kind, arrays, deltas, xs, n=n, law_method=method)
    shape = unit.shape
    return tuple(jnp.broadcast_to(jnp.asarray(q.fn(kind)(unit), deltas.dtype), shape) for q in specs)


def _unit_batch(arrays, xs, deltas, kind, n, method, specs):
    """:func:`_unit_fn` over a batch of units (``specs``: a :class:`_Specs`)."""
    import jax

    fn = functools.partial(_unit_fn, kind=kind, n=n, method=method, specs=specs.specs)
    return jax.vmap(fn, in_axes=(0, 0, None))(arrays, xs, deltas)


class _Specs:
    """The requested quantities as a static argument of the unit kernel.

    Its ``repr`` names each implementation by module and qualified name when
    all of them are module-level functions of this package, so the kernel's
    executable can be kept in the executable cache (:mod:`asymalign._jit`),
    whose key holds the package's source hash. A user-registered quantity (or
    a closure) is not covered by that hash: its ``repr`` then holds an object
    address, which keeps the executable out of the cache.
    """

    def __init__(self, specs):
        self.specs = tuple(specs)

    def __eq__(self, other):
        return isinstance(other, _Specs) and self.specs == other.specs

    def __hash__(self):
        return hash(self.specs)

    def __repr__(self):
        parts = []
        for q in self.specs:
            for kind, fn in q.impls:
                mod, qual = getattr(fn, "__module__", "") or "", getattr(fn, "__qualname__", "")
                if not mod.startswith("asymalign.") or not qual or "<" in qual:
                    return f"<_Specs of user quantities at {id(self):#x}>"
                parts.append(f"{q.name}:{kind}:{mod}.{qual}:{q.axes}")
        return f"_Specs({', '.join(parts)})"


@functools.lru_cache(maxsize=64)
def _compiled(mesh):
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from .._jit import jit

    out = NamedSharding(mesh, P("batch"))  # every output
    return jit(_unit_batch, static_argnames=("kind", "n", "method", "specs"), out_shardings=out)


def _global_array(host: np.ndarray, sharding):
    import jax

    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def _evaluate_chunk(plan: Plan, cfg: SweepConfig, chunk, mesh) -> dict[str, np.ndarray]:
    """Evaluate one chunk on all devices; returns host arrays, one entry per row."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    gi, _, members = chunk
    key = plan.groups[gi][0]
    kind, method, n = key.kind, key.method, key.n
    ndev = mesh.devices.size
    # One padded batch size per group (a multiple of the device count), so
    # that the group's last, shorter chunk does not trigger a recompilation.
    per_chunk = min(plan.units_per_chunk, len(plan.groups[gi][1]))
    B = -(-per_chunk // ndev) * ndev
    padded = list(members) + [members[0]] * (B - len(members))
    models = [plan.models[plan.units[u].model] for u in padded]
    D, X = max(1, len(plan.deltas)), max(1, len(plan.xs))
    batch = NamedSharding(mesh, P("batch"))
    per_model = [m.arrays(method) for m in models]
    if kind == "iid" and fused(cfg):
        # fused memoryless group: alphabet padded with p = 0 letters (reward: the
        # smallest one), n traced, the exact law built on the host and padded
        traced_n = any("n" in q.axes for q in cfg.specs)
        for a, u in zip(per_model, padded, strict=True):
            extra = key.k - a["p"].size
            a["r"] = np.concatenate([a["r"], np.full(extra, a["r"].min())])
            a["p"] = np.concatenate([a["p"], np.zeros(extra)])
            if traced_n:
                a["n"] = np.int64(plan.units[u].n)
            if method == "host":
                lv, lp = host_law(plan, plan.units[u].model, plan.units[u].n)
                if lv.size > key.law_size:  # pragma: no cover - law_size_bound is an upper bound
                    raise RuntimeError(f"law of {lv.size} levels exceeds its bucket {key.law_size}")
                a["law_levels"] = np.concatenate([lv, np.full(key.law_size - lv.size, lv[-1])])
                a["law_log_prob"] = np.concatenate([lp, np.full(key.law_size - lp.size, -np.inf)])
    elif method == "markov":  # the exact law is built on the host, once per (model, n)
        laws = [host_law(plan, plan.units[u].model, n) for u in padded]
        size = max(_bucket(lv.size) for lv, _ in laws)
        for a, (lv, lp) in zip(per_model, laws, strict=True):
            a["law_levels"] = np.concatenate([lv, np.full(size - lv.size, lv[-1])])
            a["law_log_prob"] = np.concatenate([lp, np.full(size - lp.size, -np.inf)])
    arrays = {k: _global_array(np.stack([a[k] for a in per_model]), batch) for k in per_model[0]}
    xs = np.stack([x_values(m, plan) if plan.xs else np.zeros(1) for m in models]).reshape(B, X)
    deltas = np.asarray(plan.deltas if plan.deltas else (0.0,), dtype=np.float64)
    fn = _compiled(mesh)
    xs, deltas = _global_array(xs, batch), _global_array(deltas, NamedSharding(mesh, P()))
    outs = fn(arrays, xs, deltas, kind=kind, n=n, method=method, specs=_Specs(cfg.specs))
    res = {col: gather(o)[: len(members)].reshape(-1) for col, o in zip(cfg.columns, outs, strict=True)}
    res["rows"] = np.concatenate([np.arange(u * D * X, (u + 1) * D * X) for u in members]).astype(np.int64)
    return res


def _bucket(size: int) -> int:
    """Power-of-two length bucket (at least 64) of a law: chunks of similar laws share a compilation."""
    return max(64, 1 << (int(size) - 1).bit_length())


_HOST_LAWS: dict = {}


def host_law(plan: Plan, model: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(levels, log_prob)`` of the exact law of ``r_n`` (cached): for a Markov
    model :func:`asymalign.markov.reward_law`; for a memoryless one
    :func:`asymalign.reward_law`, by the types method (exact multinomial sums
    in NumPy, no compilation) when the push-forward law has at most
    ``MAX_TYPES`` types, else by its automatic choice (the lattice law for
    lattice rewards)."""
    m = plan.models[model]
    shape = m.transition.shape[0] if m.transition is not None else -1
    tr = m.transition.tobytes() if m.transition is not None else b""
    key = (tr, m.p.tobytes(), m.r.tobytes(), shape, n)
    if key not in _HOST_LAWS:
        if m.transition is None:
            import asymalign as aa
            from asymalign.sequence_laws import _types_law_host, pushforward

            values, weights = pushforward(m.p, m.r)
            if math.comb(n + values.size - 1, values.size - 1) <= MAX_TYPES:
                # reward_law(method="types") without its lattice detection and device transfer
                levels, logp = _types_law_host(values, weights, n)
                law = aa.RewardLaw(levels, logp - np.logaddexp.reduce(logp), n)
            else:
                law = aa.reward_law(m.p, m.r, n)
        else:
            from asymalign import markov

            law = markov.reward_law(markov.MarkovChain(m.transition, m.p), m.r, n)
        if len(_HOST_LAWS) > 4096:
            _HOST_LAWS.clear()
        _HOST_LAWS[key] = (np.asarray(law.levels, np.float64), np.asarray(law.log_prob, np.float64))
    return _HOST_LAWS[key]


def run_sweep(
    cfg: SweepConfig,
    out_dir,
    *,
    chunk_size: int | None = None,
    resume: bool = True,
    progress: bool = True,
    compile_cache: bool | str = True,
    parquet: bool | None = None,
) -> SweepResult:
    """Run (or resume) a sweep and write ``results.csv``, ``results.npz``,
    ``results.parquet`` (when pyarrow is installed) and ``meta.json``.

    Enables ``jax_enable_x64`` (float64 is the reference precision). In a
    multi-process run (after :func:`~asymalign.sweep.init_distributed`) every
    process must call this with the same config; process 0 writes the files.

    Args:
      cfg: a :class:`SweepConfig` (from :func:`~asymalign.sweep.load_config`).
      out_dir: output directory (created).
      chunk_size: grid points per chunk (memory bound); default: the
        config's ``chunk_size`` or 256. A resumed run keeps the chunk size of
        the run it resumes.
      resume: reuse finished chunks in ``out_dir`` (refusing a different
        config); ``False`` discards them.
      progress: show a tqdm progress bar (process 0) with points done and ETA.
      compile_cache: ``True``: JAX's persistent compilation cache as resolved
        by :func:`asymalign._compile_cache.resolve_compile_cache`; a path:
        that directory; ``False``: none.
      parquet: also write ``results.parquet``; default: when pyarrow is installed.

    Returns:
      A :class:`SweepResult`.

    Raises:
      SweepConfigError: a bad chunk size, or ``out_dir`` holds another config's results.
      SweepDistributedError: another process of a multi-host sweep died; the
        finished chunks are saved, rerun to resume.

    >>> import tempfile, tomllib
    >>> from asymalign import sweep
    >>> cfg = sweep.parse_config(tomllib.loads('''
    ... quantities = ["lambda_star", "klrl_reward"]
    ... [[reference]]
    ... family = "bernoulli"
    ... prob = 0.5
    ... [[reward]]
    ... family = "linear"
    ... [grid]
    ... delta = [0.0, 0.1]
    ... '''))
    >>> out = tempfile.mkdtemp()
    >>> res = sweep.run_sweep(cfg, out, progress=False, compile_cache=False)
    >>> res.num_points, float(sweep.read_results(out)["klrl_reward"][0])
    (2, 0.5)
    """
    import jax

    from .._compile_cache import enable_compile_cache

    jax.config.update("jax_enable_x64", True)
    if compile_cache is not False and compile_cache is not None:
        enable_compile_cache(compile_cache)
    from jax.sharding import Mesh
    from tqdm.auto import tqdm

    t0 = time.time()
    out_dir = os.path.abspath(os.fspath(out_dir))
    explicit = chunk_size is not None
    chunk_size = chunk_size if chunk_size is not None else (cfg.chunk_size or DEFAULT_CHUNK_SIZE)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise SweepConfigError(f"chunk size must be an integer >= 1, got {chunk_size!r}")
    lead = jax.process_index() == 0
    multi = jax.process_count() > 1
    try:
        # Process 0 owns the directory; the others learn its decisions by broadcast.
        status = np.zeros(2, np.int64)
        error = None
        if lead:
            try:
                chunk_size, note = store.prepare_dir(out_dir, cfg, chunk_size, resume, explicit)
                if note:
                    print(f"asymalign sweep: {note}", file=sys.stderr)
            except SweepConfigError as e:
                error = e
            status[:] = (1 if error else 0, chunk_size)
        status = broadcast_from_0(status)
        if status[0]:
            raise error if error is not None else SweepConfigError(f"process 0 refused the output directory {out_dir}")
        chunk_size = int(status[1])

        plan = make_plan(cfg, chunk_size)
        done = np.zeros(len(plan.chunks), np.int8)
        if lead:
            for i, ch in enumerate(plan.chunks):
                if store.load_chunk(store.chunk_path(out_dir, ch), ch, plan, cfg.columns) is not None:
                    done[i] = 1
        done = broadcast_from_0(done)

        devices = jax.devices()
        mesh = Mesh(np.array(devices), ("batch",))
        ppu = plan.points_per_unit
        resumed = int(sum(len(ch[2]) * ppu for ch, d in zip(plan.chunks, done, strict=True) if d))
        delay = float(os.environ.get("ASYMALIGN_SWEEP_TEST_DELAY_S", "0") or 0)  # tests only
        computed = 0
        t_compute = time.time()
        with tqdm(
            total=plan.num_points,
            initial=resumed,
            unit="pt",
            desc=f"sweep {cfg.name}",
            disable=not (progress and lead),
            dynamic_ncols=True,
            smoothing=0.1,
        ) as bar:
            for ch, d in zip(plan.chunks, done, strict=True):
                if d:
                    continue
                res = _evaluate_chunk(plan, cfg, ch, mesh)
                if lead:
                    store.atomic_write(store.chunk_path(out_dir, ch), store.npz_bytes(res))
                computed += len(ch[2]) * ppu
                bar.update(len(ch[2]) * ppu)
                if delay:
                    time.sleep(delay)
        t_compute = time.time() - t_compute

        if lead:
            _assemble(out_dir, cfg, plan, devices, t0, t_compute, computed, resumed, parquet)
        barrier("asymalign-sweep-done")
    except (SweepConfigError, SweepDistributedError, KeyboardInterrupt):
        raise
    except Exception as e:
        if multi:  # a collective failed: another process died
            raise lost_peer(e, out_dir) from e
        raise
    return SweepResult(out_dir, plan.num_points, computed, resumed, time.time() - t0)


def _assemble(out_dir, cfg, plan, devices, t0, t_compute, computed, resumed, parquet):
    import jax

    cols = param_columns(cfg, plan)
    values = {q: np.full(plan.num_points, np.nan) for q in cfg.columns}
    for ch in plan.chunks:
        data = store.load_chunk(store.chunk_path(out_dir, ch), ch, plan, cfg.columns)
        if data is None:  # pragma: no cover - written above
            raise RuntimeError(f"chunk file {store.chunk_path(out_dir, ch)} is missing or damaged; rerun to resume")
        for q in cfg.columns:
            values[q][data["rows"]] = data[q]
    cols.update(values)
    kinds = sorted({getattr(d, "device_kind", d.platform) for d in devices})
    meta = {
        "name": cfg.name,
        "config": cfg.canonical(),
        "config_hash": cfg.fingerprint(),
        "config_text": cfg.text,
        "quantities": {q.name: q.description for q in cfg.specs},
        "columns": list(cols),
        "num_points": plan.num_points,
        "num_units": len(plan.units),
        "num_chunks": len(plan.chunks),
        "chunk_size": plan.chunk_size,
        "models": [_model_meta(m) for m in plan.models],
        "versions": _versions(),
        "devices": {
            "platform": devices[0].platform,
            "kinds": kinds,
            "device_count": len(devices),
            "process_count": jax.process_count(),
            "local_device_count": jax.local_device_count(),
        },
        "timing": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t0)),
            "wall_s": round(time.time() - t0, 3),
            "compute_s": round(t_compute, 3),
            "computed_points": computed,
            "resumed_points": resumed,
        },
    }
    pq_meta = {"asymalign.sweep": json.dumps({k: meta[k] for k in ("name", "config_hash", "quantities")})}
    store.write_results(out_dir, cols, parquet=parquet, metadata=pq_meta)
    store.atomic_write(os.path.join(out_dir, "meta.json"), json.dumps(meta, indent=1, allow_nan=True).encode())


def _model_meta(m) -> dict:
    out = {"kind": m.kind, "p": m.p.tolist(), "r": m.r.tolist()}
    if m.transition is not None:
        out["transition"] = m.transition.tolist()
    return out
