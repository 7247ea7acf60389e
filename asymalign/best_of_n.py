r"""Exact best-of-N and worst-of-N for astronomically large N (THEORY.md §6).

Everything takes ``log N`` (``0 <= log N``, up to ``1e6`` and beyond) and a
:class:`~asymalign.RewardLaw` ``P_n`` over sorted levels ``s`` with
``F(s) = P(r_n <= s)``, ``F(s-) = P(r_n < s)``, ``S(s) = 1 - F(s)``:

.. math::

    B_N(s) = F(s)^N - F(s-)^N, \qquad
    W_N(s) = (1 - F(s-))^N - (1 - F(s))^N .

Numerics (THEORY.md §6, "Numerics of best-of-N"): ``log S`` is accumulated
from the top level down (reversed log-cumulative-sum) and ``log F`` from the
bottom up, each used where it is accurate; ``N log F(s) = -exp(log N +
log(-log F(s)))`` with ``-log F = -log1p(-S)`` in the upper tail; and
``B_N(s) = e^{A(s)} (1 - e^{-N D(s)})`` with ``D(s) = log F(s) - log F(s-) =
log1p(P(s)/F(s-))`` computed directly, never as a difference of two huge
numbers. Accumulating ``F`` from the bottom alone loses the upper tail once
``S < 1e-16``, exactly where best-of-N lives.

These are the private kernels behind :func:`~asymalign.best_of_n` and the
other level-law maps of :mod:`asymalign.levels` (THEORY.md §10–§12), and the
one per-token best-of-N computation :func:`bon_vs_klrl_on_law` used by
:func:`bon_vs_klrl`, the sweeps and the experiments. All kernels are pure,
jittable and vmap-able (over stacked laws and over ``log N``). Equal levels in
a law (as produced by :func:`~asymalign.law_from_types`) are treated as one
level.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.typing
import numpy as np

from . import _numerics as nx
from ._buckets import device_array
from ._jit import SMALL_ELEMENTS_HEAVY, jit
from ._level_kernels import _bon_from_tails, _broadcast, _level_kl, _pad, _pad_host, _tails, _tilted, _win_from_tails
from ._validate import check_model, check_nonneg, check_positive_int, check_real, is_concrete
from ._window_law import _window_law
from .sequence_laws import RewardLaw, _fingerprint, pushforward, reward_law
from .tilting import _moments, _prep, _solve_lambda_b

__all__ = [
    "bon_kl_bound",
    "BoNvsKLRL",
    "bon_vs_klrl",
    "bon_vs_klrl_on_law",
]

# A window law is used only if its lump carries best-of-N mass <= e^-34.5 ≈ 1e-15.
_LUMP_BOUND = 34.5


def bon_kl_bound(log_num_samples: jax.typing.ArrayLike) -> jax.Array:
    r"""The widely quoted ``log N - (N-1)/N`` (an upper bound on ``KL(π_N||p^n)``, THEORY.md §6).

    Equality holds only in the limit of no ties (Beirami et al. 2024,
    "Theoretical guarantees on the best-of-n alignment policy").

    Args:
      log_num_samples: ``log N >= 0``.

    Returns:
      ``log N - (N-1)/N``.

    >>> import asymalign as aa
    >>> round(float(aa.bon_kl_bound(0.0)), 12)
    0.0
    """
    check_real(log_num_samples, "log_num_samples")
    check_nonneg(log_num_samples, "log_num_samples")
    return _bon_kl_bound(device_array(log_num_samples, nx.float_dtype(log_num_samples)))


@jit
def _bon_kl_bound(log_n):
    return log_n + jnp.expm1(-log_n)


class BoNvsKLRL(NamedTuple):
    """Best-of-N at ``log N = nΔ`` against the KL-RL tilt ``φ_{λ*}`` (THEORY.md §6).

    All rewards and KLs are per token (divided by ``n``).

    Attributes:
      lam: ``λ*`` with ``KL(φ_{λ*}||p) = Δ``.
      rl_reward: ``Λ'(λ*)``, the KL-RL reward per token.
      bon_reward: ``E_{π_N}[r_n] / n``.
      bon_kl: ``KL(π_N || p^n) / n``.
      bon_kl_to_tilt: ``KL(π_N || φ_{λ*}^n) / n``.
      win_rate: best-of-N win rate against ``p^n``.
    """

    lam: jax.Array
    rl_reward: jax.Array
    bon_reward: jax.Array
    bon_kl: jax.Array
    bon_kl_to_tilt: jax.Array
    win_rate: jax.Array


@functools.partial(jit, small_elements=SMALL_ELEMENTS_HEAVY)
def _bon_vs_klrl_kernel(levels, log_prob, n, delta, lam, rl_reward, lumped):
    """Jitted core of :func:`bon_vs_klrl_on_law`; ``n`` is a traced number, so one
    compilation serves every ``n`` whose law falls in the same length bucket.
    ``lumped``: the first entry is a window law's lump (see :func:`_tilted`).

    The law's rows and the scalars may have batch shapes of different rank: each gets
    leading unit axes (free under jit), so that the vectorisation broadcasts them without
    rank promotion and a law shared by a batch of Δ is neither copied nor its tails
    computed again for each Δ (a full law of 7e5 levels and 32 Δ: 0.7 s instead of 2.2 s)."""
    scalars = (n, delta, lam, rl_reward, lumped)
    rank = max(levels.ndim - 1, log_prob.ndim - 1, *(x.ndim for x in scalars))

    def lead(x, core):
        return x.reshape((1,) * (rank + core - x.ndim) + x.shape)

    return _bon_vs_klrl_one(lead(levels, 1), lead(log_prob, 1), *(lead(x, 0) for x in scalars))


@functools.partial(jnp.vectorize, signature="(l),(l),(),(),(),(),()->(),(),(),(),(),()")
def _bon_vs_klrl_one(levels, log_prob, n, delta, lam, rl_reward, lumped):
    """:func:`_bon_vs_klrl_kernel` of one law at one Δ."""
    log_n = n * delta
    t = _tails(levels, log_prob)
    log_b = _bon_from_tails(t, log_prob, log_n)
    reward = jnp.sum(jnp.exp(log_b) * levels, axis=-1) / n
    kl_ref = _level_kl(log_b, log_prob) / n
    kl_tilt = _level_kl(log_b, _tilted(levels, log_prob, lam, lumped)) / n
    win = _win_from_tails(t, log_b)
    return lam, rl_reward, reward, kl_ref, kl_tilt, win


def bon_vs_klrl_on_law(
    law: RewardLaw,
    delta: jax.typing.ArrayLike,
    lam: jax.typing.ArrayLike,
    rl_reward: jax.typing.ArrayLike,
    *,
    lumped: bool = False,
) -> BoNvsKLRL:
    r"""Per-token exact best-of-N at ``log N = nΔ`` on a given law, next to the tilt ``φ_λ``.

    The one best-of-N computation behind :func:`bon_vs_klrl`, the sweeps and
    the experiments (THEORY.md §6, §10): with ``B_N`` the best-of-N level law
    (:func:`~asymalign.best_of_n`),

    .. math:: \text{bon\_reward} = \tfrac1n \sum_s B_N(s)\, s, \quad
              \text{bon\_kl} = \tfrac1n KL(B_N \| P_n), \quad
              \text{bon\_kl\_to\_tilt} = \tfrac1n KL(B_N \| φ_λ^n),

    and the win rate ``Σ_s B_N(s)[F(s-) + P_n(s)/2]``. The law is padded to its
    length bucket, so the jitted kernel compiles once per bucket for every
    ``n`` (``n`` is traced). Batches over ``delta``, ``lam``, ``rl_reward`` and
    stacked laws by broadcasting. ``lam`` and ``rl_reward`` are passed through
    (usually ``solve_lambda(p, r, delta)`` and ``kl_rl(p, r, delta).reward``).

    Args:
      law: a :class:`~asymalign.RewardLaw` of ``r_n`` (a full law, or a window
        law whose first entry is a lump when ``lumped``).
      delta: per-token budget ``Δ >= 0``; ``log N = nΔ``.
      lam: the tilt ``λ`` compared with (``±inf`` allowed).
      rl_reward: the KL-RL reward per token, returned as is.
      lumped: the first entry of ``law`` lumps all the mass below a window.

    Returns:
      :class:`BoNvsKLRL`.

    >>> import asymalign as aa
    >>> law = aa.reward_law([0.5, 0.5], [0.0, 1.0], 1)
    >>> res = aa.bon_vs_klrl_on_law(law, jnp.log(2.0), 1.0, 0.5)  # best of 2
    >>> round(float(res.bon_reward), 12), round(float(res.win_rate), 12)
    (0.75, 0.625)
    """
    if not isinstance(law, RewardLaw):
        raise ValueError(f"law must be a RewardLaw (from asymalign.reward_law), got {type(law).__name__}")
    check_real(delta, "delta", allow_inf=True)
    check_nonneg(delta, "delta")
    check_real(lam, "lam", allow_inf=True)
    dt = law.log_prob.dtype
    n = device_array(law.n, dt)
    if isinstance(law.levels, np.ndarray) and isinstance(law.log_prob, np.ndarray):
        levels, log_prob = _pad_host(law.levels, law.log_prob)
    else:
        levels, log_prob = _pad(law.levels, law.log_prob)
    args = (device_array(delta, dt), device_array(lam, dt), device_array(rl_reward, dt))
    # The law keeps its own batch shape (see _bon_vs_klrl_kernel): not copied for each Δ.
    (levels, log_prob), _ = _broadcast((levels, log_prob))
    _, (n, *args, lumped) = _broadcast((), (n, *args, device_array(lumped)))
    return BoNvsKLRL(*_bon_vs_klrl_kernel(levels, log_prob, n, *args, lumped))


@jit
def _klrl_part(p, r, delta):
    lam = _solve_lambda_b(p, r, delta)
    return lam, _moments(p, r, lam)[0]


def _bon_window(values, weights, n: int, delta, lam):
    """The window law (:func:`~asymalign._window_law._window_law`, in host
    arrays) covering every ``λ*(Δ)`` of the batch ``delta``, or ``None`` when
    it does not apply or its lumped level would carry best-of-N mass
    ``F(lump)^N > 1e-15`` (checked for the smallest ``N``; ``F(lump) = 1 -
    P(window)`` is itself only known to rounding, so no smaller bound can be
    checked). ``values, weights``: the push-forward of the model."""
    delta = np.asarray(delta, np.float64)
    if delta.size == 0 or not np.all(np.isfinite(delta)):
        return None
    lam = np.asarray(lam)
    if not np.all(np.isfinite(lam)):
        return None
    found = _window_law(values, weights, n, float(lam.min()), float(lam.max()))
    if found is None:
        return None
    law, lumped = found
    if lumped:
        # B_N(lump) = F(lump)^N with -log F(lump) = -log1p(-S), S the mass above the lump.
        log_s = min(float(np.logaddexp.reduce(law.log_prob[1:])), 0.0)
        if log_s < -30.0:
            log_neg_log_f = log_s
        else:
            log_neg_log_f = math.log(-math.log1p(-math.exp(log_s))) if log_s < 0.0 else math.inf
        if log_neg_log_f + n * float(delta.min()) < math.log(_LUMP_BOUND):
            return None
    return law, lumped


def bon_vs_klrl(
    p: jax.typing.ArrayLike,
    r: jax.typing.ArrayLike,
    n: int,
    delta: jax.typing.ArrayLike,
    *,
    law: RewardLaw | None = None,
) -> BoNvsKLRL:
    r"""Exact best-of-N with ``N = e^{nΔ}`` next to the KL-RL solution with budget Δ.

    THEORY.md §6 (asymptotic equivalence): as ``n -> inf`` with
    ``0 < Δ < Δ_max``, ``bon_reward -> Λ'(λ*)``, ``bon_kl -> Δ`` and
    ``bon_kl_to_tilt -> 0``. ``law`` (from :func:`reward_law` with the same
    ``p, r, n``) is built if not given; passing it makes the call jittable in
    ``delta`` (and in ``p``, ``r`` for jittable laws).

    One road: validate, push ``p`` forward through ``r`` once (concrete
    inputs), solve ``λ*`` once, build the law (window or full) once, then
    :func:`bon_vs_klrl_on_law`. Without ``law`` (and for two rewards or
    lattice rewards), only the levels where best-of-N can have mass are
    computed: those where the tilted laws ``φ_{λ*}^n`` of the batch of Δ
    leave out at most ``e^{-60}`` on either side (Chernoff), with all the
    mass below lumped into one level so that ``F`` and ``S`` stay exact there.
    Above the tilted mean ``B_N(s) <= N P_n(s) <= φ_{λ*}^n(s)``, so best-of-N
    loses at most ``e^{-60}`` above; the lump is used only if it carries
    best-of-N mass ``F^N <= 1e-15``, else the full law is built. This makes
    large ``n`` cheap (``O(√n log n)`` levels and work instead of ``O(n)``);
    the results agree with the full law to ~1e-12 relative.

    Args:
      p: reference probabilities, shape ``(k,)``.
      r: per-token rewards, shape ``(k,)``.
      n: sequence length.
      delta: per-token budget(s) ``Δ >= 0``.
      law: optional exact law of ``r_n`` for this model and ``n``.

    Returns:
      :class:`BoNvsKLRL` (per token).

    >>> import asymalign as aa
    >>> res = aa.bon_vs_klrl([0.7, 0.3], [0.0, 1.0], 256, 0.2)
    >>> abs(float(res.bon_reward - res.rl_reward)) < 0.02
    True
    """
    n = check_positive_int(n, "n")
    check_model(p, r)
    check_nonneg(delta, "delta")
    concrete = is_concrete(p, r, delta)
    pushed = pushforward(p, r) if is_concrete(p, r) else None
    if law is not None:
        if not isinstance(law, RewardLaw):
            raise ValueError(f"law must be a RewardLaw (from asymalign.reward_law), got {type(law).__name__}")
        if law.n != n:
            raise ValueError(f"law was built for n = {law.n}, not n = {n}")
        if pushed is not None and law.fingerprint is not None and _fingerprint(*pushed) != law.fingerprint:
            raise ValueError("law was built from another model (p, r); rebuild it with reward_law(p, r, n)")
    p, r, delta = _prep(p, r, delta)
    lam, rl_reward = _klrl_part(p, r, delta)
    lumped = False
    if law is None:
        window = _bon_window(*pushed, n, delta, lam) if concrete else None
        if window is not None:
            law, lumped = window
        else:
            # reward_law of the push-forward is the law of (p, r) (push-forward is idempotent).
            law = reward_law(pushed[1], pushed[0], n) if pushed is not None else reward_law(p, r, n)
        if law.log_prob.dtype != p.dtype:  # built on the host in float64: continue in the model's precision
            host = is_concrete(law.levels, law.log_prob)
            cast = (lambda x: device_array(np.asarray(x, p.dtype))) if host else (lambda x: jnp.asarray(x, p.dtype))
            law = RewardLaw(cast(law.levels), cast(law.log_prob), law.n, law.fingerprint)
    return bon_vs_klrl_on_law(law, delta, lam, rl_reward, lumped=lumped)
