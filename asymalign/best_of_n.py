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
from jax.scipy.special import logsumexp

from . import _numerics as nx
from ._buckets import device_array
from ._validate import check_model, check_nonneg, check_positive_int, check_real, is_concrete
from ._window_law import _window_law
from .sequence_laws import RewardLaw, _bucket, _fingerprint, pushforward, reward_law
from .tilting import _moments, _prep, _solve_lambda_b

__all__ = [
    "bon_kl_bound",
    "BoNvsKLRL",
    "bon_vs_klrl",
    "bon_vs_klrl_on_law",
]

_LOG_HALF = -0.6931471805599453
# A window law is used only if its lump carries best-of-N mass <= e^-34.5 ≈ 1e-15.
_LUMP_BOUND = 34.5


def _cum_logsumexp(x, reverse=False):
    """Inclusive cumulative log-sum-exp of a 1-D array, blockwise.

    Blocks of 256 are accumulated by a sequential ``logaddexp`` scan run
    across all blocks at once, then offset by the cumulative totals of the
    preceding blocks. Every combine is an exact ``logaddexp``, so relative
    accuracy is kept at every entry. ``lax.cumlogsumexp`` computes the same
    but is ~10x slower on 1e5 entries on CPU (jax 0.10), and a parallel-prefix
    ``associative_scan`` compiles several times slower.
    """
    if reverse:
        return _cum_logsumexp(x[::-1])[::-1]
    length = x.shape[0]
    block = min(length, 256)
    extra = (-length) % block
    ninf = jnp.asarray(-jnp.inf, x.dtype)
    xp = jnp.concatenate([x, jnp.full((extra,), ninf)]) if extra else x
    nb = xp.shape[0] // block

    def step(acc, row):
        acc = jnp.logaddexp(acc, row)
        return acc, acc

    _, local = jax.lax.scan(step, jnp.full((nb,), ninf), xp.reshape(nb, block).T)  # (block, nb)
    before = jnp.concatenate([ninf[None], jax.lax.cumlogsumexp(local[-1])[:-1]])
    return jnp.logaddexp(local, before[None, :]).T.reshape(-1)[:length]


def _log_softplus(z):
    """``log(log1p(e^z))`` without underflow for very negative ``z``."""
    small = z < -30.0
    zs = jnp.where(small, 0.0, z)
    return jnp.where(small, z, jnp.log(jax.nn.softplus(zs)))


def _log1mexp_neg_exp(y):
    """``log(1 - exp(-e^y))``; ``≈ y`` when ``e^y`` underflows (``N D(s)`` below
    ~1e-308, e.g. the top level when ``N P(top) ≪ 1``), where the direct form gives -inf."""
    small = y < -40.0
    big = y > 7.0  # 1 - exp(-e^7) = 1 to double precision; also keeps gradients finite at y = inf
    ys = jnp.where(small | big, 0.0, y)
    return jnp.where(small, y, jnp.where(big, 0.0, nx.log1mexp(-jnp.exp(ys))))


def _log_neg_log1m(log_s):
    """``log(-log(1 - S))`` from ``log S`` (for ``S <= 1/2``)."""
    small = log_s < -30.0
    ls = jnp.where(small, -1.0, log_s)
    return jnp.where(small, log_s, jnp.log(-jnp.log1p(-jnp.exp(ls))))


class _Tails(NamedTuple):
    log_f: jax.Array  # log F(s)
    log_f_prev: jax.Array  # log F(s-)
    log_s: jax.Array  # log S(s) = log P(r_n > s)
    log_pg: jax.Array  # log P(r_n = s) (whole tie group)
    log_neg_log_f: jax.Array  # log(-log F(s))


