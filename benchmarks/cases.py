"""Benchmark cases (issue 6): identical inputs for the NumPy/SciPy baseline and asymalign.

Each factory takes a scale (``"full"``, ``"quick"`` or ``"tiny"``) and returns
a list of :class:`Case`. A case holds two zero-argument callables on the same,
pre-built inputs and a ``check`` that raises ``AssertionError`` when the two
results disagree (and otherwise returns the accuracy it measured). asymalign
is used only through its public API.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from typing import Any

import baselines as bl
import baselines_vectorised as bv
import jax
import jax.numpy as jnp
import numpy as np

import asymalign as aa
from asymalign.best_of_n import _bon_window
from asymalign.simulation import _group_size

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAMILIES = ("solve_lambda_grid", "rate_function_grid", "bon_exact", "bon_monte_carlo", "sweep", "cold_start")


@dataclasses.dataclass
class Case:
    """One benchmark: baseline and asymalign on identical inputs.

    Attributes:
      name: unique key in the JSON output (``family`` or ``family/variant``).
      family: one of :data:`FAMILIES` (what ``--only`` selects).
      size: a short description of the problem size.
      baseline / asymalign: zero-argument callables doing the whole work.
      check: ``check(baseline_out, asymalign_out) -> dict`` of accuracy
        figures; raises ``AssertionError`` on disagreement.
      repeats: timed repeats after the warm-up (fewer if ``budget_s`` runs out).
      target: e.g. ``{"ratio": 100}``; reported, never asserted.
      extra: optional ``extra(record) -> dict`` of further measurements.
      custom: optional callable doing its own measurement (returns the record).
      skipped: a reason, when the case cannot run.
    """

    name: str
    family: str
    size: str
    baseline: Callable[[], Any] | None = None
    asymalign: Callable[[], Any] | None = None
    check: Callable[[Any, Any], dict] | None = None
    repeats: int = 5
    budget_s: float = 60.0
    target: dict | None = None
    extra: Callable[[dict], dict] | None = None
    custom: Callable[[], dict] | None = None
    skipped: str | None = None
    note: str = ""


def _pick(scale, full, quick, tiny):
    return {"full": full, "quick": quick, "tiny": tiny}[scale]


def _random_models(rng, batch, k=8):
    p = rng.dirichlet(np.ones(k), size=batch)
    r = rng.uniform(0.0, 1.0, size=(batch, k))
    return p, r


def _median_time(fn, repeats):
    """``(median seconds, last result)`` of ``repeats`` calls."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def _rel(a, b):
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    return np.abs(a - b) / np.maximum(np.abs(b), 1e-300)


# ---------------------------------------------------------------------------
# 1. λ*(Δ) on a grid of instances
# ---------------------------------------------------------------------------


def solve_lambda_grid(scale):
    B = _pick(scale, 100_000, 10_000, 200)
    rng = np.random.default_rng(0)
    p, r = _random_models(rng, B)
    dmax = -np.log(p[np.arange(B), np.argmax(r, axis=1)])
    delta = rng.uniform(0.05, 0.95, size=B) * dmax

    def check(lb, la):
        rel = _rel(np.asarray(la), lb)
        worst = float(rel.max())
        assert np.all(np.isfinite(np.asarray(la))), "asymalign.solve_lambda returned non-finite λ*"
        assert worst < 1e-8, f"solve_lambda disagrees with brentq: max relative difference {worst:.3g}"
        return {"max_rel_diff": worst}

    def extra(rec):
        # A stronger NumPy baseline than the issue's: vectorised bisection.
        times = []
        for _ in range(3 if scale != "tiny" else 1):
            t0 = time.perf_counter()
            lv = bl.solve_lambda_vectorised(p, r, delta)
            times.append(time.perf_counter() - t0)
        lb200 = bl.solve_lambda(p[:200], r[:200], delta[:200])
        worst = float(_rel(lv[:200], lb200).max())
        assert worst < 1e-8, f"vectorised NumPy bisection disagrees with brentq: {worst:.3g}"
        med = float(np.median(times))
        out = {"baseline_vectorised_s": med, "ratio_vs_vectorised": med / rec["asymalign_s"]}
        # The strongest NumPy baseline (issue 11): safeguarded Newton over the whole batch.
        med_n, ln = _median_time(lambda: bv.solve_lambda_newton(p, r, delta), 3 if scale != "tiny" else 1)
        worst = float(_rel(ln[:200], lb200).max())
        assert worst < 1e-8, f"vectorised NumPy Newton disagrees with brentq: {worst:.3g}"
        out.update(baseline_newton_s=med_n, ratio_vs_newton=med_n / rec["asymalign_s"])
        return out

    return [
        Case(
            name="solve_lambda_grid",
            family="solve_lambda_grid",
            size=f"{B} instances, k=8",
            baseline=lambda: bl.solve_lambda(p, r, delta),
            asymalign=lambda: aa.solve_lambda(p, r, delta),
            check=check,
            repeats=_pick(scale, 3, 3, 1),
            budget_s=_pick(scale, 90.0, 20.0, 5.0),
            target={"ratio": 100},
            extra=extra,
            note="baseline: scipy.optimize.brentq per instance (bracket by doubling); "
            "extra: vectorised NumPy bisection over the batch",
        )
    ]


