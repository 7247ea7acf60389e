"""Sweep quantities of Markov references (THEORY.md §14), registered lazily.

Listed in :data:`asymalign.sweep.quantities.PLUGIN_MODULES`: imported when a
config is validated, and :mod:`asymalign.markov` only when a Markov unit is
evaluated. Where the concept is the memoryless one the name is the same:

* ``lambda_star`` — ``λ*`` with KL rate ``K(λ*) = λΛ'(λ) − Λ(λ) = Δ``
  (:func:`asymalign.markov.solve_lambda`; ``inf`` for ``Δ >= Δ_max``);
* ``delta_max`` — the largest KL rate ``lim_{λ→∞} K(λ)``;
* ``klrl_reward`` — the limiting KL-RL reward per token ``Λ'(λ*)``, the
  stationary mean reward of the Doob transform (``Λ'(+∞)``, the largest cycle
  mean, when ``λ* = inf``);
* ``kl_rate`` — ``K(λ*)`` (:func:`asymalign.markov.kl_rate`; ``Δ`` below
  ``Δ_max``, a check of the solver);
* ``klrl_reward_n`` — the exact finite-``n`` KL-RL reward per token with
  budget ``nΔ`` (:func:`asymalign.markov.kl_rl`);
* ``bon_reward``, ``bon_kl``, ``bon_kl_to_tilt``, ``bon_win_rate``,
  ``bon_kl_bound`` — exact best-of-N at ``log N = nΔ`` on the exact law of
  ``R_n`` (:func:`asymalign.markov.reward_law`, built on the host once per
  unit and padded to a power-of-two bucket), through the same
  :func:`asymalign.bon_vs_klrl_on_law` as memoryless references; the tilt of
  ``bon_kl_to_tilt`` is the level law tilted by ``e^{λ* s}``, the level law of
  the path tilt ``q_{λ*}``;
* ``rate_function`` — the Gärtner–Ellis rate ``I_0(x)`` of ``R_n/n``
  (:func:`asymalign.markov.rate_function`).
"""

from __future__ import annotations

from . import _builtin as B
from .quantities import SweepUnit, register_quantity


def _vmap(fn, xs):
    import jax

    return jax.vmap(fn)(xs)


def _far(u: SweepUnit):
    from asymalign.markov._solve import far_tilt

    return far_tilt(u.r, u.r.dtype)


def _finite(u: SweepUnit, lam):
    """``λ`` with ``inf`` replaced by a tilt at which every rate has reached its limit."""
    import jax.numpy as jnp

    return jnp.where(jnp.isinf(lam), _far(u), lam)


def m_lambda_star(u: SweepUnit):
    return u.per_delta(u.lam)


def m_delta_max(u: SweepUnit):
    from asymalign import markov

    return markov.kl_rate(u.chain, u.r, _far(u))


def _m_klrl_reward(u: SweepUnit):
    from asymalign import markov

    def make():
        return _vmap(lambda lam: markov.scaled_cumulants(u.chain, u.r, 1, lam)[0], _finite(u, u.lam))

    return u.cached("klrl_reward", make)


def m_klrl_reward(u: SweepUnit):
    return u.per_delta(_m_klrl_reward(u))


def m_kl_rate(u: SweepUnit):
    from asymalign import markov

    return u.per_delta(_vmap(lambda lam: markov.kl_rate(u.chain, u.r, lam), _finite(u, u.lam)))


def m_klrl_reward_n(u: SweepUnit):
    from asymalign import markov

    return u.per_delta(_vmap(lambda d: markov.kl_rl(u.chain, u.r, u.n, d).reward, u.delta))


def _m_bon(u: SweepUnit):
    import asymalign as aa

    return u.cached("bon", lambda: aa.bon_vs_klrl_on_law(u.law, u.delta, u.lam, _m_klrl_reward(u)))


def m_bon_reward(u: SweepUnit):
    return u.per_delta(_m_bon(u).bon_reward)


def m_bon_kl(u: SweepUnit):
    return u.per_delta(_m_bon(u).bon_kl)


def m_bon_kl_to_tilt(u: SweepUnit):
    return u.per_delta(_m_bon(u).bon_kl_to_tilt)


def m_bon_win_rate(u: SweepUnit):
    return u.per_delta(_m_bon(u).win_rate)


def m_rate_function(u: SweepUnit):
    from asymalign import markov

    return u.per_x(_vmap(lambda x: markov.rate_function(u.chain, u.r, x), u.x))


_M = ("markov",)
_D, _DN = ("delta",), ("delta", "n")
for _name, _fn, _axes, _law in (
    ("lambda_star", m_lambda_star, _D, False),
    ("delta_max", m_delta_max, (), False),
    ("klrl_reward", m_klrl_reward, _D, False),
    ("bon_reward", m_bon_reward, _DN, True),
    ("bon_kl", m_bon_kl, _DN, True),
    ("bon_kl_to_tilt", m_bon_kl_to_tilt, _DN, True),
    ("bon_kl_bound", B.bon_kl_bound, _DN, False),
    ("bon_win_rate", m_bon_win_rate, _DN, True),
    ("rate_function", m_rate_function, ("x",), False),
):
    register_quantity(_name, _fn, axes=_axes, reference_kinds=_M, exact_law=_law)
register_quantity("kl_rate", m_kl_rate, axes=_D, reference_kinds=_M)
register_quantity("klrl_reward_n", m_klrl_reward_n, axes=_DN, reference_kinds=_M)
