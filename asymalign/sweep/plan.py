"""The grid of a sweep, host side: models, units, chunks and parameter columns.

The grid ``references × rewards × n × Δ × x`` is flattened into *units*
``(model, n)``; a unit carries all its ``Δ`` and ``x`` values. Units are
grouped by what fixes static shapes and each group is cut into chunks of about
``chunk_size`` grid points; each group compiles once. Chunk boundaries depend
only on the config and the chunk size, never on the device count.

Groups (issue 11: compilations dominate a small sweep). When every requested
quantity is a built-in one (:data:`asymalign.sweep.quantities.PADDED_SAFE`),
memoryless units are *fused*: the alphabet is padded with zero-probability
letters to one power-of-two size ``k`` for the whole sweep, ``n`` is a traced
integer, and the exact law of ``r_n`` is built on the host
(:func:`asymalign.reward_law`) and padded to a power-of-two length, so the
group key is only that length (and one length for the whole sweep when padding
every law to the longest costs little, :func:`_law_buckets`). Otherwise (a
user quantity, which may need a static ``n`` or the unpadded alphabet) and for
Markov references, the key is (reference kind, ``k``, law method — lattice,
types or Markov — and ``n`` when a quantity needs it), as before.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from .config import MAX_TYPES, SweepConfig, _err
from .quantities import PADDED_SAFE

__all__ = ["Model", "build_models", "check_models", "make_plan", "PARAM_COLUMNS", "BLANK_COLUMNS"]

# Parameter columns of the results, in order; the optional ones are blank
# (NaN / -1 in results.npz, empty in results.csv, null in results.parquet)
# for models they do not apply to.
PARAM_COLUMNS = ("reference", "prob", "s", "concentration", "ref_seed", "chain", "sample", "k", "reward", "reward_seed")
STRING_COLUMNS = frozenset({"reference", "reward"})
INT_COLUMNS = frozenset({"ref_seed", "chain", "sample", "k", "reward_seed"})
BLANK_COLUMNS = frozenset({"prob", "s", "concentration", "ref_seed", "chain", "sample", "reward_seed"})
RESERVED_COLUMNS = frozenset({"index", "model", *PARAM_COLUMNS, "n", "delta", "x", "x_relative", "rows"})


@dataclasses.dataclass(frozen=True)
class Model:
    """One reference/reward pair of the grid (host side, float64).

    Attributes:
      p: ``(k,)`` the reference law (memoryless), or the chain's initial law.
      r: ``(k,)`` per-token (per-state) rewards.
      params: column name -> value (reference and reward parameters).
      reward_family: ``"linear"`` or ``"random"``.
      transition: ``(k, k)`` the transition matrix of a Markov reference, else ``None``.
    """

    p: np.ndarray
    r: np.ndarray
    params: dict
    reward_family: str
    transition: np.ndarray | None = None

    @property
    def kind(self) -> str:
        """``"markov"`` or ``"iid"``."""
        return "iid" if self.transition is None else "markov"

    @property
    def law_method(self) -> str:
        """How the exact law of ``r_n`` is built: ``"markov"``
        (:func:`asymalign.markov.reward_law`), ``"lattice"`` when the rewards are
        ``a + h m`` with integer ``m`` (linear rewards, or any two distinct
        rewards), else ``"types"``."""
        if self.transition is not None:
            return "markov"
        return "lattice" if self.reward_family == "linear" or self.p.size == 2 else "types"

    def lattice(self):
        """``(log w, a, h)`` with ``r = a + h m``: ``w`` the law of the index ``m``."""
        if self.reward_family == "linear":
            return np.log(self.p), 0.0, 1.0
        order = np.argsort(self.r, kind="stable")  # two rewards: m in {0, 1}
        lo, hi = self.r[order]
        return np.log(self.p[order]), float(lo), float(hi - lo)

    def arrays(self, method: str) -> dict:
        """The unit's input arrays for :class:`~asymalign.sweep.SweepUnit` (one model)."""
        out = {"p": self.p, "r": self.r}
        if method == "lattice":
            log_w, a, h = self.lattice()
            out.update(log_w=log_w, a=np.float64(a), h=np.float64(h))
        if self.transition is not None:
            out["transition"] = self.transition
        return out