# ---------------------------------------------------------------------------
# 2. I_0(x) on a grid of (model, x) pairs
# ---------------------------------------------------------------------------


def rate_function_grid(scale):
    B = _pick(scale, 100_000, 10_000, 200)
    rng = np.random.default_rng(1)
    p, r = _random_models(rng, B)
    rmin, rmax = r.min(axis=1), r.max(axis=1)
    x = rmin + (rmax - rmin) * rng.uniform(0.02, 0.98, size=B)

    def check(ib, ia):
        ia = np.asarray(ia)
        assert np.all(np.isfinite(ia)), "asymalign.rate_function returned non-finite values inside (r_min, r_max)"
        err = np.abs(ia - ib)
        ok = err <= 1e-9 + 1e-6 * np.abs(ib)
        assert ok.all(), (
            f"rate_function disagrees with minimize_scalar at {int((~ok).sum())} points, max |diff| {err.max():.3g}"
        )
        return {"max_abs_diff": float(err.max()), "max_rel_diff": float(_rel(ia, ib)[ib > 1e-6].max())}

    def extra(rec):
        # The strongest NumPy baseline (issue 11): safeguarded Newton over the whole batch.
        med_n, iv = _median_time(lambda: bv.rate_function_newton(p, r, x), 3 if scale != "tiny" else 1)
        ib = bl.rate_function(p[:200], r[:200], x[:200])
        err = np.abs(iv[:200] - ib)
        assert np.all(err <= 1e-9 + 1e-6 * np.abs(ib)), f"vectorised NumPy Newton disagrees: {err.max():.3g}"
        return {"baseline_newton_s": med_n, "ratio_vs_newton": med_n / rec["asymalign_s"]}

    return [
        Case(
            name="rate_function_grid",
            family="rate_function_grid",
            size=f"{B} (model, x) pairs, k=8",
            baseline=lambda: bl.rate_function(p, r, x),
            asymalign=lambda: aa.rate_function(p, r, x),
            check=check,
            repeats=_pick(scale, 3, 3, 1),
            budget_s=_pick(scale, 90.0, 20.0, 5.0),
            target={"ratio": 100},
            extra=extra,
            note="baseline: scipy.optimize.minimize_scalar (Brent) of Λ(t) - t x per instance; "
            "extra: vectorised NumPy Newton over the batch",
        )
    ]


# ---------------------------------------------------------------------------
# 3. exact best-of-N at log N = nΔ
# ---------------------------------------------------------------------------

BON_DELTA = 0.2
BERNOULLI = (np.array([0.7, 0.3]), np.array([0.0, 1.0]))
LATTICE8 = (np.random.default_rng(2).dirichlet(np.ones(8)), np.arange(8.0))


