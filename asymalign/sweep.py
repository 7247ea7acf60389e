r"""Parameter sweeps sharded over every device and host, resumable (THEORY.md §3, §5, §6).

A sweep evaluates, on the Cartesian grid

    references × rewards × n × Δ × x,

the per-token quantities of the paper: the KL-RL multiplier ``λ*`` and reward
``Λ'(λ*)`` (§3), the exact best-of-N reward, ``KL(π_N‖p^n)/n``,
``KL(π_N‖φ_{λ*}^n)/n`` and win rate at ``log N = nΔ`` (§6), and the Cramér
rate function ``I_0(x)`` (§5). Every number comes from the public functions of
the package (:func:`~asymalign.solve_lambda`, :func:`~asymalign.tilt_reward`,
:func:`~asymalign.rate_function`, :func:`~asymalign.law_from_lattice`,
:func:`~asymalign.law_from_types`, :func:`~asymalign.bon_level_law`,
:func:`~asymalign.level_kl`, :func:`~asymalign.bon_win_rate`, …) under
``jit`` + ``vmap``; the test-suite checks sampled rows against direct calls.

Engine
------
* The grid is flattened into *units* ``(reference, reward, n)``; a unit
  carries all its ``Δ`` and ``x`` values (the exact reward law of ``r_n`` is
  built once per unit and shared by every ``Δ``). Units are grouped by what
  fixes static shapes (alphabet size ``k``, law method — lattice or
  types — and ``n``).
* Each group is cut into chunks of about ``chunk_size`` grid points; a chunk
  is padded to a multiple of the global device count and evaluated by one
  jitted, vmapped function whose inputs carry a
  ``NamedSharding(Mesh(jax.devices(), ("batch",)), PartitionSpec("batch"))``:
  one CPU, one GPU, all devices of a host, or all devices of all hosts
  (``jax.distributed``) run the same code. Chunk boundaries depend only on
  the config and the chunk size, never on the device count.
* Multi-host: every process runs the same program (SPMD); each evaluates the
  shards on its own devices, results are all-gathered, and process 0 alone
  writes to the output directory (it need not be shared).
* Resumable: every finished chunk is written atomically
  (``tmp`` + ``fsync`` + ``os.replace``) to ``DIR/chunks/``; a rerun computes
  only the missing chunks, so a run killed at any moment (even mid-write) and
  resumed gives results identical to an uninterrupted run. A different
  config in the same directory is refused unless ``resume=False``.
* Output: ``DIR/results.csv`` (one row per grid point, all parameters and
  quantities; floats written with ``repr``, so they round-trip exactly),
  ``DIR/results.npz`` (the same columns as arrays) and ``DIR/meta.json``
  (config, versions, devices, timing).

Config (TOML)
-------------
::

    name = "example"
    quantities = ["lambda_star", "klrl_reward", "bon_reward", "rate_function"]
    chunk_size = 256                      # optional; --chunk-size overrides

    [[reference]]
    family = "bernoulli"                  # p = (1 - q, q)
    prob = [0.1, 0.3]
    [[reference]]
    family = "zipf"                       # p(x) ∝ (x + 1)^-s, x = 0..k-1
    k = [4, 8]
    s = 1.1
    [[reference]]
    family = "dirichlet"                  # count draws of Dirichlet(concentration · 1_k)
    k = 5
    concentration = 1.0
    count = 8
    seed = 0

    [[reward]]
    family = "linear"                     # r = 0..k-1
    [[reward]]
    family = "random"                     # r ~ Uniform(0, 1)^k (NumPy default_rng(seed))
    seed = 0

    [grid]
    delta = [0.05, 0.1, 0.2]
    n = [16, 64]
    x_relative = [0.25, 0.5, 0.75]        # or x = [...] (absolute per-token reward)

Any grid value may be a list, a scalar, or ``{ linspace = [a, b, num] }`` /
``{ geomspace = [a, b, num] }``. Linear rewards (and random rewards over two
letters, ``a + h m`` with ``m ∈ {0, 1}``) use the lattice law
(:func:`~asymalign.law_from_lattice`, any ``n``); random rewards over
``k >= 3`` letters use the types law (:func:`~asymalign.law_from_types`,
``C(n+k-1, k-1) <= 100 000`` types).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import platform
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "QUANTITIES",
    "SweepConfigError",
    "SweepConfig",
    "SweepResult",
    "parse_config",
    "load_config",
    "run_sweep",
    "read_results",
    "init_distributed",
    "default_compile_cache",
]

# ---------------------------------------------------------------------------
# quantities and config schema
# ---------------------------------------------------------------------------

# name -> (description, grid axes it needs)
QUANTITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "lambda_star": ("λ* with KL(φ_λ*||p) = Δ (THEORY §3; inf for Δ >= Δ_max)", ("delta",)),
    "delta_max": ("Δ_max = -log p(A), A = argmax r (THEORY §2)", ()),
    "klrl_reward": ("KL-RL reward per token Λ'(λ*) (THEORY §3)", ("delta",)),
    "bon_reward": ("exact best-of-N reward per token E_πN[r_n]/n at log N = nΔ (THEORY §6)", ("delta", "n")),
    "bon_kl": ("KL(π_N || p^n)/n at log N = nΔ (THEORY §6)", ("delta", "n")),
    "bon_kl_to_tilt": ("KL(π_N || φ_λ*^n)/n at log N = nΔ (THEORY §6)", ("delta", "n")),
    "bon_kl_bound": ("(log N - (N-1)/N)/n at log N = nΔ, the quoted bound (THEORY §6)", ("delta", "n")),
    "bon_win_rate": ("best-of-N win rate against p^n at log N = nΔ (THEORY §6)", ("delta", "n")),
    "rate_function": ("Cramér rate I_0(x) of r_n/n under p^n (THEORY §5; inf outside [r_min, r_max])", ("x",)),
}
_BON = ("bon_reward", "bon_kl", "bon_kl_to_tilt", "bon_kl_bound", "bon_win_rate")

_TOP_KEYS = ("name", "description", "quantities", "chunk_size", "reference", "reward", "grid")
_GRID_KEYS = ("delta", "n", "x", "x_relative")
_REF_KEYS = {
    "bernoulli": ("family", "prob"),
    "zipf": ("family", "k", "s"),
    "dirichlet": ("family", "k", "concentration", "count", "seed"),
}
_REWARD_KEYS = {"linear": ("family",), "random": ("family", "seed")}
# Largest number of types C(n+k-1, k-1) per unit for random (non-lattice) rewards.
MAX_TYPES = 100_000
DEFAULT_CHUNK_SIZE = 256
_STATE_FILE = "sweep-state.json"


class SweepConfigError(ValueError):
    """An invalid sweep configuration (the message says what and lists valid choices)."""


@dataclasses.dataclass(frozen=True)
class Model:
    """One reference/reward pair of the grid (host side, float64)."""

    p: np.ndarray
    r: np.ndarray
    params: dict  # column name -> value (reference and reward parameters)
    kind: str  # reward family: "linear" or "random"

    @property
    def law_method(self) -> str:
        """How the exact law of ``r_n`` is built: ``"lattice"`` when the rewards
        are ``a + h m`` with integer ``m`` (linear rewards, or any two distinct
        rewards), else ``"types"``."""
        return "lattice" if self.kind == "linear" or self.p.size == 2 else "types"

    def lattice(self):
        """``(log w, a, h)`` with ``r = a + h m``: ``w`` the law of the index ``m``."""
        if self.kind == "linear":
            return np.log(self.p), 0.0, 1.0
        order = np.argsort(self.r, kind="stable")  # two rewards: m in {0, 1}
        lo, hi = self.r[order]
        return np.log(self.p[order]), float(lo), float(hi - lo)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A validated sweep configuration.

    Attributes:
      name: sweep name.
      references: normalised ``[[reference]]`` tables.
      rewards: normalised ``[[reward]]`` tables.
      grid: axis name -> tuple of values (``delta``, ``n``, ``x`` or ``x_relative``).
      quantities: the quantities to compute, in output column order.
      chunk_size: grid points per chunk from the file, or ``None``.
      text: the TOML source (recorded in ``meta.json``).
    """

    name: str
    references: tuple
    rewards: tuple
    grid: dict
    quantities: tuple
    chunk_size: int | None = None
    text: str | None = None

    def canonical(self) -> dict:
        """Everything that determines the results, as plain JSON data."""
        return {
            "name": self.name,
            "references": [dict(r) for r in self.references],
            "rewards": [dict(r) for r in self.rewards],
            "grid": {k: list(v) for k, v in self.grid.items()},
            "quantities": list(self.quantities),
        }

    def fingerprint(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, allow_nan=True).encode()
        return hashlib.sha256(blob).hexdigest()[:20]


