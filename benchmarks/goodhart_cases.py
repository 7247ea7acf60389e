"""Benchmarks of issue 13 (helper G): exact gold given the proxy level, and real-vocabulary best-of-N.

* ``gold_given_level`` at ``n = 10^5`` on a lattice proxy (the toy model
  ``p = (.4,.3,.2,.1)``, ``r = (0,1,2,3)``, ``g = (0,1,2,-1)``): asymalign end to
  end (law of ``R_{n-2}`` + kernel), and the per-level kernel alone against the
  same computation vectorised in NumPy, both from the same ``log P_{n-2}``
  (no NumPy method gets the lattice law itself with relative accuracy at this
  ``n``: log-space convolution costs ``n^2 span^2 ≈ 10^11``).
* best-of-N Monte Carlo on the 20 000-word English vocabulary (AFINN reward):
  ``simulate_bon`` against NumPy (inverse-CDF ``searchsorted`` sampling,
  the fastest NumPy sampler for ``k = 20 000`` we found, then sums and
  arg-max), in tokens per second.

Run: ``python benchmarks/goodhart_cases.py [--quick]`` (prints JSON), or
``goodhart_cases(scale)`` returns :class:`cases.Case` objects for ``run.py``.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import asymalign as aa  # noqa: E402
from asymalign.goodhart import _lattice_kernel_jit, _pair_stats  # noqa: E402

P, R, G = np.array([0.4, 0.3, 0.2, 0.1]), np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0, -1.0])


def _logsumexp(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def numpy_gold_kernel(logd, w, g, n):
    """NumPy version of the lattice kernel: m(s), Var(G|s) from log P_{n-2} (vectorised, float64)."""
    span = w.size - 1
    size = n * span + 1
    with np.errstate(divide="ignore"):
        log_w = np.log(w)
    buf = np.full(size + 2 * span, -np.inf)
    buf[2 * span : 2 * span + logd.size] = logd
    i = np.arange(size + span)[:, None] - np.arange(span + 1)[None, :]
    logp1 = _logsumexp(buf[span + i] + log_w, axis=1)  # P_{n-1} on -span..size-1
    y = logp1[span + np.arange(size)[:, None] - np.arange(span + 1)[None, :]] + log_w
    log_pn = _logsumexp(y, axis=1)
    a = np.exp(y - log_pn[:, None])
    mu = a @ g
    e1 = np.sum(a * (g[None, :] - mu[:, None]) ** 2, axis=1)
    log_a0, a1n, c2 = _pair_stats(w, g)
    x = buf[2 * span + np.arange(size)[:, None] - np.arange(2 * span + 1)[None, :]] + log_a0
    b = np.exp(x - _logsumexp(x, axis=1)[:, None])
    cov = np.sum(b * (c2[None, :] + (a1n[None, :] - mu[:, None]) ** 2), axis=1)
    return n * mu, np.maximum(n * e1 + n * (n - 1.0) * cov, 0.0)


def _time(fn, repeats=3):
    fn()  # warm-up / compile
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def bench_gold_given_level(n=100_000, repeats=3):
    law2 = aa.reward_law(P, R, n - 2)
    logd = np.asarray(law2.log_prob)  # all lattice levels are reachable here
    span = 3
    bucket = max(64, 1 << (n * span).bit_length())
    buf = np.full(bucket + 2 * span, -np.inf)
    buf[2 * span : 2 * span + logd.size] = logd
    log_a0, a1n, c2 = _pair_stats(P, G)
    args = [jnp.asarray(x) for x in (buf, np.log(P), G, np.zeros(4), log_a0, a1n, c2)]

    def jax_kernel():
        return jax.block_until_ready(_lattice_kernel_jit(*args, jnp.asarray(float(n)), size=bucket))

    def np_kernel():
        return numpy_gold_kernel(logd, P, G, n)

    full = _time(lambda: jax.block_until_ready(aa.gold_given_level(P, R, G, n).mean), repeats)
    tj, tn = _time(jax_kernel, repeats), _time(np_kernel, repeats)
    gl = aa.gold_given_level(P, R, G, n)
    m_np, v_np = np_kernel()
    err = float(np.max(np.abs(np.asarray(gl.mean) - m_np) / np.maximum(1.0, np.abs(m_np))))
    return dict(
        n=n,
        levels=int(gl.levels.shape[0]),
        asymalign_end_to_end_s=full,
        asymalign_kernel_s=tj,
        numpy_kernel_s=tn,
        kernel_speedup=tn / tj,
        max_rel_diff_mean=err,
    )


def bench_vocab_bon(n=16, num_samples=64, num_trials=2000, repeats=3):
    v = aa.load_vocabulary(20_000)
    p, r = v.p, v.afinn
    key = jax.random.PRNGKey(0)
    tokens = n * num_samples * num_trials

    def jax_sim():
        return jax.block_until_ready(aa.simulate_bon(key, p, r, n, num_samples, num_trials).rewards)

    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    rng = np.random.default_rng(0)

    def np_sim():
        out = np.empty(num_trials)
        chunk = max(1, 2_000_000 // (n * num_samples))
        for s in range(0, num_trials, chunk):
            m = min(chunk, num_trials - s)
            idx = np.searchsorted(cdf, rng.random((m, num_samples, n)), side="right")
            out[s : s + m] = r[np.minimum(idx, p.size - 1)].sum(-1).max(-1)
        return out

    tj, tn = _time(jax_sim, repeats), _time(np_sim, repeats)
    mj, mn = float(np.mean(jax_sim())), float(np.mean(np_sim()))
    return dict(
        k=20_000,
        n=n,
        num_samples=num_samples,
        num_trials=num_trials,
        asymalign_tokens_per_s=tokens / tj,
        numpy_tokens_per_s=tokens / tn,
        speedup=tn / tj,
        mean_reward_asymalign=mj,
        mean_reward_numpy=mn,
    )


def goodhart_cases(scale: str = "full") -> dict:
    """Both measurements (``scale="quick"``: n = 10^4 and fewer trials)."""
    quick = scale != "full"
    out = {"gold_given_level": bench_gold_given_level(10_000 if quick else 100_000)}
    try:
        out["vocab_bon_monte_carlo"] = bench_vocab_bon(num_trials=200 if quick else 2000)
    except ImportError as exc:
        out["vocab_bon_monte_carlo"] = {"skipped": str(exc)}
    return out


if __name__ == "__main__":
    print(json.dumps(goodhart_cases("quick" if "--quick" in sys.argv else "full"), indent=1))