def _tails(levels, log_prob) -> _Tails:
    """Per-entry CDF pieces of a (single, 1-D) law, tie groups merged."""
    L = levels.shape[-1]
    ninf = jnp.full((1,), -jnp.inf, log_prob.dtype)
    lc = _cum_logsumexp(log_prob)  # log P(idx <= i)
    lr = _cum_logsumexp(log_prob, reverse=True)  # log P(idx >= i)
    lc_ext = jnp.concatenate([ninf, lc])  # lc_ext[i] = log P(idx < i)
    lr_ext = jnp.concatenate([lr, ninf])  # lr_ext[i] = log P(idx >= i)
    # Tie groups of the sorted levels: first index and one-past-last index.
    idx = jnp.arange(L)
    differs = levels[1:] != levels[:-1]
    first = jnp.concatenate([jnp.ones((1,), bool), differs])
    last = jnp.concatenate([differs, jnp.ones((1,), bool)])
    start = jax.lax.cummax(jnp.where(first, idx, 0))
    end = jax.lax.cummin(jnp.where(last, idx, L - 1), reverse=True) + 1
    log_f = lc_ext[end]
    log_f_prev = lc_ext[start]
    log_s = lr_ext[end]
    log_s_prev = lr_ext[start]
    upper = log_s < _LOG_HALF
    # Group probability, from whichever side keeps relative accuracy.
    # A zero-probability group at the top (bottom) has log_s_prev = log_s = -inf
    # (log_f = log_f_prev = -inf): its probability is 0, not -inf - (-inf) = NaN.
    d_up = jnp.where(log_s_prev > -jnp.inf, log_s - log_s_prev, -jnp.inf)
    d_lo = jnp.where(log_f > -jnp.inf, log_f_prev - log_f, -jnp.inf)
    g_up = log_s_prev + nx.log1mexp(jnp.minimum(d_up, 0.0))
    g_lo = log_f + nx.log1mexp(jnp.minimum(d_lo, 0.0))
    log_pg = jnp.where(end - start == 1, log_prob, jnp.where(upper, g_up, g_lo))
    lf_safe = jnp.where(upper, -1.0, jnp.minimum(log_f, -1e-300))
    lnlf = jnp.where(upper, _log_neg_log1m(jnp.where(upper, log_s, -1.0)), jnp.log(-lf_safe))
    # The top group has F = 1 exactly: -log F = 0.
    lnlf = jnp.where(end == L, -jnp.inf, lnlf)
    return _Tails(log_f, log_f_prev, log_s, log_pg, lnlf)


def _bon_log_law(levels, log_prob, log_n):
    return _bon_from_tails(_tails(levels, log_prob), log_prob, log_n)


def _bon_from_tails(t: _Tails, log_prob, log_n):
    a = -jnp.exp(log_n + t.log_neg_log_f)  # N log F(s)
    log_d = _log_softplus(t.log_pg - t.log_f_prev)  # log D(s), D = log F(s) - log F(s-)
    log_group = a + _log1mexp_neg_exp(log_n + log_d)
    share = jnp.where(t.log_pg > -jnp.inf, log_prob - jnp.where(t.log_pg > -jnp.inf, t.log_pg, 0.0), -jnp.inf)
    return jnp.where(log_prob > -jnp.inf, log_group + share, -jnp.inf)


def _bon_log_law_worst(levels, log_prob, log_n):
    """Worst-of-N: best-of-N of the mirrored law ``r -> -r`` (same log-space
    accuracy in the lower tail)."""
    return _bon_log_law(-levels[::-1], log_prob[::-1], log_n)[::-1]


def _pad(levels, log_prob, length=None):
    """Pad a law to ``length`` (default its bucket) with zero-probability copies of the top level.

    Equal levels are one level for every kernel here and ``-inf`` entries
    carry no mass, so padding changes no result; outputs are sliced back.
    """
    size = levels.shape[-1]
    extra = (_bucket(size) if length is None else length) - size
    if extra <= 0:
        return levels, log_prob
    if is_concrete(levels, log_prob):  # on the host: eager jnp ops would compile once per shape
        lv, lp = np.asarray(levels), np.asarray(log_prob)
        top = np.broadcast_to(lv[..., -1:], lv.shape[:-1] + (extra,))
        fill = np.full(lp.shape[:-1] + (extra,), -np.inf, lp.dtype)
        return device_array(np.concatenate([lv, top], axis=-1)), device_array(np.concatenate([lp, fill], axis=-1))
    top = jnp.broadcast_to(levels[..., -1:], levels.shape[:-1] + (extra,))
    fill = jnp.full(log_prob.shape[:-1] + (extra,), -jnp.inf, log_prob.dtype)
    return jnp.concatenate([levels, top], axis=-1), jnp.concatenate([log_prob, fill], axis=-1)