def bon_exact(scale):
    ns = _pick(scale, (1_000, 10_000, 100_000), (1_000, 10_000), (200,))
    cases = []
    for model, (p, r) in (("bernoulli", BERNOULLI), ("lattice8", LATTICE8)):
        for n in ns:

            def base(p=p, r=r, n=n):
                return bl.bon_vs_klrl(p, r, n, BON_DELTA)

            def asym(p=p, r=r, n=n):
                return aa.bon_vs_klrl(p, r, n, BON_DELTA)

            def check(b, a, n=n):
                lam, rl, rew, klr, klt = b
                diffs = {
                    "lam": float(_rel(a.lam, lam)),
                    "bon_reward": float(_rel(a.bon_reward, rew)),
                    "bon_kl": float(_rel(a.bon_kl, klr)),
                    "bon_kl_to_tilt": float(_rel(a.bon_kl_to_tilt, klt)),
                }
                assert diffs["lam"] < 1e-9 and diffs["bon_reward"] < 1e-9 and diffs["bon_kl"] < 1e-8, (
                    f"bon_vs_klrl disagrees with the NumPy/SciPy baseline at n={n}: {diffs}"
                )
                assert diffs["bon_kl_to_tilt"] < 1e-6, f"KL(π_N||φ^n) disagrees at n={n}: {diffs}"
                return {
                    "max_rel_diff": max(diffs.values()),
                    "rel_diff": diffs,
                    "bon_reward": float(a.bon_reward),
                    "bon_kl": float(a.bon_kl),
                    "bon_kl_to_tilt": float(a.bon_kl_to_tilt),
                }

            def extra(rec, p=p, r=r, n=n):
                # Breakdown: building the window law bon_vs_klrl uses (λ* included)
                # vs the best-of-N bookkeeping on it; and the full law for reference.
                def med(fn):
                    fn()
                    times = []
                    for _ in range(3):
                        t0 = time.perf_counter()
                        out = jax.block_until_ready(fn())
                        times.append(time.perf_counter() - t0)
                    return float(np.median(times)), out

                t_win, found = med(
                    lambda: _bon_window(*aa.pushforward(p, r), n, BON_DELTA, aa.solve_lambda(p, r, BON_DELTA))
                )
                t_full, full = med(lambda: aa.reward_law(p, r, n))
                return {
                    "asymalign_law_s": t_win,
                    "window_levels": int(found[0].levels.shape[0]) if found else None,
                    "full_law_s": t_full,
                    "levels": int(full.levels.shape[0]),
                }

            cases.append(
                Case(
                    name=f"bon_exact/{model}/n={n}",
                    family="bon_exact",
                    size=f"n={n}, log N = {BON_DELTA}n, {model}",
                    baseline=base,
                    asymalign=asym,
                    check=check,
                    repeats=_pick(scale, 5, 3, 1),
                    budget_s=_pick(scale, 30.0, 10.0, 5.0),
                    target={"ratio": 2} if n == 100_000 else None,
                    extra=extra if scale != "tiny" else None,
                    note=(
                        "baseline: binomial law by gammaln"
                        if model == "bernoulli"
                        else "baseline: one tilted FFT convolution power at θ = λ* (scipy.fft)"
                    )
                    + "; asymalign: the window law (levels where φ_{λ*}^n leaves out <= e^-60 on either side)"
                    + "; both: log-space F/S, B_N, reward, KL(π_N||p^n), KL(π_N||φ^n)",
                )
            )
    if scale != "full":
        return cases
    # Amortisation: one law, many budgets (asymalign builds the whole law once;
    # the one-tilt baseline needs a new FFT for every Δ).
    p, r = LATTICE8
    n = ns[-1]
    deltas = np.linspace(0.02, 0.6, 32)

    def check_multi(b, a):
        b = np.asarray(b)
        got = np.stack([np.asarray(x) for x in (a.lam, a.rl_reward, a.bon_reward, a.bon_kl, a.bon_kl_to_tilt)], 1)
        rel = _rel(got, b).max(axis=0)
        assert rel[:4].max() < 1e-8 and rel[4] < 1e-6, f"batched bon_vs_klrl disagrees: {rel}"
        return {"max_rel_diff": float(rel.max())}

    cases.append(
        Case(
            name=f"bon_exact/lattice8-{deltas.size}deltas/n={n}",
            family="bon_exact",
            size=f"n={n}, {deltas.size} values of Δ in [0.02, 0.6], lattice8",
            baseline=lambda: [bl.bon_vs_klrl(p, r, n, d) for d in deltas],
            asymalign=lambda: aa.bon_vs_klrl(p, r, n, deltas),
            check=check_multi,
            repeats=_pick(scale, 3, 2, 1),
            budget_s=_pick(scale, 30.0, 10.0, 5.0),
            note="one asymalign call with a batch of Δ (the law is built once) vs the baseline looped over Δ",
        )
    )
    return cases


