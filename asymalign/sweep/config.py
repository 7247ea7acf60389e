"""Sweep configuration: the TOML schema, its validation, and :class:`SweepConfig` (THEORY.md §3, §5, §6, §14).

See :mod:`asymalign.sweep` for the schema. Every error is a
:class:`SweepConfigError` (a ``ValueError``) with one line naming the
offending key and listing the valid choices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tomllib
from collections.abc import Mapping, Sequence

import numpy as np

from .quantities import QUANTITIES, Quantity, load_plugins, resolve_quantity

__all__ = ["SweepConfigError", "SweepConfig", "parse_config", "load_config", "MAX_TYPES", "DEFAULT_CHUNK_SIZE"]

_TOP_KEYS = ("name", "description", "quantities", "chunk_size", "reference", "reward", "grid")
_GRID_KEYS = ("delta", "n", "x", "x_relative")
_REF_KEYS = {
    "bernoulli": ("family", "prob"),
    "zipf": ("family", "k", "s"),
    "dirichlet": ("family", "k", "concentration", "count", "seed"),
    "markov": ("family", "transition", "initial", "k", "concentration", "count", "seed"),
}
_REWARD_KEYS = {"linear": ("family",), "random": ("family", "seed")}
# Largest number of types C(n+k-1, k-1) per unit for random (non-lattice) rewards.
MAX_TYPES = 100_000
DEFAULT_CHUNK_SIZE = 256


class SweepConfigError(ValueError):
    """An invalid sweep configuration (the message says what and lists valid choices)."""


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A validated sweep configuration.

    Attributes:
      name: sweep name.
      references: normalised ``[[reference]]`` tables.
      rewards: normalised ``[[reward]]`` tables.
      grid: axis name -> tuple of values (``delta``, ``n``, ``x`` or ``x_relative``).
      quantities: the quantities as named in the config (registered names in
        registry order, then ``"module:function"`` paths), in column order.
      chunk_size: grid points per chunk from the file, or ``None``.
      text: the TOML source (recorded in ``meta.json``).
      specs: the resolved :class:`~asymalign.sweep.Quantity` of each entry of
        ``quantities`` (their ``name`` is the column name).
    """

    name: str
    references: tuple
    rewards: tuple
    grid: dict
    quantities: tuple
    chunk_size: int | None = None
    text: str | None = None
    specs: tuple = dataclasses.field(default=(), compare=False, repr=False)

    @property
    def columns(self) -> tuple:
        """The result column of each quantity."""
        return tuple(q.name for q in self.specs)

    @property
    def kinds(self) -> tuple:
        """Reference kinds in the config (``"iid"``, ``"markov"``)."""
        fams = {r["family"] for r in self.references}
        return tuple(k for k, has in (("iid", fams - {"markov"}), ("markov", "markov" in fams)) if has)

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
    optional = ("seed",) if fam != "markov" else _REF_KEYS[fam]
    missing = [k for k in _REF_KEYS[fam] if k not in t and k not in optional]
    if missing:
        _err(f"{where} (family {fam!r}) is missing {', '.join(repr(m) for m in missing)}")
    if fam == "bernoulli":
        probs = _values(t["prob"], f"{where}.prob")
        if any(not 0.0 < q < 1.0 for q in probs):
            _err(f"{where}.prob: success probabilities must lie in (0, 1), got {list(probs)}")
        return {"family": fam, "prob": list(probs)}
    if fam == "markov":
        return _parse_markov(t, where)
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


def _matrix(v, where: str) -> np.ndarray:
    ok = isinstance(v, list) and v and all(isinstance(row, list) and len(row) == len(v) for row in v)
    if not ok or not all(isinstance(x, int | float) and not isinstance(x, bool) for row in v for x in row):
        _err(f"{where} must be a square matrix of numbers (a list of k rows of k entries), got {v!r}")
    return np.asarray(v, dtype=np.float64)


def _check_stochastic(a: np.ndarray, where: str, what: str):
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        _err(f"{where} must have finite entries >= 0, got {a.tolist()}")
    if np.any(np.abs(a.sum(axis=-1) - 1.0) > 1e-9):
        _err(f"{where}: {what} must sum to 1 (within 1e-9), got sums {a.sum(axis=-1).tolist()}")


def _is_primitive(transition: np.ndarray) -> bool:
    """Irreducible and aperiodic: some power of the support is all positive
    (Wielandt: the power (k-1)^2 + 1 suffices)."""
    k = transition.shape[0]
    a = (transition > 0).astype(np.float64)
    m = np.eye(k)
    e, base = (k - 1) ** 2 + 1, a
    while e:
        if e & 1:
            m = np.minimum(m @ base, 1.0)
        base, e = np.minimum(base @ base, 1.0), e >> 1
    return bool(np.all(m > 0))


