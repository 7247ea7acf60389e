r"""The exact law of the total reward ``R_n`` of a Markov chain's paths (THEORY.md §14, §7).

:func:`reward_law` returns a :class:`~asymalign.RewardLaw` (levels sorted,
log-probabilities) that every level function (best-of-N, win rates, level
tilts, KLs) accepts unchanged. Three exact methods, all with *relative*
accuracy at every level, both tails included:

* ``"dp"``: rewards on a lattice ``a + h m`` (integer ``m``): the state ×
  level recursion ``A_{i+1}(y, s) = logsumexp_x A_i(x, s - m(y)) + log P(x, y)``
  in log space, ``O(n² span k²)``.
* ``"fft"``: lattice rewards, long sequences: the tilted transfer-matrix
  method. Under the tilt ``θ`` the generating function is
  ``G_θ(ω) = (μ ∘ e^{(θ-iω) m})ᵀ (P D_{θ-iω})^{n-1} 1`` (matrix power by
  squaring, normalised by the Perron root so it cannot overflow); an inverse
  FFT gives ``P_n(s) e^{θ s}`` in a window around the tilted mean ``nΛ'(θ)``,
  where it has full relative accuracy. Tilts are spaced evenly in Fisher
  length ``√n ∫ √Λ''`` (window centres ~6 standard deviations apart, so every level is within 3 of one) and each
  level is read from the window where it is largest relative to the window's
  maximum, as for memoryless lattices (§7). Unreachable levels are found
  exactly by a bitset recursion over (state, level).
* ``"types"``: any real rewards, small ``n``: a recursion over (state, count
  vector of each distinct reward), levels ``c · values`` merged.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from .._buckets import device_array
from .._jit import jit
from .._lattice import _detect_lattice
from .._validate import check_positive_int
from ..sequence_laws import _LEVEL_RTOL, _MERGE_RTOL, RewardLaw
from .chain import _check_chain_reward, _perron_vectors, chain_fingerprint, log_perron_root, padded_states

__all__ = ["reward_law"]

_MAX_DP_WORK = 2e8  # n * (n span + 1) * k^2
_MAX_TYPE_CELLS = 2_000_000
_MAX_LEVELS = 20_000_000
_MIN_SCORE = -16.0
_CENTRE_SPACING = 6.0
# Largest tilt (per lattice step) of the FFT windows: e^{-40} per step below the top.
_FAR_TILT = 40.0


def _window_fft_size(n: int, span: int, sd: float) -> int:
    """FFT length so that a level read within ``4 sd`` of a window centre is
    aliased only with tilted mass ``<= e^{-60}`` (Bernstein-type bound, letters
    in ``[0, span]``; callers inflate ``span`` and ``sd`` for correlated chains)."""
    A = 45.0
    d = A * span / 3.0 + math.sqrt((A * span / 3.0) ** 2 + 2.0 * A * sd * sd)
    need = int(math.ceil(2.0 * (d + 5.0 * sd)))
    return min(x for x in (_bucket(need), 3 * _bucket(-(-need // 3), 32)) if x >= need)


def _bucket(x: int, minimum: int = 64) -> int:
    return max(minimum, 1 << (x - 1).bit_length())


# ---------------------------------------------------------------------------
# state x level recursion (lattice, log space)
# ---------------------------------------------------------------------------


@jit
def _dp_kernel(logP, log_mu, m, steps, init_len):
    """``logsumexp_y A_n(y, ·)`` with ``A_1(y, m(y)) = log μ(y)``; ``steps = n - 1`` traced.
    The level axis has the (bucketed) length of ``init_len``."""
    k = logP.shape[0]
    L = init_len.shape[0]
    s = jnp.arange(L)
    a0 = jnp.where(s[None, :] == m[:, None], log_mu[:, None], -jnp.inf)

    def step(_, a):
        b = logsumexp(a[:, None, :] + logP[:, :, None], axis=0)  # (y, s)
        idx = s[None, :] - m[:, None]
        return jnp.where(idx >= 0, jnp.take_along_axis(b, jnp.clip(idx, 0, L - 1), axis=1), -jnp.inf)

    a = jax.lax.fori_loop(0, steps, step, a0)
    del k
    return logsumexp(a, axis=0)


def _dp_law(P, mu, m, n, span):
    L = n * span + 1
    # host-side inputs, states padded (unreachable: log μ = log P(·, pad) = -inf) so
    # that chains of 2..4 states share one compiled kernel per level bucket
    k = P.shape[0]
    size = padded_states(k)
    with np.errstate(divide="ignore"):
        logP = np.full((size, size), -np.inf)
        logP[:k, :k] = np.log(np.asarray(P, np.float64))
        log_mu = np.concatenate([np.log(np.asarray(mu, np.float64)), np.full(size - k, -np.inf)])
    mm = np.concatenate([np.asarray(m, np.int32), np.zeros(size - k, np.int32)])
    out = _dp_kernel(
        device_array(logP),
        device_array(log_mu),
        device_array(mm),
        device_array(np.int32(n - 1)),
        device_array(np.zeros(_bucket(L), np.int8)),
    )
    return np.asarray(out)[:L]


# ---------------------------------------------------------------------------
# exact reachability (bitsets)
# ---------------------------------------------------------------------------


def _reachable(P, mu, m, n, L):
    """Boolean mask of the levels ``M_n`` some positive-probability path reaches."""
    k = P.shape[0]
    pred = [[x for x in range(k) if P[x, y] > 0] for y in range(k)]
    cur = [(1 << int(m[y])) if mu[y] > 0 else 0 for y in range(k)]
    for _ in range(n - 1):
        new = []
        for y in range(k):
            acc = 0
            for x in pred[y]:
                acc |= cur[x]
            new.append(acc << int(m[y]))
        cur = new
    tot = 0
    for c in cur:
        tot |= c
    raw = np.frombuffer(tot.to_bytes((L + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:L].astype(bool)


# ---------------------------------------------------------------------------
# tilted transfer-matrix FFT
# ---------------------------------------------------------------------------


def _tilt_lr(P, mf, th):
    z = th * mf
    c = jnp.max(z)
    return c + log_perron_root(P * jnp.exp(z - c)[None, :])


@jit
def _fisher_grid(P, mf, far):
    """Tilt grid (asinh-spaced on ``[-far, far]``), ``Λ'``, and cumulative ``∫ √Λ''``."""
    th = jnp.sinh(jnp.linspace(-jnp.arcsinh(far), jnp.arcsinh(far), 4096))

    def d12(t):
        f = lambda x: _tilt_lr(P, mf, x)  # noqa: E731
        g = jax.grad(f)
        return g(t), jax.grad(g)(t)

    mean, var = jax.vmap(d12)(th)
    sd = jnp.sqrt(jnp.maximum(var, 0.0))
    u = jnp.concatenate([jnp.zeros(1, th.dtype), jnp.cumsum(0.5 * (sd[1:] + sd[:-1]) * jnp.diff(th))])
    return th, mean, var, u