def _err(msg: str):
    raise SweepConfigError(msg)


def _check_keys(table: Mapping, valid: Sequence[str], where: str):
    if not isinstance(table, Mapping):
        _err(f"{where} must be a table, got {type(table).__name__}")
    for key in table:
        if key not in valid:
            _err(f"unknown key {key!r} in {where}; valid keys: {', '.join(valid)}")


def _values(v, where: str, *, integer=False) -> tuple:
    """A grid value: scalar, list, or ``{linspace|geomspace = [a, b, num]}``."""
    if isinstance(v, Mapping):
        if len(v) != 1 or next(iter(v)) not in ("linspace", "geomspace"):
            _err(f"{where}: a range must be {{ linspace = [a, b, num] }} or {{ geomspace = [a, b, num] }}")
        how, spec = next(iter(v.items()))
        if (
            not isinstance(spec, list)
            or len(spec) != 3
            or not all(isinstance(s, int | float) and not isinstance(s, bool) for s in spec)
            or not isinstance(spec[2], int)
            or spec[2] < 1
        ):
            _err(f"{where}: {how} takes [start, stop, num] with an integer num >= 1, got {spec!r}")
        if how == "geomspace" and (spec[0] <= 0 or spec[1] <= 0):
            _err(f"{where}: geomspace needs positive start and stop, got {spec!r}")
        vals = (np.linspace if how == "linspace" else np.geomspace)(float(spec[0]), float(spec[1]), spec[2])
        vals = vals.tolist()
        if integer:
            ints = [int(round(x)) for x in vals]
            if len(set(ints)) != len(ints):
                _err(f"{where}: {how} {spec!r} does not give distinct integers")
            return tuple(ints)
        return tuple(float(x) for x in vals)
    items = v if isinstance(v, list) else [v]
    if not items:
        _err(f"{where} must not be empty")
    out = []
    for x in items:
        if isinstance(x, bool) or not isinstance(x, int | float):
            _err(f"{where} must be {'integers' if integer else 'numbers'}, got {x!r}")
        if integer:
            if not isinstance(x, int):
                _err(f"{where} must be integers, got {x!r}")
            out.append(int(x))
        else:
            if not math.isfinite(x):
                _err(f"{where} must be finite, got {x!r}")
            out.append(float(x))
    return tuple(out)