def fit_exponent(ns, ts):
    """Least-squares slope of log t against log n."""
    x = np.log(np.asarray(ns, float))
    y = np.log(np.asarray(ts, float))
    return float(np.polyfit(x, y, 1)[0])


def nlogn_exponent(ns):
    ns = np.asarray(ns, float)
    return fit_exponent(ns, ns * np.log(ns))


# ---------------------------------------------------------------------------
# 4. Monte-Carlo best-of-N
# ---------------------------------------------------------------------------


def bon_monte_carlo(scale):
    N, n = _pick(scale, (1024, 64), (1024, 64), (64, 16))
    trials = _pick(scale, 1000, 100, 50)
    p, r = LATTICE8
    size = f"N={N}, n={n}, {trials} trials, k=8 ({N * n * trials:.3g} tokens)"
    sim = getattr(aa, "simulate_bon", None)
    if sim is None:
        return [
            Case(
                name="bon_monte_carlo",
                family="bon_monte_carlo",
                size=size,
                skipped="skipped: API missing (asymalign.simulate_bon)",
            )
        ]
    key = jax.random.key(0)
    tokens = N * n * trials

    def asym():
        return sim(key, p, r, n, N, trials)

    def best_rewards(out):
        rew = out.rewards if hasattr(out, "rewards") else out[0]
        rew = np.asarray(rew, float)
        if rew.ndim > 1:  # per-trial per-sample totals -> best of each trial
            rew = rew.reshape(trials, -1).max(axis=-1)
        return rew

    def check(b, a):
        ra = best_rewards(a)
        assert ra.shape == (trials,), f"simulate_bon rewards have shape {ra.shape}, expected ({trials},)"
        exact = float(aa.law_mean(aa.best_of_n(aa.reward_law(p, r, n), math.log(N))))
        se_b = b.std(ddof=1) / math.sqrt(trials)
        se_a = ra.std(ddof=1) / math.sqrt(trials)
        z_ab = (ra.mean() - b.mean()) / math.hypot(se_a, se_b)
        z_a = (ra.mean() - exact) / se_a
        z_b = (b.mean() - exact) / se_b
        # Probabilistic (fixed seeds): 5 standard errors.
        assert abs(z_ab) < 5 and abs(z_a) < 5 and abs(z_b) < 5, (
            f"Monte-Carlo means disagree: numpy {b.mean():.4f}, asymalign {ra.mean():.4f}, exact {exact:.4f} "
            f"(z = {z_ab:.2f}, {z_a:.2f}, {z_b:.2f})"
        )
        return {
            "exact_bon_reward": exact,
            "numpy_mean": float(b.mean()),
            "asymalign_mean": float(ra.mean()),
            "z_numpy_vs_asymalign": float(z_ab),
            "z_asymalign_vs_exact": float(z_a),
        }

    def extra(rec):
        def med(fn):
            jax.block_until_ready(fn(key))
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                jax.block_until_ready(fn(key))
                times.append(time.perf_counter() - t0)
            return float(np.median(times))

        # The ceiling: one jax.random.bits call of one 32-bit word per token.
        t_one = med(jax.jit(lambda k: jax.random.bits(k, (tokens,), jnp.uint32)))
        # The same words drawn in chunks of 2^21 and reduced (never all in memory),
        # which is how a simulator uses them: the fairer ceiling.
        chunk = min(tokens, 1 << 21)
        nchunks = -(-tokens // chunk)

        def chunked(k):
            def body(i, acc):
                return acc + jnp.sum(jax.random.bits(jax.random.fold_in(k, i), (chunk,), jnp.uint32), dtype=jnp.uint32)

            return jax.lax.fori_loop(0, nchunks, body, jnp.uint32(0))

        t_chunked = med(jax.jit(chunked))
        t_bits = min(t_one, t_chunked)
        # simulate_bon draws one word per group of m tokens (m = 4 for k = 8), so
        # it can beat the one-word-per-token ceiling: also report the fraction of
        # the time needed to draw only the words it actually consumes.
        m = _group_size(p.size, n) or 1
        words = trials * N * -(-n // m)
        return {
            "tokens": tokens,
            "tokens_per_s": tokens / rec["asymalign_s"],
            "random_bits_s": t_one,
            "random_bits_chunked_s": t_chunked,
            "bits_words_per_s": tokens / t_bits,
            "ceiling_fraction": t_bits / rec["asymalign_s"],
            "tokens_per_word": m,
            "words_drawn": words,
            "words_ceiling_fraction": t_bits * words / tokens / rec["asymalign_s"],
        }

    return [
        Case(
            name="bon_monte_carlo",
            family="bon_monte_carlo",
            size=size,
            baseline=lambda: bl.simulate_bon(0, p, r, n, N, trials),
            asymalign=asym,
            check=check,
            repeats=_pick(scale, 3, 3, 1),
            budget_s=_pick(scale, 60.0, 15.0, 5.0),
            target={"ratio": 3, "ceiling_fraction": 0.3},
            extra=extra,
            note="baseline: numpy.random.Generator uniforms + searchsorted (inverse CDF), chunked; "
            "ceiling: jax.random.bits, one 32-bit word per token, the faster of one call and 2^21-word chunks; "
            "simulate_bon draws one word per group of tokens (exact integer alias table)",
        )
    ]


# ---------------------------------------------------------------------------
# 5. the example sweep on 1 vs 4 forced host devices
# ---------------------------------------------------------------------------

_SWEEP_SCRIPT = r"""
import json, os, sys, time
sys.path.insert(0, {repo!r})
import jax
jax.config.update("jax_enable_x64", True)
from asymalign import sweep
cfg = sweep.load_config({config!r})
out = {{"devices": len(jax.devices()), "backend": jax.default_backend(), "runs": []}}
for i in range({runs}):
    t0 = time.perf_counter()
    res = sweep.run_sweep(cfg, os.path.join({out!r}, "run%d" % i), resume=False, progress=False)
    out["runs"].append(time.perf_counter() - t0)
    out["num_points"] = res.num_points
print("SWEEP_JSON" + json.dumps(out))
"""


def _tiny_config(src, dst):
    with open(src, "rb") as f:
        cfg = tomllib.load(f)
    # One reference x one reward (one compiled group), two Δ, one n.
    grid = cfg["grid"]
    grid["delta"] = grid["delta"][:2]
    grid["n"] = grid["n"][:1]
    lines = [f"name = {json.dumps(cfg['name'] + '-tiny')}", "quantities = " + json.dumps(cfg["quantities"])]
    for section in ("reference", "reward"):
        for t in cfg[section][:1]:
            lines.append(f"[[{section}]]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in t.items()]
    lines.append("[grid]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in grid.items()]
    with open(dst, "w") as f:
        f.write("\n".join(lines) + "\n")


def _run_sweep_subprocess(config, devices, runs, workdir):
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    flags = " ".join(f for f in flags.split() if "xla_force_host_platform_device_count" not in f)
    if devices > 1:
        flags += f" --xla_force_host_platform_device_count={devices}"
    env["XLA_FLAGS"] = flags.strip()
    out = os.path.join(workdir, f"dev{devices}")
    script = _SWEEP_SCRIPT.format(repo=REPO, config=config, out=out, runs=runs)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sweep subprocess ({devices} devices) failed:\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("SWEEP_JSON")][-1]
    info = json.loads(line[len("SWEEP_JSON") :])
    info["out"] = os.path.join(out, f"run{runs - 1}")
    return info


def sweep(scale):
    example = os.path.join(REPO, "experiments", "sweeps", "example.toml")
    try:
        from asymalign import sweep as sweep_mod  # noqa: F401
    except ImportError:
        return [
            Case(name="sweep", family="sweep", size="example sweep", skipped="skipped: API missing (asymalign.sweep)")
        ]
    if not os.path.exists(example):
        return [
            Case(
                name="sweep",
                family="sweep",
                size="example sweep",
                skipped="skipped: experiments/sweeps/example.toml missing",
            )
        ]
    runs = _pick(scale, 3, 2, 1)

    def custom():
        from asymalign import sweep as sweep_mod

        with tempfile.TemporaryDirectory() as tmp:
            config = example
            if scale != "full":  # compiling the whole example takes ~1 min per process
                config = os.path.join(tmp, "tiny.toml")
                _tiny_config(example, config)
            one = _run_sweep_subprocess(config, 1, runs, tmp)
            four = _run_sweep_subprocess(config, 4, runs, tmp)
            assert four["devices"] == 4, f"forced host devices not honoured: {four['devices']} devices"
            a = sweep_mod.read_results(one["out"])
            b = sweep_mod.read_results(four["out"])
            worst = 0.0
            for col in a:
                x, y = np.asarray(a[col]), np.asarray(b[col])
                if x.dtype.kind not in "fc":
                    assert np.array_equal(x, y), f"sweep column {col} differs between 1 and 4 devices"
                    continue
                same = (x == y) | (np.isnan(x) & np.isnan(y))
                with np.errstate(invalid="ignore"):
                    d = np.where(same, 0.0, _rel(y, x))
                worst = max(worst, float(np.max(d, initial=0.0)))
            assert worst < 1e-10, f"sweep results differ between 1 and 4 devices: max rel diff {worst:.3g}"
        steady1 = float(np.median(one["runs"][1:])) if runs > 1 else one["runs"][0]
        steady4 = float(np.median(four["runs"][1:])) if runs > 1 else four["runs"][0]
        pts = one["num_points"]
        return {
            "size": f"example sweep: {pts} grid points"
            + (" (subset: 1 reference x 1 reward, 2 Δ, 1 n)" if scale != "full" else ""),
            "baseline_s": steady1,
            "asymalign_s": steady4,
            "compile_s": max(0.0, four["runs"][0] - steady4),
            "compile_1dev_s": max(0.0, one["runs"][0] - steady1),
            "ratio": steady1 / steady4,
            "per_point_1dev_s": steady1 / pts,
            "per_point_4dev_s": steady4 / pts,
            "num_points": pts,
            "runs_1dev_s": one["runs"],
            "runs_4dev_s": four["runs"],
            "max_rel_diff": worst,
            "note": "no NumPy baseline: baseline_s = asymalign sweep on 1 host device, asymalign_s = same sweep "
            "on 4 forced host devices (XLA_FLAGS=--xla_force_host_platform_device_count=4), ratio = speedup; "
            "times include writing the results (run_sweep wall time), first run excluded",
        }

    return [Case(name="sweep", family="sweep", size="example sweep, 1 vs 4 forced host devices", custom=custom)]


# ---------------------------------------------------------------------------
# 6. time to first result in fresh processes (issue 11)
# ---------------------------------------------------------------------------


def cold_start(scale):
    import cold_start as cs

    names = ["solve_lambda"] if scale == "tiny" else list(cs.FUNCTIONS)
    repeats = _pick(scale, 3, 1, 1)
    size = "README quick start: p = (0.6, 0.3, 0.1), r = (0, 1, 2), Δ = 0.2, n = 1024"
    cases = []
    for name in names:
        if not hasattr(aa, name):
            cases.append(
                Case(
                    name=f"cold_start/{name}",
                    family="cold_start",
                    size=size,
                    skipped=f"skipped: API missing (asymalign.{name})",
                )
            )
            continue

        def custom(name=name):
            rec = cs.first_result(name, repeats)
            base = rec.get("baseline_s")
            rec.update(
                size=size,
                asymalign_s=rec["cold_s"],
                compile_s=max(0.0, rec["cold_s"] - rec["warm_s"]),
                baseline_s=base,
                ratio=base / rec["cold_s"] if base else None,
                ratio_warm=base / rec["warm_s"] if base else None,
                note="fresh processes: import + first call; cold = empty persistent compilation cache, "
                "warm = the same cache filled by the cold run; baseline = import numpy/scipy + first call",
            )
            return rec

        cases.append(Case(name=f"cold_start/{name}", family="cold_start", size=size, custom=custom))
    if scale == "full":
        for which, label in (("reproduce", "asymalign reproduce --quick"), ("sweep", "asymalign sweep example.toml")):

            def cli(which=which, label=label):
                rec = cs.cli_cold_warm(which, repeats)
                rec.update(size=label, asymalign_s=rec["cold_s"], compile_s=max(0.0, rec["cold_s"] - rec["warm_s"]))
                rec.update(baseline_s=None, ratio=None)
                return rec

            cases.append(Case(name=f"cold_start/cli-{which}", family="cold_start", size=label, custom=cli))
    return cases


FACTORIES = {
    "solve_lambda_grid": solve_lambda_grid,
    "rate_function_grid": rate_function_grid,
    "bon_exact": bon_exact,
    "bon_monte_carlo": bon_monte_carlo,
    "sweep": sweep,
    "cold_start": cold_start,
}
