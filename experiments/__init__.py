"""Experiments reproducing every figure of the study (run with ``asymalign reproduce``).

Each module ``experiments/<name>.py`` defines

* ``compute(key, *, quick=False) -> Result`` — the numbers, from the public
  ``asymalign`` API only;
* ``plot(result) -> matplotlib.figure.Figure`` — the figure, drawn only from
  ``result.table`` (so the CSV written next to the figure is exactly the
  plotted data).

``EXPERIMENTS`` maps each name to a one-line description, in run order.
"""

from __future__ import annotations

import importlib

from ._common import Result, Table

__all__ = ["EXPERIMENTS", "Result", "Table", "load"]

EXPERIMENTS: dict[str, str] = {
    "frontier": "reward vs KL per token: exact best-of-N at N = e^{nΔ} converging onto the KL-RL curve",
    "bon_vs_rl_kl": "KL(π_N || φ_λ*^n)/n -> 0 against n (exact and Monte Carlo); the total KL grows like ½ log n",
    "ldp": "exact finite-n tail exponents -(1/n) log P(R_n >= x) converging to the rate function I_λ",
    "cumulants": "scaled CGF = Rényi cross-entropy form; scaled cumulants (autodiff) vs simulated cumulants",
    "bon_kl_bound": "exact KL(π_N || p^n) against the bound log N - (N-1)/N, with and without ties, N up to 1e6",
    "near_optimal": "KL(q || φ_λ) <= λ·(reward gap) within the KL budget, and the exact identity (THEORY §4)",
    "optimize": "optax policy optimisation (exact, REINFORCE, Lagrangian) converging to the closed-form tilts",
}


def load(name: str):
    """Import and return the module ``experiments.<name>``."""
    if name not in EXPERIMENTS:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")
