"""Shared pieces of the experiments: the plotted-data table, the result type, memoised laws."""

from __future__ import annotations

import csv
import re
from typing import Any, NamedTuple

import numpy as np
from matplotlib.ticker import Formatter, LogFormatterMathtext

# Colour-blind-friendly palette (Okabe–Ito).
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]


class Table:
    """Long-format plotted data: rows ``(panel, series, x, y, yerr)``.

    Every number drawn in a figure goes through :meth:`add` and is read back
    with :meth:`get`, so the CSV written next to the figure is exactly the
    plotted data. ``yerr`` is ``0`` where a point has no error bar. Only
    finite numbers are accepted.
    """

    columns = ("panel", "series", "x", "y", "yerr")

    def __init__(self):
        self._rows: list[tuple[str, str, float, float, float]] = []
        self._order: dict[str, list[str]] = {}

    def add(self, panel: str, series: str, x, y, yerr=None) -> None:
        x = np.atleast_1d(np.asarray(x, dtype=np.float64))
        y = np.atleast_1d(np.asarray(y, dtype=np.float64))
        e = np.zeros_like(y) if yerr is None else np.atleast_1d(np.asarray(yerr, dtype=np.float64))
        x, y, e = np.broadcast_arrays(x, y, e)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.isfinite(e))):
            raise ValueError(f"non-finite value in {panel}/{series}")
        self._order.setdefault(panel, [])
        if series not in self._order[panel]:
            self._order[panel].append(series)
        self._rows.extend((panel, series, float(a), float(b), float(c)) for a, b, c in zip(x, y, e, strict=False))

    def get(self, panel: str, series: str):
        """``(x, y, yerr)`` arrays of one series, in insertion order."""
        rows = [r for r in self._rows if r[0] == panel and r[1] == series]
        if not rows:
            raise KeyError(f"{panel}/{series}")
        a = np.array([r[2:] for r in rows])
        return a[:, 0], a[:, 1], a[:, 2]

    def series(self, panel: str) -> list[str]:
        return list(self._order.get(panel, []))

    def __len__(self) -> int:
        return len(self._rows)

    def write_csv(self, path) -> None:
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(self.columns)
            for panel, series, x, y, e in self._rows:
                w.writerow([panel, series, repr(x), repr(y), repr(e)])


class Result(NamedTuple):
    """What an experiment's ``compute`` returns.

    Attributes:
      name: the experiment name.
      table: the plotted data.
      params: every parameter of the run (models, grids, sample sizes).
      summary: derived numbers worth recording (fitted slopes, gaps, errors).
    """

    name: str
    table: Table
    params: dict[str, Any]
    summary: dict[str, Any]


def to_jsonable(x):
    """Convert numpy/JAX scalars and arrays inside dicts/lists to plain Python."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return to_jsonable(x.tolist())
    if isinstance(x, float) and not np.isfinite(x):
        return repr(x)
    return x


def new_figure(ncols: int = 2, nrows: int = 1, width: float = 5.2, height: float = 4.2):
    """A matplotlib Figure (no pyplot global state) and its axes array."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


# Log-axis tick labels as plain Unicode: "10⁻³", "2⁵", "3×10⁻²" (what matplotlib's log formatters
# write as mathtext, e.g. $\mathdefault{10^{-3}}$). The text is the same; drawing it needs no mathtext
# parse, one per tick label and resolution, which took about a sixth of the CPU time of plotting and
# saving the figures of `reproduce --quick` (2.6 s of 16.5 s in one process).
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_LOG_LABEL = re.compile(r"\$\\mathdefault\{(-?)(?:([0-9.]+)\\times)?([0-9.]+|e)\^\{(-?[0-9]+)\}\}\$")


def plain_tick_label(label: str) -> str:
    r"""A log formatter's mathtext label in plain Unicode (any other label unchanged).

    >>> plain_tick_label(r"$\mathdefault{10^{-3}}$"), plain_tick_label(r"$\mathdefault{3\times10^{2}}$")
    ('10⁻³', '3×10²')
    """
    m = _LOG_LABEL.fullmatch(label)
    if m is None:
        return label
    sign, coef, base, exp = m.groups()
    return ("−" if sign else "") + (f"{coef}×" if coef else "") + base + exp.translate(_SUPERSCRIPT)


class _PlainLogFormatter(Formatter):
    """Wraps a log formatter (its choice of labelled ticks kept) and writes its labels in plain Unicode."""

    def __init__(self, inner: Formatter):
        self.inner = inner

    def set_axis(self, axis):
        super().set_axis(axis)
        self.inner.set_axis(axis)

    def set_locs(self, locs):
        super().set_locs(locs)
        self.inner.set_locs(locs)

    def __call__(self, x, pos=None):
        return plain_tick_label(self.inner(x, pos))


def plain_log_ticks(fig):
    """Give every log axis of ``fig`` plain-Unicode tick labels (:func:`plain_tick_label`); returns ``fig``.

    Called at the end of each experiment's ``plot``, after the scales are set
    (``set_xscale`` installs new formatters)."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if isinstance(axis.get_major_formatter(), LogFormatterMathtext):
                axis.set_major_formatter(_PlainLogFormatter(axis.get_major_formatter()))
            if isinstance(axis.get_minor_formatter(), LogFormatterMathtext):
                axis.set_minor_formatter(_PlainLogFormatter(axis.get_minor_formatter()))
    return fig


_TEX = [
    ("φ_{1/β}", r"$\varphi_{1/\beta}$"),
    ("φ_λ*^n", r"$\varphi_{\lambda^*}^{\otimes n}$"),
    ("φ_λ*", r"$\varphi_{\lambda^*}$"),
    ("φ_λ^n", r"$\varphi_{\lambda}^{\otimes n}$"),
    ("φ_λ", r"$\varphi_\lambda$"),
    ("π_N", r"$\pi_N$"),
    ("p^n", r"$p^{\otimes n}$"),
    ("I_λ", r"$I_\lambda$"),
    ("ψ_λ", r"$\psi_\lambda$"),
    ("H_{1+t}", r"$H_{1+t}$"),
    ("q_r", r"$q_r$"),
    ("λ*", r"$\lambda^*$"),
    ("R_n", r"$R_n$"),
]


def tex(s: str) -> str:
    """Render the plain-text names used in the data table with mathtext."""
    for a, b in _TEX:
        s = s.replace(a, b)
    return s


# ---------------------------------------------------------------------------
# exact laws, memoised (experiments share models)
# ---------------------------------------------------------------------------

_LAWS: dict = {}


def reward_law(p, r, n: int):
    """``asymalign.reward_law`` memoised per process (experiments share models)."""
    import asymalign as aa

    key = (tuple(np.asarray(p, float).tolist()), tuple(np.asarray(r, float).tolist()), int(n))
    if key not in _LAWS:
        _LAWS[key] = aa.reward_law(p, r, n)
    return _LAWS[key]


def pad_model(p, r, size: int = 128):
    """``(p, r)`` padded with zero-probability letters to ``size`` (at least its length, a power of two).

    Letters outside ``supp p`` change no tilt, KL budget or optimum, so every
    model of a figure padded to one size shares one compiled solver (one
    compilation per alphabet size otherwise).
    """
    p, r = np.asarray(p, np.float64), np.asarray(r, np.float64)
    size = max(size, 1 << max(p.size - 1, 0).bit_length())
    fill = size - p.size
    return np.concatenate([p, np.zeros(fill)]), np.concatenate([r, np.full(fill, r[0])])
