"""The built-in sweep quantities of memoryless references (THEORY.md §2, §3, §5, §6).

Each is a per-unit function ``fn(unit) -> (D, X)``-broadcastable array,
registered with :func:`asymalign.sweep.register_quantity` in the order of the
result columns. The best-of-N numbers come from the library's one per-token
best-of-N computation on the unit's exact law, shared by
every ``bon_*`` quantity of the unit: :func:`asymalign.bon_vs_klrl_on_law`.
"""

from __future__ import annotations

from .quantities import PADDED_SAFE, SweepUnit, register_quantity


def _klrl_reward(u: SweepUnit):
    import asymalign as aa

    return u.cached("klrl_reward", lambda: aa.tilt_reward(*u.batched(u.delta.shape[0]), u.lam))


def _bon(u: SweepUnit):
    import asymalign as aa

    return u.cached("bon", lambda: aa.bon_vs_klrl_on_law(u.law, u.delta, u.lam, _klrl_reward(u)))


def lambda_star(u: SweepUnit):
    return u.per_delta(u.lam)


def delta_max(u: SweepUnit):
    import asymalign as aa

    return aa.max_kl(u.p, u.r)


def klrl_reward(u: SweepUnit):
    return u.per_delta(_klrl_reward(u))


def kl_rate(u: SweepUnit):
    import asymalign as aa

    return u.per_delta(aa.tilt_kl(*u.batched(u.delta.shape[0]), u.lam))


def bon_reward(u: SweepUnit):
    return u.per_delta(_bon(u).bon_reward)


def bon_kl(u: SweepUnit):
    return u.per_delta(_bon(u).bon_kl)


def bon_kl_to_tilt(u: SweepUnit):
    return u.per_delta(_bon(u).bon_kl_to_tilt)


def bon_kl_bound(u: SweepUnit):
    import asymalign as aa

    return u.per_delta(aa.bon_kl_bound(u.n * u.delta) / u.n)


def bon_win_rate(u: SweepUnit):
    return u.per_delta(_bon(u).win_rate)


def rate_function(u: SweepUnit):
    import asymalign as aa

    return u.per_x(aa.rate_function(*u.batched(u.x.shape[0]), u.x))


_D, _DN = ("delta",), ("delta", "n")
for _name, _fn, _axes, _desc, _law in (
    ("lambda_star", lambda_star, _D, "λ* with KL(φ_λ*||p) = Δ (THEORY §3; inf for Δ >= Δ_max)", False),
    ("delta_max", delta_max, (), "Δ_max = -log p(A), A = argmax r (THEORY §2)", False),
    ("klrl_reward", klrl_reward, _D, "KL-RL reward per token Λ'(λ*) (THEORY §3)", False),
    ("kl_rate", kl_rate, _D, "KL per token of the KL-RL policy, KL(φ_λ*||p) = min(Δ, Δ_max) (THEORY §3, §14)", False),
    # memoryless: the tilt is exact for every n, so the finite-n KL-RL reward is Λ'(λ*)
    ("klrl_reward_n", klrl_reward, _DN, "exact finite-n KL-RL reward per token, budget nΔ (THEORY §3, §14)", False),
    ("bon_reward", bon_reward, _DN, "exact best-of-N reward per token E_πN[r_n]/n at log N = nΔ (THEORY §6)", True),
    ("bon_kl", bon_kl, _DN, "KL(π_N || p^n)/n at log N = nΔ (THEORY §6)", True),
    ("bon_kl_to_tilt", bon_kl_to_tilt, _DN, "KL(π_N || φ_λ*^n)/n at log N = nΔ (THEORY §6)", True),
    ("bon_kl_bound", bon_kl_bound, _DN, "(log N - (N-1)/N)/n at log N = nΔ, the quoted bound (THEORY §6)", False),
    ("bon_win_rate", bon_win_rate, _DN, "best-of-N win rate against p^n at log N = nΔ (THEORY §6)", True),
    ("rate_function", rate_function, ("x",), "Cramér rate I_0(x) of r_n/n under p^n (THEORY §5)", False),
):
    register_quantity(_name, _fn, axes=_axes, description=_desc, reference_kinds=("iid",), exact_law=_law)
    # solve_lambda, tilt_reward, tilt_kl, max_kl and rate_function work on the
    # support of p (zeros allowed, THEORY.md §2); the best-of-N kernel takes n
    # traced and a padded law; bon_kl_bound is elementwise in n.
    PADDED_SAFE.add(_fn)
