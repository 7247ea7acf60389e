"""Input validation at the public API boundary.

Checks run only on *concrete* values (NumPy arrays, Python numbers, or JAX
arrays outside a trace). Under ``jax.jit``/``vmap`` the arguments are tracers
and the checks are skipped: the numerical functions then return whatever the
formula gives (documented per function), never raising from inside a trace.
"""

from __future__ import annotations

import numpy as np
from jax import core as _jax_core

PROB_SUM_TOL = 1e-6


def is_concrete(*xs) -> bool:
    """True when none of ``xs`` is a JAX tracer (so values can be inspected)."""
    return not any(isinstance(x, _jax_core.Tracer) for x in xs)


def _host(x) -> np.ndarray:
    return np.asarray(x)


def check_prob(p, name: str = "p") -> None:
    """Probability vector(s) along the last axis: finite, >= 0, summing to 1."""
    if not is_concrete(p):
        return
    a = _host(p)
    if a.ndim == 0:
        raise ValueError(f"{name} must be a probability vector (last axis = alphabet), got a scalar")
    if a.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one entry")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    if np.any(np.isnan(a)):
        raise ValueError(f"{name} contains NaN; probabilities must be finite and >= 0")
    if np.any(a < 0) or np.any(~np.isfinite(a)):
        raise ValueError(f"{name} has negative or infinite entries; probabilities must be >= 0")
    s = a.sum(axis=-1)
    if np.any(np.abs(s - 1.0) > PROB_SUM_TOL):
        worst = float(np.max(np.abs(s - 1.0)))
        raise ValueError(f"{name} must sum to 1 along the last axis (within {PROB_SUM_TOL:g}); off by {worst:.3g}")


def check_reward(r, p=None, name: str = "r", p_name: str = "p") -> None:
    """Finite reward vector(s) whose last axis matches ``p``'s."""
    if not is_concrete(r):
        return
    a = _host(r)
    if a.ndim == 0:
        raise ValueError(f"{name} must be a reward vector (last axis = alphabet), got a scalar")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    if p is not None:
        pshape = np.shape(p)
        if len(pshape) and pshape[-1] != a.shape[-1]:
            raise ValueError(
                f"{name} has length {a.shape[-1]} along the last axis but {p_name} has {pshape[-1]}; they must match"
            )


def check_model(p, r, p_name: str = "p", r_name: str = "r") -> None:
    check_prob(p, p_name)
    check_reward(r, p, r_name, p_name)


def check_nonneg(x, name: str, allow_inf: bool = True) -> None:
    """Real number(s) >= 0 (``+inf`` allowed unless ``allow_inf`` is False)."""
    if not is_concrete(x):
        return
    a = _host(x)
    if np.any(np.isnan(a)):
        raise ValueError(f"{name} must not be NaN")
    if np.any(a < 0):
        raise ValueError(f"{name} must be >= 0, got {a.min()!r}")
    if not allow_inf and np.any(np.isinf(a)):
        raise ValueError(f"{name} must be finite")


def check_real(x, name: str, allow_inf: bool = False) -> None:
    """Real number(s), not NaN (and finite unless ``allow_inf``)."""
    if not is_concrete(x):
        return
    a = _host(x)
    if np.any(np.isnan(a)):
        raise ValueError(f"{name} must not be NaN")
    if not allow_inf and np.any(np.isinf(a)):
        raise ValueError(f"{name} must be finite")


def check_positive_int(x, name: str, minimum: int = 1) -> int:
    """A Python/NumPy integer >= ``minimum``; returns it as ``int``."""
    if isinstance(x, bool) or not isinstance(x, int | np.integer):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {x!r}")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    return int(x)


def check_law(law, p=None, r=None, n=None, name: str = "law") -> None:
    """``law`` is a ``RewardLaw`` built for the model ``(p, r)`` (same push-forward) and length ``n``.

    Each of ``p``/``r`` and ``n`` is checked only when given; the model only
    when ``p`` and ``r`` are concrete and the law carries a fingerprint.
    """
    from .sequence_laws import RewardLaw, model_fingerprint  # deferred: sequence_laws imports this module

    if not isinstance(law, RewardLaw):
        raise ValueError(f"{name} must be a RewardLaw (from asymalign.reward_law), got {type(law).__name__}")
    if n is not None and law.n != n:
        raise ValueError(f"{name} was built for n = {law.n}, not n = {n}")
    if p is not None and r is not None and law.fingerprint is not None and is_concrete(p, r):
        if model_fingerprint(p, r) != law.fingerprint:
            raise ValueError(f"{name} was built from another model (p, r); rebuild it with reward_law(p, r, n)")