def _stationary(P: np.ndarray) -> np.ndarray:
    """The stationary law of a primitive stochastic matrix (left Perron vector)."""
    k = P.shape[0]
    a = np.vstack([P.T - np.eye(k), np.ones((1, k))])
    b = np.concatenate([np.zeros(k), [1.0]])
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def _zipf(k: int, s: float) -> np.ndarray:
    w = np.arange(1, k + 1, dtype=np.float64) ** (-s)
    return w / w.sum()


def build_models(cfg: SweepConfig) -> list[Model]:
    """All (reference, reward) pairs of the config, in canonical order."""
    refs = []  # (p, params, transition)
    chain_id = 0
    for ref in cfg.references:
        fam = ref["family"]
        if fam == "bernoulli":
            for q in ref["prob"]:
                refs.append((np.array([1.0 - q, q]), {"reference": fam, "prob": q}, None))
        elif fam == "zipf":
            for k in ref["k"]:
                for s in ref["s"]:
                    refs.append((_zipf(k, s), {"reference": fam, "s": s}, None))
        elif fam == "markov" and "transition" in ref:
            P = np.asarray(ref["transition"], dtype=np.float64)
            init = np.asarray(ref["initial"]) if "initial" in ref else _stationary(P)
            refs.append((init, {"reference": fam, "chain": chain_id}, P))
            chain_id += 1
        elif fam == "markov":
            for k in ref["k"]:
                for c in ref["concentration"]:
                    rng = np.random.default_rng([ref["seed"], k, 1])
                    for j in range(ref["count"]):
                        P = rng.dirichlet(np.full(k, c), size=k)
                        if np.any(P <= 0):
                            _err(
                                f"markov reference (k={k}, concentration={c}, seed={ref['seed']}) "
                                f"chain {j} has an entry that underflowed to 0; use a larger concentration"
                            )
                        P = P / P.sum(axis=1, keepdims=True)
                        params = {"reference": fam, "concentration": c, "ref_seed": ref["seed"], "sample": j}
                        refs.append((_stationary(P), params, P))
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
                        refs.append((p / p.sum(), params, None))
    models = []
    for p, rp, P in refs:
        k = p.size
        for rw in cfg.rewards:
            if rw["family"] == "linear":
                models.append(Model(p, np.arange(k, dtype=np.float64), {**rp, "k": k, "reward": "linear"}, "linear", P))
            else:
                for seed in rw["seed"]:
                    r = np.random.default_rng([seed, k]).uniform(0.0, 1.0, size=k)
                    params = {**rp, "k": k, "reward": "random", "reward_seed": seed}
                    models.append(Model(p, r, params, "random", P))
    return models


def check_models(cfg: SweepConfig):
    """Refuse quantity columns that clash with parameter columns, and configs whose
    exact types laws would be too large (``C(n+k-1, k-1) > MAX_TYPES``)."""
    for spec, col in zip(cfg.quantities, cfg.columns, strict=True):
        if col in RESERVED_COLUMNS:
            _err(f"quantity {spec!r} gives the column {col!r}, a parameter column (rename the function)")
    if not any(q.exact_law for q in cfg.specs):
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


class GroupKey(NamedTuple):
    """What fixes the static shapes of a group's executable.

    ``method`` is ``"lattice"``, ``"types"`` or ``"markov"`` (law built in
    the trace, or on the host for Markov), ``"host"`` for fused memoryless
    units (law built on the host) and ``None`` when no quantity needs the law.
    ``n`` is the static sequence length, ``None`` when ``n`` is traced or not
    needed. ``law_size`` is the padded law length of a fused group (``0``: the
    chunk decides, or no law)."""

    kind: str
    k: int
    method: str | None
    n: int | None
    law_size: int = 0


class Unit(NamedTuple):
    model: int
    n_index: int
    n: int | None


class Plan(NamedTuple):
    models: list
    units: list  # Unit, canonical order
    deltas: tuple
    xs: tuple  # x or x_relative values
    x_key: str | None
    groups: list  # (GroupKey, [unit indices])
    chunks: list  # (group index, chunk index, [unit indices])
    points_per_unit: int
    num_points: int
    chunk_size: int
    units_per_chunk: int