def _int(v, where: str, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        _err(f"{where} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _tables(raw, name: str) -> list:
    if raw is None:
        _err(f"missing [[{name}]]: the config must name at least one {name} family")
    tables = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(tables, list) or not tables:
        _err(f"[[{name}]] must be a table or an array of tables")
    return tables


def _parse_reference(t: Mapping, i: int) -> dict:
    where = f"[[reference]] #{i + 1}"
    fam = t.get("family") if isinstance(t, Mapping) else None
    if fam not in _REF_KEYS:
        _err(f"{where}: unknown reference family {fam!r}; valid families: {', '.join(_REF_KEYS)}")
    _check_keys(t, _REF_KEYS[fam], f"{where} (family {fam!r})")
    missing = [k for k in _REF_KEYS[fam] if k not in t and k not in ("seed",)]
    if missing:
        _err(f"{where} (family {fam!r}) is missing {', '.join(repr(m) for m in missing)}")
    if fam == "bernoulli":
        probs = _values(t["prob"], f"{where}.prob")
        if any(not 0.0 < q < 1.0 for q in probs):
            _err(f"{where}.prob: success probabilities must lie in (0, 1), got {list(probs)}")
        return {"family": fam, "prob": list(probs)}
    ks = _values(t["k"], f"{where}.k", integer=True)
    if any(k < 2 for k in ks):
        _err(f"{where}.k: alphabet sizes must be >= 2, got {list(ks)}")
    if fam == "zipf":
        return {"family": fam, "k": list(ks), "s": list(_values(t["s"], f"{where}.s"))}
    conc = _values(t["concentration"], f"{where}.concentration")
    if any(c <= 0 for c in conc):
        _err(f"{where}.concentration must be > 0, got {list(conc)}")
    count = _int(t["count"], f"{where}.count", 1)
    seed = _int(t.get("seed", 0), f"{where}.seed", 0)
    return {"family": fam, "k": list(ks), "concentration": list(conc), "count": count, "seed": seed}


def _parse_reward(t: Mapping, i: int) -> dict:
    where = f"[[reward]] #{i + 1}"
    fam = t.get("family") if isinstance(t, Mapping) else None
    if fam not in _REWARD_KEYS:
        _err(f"{where}: unknown reward family {fam!r}; valid families: {', '.join(_REWARD_KEYS)}")
    _check_keys(t, _REWARD_KEYS[fam], f"{where} (family {fam!r})")
    if fam == "random":
        seeds = _values(t.get("seed", 0), f"{where}.seed", integer=True)
        if any(s < 0 for s in seeds):
            _err(f"{where}.seed must be >= 0, got {list(seeds)}")
        return {"family": fam, "seed": list(seeds)}
    return {"family": fam}


def parse_config(data: Mapping, text: str | None = None, default_name: str = "sweep") -> SweepConfig:
    """Validate a parsed TOML document and return a :class:`SweepConfig`.

    Raises :class:`SweepConfigError` (a ``ValueError``) with one clear message
    naming the offending key and listing the valid choices.
    """
    _check_keys(data, _TOP_KEYS, "the top level")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        _err(f"name must be a non-empty string, got {name!r}")
    refs = [_parse_reference(t, i) for i, t in enumerate(_tables(data.get("reference"), "reference"))]
    rewards = [_parse_reward(t, i) for i, t in enumerate(_tables(data.get("reward"), "reward"))]

    graw = data.get("grid", {})
    _check_keys(graw, _GRID_KEYS, "[grid]")
    grid: dict[str, tuple] = {}
    if "delta" in graw:
        grid["delta"] = _values(graw["delta"], "grid.delta")
        if any(d < 0 for d in grid["delta"]):
            _err(f"grid.delta: KL budgets must be >= 0, got {list(grid['delta'])}")
    if "n" in graw:
        grid["n"] = _values(graw["n"], "grid.n", integer=True)
        if any(n < 1 for n in grid["n"]):
            _err(f"grid.n: sequence lengths must be >= 1, got {list(grid['n'])}")
    if "x" in graw and "x_relative" in graw:
        _err("[grid] takes x (absolute per-token reward) or x_relative (fraction of [r_min, r_max]), not both")
    for key in ("x", "x_relative"):
        if key in graw:
            grid[key] = _values(graw[key], f"grid.{key}")
    for key, vals in grid.items():
        if len(set(vals)) != len(vals):
            _err(f"grid.{key} has repeated values: {list(vals)}")

    have = {"delta": "delta" in grid, "n": "n" in grid, "x": "x" in grid or "x_relative" in grid}
    if "quantities" in data:
        qs = data["quantities"]
        if isinstance(qs, str):
            qs = [qs]
        if not isinstance(qs, list) or not qs or not all(isinstance(q, str) for q in qs):
            _err(f"quantities must be a non-empty list of names; valid quantities: {', '.join(QUANTITIES)}")
        for q in qs:
            if q not in QUANTITIES:
                _err(f"unknown quantity {q!r}; valid quantities: {', '.join(QUANTITIES)}")
        if len(set(qs)) != len(qs):
            _err(f"quantities lists a name twice: {qs}")
        for q in qs:
            need = [a for a in QUANTITIES[q][1] if not have[a]]
            if need:
                _err(f"quantity {q!r} needs grid axis {' and '.join(need)} in [grid]")
        quantities = tuple(q for q in QUANTITIES if q in qs)  # canonical order
    else:
        quantities = tuple(q for q, (_, axes) in QUANTITIES.items() if all(have[a] for a in axes))

    chunk = data.get("chunk_size")
    if chunk is not None:
        chunk = _int(chunk, "chunk_size", 1)

    cfg = SweepConfig(name, tuple(refs), tuple(rewards), grid, quantities, chunk, text)
    _check_models(cfg)
    return cfg


def load_config(path) -> SweepConfig:
    """Read and validate a TOML sweep config (see the module docstring)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SweepConfigError(f"cannot read config {path}: {e.strerror}") from None
    text = raw.decode("utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SweepConfigError(f"{path} is not valid TOML: {e}") from None
    stem = os.path.splitext(os.path.basename(path))[0]
    return parse_config(data, text=text, default_name=stem)


# ---------------------------------------------------------------------------
# the grid (host side)
# ---------------------------------------------------------------------------


def _zipf(k: int, s: float) -> np.ndarray:
    w = np.arange(1, k + 1, dtype=np.float64) ** (-s)
    return w / w.sum()


def build_models(cfg: SweepConfig) -> list[Model]:
    """All (reference, reward) pairs of the config, in canonical order."""
    refs = []  # (p, params)
    for ref in cfg.references:
        fam = ref["family"]
        if fam == "bernoulli":
            for q in ref["prob"]:
                refs.append((np.array([1.0 - q, q]), {"reference": fam, "prob": q}))
        elif fam == "zipf":
            for k in ref["k"]:
                for s in ref["s"]:
                    refs.append((_zipf(k, s), {"reference": fam, "s": s}))
        else:
            for k in ref["k"]:
                for c in ref["concentration"]:
                    rng = np.random.default_rng([ref["seed"], k])
                    draws = rng.dirichlet(np.full(k, c), size=ref["count"])
                    for j, p in enumerate(draws):
                        if np.any(p <= 0):
                            _err(
                                f"dirichlet reference (k={k}, concentration={c}, seed={ref['seed']}) "
                                f"draw {j} has an entry that underflowed to 0; use a larger concentration"
                            )
                        params = {"reference": fam, "concentration": c, "ref_seed": ref["seed"], "sample": j}
                        refs.append((p / p.sum(), params))
    models = []
    for p, rp in refs:
        k = p.size
        for rw in cfg.rewards:
            if rw["family"] == "linear":
                models.append(Model(p, np.arange(k, dtype=np.float64), {**rp, "k": k, "reward": "linear"}, "linear"))
            else:
                for seed in rw["seed"]:
                    r = np.random.default_rng([seed, k]).uniform(0.0, 1.0, size=k)
                    params = {**rp, "k": k, "reward": "random", "reward_seed": seed}
                    models.append(Model(p, r, params, "random"))
    return models


def _check_models(cfg: SweepConfig):
    if not any(q in _BON for q in cfg.quantities):
        return
    ns = cfg.grid.get("n", ())
    for m in build_models(cfg):
        if m.law_method == "types":
            k = m.p.size
            for n in ns:
                t = math.comb(n + k - 1, k - 1)
                if t > MAX_TYPES:
                    _err(
                        f"best-of-N quantities with random rewards over k >= 3 letters use the exact types law, "
                        f"C(n+k-1, k-1) = {t} types for k = {k}, n = {n} (limit {MAX_TYPES}); "
                        f"use reward family 'linear' (lattice law, any n) or smaller k and n"
                    )


class _Unit(NamedTuple):
    model: int
    n_index: int
    n: int | None


class _Plan(NamedTuple):
    models: list
    units: list  # _Unit, canonical order
    deltas: tuple
    xs: tuple  # x or x_relative values
    x_key: str | None
    groups: list  # (key, [unit indices])
    chunks: list  # (group index, chunk index, [unit indices])
    points_per_unit: int
    num_points: int
    chunk_size: int
    units_per_chunk: int


def make_plan(cfg: SweepConfig, chunk_size: int) -> _Plan:
    """Flatten the grid into units and chunks (independent of the device count)."""
    models = build_models(cfg)
    ns = cfg.grid.get("n", (None,))
    deltas = cfg.grid.get("delta", ())
    x_key = "x" if "x" in cfg.grid else ("x_relative" if "x_relative" in cfg.grid else None)
    xs = cfg.grid.get(x_key, ()) if x_key else ()
    ppu = max(1, len(deltas)) * max(1, len(xs))
    bon = any(q in _BON for q in cfg.quantities)
    units, groups, index = [], [], {}
    for mi, m in enumerate(models):
        for ni, n in enumerate(ns):
            key = (m.p.size, m.law_method, n if bon else None)
            if key not in index:
                index[key] = len(groups)
                groups.append((key, []))
            groups[index[key]][1].append(len(units))
            units.append(_Unit(mi, ni, n))
    per_chunk = max(1, chunk_size // ppu)
    chunks = []
    for gi, (_, members) in enumerate(groups):
        for ci, start in enumerate(range(0, len(members), per_chunk)):
            chunks.append((gi, ci, members[start : start + per_chunk]))
    return _Plan(models, units, deltas, xs, x_key, groups, chunks, ppu, len(units) * ppu, chunk_size, per_chunk)


def _param_columns(cfg: SweepConfig, plan: _Plan) -> dict[str, np.ndarray]:
    """Parameter columns, one entry per grid point, in canonical row order."""
    D, X = max(1, len(plan.deltas)), max(1, len(plan.xs))
    names = ["reference", "prob", "s", "concentration", "ref_seed", "sample", "k", "reward", "reward_seed"]
    present = [c for c in names if any(c in m.params for m in plan.models)]
    strings = {"reference", "reward"}
    ints = {"ref_seed", "sample", "k", "reward_seed"}
    cols: dict[str, list] = {"index": [], "model": []}
    cols.update({c: [] for c in present})
    if "n" in cfg.grid:
        cols["n"] = []
    if plan.deltas:
        cols["delta"] = []
    if plan.x_key == "x_relative":
        cols["x_relative"] = []
    if plan.x_key:
        cols["x"] = []
    for ui, u in enumerate(plan.units):
        m = plan.models[u.model]
        xabs = _x_values(m, plan)
        for di in range(D):
            for xi in range(X):
                cols["index"].append((ui * D + di) * X + xi)
                cols["model"].append(u.model)
                for c in present:
                    v = m.params.get(c)
                    cols[c].append(("" if c in strings else (-1 if c in ints else math.nan)) if v is None else v)
                if "n" in cols:
                    cols["n"].append(u.n)
                if "delta" in cols:
                    cols["delta"].append(plan.deltas[di])
                if "x_relative" in cols:
                    cols["x_relative"].append(plan.xs[xi])
                if "x" in cols:
                    cols["x"].append(float(xabs[xi]))
    out = {}
    for c, v in cols.items():
        if c in strings:
            out[c] = np.array(v, dtype=str)
        elif c in ints or c in ("index", "model", "n"):
            out[c] = np.array(v, dtype=np.int64)
        else:
            out[c] = np.array(v, dtype=np.float64)
    return out


def _x_values(m: Model, plan: _Plan) -> np.ndarray:
    xs = np.asarray(plan.xs, dtype=np.float64)
    if plan.x_key == "x_relative":
        lo, hi = float(m.r.min()), float(m.r.max())
        return lo + xs * (hi - lo)
    return xs


# ---------------------------------------------------------------------------
# device evaluation
# ---------------------------------------------------------------------------


def _unit_fn(p, r, log_w, a, h, xs, deltas, *, n, method, quantities):
    """Every requested quantity of one unit ``(p, r, n)``, each of shape ``(D, X)`` (jittable).

    ``p``, ``r``: ``(k,)``; ``log_w``, ``a``, ``h``: the lattice form
    ``r = a + h m`` (used when ``method == "lattice"``); ``xs``: the ``X``
    absolute ``x`` values; ``deltas``: the ``D`` budgets. For best-of-N the
    exact law of ``r_n`` (THEORY.md §7) is built once and shared by every
    ``Δ``: :func:`~asymalign.law_from_lattice` for lattice rewards (linear
    rewards, or any two distinct rewards), :func:`~asymalign.law_from_types`
    otherwise; the numbers are those of :func:`~asymalign.bon_vs_klrl` with
    that law.
    """
    import jax.numpy as jnp

    import asymalign as aa

    D, X = deltas.shape[0], xs.shape[0]
    lam = aa.solve_lambda(p, r, deltas)
    out = {"lambda_star": lam}
    if "klrl_reward" in quantities:
        out["klrl_reward"] = aa.tilt_reward(p, r, lam)
    if "delta_max" in quantities:
        out["delta_max"] = jnp.broadcast_to(aa.max_kl(p, r), (D,))
    if any(q in _BON for q in quantities):
        if method == "lattice":  # r = a + h m: the index law is w
            law = aa.law_from_lattice(log_w, n, a, h)
        else:
            law = aa.law_from_types(p, r, n)
        log_n = n * deltas
        log_b = aa.bon_level_law(law, log_n)  # (D, L)
        out["bon_reward"] = jnp.sum(jnp.exp(log_b) * law.levels, axis=-1) / n
        out["bon_kl"] = aa.level_kl(log_b, law.log_prob) / n
        out["bon_kl_to_tilt"] = aa.level_kl(log_b, aa.tilted_level_law(law, lam)) / n
        out["bon_kl_bound"] = aa.bon_kl_bound(log_n) / n
        out["bon_win_rate"] = aa.bon_win_rate(law, log_n)
    res = []
    for q in quantities:
        if q == "rate_function":
            res.append(jnp.broadcast_to(aa.rate_function(p, r, xs)[None, :], (D, X)))
        else:
            res.append(jnp.broadcast_to(out[q][:, None], (D, X)))
    return tuple(res)


@functools.lru_cache(maxsize=64)
def _compiled(mesh, n, method, quantities):
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    fn = functools.partial(_unit_fn, n=n, method=method, quantities=quantities)
    out = NamedSharding(mesh, P("batch"))
    return jax.jit(jax.vmap(fn, in_axes=(0, 0, 0, 0, 0, 0, None)), out_shardings=tuple(out for _ in quantities))


def _global_array(host: np.ndarray, sharding):
    import jax

    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def _evaluate_chunk(plan: _Plan, cfg: SweepConfig, chunk, mesh) -> dict[str, np.ndarray]:
    """Evaluate one chunk on all devices; returns host arrays, one entry per row."""
    import jax
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    gi, _, members = chunk
    _, method, n = plan.groups[gi][0]
    ndev = mesh.devices.size
    # One padded batch size per group (a multiple of the device count), so
    # that the group's last, shorter chunk does not trigger a recompilation.
    per_chunk = min(plan.units_per_chunk, len(plan.groups[gi][1]))
    B = -(-per_chunk // ndev) * ndev
    padded = list(members) + [members[0]] * (B - len(members))
    models = [plan.models[plan.units[u].model] for u in padded]
    D, X = max(1, len(plan.deltas)), max(1, len(plan.xs))
    p = np.stack([m.p for m in models])
    r = np.stack([m.r for m in models])
    xs = np.stack([_x_values(m, plan) if plan.xs else np.zeros(1) for m in models]).reshape(B, X)
    deltas = np.asarray(plan.deltas if plan.deltas else (0.0,), dtype=np.float64)
    batch = NamedSharding(mesh, P("batch"))
    p_d, r_d = _global_array(p, batch), _global_array(r, batch)
    d_d = _global_array(deltas, NamedSharding(mesh, P()))
    fn = _compiled(mesh, n, method, cfg.quantities)
    lat = [m.lattice() if method == "lattice" else (np.zeros_like(m.p), 0.0, 1.0) for m in models]
    log_w = _global_array(np.stack([t[0] for t in lat]), batch)
    a = _global_array(np.array([t[1] for t in lat]), batch)
    h = _global_array(np.array([t[2] for t in lat]), batch)
    outs = fn(p_d, r_d, log_w, a, h, _global_array(xs, batch), d_d)
    outs = dict(zip(cfg.quantities, outs, strict=True))
    res = {}
    for q in cfg.quantities:
        o = outs[q]
        if jax.process_count() > 1:
            a = np.asarray(multihost_utils.process_allgather(o, tiled=True))
        else:
            a = np.asarray(o)
        res[q] = a[: len(members)].reshape(-1)
    res["rows"] = np.concatenate([np.arange(u * D * X, (u + 1) * D * X) for u in members]).astype(np.int64)
    return res


# ---------------------------------------------------------------------------
# files: atomic writes, chunk store, results
# ---------------------------------------------------------------------------


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


def _atomic_write(path: str, data: bytes):
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one."""
    d = os.path.dirname(path) or "."
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(d)


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _chunk_path(out_dir: str, chunk) -> str:
    gi, ci, _ = chunk
    return os.path.join(out_dir, "chunks", f"chunk-g{gi:04d}-c{ci:06d}.npz")


def _load_chunk(path: str, chunk, plan: _Plan, quantities) -> dict | None:
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
    blank = {"prob", "s", "concentration", "ref_seed", "sample", "reward_seed"}
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
    """Columns of a finished sweep (``DIR/results.npz``) as NumPy arrays, in row order."""
    with np.load(os.path.join(os.fspath(out_dir), "results.npz")) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------------------
# multi-host
# ---------------------------------------------------------------------------


def init_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
) -> bool:
    """Initialise ``jax.distributed`` for a multi-host sweep; call before any JAX computation.

    Values come from the arguments, else from the environment
    (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``),
    else from JAX's cluster auto-detection (SLURM, Open MPI, Kubernetes, …)
    when ``auto`` is true. Returns whether it initialised anything (nothing
    is done for a single process).
    """
    import jax

    env = os.environ
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if not auto and coordinator is None and num_processes is None and process_id is None:
        return False
    if not auto and num_processes == 1 and coordinator is None:
        return False
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    return True


def _broadcast_from_0(x: np.ndarray) -> np.ndarray:
    import jax

    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(x))