def _parse_markov(t: Mapping, where: str) -> dict:
    fam = "markov"
    if "transition" in t:
        extra = [k for k in ("k", "concentration", "count", "seed") if k in t]
        if extra:
            _err(f"{where} (family 'markov') takes transition (and initial) or k, concentration, count, seed, not both")
        P = _matrix(t["transition"], f"{where}.transition")
        if P.shape[0] < 2:
            _err(f"{where}.transition must have at least 2 states, got {P.shape[0]}")
        _check_stochastic(P, f"{where}.transition", "every row")
        if not _is_primitive(P):
            _err(f"{where}.transition must be irreducible and aperiodic (some power of it all > 0)")
        out = {"family": fam, "transition": P.tolist()}
        if "initial" in t:
            init = t["initial"]
            if not isinstance(init, list) or len(init) != P.shape[0]:
                _err(f"{where}.initial must be a list of {P.shape[0]} probabilities (one per state), got {init!r}")
            init = np.asarray(_values(init, f"{where}.initial"))
            _check_stochastic(init, f"{where}.initial", "the initial law")
            out["initial"] = init.tolist()
        return out
    if "initial" in t:
        _err(f"{where} (family 'markov'): initial needs an explicit transition")
    missing = [k for k in ("k", "concentration", "count") if k not in t]
    if missing:
        _err(
            f"{where} (family 'markov') is missing {', '.join(repr(m) for m in missing)} "
            f"(or give an explicit transition)"
        )
    ks = _values(t["k"], f"{where}.k", integer=True)
    if any(k < 2 for k in ks):
        _err(f"{where}.k: numbers of states must be >= 2, got {list(ks)}")
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

    Args:
      data: the document (``tomllib.loads(text)``); schema in :mod:`asymalign.sweep`.
      text: its source, recorded in ``meta.json``.
      default_name: the sweep's name when ``name`` is absent.

    Returns:
      A :class:`SweepConfig`.

    Raises:
      SweepConfigError: (a ``ValueError``) one clear message naming the
        offending key and listing the valid choices.

    >>> import tomllib
    >>> from asymalign import sweep
    >>> cfg = sweep.parse_config(tomllib.loads('''
    ... quantities = ["lambda_star", "bon_reward"]
    ... [[reference]]
    ... family = "markov"
    ... transition = [[0.9, 0.1], [0.3, 0.7]]
    ... [[reward]]
    ... family = "linear"
    ... [grid]
    ... delta = [0.1, 0.2]
    ... n = [16]
    ... '''))
    >>> cfg.quantities, cfg.kinds
    (('lambda_star', 'bon_reward'), ('markov',))
    >>> sweep.parse_config({"reference": {"family": "gauss"}})
    Traceback (most recent call last):
    ...
    asymalign.sweep.config.SweepConfigError: [[reference]] #1: unknown reference family 'gauss'; ...
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
    fams = {r["family"] for r in refs}
    kinds = [k for k, has in (("iid", fams - {"markov"}), ("markov", "markov" in fams)) if has]
    quantities, specs = _parse_quantities(data, have, kinds)

    chunk = data.get("chunk_size")
    if chunk is not None:
        chunk = _int(chunk, "chunk_size", 1)

    cfg = SweepConfig(name, tuple(refs), tuple(rewards), grid, quantities, chunk, text, specs)
    from .plan import check_models

    check_models(cfg)
    return cfg


def _parse_quantities(data: Mapping, have: Mapping, kinds: Sequence[str]) -> tuple[tuple, tuple]:
    """The quantity names (canonical order) and their resolved specs."""
    load_plugins()
    valid = ", ".join(QUANTITIES)
    if "quantities" not in data:  # everything the grid and the reference kinds support
        specs = [
            q for q in QUANTITIES.values() if all(have[a] for a in q.axes) and set(kinds) <= set(q.reference_kinds)
        ]
        return tuple(q.name for q in specs), tuple(specs)
    qs = data["quantities"]
    if isinstance(qs, str):
        qs = [qs]
    if not isinstance(qs, list) or not qs or not all(isinstance(q, str) for q in qs):
        _err(f"quantities must be a non-empty list of names; valid quantities: {valid}")
    if len(set(qs)) != len(qs):
        _err(f"quantities lists a name twice: {qs}")
    resolved: dict[str, Quantity] = {}
    for q in qs:
        try:
            resolved[q] = resolve_quantity(q)
        except ValueError as e:
            _err(str(e))
    names = [q for q in QUANTITIES if q in resolved] + [q for q in qs if q not in QUANTITIES]
    columns = [resolved[q].name for q in names]
    for q, col in zip(names, columns, strict=True):
        spec = resolved[q]
        if columns.count(col) > 1 or (q not in QUANTITIES and col in QUANTITIES):
            _err(f"quantity {q!r} gives the column {col!r} twice (rename the function)")
        need = [a for a in spec.axes if not have[a]]
        if need:
            _err(f"quantity {q!r} needs grid axis {' and '.join(need)} in [grid]")
        missing = [k for k in kinds if k not in spec.reference_kinds]
        if missing:
            _err(
                f"quantity {q!r} is not defined for {' and '.join(missing)} references "
                f"(defined for: {', '.join(spec.reference_kinds)})"
            )
    return tuple(names), tuple(resolved[q] for q in names)


def load_config(path) -> SweepConfig:
    """Read and validate a TOML sweep config (schema in :mod:`asymalign.sweep`).

    Args:
      path: the ``.toml`` file; its stem is the default ``name``.

    Returns:
      A :class:`SweepConfig` (see :func:`parse_config`).

    >>> from asymalign import sweep
    >>> sweep.load_config("no/such/file.toml")
    Traceback (most recent call last):
    ...
    asymalign.sweep.config.SweepConfigError: cannot read config no/such/file.toml: No such file or directory
    """
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