def fused(cfg: SweepConfig) -> bool:
    """Whether memoryless units are fused (padded alphabet, traced ``n``, host
    laws): every requested quantity's memoryless implementation is a built-in
    one known to accept that (:data:`~asymalign.sweep.quantities.PADDED_SAFE`)."""
    return all(q.fn("iid") in PADDED_SAFE for q in cfg.specs if "iid" in q.reference_kinds)


def _pow2(size: int, minimum: int) -> int:
    return max(minimum, 1 << (int(size) - 1).bit_length())


def law_size_bound(m: Model, n: int) -> int:
    """An upper bound on the number of levels of :func:`host_law` for a memoryless model."""
    k = m.p.size
    if m.law_method == "lattice":
        return n * (k - 1 if m.reward_family == "linear" else 1) + 1
    return math.comb(n + k - 1, k - 1)


# Padding every fused law of a sweep to the longest bucket is accepted when the
# padded work (units × length × Δ values) stays below this or below
# _FUSE_RATIO times the unpadded (bucketed) work: one compilation (seconds)
# instead of one per length bucket, for milliseconds of extra compute.
_FUSE_WORK = 1 << 22
_FUSE_RATIO = 4


def _law_buckets(sizes: list[int], num_deltas: int) -> list[int]:
    """Padded law length of each fused unit: its power-of-two bucket (at least
    64), or the largest bucket for all when that costs little."""
    own = [_pow2(s, 64) for s in sizes]
    if not own:
        return own
    top = max(own)
    padded, unpadded = len(own) * top, sum(own)
    if padded * num_deltas <= _FUSE_WORK or padded <= _FUSE_RATIO * unpadded:
        return [top] * len(own)
    return own


def make_plan(cfg: SweepConfig, chunk_size: int) -> Plan:
    """Flatten the grid into units and chunks (independent of the device count)."""
    models = build_models(cfg)
    ns = cfg.grid.get("n", (None,))
    deltas = cfg.grid.get("delta", ())
    x_key = "x" if "x" in cfg.grid else ("x_relative" if "x_relative" in cfg.grid else None)
    xs = cfg.grid.get(x_key, ()) if x_key else ()
    ppu = max(1, len(deltas)) * max(1, len(xs))
    static_n = any("n" in q.axes for q in cfg.specs)
    law = any(q.exact_law for q in cfg.specs)
    fuse = fused(cfg)
    iid_k = [m.p.size for m in models if m.kind == "iid"]
    k_pad = _pow2(max(iid_k), 2) if iid_k else 0
    # Law length of every fused unit (canonical order of the fused units).
    fused_units = [(m, n) for m in models if fuse and m.kind == "iid" for n in ns]
    sizes = iter(_law_buckets([law_size_bound(m, n) for m, n in fused_units], max(1, len(deltas))) if law else [])
    units, groups, index = [], [], {}
    for mi, m in enumerate(models):
        for ni, n in enumerate(ns):
            if fuse and m.kind == "iid":
                key = GroupKey("iid", k_pad, "host" if law else None, None, next(sizes) if law else 0)
            else:
                key = GroupKey(m.kind, m.p.size, m.law_method if law else None, n if static_n else None)
            if key not in index:
                index[key] = len(groups)
                groups.append((key, []))
            groups[index[key]][1].append(len(units))
            units.append(Unit(mi, ni, n))
    per_chunk = max(1, chunk_size // ppu)
    chunks = []
    for gi, (_, members) in enumerate(groups):
        for ci, start in enumerate(range(0, len(members), per_chunk)):
            chunks.append((gi, ci, members[start : start + per_chunk]))
    return Plan(models, units, deltas, xs, x_key, groups, chunks, ppu, len(units) * ppu, chunk_size, per_chunk)


def param_columns(cfg: SweepConfig, plan: Plan) -> dict[str, np.ndarray]:
    """Parameter columns, one entry per grid point, in canonical row order."""
    D, X = max(1, len(plan.deltas)), max(1, len(plan.xs))
    names = PARAM_COLUMNS
    present = [c for c in names if any(c in m.params for m in plan.models)]
    strings, ints = STRING_COLUMNS, INT_COLUMNS
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
        xabs = x_values(m, plan)
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


def x_values(m: Model, plan: Plan) -> np.ndarray:
    xs = np.asarray(plan.xs, dtype=np.float64)
    if plan.x_key == "x_relative":
        lo, hi = float(m.r.min()), float(m.r.max())
        return lo + xs * (hi - lo)
    return xs
