"""Experiments reproducing every figure of the study (run with ``asymalign reproduce``).

Each module ``experiments/<name>.py`` defines

* ``compute(key, *, quick=False) -> Result`` — the numbers, from the public
  ``asymalign`` API only;
* ``plot(result) -> matplotlib.figure.Figure`` — the figure, drawn only from
  ``result.table`` (so the CSV written next to the figure is exactly the
  plotted data).

``EXPERIMENTS`` maps each name to a one-line description, in run order; it
lives in the package (``asymalign/_registry.py``) so that ``asymalign list``
works without this folder. This folder is not part of an installed wheel:
``asymalign reproduce`` imports it through the ordinary import system from a
source checkout (see :func:`asymalign.cli.find_experiments`).
"""

from __future__ import annotations

import importlib

from ._common import Result, Table

__all__ = ["EXPERIMENTS", "Result", "Table", "load"]

from asymalign._registry import EXPERIMENTS  # noqa: E402  (names and descriptions live in the package)


def load(name: str):
    """Import and return the module ``experiments.<name>``."""
    if name not in EXPERIMENTS:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")