# ---------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------


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


def _clear_dir(out_dir: str):
    cdir = os.path.join(out_dir, "chunks")
    if os.path.isdir(cdir):
        for f in os.listdir(cdir):
            os.remove(os.path.join(cdir, f))
    for f in (_STATE_FILE, "results.csv", "results.npz", "meta.json"):
        path = os.path.join(out_dir, f)
        if os.path.exists(path):
            os.remove(path)


def _prepare_dir(
    out_dir: str, cfg: SweepConfig, chunk_size: int, resume: bool, explicit_chunk: bool
) -> tuple[int, str]:
    """Process 0: check/create the state file. Returns ``(chunk_size, note)``."""
    os.makedirs(os.path.join(out_dir, "chunks"), exist_ok=True)
    for d in (out_dir, os.path.join(out_dir, "chunks")):
        for f in os.listdir(d):
            if f.endswith(".tmp"):  # left by a run killed mid-write
                os.remove(os.path.join(d, f))
    state_path = os.path.join(out_dir, _STATE_FILE)
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
        raise SweepConfigError(f"{out_dir}/chunks holds chunk files but no {_STATE_FILE}; pass --no-resume")
    state = {"config_hash": cfg.fingerprint(), "chunk_size": chunk_size, "config": cfg.canonical()}
    _atomic_write(state_path, json.dumps(state, indent=1, allow_nan=True).encode())
    return chunk_size, note


