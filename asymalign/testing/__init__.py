r"""Tools for checking theorems against exact numbers: hypothesis strategies and float64 references.

``asymalign.testing`` is public: the package's own tests use it, and a
researcher stating a new inequality about KL-constrained RL or best-of-N can
draw the same adversarial inputs (see ``docs/testing.md``):

* strategies (:mod:`asymalign.testing.strategies`): :func:`probs`,
  :func:`rewards`, :func:`lattice_rewards`, :func:`models`,
  :func:`normal_models`, :func:`wide_rewards`, :func:`alphas`,
  :func:`abs_continuous`, :func:`budgets`, :func:`model_budgets`,
  :func:`reward_laws`;
* float64 NumPy/SciPy reference twins (:mod:`asymalign.testing.reference`,
  SciPy imported lazily).

Requires ``hypothesis``.
"""

from .strategies import (
    SIZES,
    abs_continuous,
    alphas,
    budgets,
    lattice_rewards,
    markov_chains,
    model_budgets,
    models,
    normal_models,
    probs,
    reward_laws,
    rewards,
    wide_rewards,
)

__all__ = [
    "SIZES",
    "abs_continuous",
    "alphas",
    "budgets",
    "lattice_rewards",
    "markov_chains",
    "model_budgets",
    "models",
    "normal_models",
    "probs",
    "reward_laws",
    "rewards",
    "wide_rewards",
]