def _broadcast(rows, scalars=()):
    """Broadcast per-level arrays ``(..., L)`` and scalars ``(...)`` to one batch shape
    (explicitly, so vectorised kernels need no rank promotion)."""
    rows = [device_array(x) for x in rows]
    scalars = [device_array(x) for x in scalars]
    out = nx.broadcast_batch(rows, scalars)  # host-side for concrete inputs (no per-shape compilation)
    return out[: len(rows)], out[len(rows) :]


def _pad_host(levels, log_prob):
    """:func:`_pad` in NumPy, for a law held in host arrays (one device transfer)."""
    extra = _bucket(levels.size) - levels.size
    return (
        np.concatenate([levels, np.full(extra, levels[-1])]),
        np.concatenate([log_prob, np.full(extra, -np.inf)]),
    )


def _tilted(levels, log_prob, lam, skip_first=False):
    """Log-law of the levels under ``φ_λ^n``: ``log P_n(s) + λ s - n Λ(λ)``,
    normalised over the law's entries (all but the first when ``skip_first``:
    a lumped level of a window law, whose level stands in for all the mass
    below it and so has no meaningful tilted weight). ``λ = ±inf`` puts all
    mass on the top/bottom level."""
    top = jnp.max(jnp.where(log_prob > -jnp.inf, levels, -jnp.inf))
    bot = jnp.min(jnp.where(log_prob > -jnp.inf, levels, jnp.inf))
    c = jnp.where(lam >= 0, top, bot)
    u = levels - c
    on = u == 0
    lu = jnp.where(on, 0.0, lam * jnp.where(on, 1.0, u))
    z = jnp.where(log_prob > -jnp.inf, log_prob + lu, -jnp.inf)
    first = jnp.arange(z.shape[-1]) == 0
    return z - logsumexp(jnp.where(first & skip_first, -jnp.inf, z))


def _level_kl(log_q, log_p):
    """``Σ_s Q(s) log(Q(s)/P(s))``; ``+inf`` when ``Q`` puts mass where ``P`` has none."""
    q = jnp.exp(log_q)
    on = log_q > -jnp.inf
    bad = jnp.any(on & (log_p == -jnp.inf), axis=-1)
    diff = jnp.where(on & (log_p > -jnp.inf), log_q - jnp.where(log_p > -jnp.inf, log_p, 0.0), 0.0)
    return jnp.where(bad, jnp.inf, jnp.sum(jnp.where(on, q * diff, 0.0), axis=-1))


def _win_from_tails(t: _Tails, log_a):
    """``Σ_s a(s) [B(s-) + b(s)/2]`` with ``t`` the tails of ``b`` (THEORY.md §10)."""
    half_p = t.log_pg + _LOG_HALF
    log_win = logsumexp(log_a + jnp.logaddexp(t.log_f_prev, half_p))
    log_loss = logsumexp(log_a + jnp.logaddexp(t.log_s, half_p))
    # Report whichever complement is computed with relative accuracy.
    return jnp.where(log_loss < _LOG_HALF, -jnp.expm1(log_loss), jnp.exp(log_win))


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
    log_n = jnp.asarray(log_num_samples, nx.float_dtype(log_num_samples))
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


@jax.jit
@functools.partial(jnp.vectorize, signature="(l),(l),(),(),(),(),()->(),(),(),(),(),()")
def _bon_vs_klrl_kernel(levels, log_prob, n, delta, lam, rl_reward, lumped):
    """Jitted core of :func:`bon_vs_klrl_on_law`; ``n`` is a traced number, so one
    compilation serves every ``n`` whose law falls in the same length bucket.
    ``lumped``: the first entry is a window law's lump (see :func:`_tilted`)."""
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
    n = jnp.asarray(law.n, dt)
    if isinstance(law.levels, np.ndarray) and isinstance(law.log_prob, np.ndarray):
        levels, log_prob = _pad_host(law.levels, law.log_prob)
    else:
        levels, log_prob = _pad(law.levels, law.log_prob)
    args = (jnp.asarray(delta, dt), jnp.asarray(lam, dt), jnp.asarray(rl_reward, dt))
    (levels, log_prob), (n, *args, lumped) = _broadcast((levels, log_prob), (n, *args, jnp.asarray(lumped)))
    return BoNvsKLRL(*_bon_vs_klrl_kernel(levels, log_prob, n, *args, lumped))


@jax.jit
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
    return bon_vs_klrl_on_law(law, delta, lam, rl_reward, lumped=lumped)