def default_compile_cache() -> str:
    """``$XDG_CACHE_HOME/asymalign/jax`` (``~/.cache/asymalign/jax``): where sweeps keep
    JAX's persistent compilation cache unless told otherwise."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "asymalign", "jax")


def _setup_compile_cache(compile_cache):
    """Turn on JAX's persistent compilation cache (compilation dominates small
    sweeps; a resumed or repeated sweep then starts in seconds). A cache the
    user configured (``JAX_COMPILATION_CACHE_DIR``) wins over the default."""
    import jax

    if compile_cache is False or compile_cache is None:
        return None
    if compile_cache is True:
        if jax.config.jax_compilation_cache_dir:
            return jax.config.jax_compilation_cache_dir
        compile_cache = default_compile_cache()
    try:
        os.makedirs(compile_cache, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", os.fspath(compile_cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return compile_cache


def run_sweep(
    cfg: SweepConfig,
    out_dir,
    *,
    chunk_size: int | None = None,
    resume: bool = True,
    progress: bool = True,
    compile_cache: bool | str = True,
) -> SweepResult:
    """Run (or resume) a sweep and write ``results.csv``, ``results.npz`` and ``meta.json``.

    Enables ``jax_enable_x64`` (float64 is the reference precision). In a
    multi-process run (after :func:`init_distributed`) every process must call
    this with the same config; process 0 writes the files.

    Args:
      cfg: a :class:`SweepConfig` (from :func:`load_config`).
      out_dir: output directory (created).
      chunk_size: grid points per chunk (memory bound); default: the
        config's ``chunk_size`` or 256. A resumed run keeps the chunk size of
        the run it resumes.
      resume: reuse finished chunks in ``out_dir`` (refusing a different
        config); ``False`` discards them.
      progress: show a tqdm progress bar (process 0) with points done and ETA.
      compile_cache: ``True``: JAX's persistent compilation cache in
        :func:`default_compile_cache` (or the one already configured); a path:
        that directory; ``False``: none. Only takes effect before the process
        compiles anything.
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    _setup_compile_cache(compile_cache)
    from jax.sharding import Mesh
    from tqdm.auto import tqdm

    t0 = time.time()
    out_dir = os.path.abspath(os.fspath(out_dir))
    explicit = chunk_size is not None
    chunk_size = chunk_size if chunk_size is not None else (cfg.chunk_size or DEFAULT_CHUNK_SIZE)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise SweepConfigError(f"chunk size must be an integer >= 1, got {chunk_size!r}")
    lead = jax.process_index() == 0

    # Process 0 owns the directory; the others learn its decisions by broadcast.
    status = np.zeros(2, np.int64)
    error = None
    if lead:
        try:
            chunk_size, note = _prepare_dir(out_dir, cfg, chunk_size, resume, explicit)
            if note:
                print(f"asymalign sweep: {note}", file=sys.stderr)
        except SweepConfigError as e:
            error = e
        status[:] = (1 if error else 0, chunk_size)
    status = _broadcast_from_0(status)
    if status[0]:
        raise error if error is not None else SweepConfigError(f"process 0 refused the output directory {out_dir}")
    chunk_size = int(status[1])

    plan = make_plan(cfg, chunk_size)
    done = np.zeros(len(plan.chunks), np.int8)
    if lead:
        for i, ch in enumerate(plan.chunks):
            if _load_chunk(_chunk_path(out_dir, ch), ch, plan, cfg.quantities) is not None:
                done[i] = 1
    done = _broadcast_from_0(done)

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
                _atomic_write(_chunk_path(out_dir, ch), _npz_bytes(res))
            computed += len(ch[2]) * ppu
            bar.update(len(ch[2]) * ppu)
            if delay:
                time.sleep(delay)
    t_compute = time.time() - t_compute

    if lead:
        _assemble(out_dir, cfg, plan, devices, t0, t_compute, computed, resumed)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("asymalign-sweep-done")
    return SweepResult(out_dir, plan.num_points, computed, resumed, time.time() - t0)