_STAGE = 5  # squarings before frequencies with a negligible characteristic function are dropped


@jit(static_argnames=("bits", "fft_size", "cap"))
def _windows(P, mu, m, thetas, n, L_pad, *, bits, fft_size, cap):
    """Best reading of every level over the tilted windows: ``(log P, score, overflow)``
    (``overflow`` per tilt: more than ``cap`` frequencies mattered; those tilts must be redone).

    Per tilt, ``A = P D_θ / ρ_θ`` is made row-stochastic by the similarity
    ``Ã = V⁻¹ A V`` (``V = diag(v)``, right Perron vector), so every
    ``(Ã D_{-iω})^j`` has ∞-norm ``<= 1``. After ``_STAGE`` squarings the norm
    ``c(ω)`` of ``(Ã D_{-iω})^{2^s}`` bounds ``|G(ω)| <= c^{⌊(n-1)/2^s⌋} max v / min v``
    relative to ``G(0)``; frequencies below ``e^{-60}`` are dropped (they are
    far below rounding) and only the others (at most ``cap``; ``overflow`` says
    when more survive) get the full power by squaring."""
    M = fft_size
    dt = P.dtype
    mf = m.astype(dt)
    cdt = jnp.result_type(dt, jnp.complex64)
    omega = 2.0 * jnp.pi * jnp.fft.rfftfreq(M).astype(dt)
    phase = jnp.exp(-1j * (omega[:, None] * mf[None, :]).astype(cdt))  # (F, k)
    t_idx = jnp.arange(M) - M // 2
    e = n - 1
    Ltot = L_pad.shape[0]
    pad = M + 1
    width = Ltot + 2 * pad
    k = P.shape[0]
    eye = jnp.eye(k, dtype=cdt)
    q_stage = e // (1 << _STAGE)

    def window(th):
        z = th * mf
        c = jnp.max(z)
        mat = P * jnp.exp(z - c)[None, :]
        lr0 = log_perron_root(mat)
        v, _ = _perron_vectors(mat, lr0)
        v = jnp.maximum(v, jnp.finfo(dt).tiny)
        lr = c + lr0
        At = mat / jnp.exp(lr0) * v[None, :] / v[:, None]  # row-stochastic
        B = At.astype(cdt)[None, :, :] * phase[:, None, :]  # (F, k, k)
        a = (mu * jnp.exp(z - c) * v).astype(cdt)[None, :] * phase  # (F, k)
        w = (1.0 / v).astype(cdt)
        C = B
        for _ in range(_STAGE):
            C = C @ C
        norm = jnp.max(jnp.sum(jnp.abs(C), axis=2), axis=1)
        log_bound = q_stage * jnp.log(jnp.maximum(norm, 1e-300)) + jnp.log(jnp.max(v) / jnp.min(v))
        keep = (log_bound > -60.0) | (q_stage == 0)
        keep = keep.at[0].set(True)
        idx = jnp.nonzero(keep, size=cap, fill_value=0)[0]
        overflow = jnp.sum(keep) > cap
        Bs = B[idx]

        def body(i, s):
            out, base = s
            bit = (e >> i) & 1
            out = jnp.where(bit == 1, out @ base, out)
            return out, base @ base

        out, _ = jax.lax.fori_loop(0, bits, body, (jnp.broadcast_to(eye, Bs.shape), Bs))
        Gs = jnp.einsum("fk,fkj,j->f", a[idx], out, w)
        G = jnp.zeros(phase.shape[0], cdt).at[idx].set(Gs)
        q = jnp.fft.irfft(G, n=M)
        mean = jax.grad(lambda x: _tilt_lr(P, mf, x))(th)
        centre = jnp.clip(jnp.round(n * mean), 0, Ltot - 1).astype(jnp.int32)
        q = q[(centre + t_idx) % M]
        logscale = c + (n - 1) * lr  # log P(s) = log q - θ s + logscale
        return centre, q / jnp.max(q), q, logscale, overflow

    def step(carry, th):
        best_ratio, best_logp = carry
        centre, ratio, q, logscale, overflow = window(th)
        start = jnp.clip(centre - M // 2 + pad, 0, width - M)
        s = start - pad + jnp.arange(M)
        logp = jnp.where(q > 0, jnp.log(jnp.where(q > 0, q, 1.0)) - th * s + logscale, -jnp.inf)
        cur_r = jax.lax.dynamic_slice(best_ratio, (start,), (M,))
        better = ratio > cur_r
        cur_l = jax.lax.dynamic_slice(best_logp, (start,), (M,))
        # a tilt whose frequencies did not fit in `cap` is ignored here (redone with more)
        better = better & ~overflow
        best_ratio = jax.lax.dynamic_update_slice(best_ratio, jnp.where(better, ratio, cur_r), (start,))
        best_logp = jax.lax.dynamic_update_slice(best_logp, jnp.where(better, logp, cur_l), (start,))
        return (best_ratio, best_logp), overflow

    init = (jnp.full((width,), -jnp.inf, dt), jnp.full((width,), -jnp.inf, dt))
    (ratio, logp), ovf = jax.lax.scan(step, init, thetas)
    ratio, logp = ratio[pad : pad + Ltot], logp[pad : pad + Ltot]
    return logp, jnp.log(jnp.maximum(ratio, 0.0)), ovf


def _fft_law(P, mu, m, n, span):
    L = n * span + 1
    Pj, muj, mj = jnp.asarray(P), jnp.asarray(mu), jnp.asarray(m, jnp.int32)
    mf = mj.astype(Pj.dtype)
    far = _FAR_TILT
    th, mean, var, u = (np.asarray(a) for a in _fisher_grid(Pj, mf, jnp.asarray(far)))
    if not np.all(np.isfinite(u)):  # a degenerate extreme tilt: keep the finite part of the grid
        ok = np.isfinite(var)
        th, var = th[ok], var[ok]
        sd = np.sqrt(np.maximum(var, 0.0))
        u = np.concatenate([[0.0], np.cumsum(0.5 * (sd[1:] + sd[:-1]) * np.diff(th))])
    num = int(math.ceil(math.sqrt(n) * float(u[-1]) / _CENTRE_SPACING)) + 2
    thetas = np.interp(np.linspace(0.0, u[-1], num), u, th)
    # extreme tilts for the few levels beyond n × (extreme cycle means)
    thetas = np.concatenate([[-far, -far / 4], thetas, [far / 4, far]])
    size = _bucket(thetas.size, 8)
    thetas = np.concatenate([thetas, np.full(size - thetas.size, thetas[thetas.size // 2])])
    sd = 1.2 * math.sqrt(n * float(np.max(var)))
    M = min(_bucket(L + 2 * span), _window_fft_size(n, span, sd))
    F = M // 2 + 1
    run = functools.partial(
        _windows, Pj, muj, mj, n=jnp.asarray(n), L_pad=jnp.zeros(L), bits=max(1, (n - 1).bit_length()), fft_size=M
    )
    # Most tilts need only the few low frequencies where G(ω) is not negligible;
    # tilts whose law is nearly degenerate (extreme θ) need them all.
    logp, score, ovf = (np.asarray(x) for x in run(jnp.asarray(thetas), cap=min(F, _bucket(F // 16, 64))))
    redo = thetas[ovf]
    if redo.size:
        redo = np.concatenate([redo, np.full(_bucket(redo.size, 8) - redo.size, redo[-1])])
        logp2, score2, _ = (np.asarray(x) for x in run(jnp.asarray(redo), cap=F))
        better = score2 > score
        logp, score = np.where(better, logp2, logp), np.where(better, score2, score)
    return logp, score


# ---------------------------------------------------------------------------
# general real rewards: (state, counts) recursion
# ---------------------------------------------------------------------------


def _types_law(P, mu, vidx, values, n):
    """``log P`` of every count vector of the distinct rewards, by a dense (state, counts) recursion."""
    k, kv = P.shape[0], values.size
    shape = (k,) + (n + 1,) * (kv - 1)
    logP = np.log(np.where(P > 0, P, 1.0)) + np.where(P > 0, 0.0, -np.inf)
    a = np.full(shape, -np.inf)
    with np.errstate(divide="ignore"):
        lmu = np.log(mu)
    for y in range(k):
        idx = [y] + [0] * (kv - 1)
        if vidx[y] < kv - 1:
            idx[1 + vidx[y]] = 1
        a[tuple(idx)] = lmu[y]
    for _ in range(n - 1):
        new = np.empty_like(a)
        for y in range(k):
            b = np.logaddexp.reduce(a + logP[:, y].reshape((k,) + (1,) * (kv - 1)), axis=0)
            if vidx[y] < kv - 1:
                b = np.roll(b, 1, axis=vidx[y])
                sl = [slice(None)] * (kv - 1)
                sl[vidx[y]] = 0
                b[tuple(sl)] = -np.inf
            new[y] = b
        a = new
    tot = np.logaddexp.reduce(a, axis=0).ravel()
    grids = np.indices((n + 1,) * (kv - 1)).reshape(kv - 1, -1)
    counts_last = n - grids.sum(axis=0)
    ok = (counts_last >= 0) & np.isfinite(tot)
    levels = values[:-1] @ grids[:, ok] + values[-1] * counts_last[ok]
    logp = tot[ok]
    order = np.argsort(levels, kind="stable")
    levels, logp = levels[order], logp[order]
    tol = _LEVEL_RTOL * n * max(1.0, float(np.max(np.abs(values))))
    starts = np.flatnonzero(np.concatenate([[True], np.diff(levels) > tol]))
    return levels[starts], np.logaddexp.reduceat(logp, starts)


# ---------------------------------------------------------------------------
# public constructor
# ---------------------------------------------------------------------------


def reward_law(chain, r, n: int, method: str = "auto") -> RewardLaw:
    r"""Exact law of ``R_n = Σ_i r(y_i)`` over length-``n`` paths of a Markov chain (THEORY.md §14).

    Host-side constructor (output size depends on the data); the returned
    :class:`~asymalign.RewardLaw` carries the fingerprint of ``(P, μ, r)``,
    so level functions refuse to mix it with another model.

    Args:
      chain: a :class:`MarkovChain` (zeros allowed; no ergodicity needed).
      r: per-token rewards, shape ``(k,)``.
      n: sequence length ``>= 1``.
      method: ``"auto"`` (lattice rewards: ``"dp"`` when
        ``n (n span + 1) k² <= 2e8``, else ``"fft"``; other rewards:
        ``"types"``), or one of ``"dp"``, ``"fft"``, ``"types"``.

    Returns:
      ``RewardLaw`` with the reachable levels (sorted) and their float64
      log-probabilities, normalised in log space. The FFT path checks every
      level's reading (``Q / max Q >= e^{-16}`` in its window, i.e. relative
      error below ~1e-9) and falls back to ``"dp"`` when affordable, else warns.

    >>> import jax.numpy as jnp
    >>> from asymalign.markov import MarkovChain
    >>> ch = MarkovChain(jnp.array([[0.0, 1.0], [0.5, 0.5]]), jnp.array([1.0, 0.0]))
    >>> law = reward_law(ch, jnp.array([0.0, 1.0]), 2)   # paths 01 only
    >>> law.levels.tolist(), law.prob.round(12).tolist()
    ([1.0], [1.0])
    """
    _check_chain_reward(chain, r)
    n = check_positive_int(n, "n")
    if method not in ("auto", "dp", "fft", "types"):
        raise ValueError(f"method must be 'auto', 'dp', 'fft' or 'types', got {method!r}")
    P = np.asarray(chain.transition, np.float64)
    mu = np.asarray(chain.initial, np.float64)
    rv = np.asarray(r, np.float64)
    fp = chain_fingerprint(chain, r)
    k = P.shape[0]
    values = np.unique(rv)
    tol = _MERGE_RTOL * max(1.0, float(np.max(np.abs(values))))
    values = values[np.concatenate([[True], np.diff(values) > tol])]
    vidx = np.clip(np.searchsorted(values, rv - tol), 0, values.size - 1)
    lattice = _detect_lattice(values)
    if values.size == 1:
        return RewardLaw(device_array([n * float(values[0])]), jnp.zeros(1), n, fp)
    if lattice is not None and int(lattice[2][-1]) * n + 1 > _MAX_LEVELS:
        lattice = None
    if method == "auto":
        if lattice is None:
            method = "types"
        else:
            span = int(lattice[2][-1])
            method = "dp" if n * (n * span + 1.0) * k * k <= _MAX_DP_WORK else "fft"
    if method == "types":
        cells = k * (n + 1) ** (values.size - 1)
        if cells > _MAX_TYPE_CELLS:
            raise ValueError(
                f"method='types' needs k (n+1)^(distinct rewards - 1) = {cells} cells (> {_MAX_TYPE_CELLS}); "
                "use rewards on a lattice a + h*m or a smaller n"
            )
        levels, logp = _types_law(P, mu, vidx, values, n)
        logp = logp - np.logaddexp.reduce(logp)
        return RewardLaw(device_array(levels), device_array(logp), n, fp)
    if lattice is None:
        raise ValueError(f"method={method!r}: the rewards are not on a lattice a + h*m")
    a, h, mvals = lattice
    m = mvals[vidx]
    span = int(mvals[-1])
    L = n * span + 1
    if method == "fft":
        logp, score = _fft_law(P, mu, m, n, span)
        reach = _reachable(P, mu, m, n, L)
        bad = reach & (score < _MIN_SCORE)
        if np.any(bad):
            if n * (n * span + 1.0) * k * k <= 10 * _MAX_DP_WORK:
                logp = _dp_law(P, mu, m, n, span)
            else:
                warnings.warn(
                    f"markov.reward_law: {int(bad.sum())} levels resolved only to relative accuracy "
                    f"~{1e-16 * math.exp(-float(np.min(score[reach]))):.1e}",
                    stacklevel=2,
                )
        logp = np.where(reach, logp, -np.inf)
    else:
        logp = _dp_law(P, mu, m, n, span)
    idx = np.flatnonzero(np.isfinite(logp))
    logp = logp[idx] - np.logaddexp.reduce(logp[idx])
    return RewardLaw(device_array(n * a + h * idx.astype(np.float64)), device_array(logp), n, fp)