def _assemble(out_dir, cfg, plan, devices, t0, t_compute, computed, resumed):
    import jax

    cols = _param_columns(cfg, plan)
    values = {q: np.full(plan.num_points, np.nan) for q in cfg.quantities}
    for ch in plan.chunks:
        data = _load_chunk(_chunk_path(out_dir, ch), ch, plan, cfg.quantities)
        if data is None:  # pragma: no cover - written above
            raise RuntimeError(f"chunk file {_chunk_path(out_dir, ch)} is missing or damaged; rerun to resume")
        for q in cfg.quantities:
            values[q][data["rows"]] = data[q]
    cols.update(values)
    _atomic_write(os.path.join(out_dir, "results.npz"), _npz_bytes(cols))
    _atomic_write(os.path.join(out_dir, "results.csv"), _csv_bytes(cols))
    kinds = sorted({getattr(d, "device_kind", d.platform) for d in devices})
    meta = {
        "name": cfg.name,
        "config": cfg.canonical(),
        "config_hash": cfg.fingerprint(),
        "config_text": cfg.text,
        "quantities": {q: QUANTITIES[q][0] for q in cfg.quantities},
        "columns": list(cols),
        "num_points": plan.num_points,
        "num_units": len(plan.units),
        "num_chunks": len(plan.chunks),
        "chunk_size": plan.chunk_size,
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
    _atomic_write(os.path.join(out_dir, "meta.json"), json.dumps(meta, indent=1, allow_nan=True).encode())
