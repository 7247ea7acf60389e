"""Benchmarks: asymalign against the plain NumPy/SciPy way (issue 6).

Usage::

    python benchmarks/run.py [--quick] [--json PATH] [--markdown PATH]
                             [--only NAME ...] [--update] [--gpu-json PATH]
    python benchmarks/run.py --from-json CPU.json --gpu-json GPU.json --markdown RESULTS.md

On a GPU machine: ``python benchmarks/run.py --json benchmarks/results_gpu.json``,
then regenerate ``RESULTS.md`` from both JSON files with ``--from-json``.

Each case runs in this one process: the NumPy/SciPy baseline first, then
asymalign, on identical inputs. Both results are compared and the run fails
loudly (non-zero exit) if they disagree. Reported per case:

* median and spread (min, max) of the wall time over repeats after a warm-up
  call, for both implementations;
* ``compile_s``: asymalign's first call minus its steady-state median (JIT
  compilation and tracing);
* peak memory: ``tracemalloc`` peak of the baseline's warm-up call; for
  asymalign the device's ``peak_bytes_in_use`` increase when the backend
  reports memory statistics (GPU), else the peak increase of the process RSS
  during the first call (sampled from ``/proc/self/statm``, falling back to
  ``resource`` ``ru_maxrss``);
* ``ratio = baseline_s / asymalign_s`` (steady state, same run).

``--quick`` runs reduced sizes (under 2 minutes on 2 CPU cores);
``run_cases(tiny=True)`` runs the smallest sizes (used by the tests). Speed is
measured, never asserted; agreement is asserted. A failing case is recorded
(``"failed"`` in the JSON), the other cases still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import sys
import threading
import time
import tracemalloc

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_HERE)
for _p in (_REPO, _HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import cases as bench_cases  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402

# ---------------------------------------------------------------------------
# machine description
# ---------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> dict:
    dev = jax.devices()[0]
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cpu_cores": cores,
        "load_average": load,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "backend": jax.default_backend(),
        "device": f"{dev.platform}: {getattr(dev, 'device_kind', '')}".strip(),
        "device_count": jax.device_count(),
    }


# ---------------------------------------------------------------------------
# measurement helpers
# ---------------------------------------------------------------------------


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


class _PeakRSS:
    """Samples the process RSS in a background thread; ``delta`` = peak - start."""

    def __init__(self, interval=0.002):
        self.interval = interval
        self.start = _rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def _loop(self):
        while not self._stop.is_set():
            v = _rss_bytes()
            if v is not None and v > self.peak:
                self.peak = v
            time.sleep(self.interval)

    def __enter__(self):
        if self.start is not None:
            self._t = threading.Thread(target=self._loop, daemon=True)
            self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.start is not None:
            self._t.join()
            v = _rss_bytes()
            self.peak = max(self.peak, v or 0)
            self.delta, self.method = self.peak - self.start, "rss_peak_delta"
        else:  # no /proc: high-water mark (a lower bound)
            d = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._maxrss0
            self.delta, self.method = d * 1024, "ru_maxrss_delta"


def _device_peak():
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"]
    return None


def _block(x):
    return jax.block_until_ready(x)


def _timed(fn, block=lambda x: x):
    t0 = time.perf_counter()
    out = block(fn())
    return time.perf_counter() - t0, out


def _repeat(fn, repeats, budget_s, first_s, block=lambda x: x):
    """Timed repeats after the warm-up; fewer if the budget would be exceeded."""
    n = max(1, min(repeats, int(budget_s // max(first_s, 1e-9))))
    times = []
    for _ in range(n):
        t, _ = _timed(fn, block)
        times.append(t)
    return times


def _summary(times):
    return float(np.median(times)), [float(min(times)), float(max(times))]


def _measure(case: bench_cases.Case, log) -> dict:
    rec = {"size": case.size, "note": case.note}
    # --- baseline: warm-up under tracemalloc (peak memory), then repeats
    tracemalloc.start()
    t_first_b, out_b = _timed(case.baseline)
    rec["baseline_peak_mem_bytes"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    tb = _repeat(case.baseline, case.repeats, case.budget_s, t_first_b)
    rec["baseline_s"], rec["baseline_spread_s"] = _summary(tb)
    rec["baseline_repeats"] = len(tb)
    log(f"    baseline   {rec['baseline_s']:.4g} s  (min {min(tb):.4g}, max {max(tb):.4g}, {len(tb)} runs)")

    # --- asymalign: first call (compile + run, memory), then repeats
    dev0 = _device_peak()
    with _PeakRSS() as mem:
        t_first_a, out_a = _timed(case.asymalign, _block)
    dev1 = _device_peak()
    if dev0 is not None and dev1 is not None:
        rec["asymalign_peak_mem_bytes"], rec["asymalign_mem_method"] = dev1 - dev0, "device_peak_bytes_in_use_delta"
    else:
        rec["asymalign_peak_mem_bytes"], rec["asymalign_mem_method"] = mem.delta, mem.method
    ta = _repeat(case.asymalign, case.repeats, case.budget_s, max(t_first_a * 0.5, 1e-6), _block)
    rec["asymalign_s"], rec["asymalign_spread_s"] = _summary(ta)
    rec["asymalign_repeats"] = len(ta)
    rec["asymalign_first_call_s"] = t_first_a
    rec["compile_s"] = max(0.0, t_first_a - rec["asymalign_s"])
    rec["ratio"] = rec["baseline_s"] / rec["asymalign_s"]
    log(
        f"    asymalign  {rec['asymalign_s']:.4g} s  (min {min(ta):.4g}, max {max(ta):.4g}, {len(ta)} runs; "
        f"compile {rec['compile_s']:.3g} s)  ratio {rec['ratio']:.3g}"
    )

    # --- agreement (raises AssertionError) and extras
    rec["accuracy"] = case.check(out_b, out_a)
    if case.extra is not None:
        rec.update(case.extra(rec))
    return rec


def _targets(rec, target):
    if not target:
        return None
    met = {}
    for k, v in target.items():
        if k in rec:
            met[k] = {"target": v, "value": rec[k], "met": bool(rec[k] >= v)}
    return met


def _fits(results: dict) -> dict:
    """Growth exponents of time against n for the bon_exact cases."""
    out = {}
    groups: dict[str, list] = {}
    for name, rec in results.items():
        if name.startswith("bon_exact/") and "baseline_s" in rec:
            _, model, nstr = name.split("/")
            groups.setdefault(model, []).append((int(nstr.split("=")[1]), rec))
    for model, items in groups.items():
        if len(items) < 2:
            continue
        items.sort(key=lambda t: t[0])
        ns = [n for n, _ in items]
        fit = {
            "n": ns,
            "baseline_exponent": bench_cases.fit_exponent(ns, [r["baseline_s"] for _, r in items]),
            "asymalign_exponent": bench_cases.fit_exponent(ns, [r["asymalign_s"] for _, r in items]),
            "nlogn_exponent": bench_cases.nlogn_exponent(ns),
        }
        if all("asymalign_law_s" in r for _, r in items):
            fit["asymalign_law_exponent"] = bench_cases.fit_exponent(ns, [r["asymalign_law_s"] for _, r in items])
        # Target: no faster than n log n (5% slack for timing noise).
        fit["target_met"] = bool(fit["asymalign_exponent"] <= fit["nlogn_exponent"] * 1.05)
        out[f"bon_exact/{model}/fit"] = fit
    return out


# ---------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------


def run_cases(quick=False, tiny=False, only=None, verbose=True, raise_on_failure=True) -> dict:
    """Run the benchmark cases; return ``{case: record}``.

    Args:
      quick: reduced sizes (under 2 minutes on 2 CPU cores).
      tiny: smallest sizes (seconds; used by ``tests/test_benchmarks.py``).
      only: iterable of case families or case names to run (default: all).
      verbose: print progress.
      raise_on_failure: raise :class:`BenchmarkFailure` at the end if any case
        failed (the other cases still run).

    Raises:
      BenchmarkFailure (an ``AssertionError``): if baseline and asymalign
      disagree in any case, or a case raised.
    """
    scale = "tiny" if tiny else ("quick" if quick else "full")
    log = print if verbose else (lambda *a, **k: None)
    info = machine_info()
    log(
        f"asymalign benchmarks ({scale}) — JAX backend: {info['backend']}, device: {info['device']} "
        f"x{info['device_count']}; CPU: {info['cpu']} ({info['cpu_cores']} cores, load {info['load_average']})"
    )
    selected = list(only) if only else list(bench_cases.FAMILIES)
    unknown = [s for s in selected if s.split("/")[0] not in bench_cases.FAMILIES]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; choose from {bench_cases.FAMILIES}")
    results = {}
    failures = []
    for family in bench_cases.FAMILIES:
        if not any(s.split("/")[0] == family for s in selected):
            continue
        for case in bench_cases.FACTORIES[family](scale):
            if not any(s == family or s == case.name for s in selected):
                continue
            log(f"[{case.name}] {case.size}")
            if case.skipped:
                log(f"    {case.skipped}")
                results[case.name] = {"size": case.size, "skipped": case.skipped}
                continue
            try:
                if case.custom is not None:
                    rec = case.custom()
                    if "per_point_4dev_s" in rec:
                        log(
                            f"    1 device {rec['baseline_s']:.4g} s, 4 devices {rec['asymalign_s']:.4g} s, "
                            f"speedup {rec['ratio']:.3g}, {rec['per_point_4dev_s'] * 1e3:.3g} ms/point (4 dev)"
                        )
                    elif "cold_s" in rec:
                        base = f"{rec['baseline_s']:.3g} s" if rec.get("baseline_s") else "—"
                        log(f"    cold {rec['cold_s']:.3g} s, warm {rec['warm_s']:.3g} s, NumPy/SciPy {base}")
                else:
                    rec = _measure(case, log)
            except Exception as e:  # recorded, reported, and re-raised after the other cases
                kind = "DISAGREEMENT" if isinstance(e, AssertionError) else "ERROR"
                log(f"    {kind}: {type(e).__name__}: {e}")
                results[case.name] = {"size": case.size, "failed": f"{kind}: {type(e).__name__}: {e}"}
                failures.append((case.name, e))
                continue
            met = _targets(rec, case.target)
            if met:
                rec["targets"] = met
            results[case.name] = rec
    results.update(_fits(results))
    for name, fit in results.items():
        if name.endswith("/fit"):
            log(
                f"[{name}] time ~ n^a: baseline a = {fit['baseline_exponent']:.2f}, "
                f"asymalign a = {fit['asymalign_exponent']:.2f} (n log n: {fit['nlogn_exponent']:.2f})"
            )
    results["_machine"] = info
    results["_machine"]["scale"] = scale
    if failures and raise_on_failure:
        raise BenchmarkFailure(results, failures)
    return results


class BenchmarkFailure(AssertionError):
    """Some case failed: baseline and asymalign disagree (``AssertionError``)
    or a case raised. ``results`` holds every record, failed ones included."""

    def __init__(self, results, failures):
        self.results = results
        self.failures = failures
        super().__init__("; ".join(f"{name}: {type(e).__name__}: {e}" for name, e in failures))


# ---------------------------------------------------------------------------
# markdown
# ---------------------------------------------------------------------------


def _fmt_t(x):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.1f} ms"
    return f"{x * 1e6:.0f} µs"


def _fmt_mem(b):
    if b is None:
        return "—"
    if b < 1024**2:
        return f"{b / 1024:.0f} KiB"
    return f"{b / 1024**2:.1f} MiB"


def _fmt_spread(s):
    return f"{_fmt_t(s[0])}–{_fmt_t(s[1])}" if s else "—"


def _fmt_ratio(ratio) -> str:
    return "—" if ratio is None else f"{ratio:.3g}"


def _target_text(rec):
    t = rec.get("targets")
    if not t:
        return ""
    return "; ".join(f"{k} ≥ {v['target']}: {'met' if v['met'] else 'missed'}" for k, v in t.items())


# The strongest NumPy version of each family, when it is not the baseline itself (issue 11): its time is
# stored as ``baseline_newton_s`` and the ratio against it as ``ratio_vs_newton``. The other families'
# baselines are already whole-array NumPy (log-space accumulations, ``gammaln``, ``scipy.fft``, a chunked
# ``numpy.random.Generator`` sampler), so their ratio is the ratio against the strongest version.
_STRONGEST = {
    "solve_lambda_grid": "vectorised NumPy Newton over the batch",
    "rate_function_grid": "vectorised NumPy Newton over the batch",
}


def _strongest_ratio(name: str, rec: dict):
    """``(ratio, what)`` against the strongest NumPy version of ``name``'s family; ``(None, "")`` without one."""
    family = name.split("/")[0]
    if family in _STRONGEST:
        return rec.get("ratio_vs_newton"), _STRONGEST[family]
    if family == "sweep" or rec.get("baseline_s") is None:  # the sweep compares 4 devices with 1
        return None, ""
    return rec.get("ratio"), "the baseline"


def _ahead_and_not(results: dict) -> list[str]:
    """Where asymalign is faster than the strongest NumPy/SciPy version, and where it is not, from ``results``."""
    ahead, behind = [], []
    for name, rec in results.items():
        if name.startswith("_") or name.endswith("/fit") or "ratio" not in rec:
            continue
        if name.startswith("cold_start/"):
            base = rec.get("baseline_s")
            if base:
                text = (
                    f"`{name.split('/', 1)[1]}` first call in a new process: {_fmt_t(rec['cold_s'])} cold, "
                    f"{_fmt_t(rec['warm_s'])} warm, against {_fmt_t(base)} for NumPy/SciPy"
                )
                (ahead if rec["warm_s"] < base else behind).append(text)
            continue
        ratio, what = _strongest_ratio(name, rec)
        if ratio is None:
            continue
        text = f"`{name}` {ratio:.3g}x" + (f" against {what}" if what != "the baseline" else "")
        if what != "the baseline":
            text += f" ({rec['ratio']:.3g}x against the per-instance SciPy loop)"
        (ahead if ratio > 1 else behind).append(text)
    return [
        "## Where asymalign is ahead, and where it is not",
        "",
        "Steady-state ratios against the strongest NumPy/SciPy version of each case (for the two grids a "
        "vectorised NumPy Newton over the whole batch, not the per-instance SciPy loop of the table), and the "
        "first call in a fresh process.",
        "",
        "- Ahead: " + ("; ".join(ahead) if ahead else "none") + ".",
        "- Not ahead: " + ("; ".join(behind) if behind else "none") + ".",
        "",
    ]


def to_markdown(results: dict, gpu: dict | None = None) -> str:
    m = results["_machine"]
    lines = [
        "# Benchmarks: asymalign against the plain NumPy/SciPy way",
        "",
        f"Generated by `python benchmarks/run.py{' --quick' if m.get('scale') == 'quick' else ''}` on {m['date']}.",
        "",
        f"- Machine: {m['cpu']}, {m['cpu_cores']} CPU cores, load average at start {m['load_average']} "
        "(the cores were shared with other processes; absolute CPU times are indicative only)",
        f"- JAX {m['jax']} on backend `{m['backend']}` ({m['device']} x{m['device_count']}), float64; "
        f"NumPy {m['numpy']}, SciPy {m['scipy']}, Python {m['python']}",
        "- Ratio = baseline median / asymalign median (steady state, same process, identical inputs). "
        "Compile = asymalign's first call minus its steady-state median. Spread = min–max over repeats.",
        "",
    ]
    cols = ["Case", "Size", "Baseline (NumPy/SciPy)", "asymalign", "Compile", "Ratio", "vs strongest NumPy", "Target"]
    if gpu:
        g = gpu["_machine"]
        cols += [f"GPU asymalign ({g['device']})", "GPU ratio"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, rec in results.items():
        if name.startswith("_") or name.endswith("/fit") or name.startswith("cold_start/"):
            continue
        if "skipped" in rec or "failed" in rec:
            row = [f"`{name}`", rec["size"], rec.get("skipped") or rec["failed"], "", "", "", "", ""]
            if gpu:
                row += ["", ""]
            lines.append("| " + " | ".join(row) + " |")
            continue
        row = [
            f"`{name}`",
            rec["size"],
            f"{_fmt_t(rec['baseline_s'])} ({_fmt_spread(rec.get('baseline_spread_s'))})",
            f"{_fmt_t(rec['asymalign_s'])} ({_fmt_spread(rec.get('asymalign_spread_s'))})",
            _fmt_t(rec.get("compile_s")),
            f"**{rec['ratio']:.3g}**",
            _fmt_ratio(_strongest_ratio(name, rec)[0]),
            _target_text(rec),
        ]
        if gpu:
            g = gpu.get(name, {})
            row += [_fmt_t(g.get("asymalign_s")), f"{g['ratio']:.3g}" if "ratio" in g else "—"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += _ahead_and_not(results)
    lines += _cold_start_table(results)

    # targets
    met, missed = [], []
    for name, rec in results.items():
        if name.startswith("_"):
            continue
        if name.endswith("/fit"):
            (met if rec["target_met"] else missed).append(f"`{name}` (growth ≤ n log n)")
        for k, v in (rec.get("targets") or {}).items():
            (met if v["met"] else missed).append(f"`{name}` {k} ≥ {v['target']} (measured {v['value']:.3g})")
    lines += ["## Targets (issue 6; CPU)", ""]
    lines.append("- Met: " + (", ".join(met) if met else "none"))
    lines.append("- Missed: " + (", ".join(missed) if missed else "none"))
    lines.append("")

    # details
    lines += ["## Details", ""]
    for name, rec in results.items():
        if name.startswith("_") or name.startswith("cold_start/"):
            continue
        if name.endswith("/fit"):
            lines.append(
                f"- `{name}`: time ∝ n^a over n = {rec['n']}: baseline a = {rec['baseline_exponent']:.2f}, "
                f"asymalign a = {rec['asymalign_exponent']:.2f}"
                + (
                    f" (law construction alone {rec['asymalign_law_exponent']:.2f})"
                    if "asymalign_law_exponent" in rec
                    else ""
                )
                + f"; n log n corresponds to a = {rec['nlogn_exponent']:.2f} over this range — target "
                f"{'met' if rec['target_met'] else 'missed'}."
            )
            continue
        if "skipped" in rec or "failed" in rec:
            continue
        bits = []
        if "baseline_peak_mem_bytes" in rec:
            bits.append(
                f"peak memory baseline {_fmt_mem(rec['baseline_peak_mem_bytes'])} (tracemalloc), "
                f"asymalign {_fmt_mem(rec['asymalign_peak_mem_bytes'])} ({rec['asymalign_mem_method']})"
            )
        acc = rec.get("accuracy") or {}
        if "max_rel_diff" in acc:
            bits.append(f"max relative difference {acc['max_rel_diff']:.2g}")
        elif "max_rel_diff" in rec:
            bits.append(f"max relative difference 1 vs 4 devices {rec['max_rel_diff']:.2g}")
        if "z_numpy_vs_asymalign" in acc:
            bits.append(
                f"means: NumPy {acc['numpy_mean']:.4f}, asymalign {acc['asymalign_mean']:.4f}, exact "
                f"{acc['exact_bon_reward']:.4f} (z = {acc['z_numpy_vs_asymalign']:.2f})"
            )
        if "baseline_vectorised_s" in rec:
            bits.append(
                f"vectorised NumPy bisection {_fmt_t(rec['baseline_vectorised_s'])} "
                f"(ratio vs it {rec['ratio_vs_vectorised']:.3g})"
            )
        if "baseline_newton_s" in rec:
            bits.append(
                f"vectorised NumPy Newton (the strongest NumPy baseline) {_fmt_t(rec['baseline_newton_s'])} "
                f"(ratio vs it {rec['ratio_vs_newton']:.3g})"
            )
        if "asymalign_law_s" in rec:
            bits.append(
                f"asymalign window law alone {_fmt_t(rec['asymalign_law_s'])} ({rec['window_levels']} levels); "
                f"the full law (reward_law) {_fmt_t(rec['full_law_s'])} ({rec['levels']} levels)"
            )
        if "tokens_per_s" in rec:
            bits.append(
                f"{rec['tokens_per_s']:.3g} tokens/s; jax.random.bits ceiling {rec['bits_words_per_s']:.3g} "
                f"words/s; fraction of ceiling {rec['ceiling_fraction']:.2f} (one word per token; "
                f"simulate_bon draws one word per {rec['tokens_per_word']} tokens: fraction of the time to draw "
                f"only those {rec['words_drawn']:.3g} words {rec['words_ceiling_fraction']:.2f})"
            )
        if "per_point_1dev_s" in rec:
            bits.append(
                f"{rec['num_points']} points; per point {_fmt_t(rec['per_point_1dev_s'])} (1 device), "
                f"{_fmt_t(rec['per_point_4dev_s'])} (4 devices); first run (compile) "
                f"+{_fmt_t(rec['compile_1dev_s'])} / +{_fmt_t(rec['compile_s'])}"
            )
        if rec.get("note"):
            bits.append(rec["note"])
        lines.append(f"- `{name}`: " + "; ".join(bits) + ".")
    lines.append("")
    lines += _METHODOLOGY
    return "\n".join(lines)


def _cold_start_table(results: dict) -> list[str]:
    """The time-to-first-result table of the ``cold_start`` cases (fresh processes)."""
    recs = {k: v for k, v in results.items() if k.startswith("cold_start/")}
    if not recs:
        return []
    lines = [
        "## Time to first result (fresh processes)",
        "",
        "Import + first call in a new Python process at the README quick-start sizes (median of "
        f"{next(iter(recs.values())).get('repeats', 1)}). Cold: JAX's persistent compilation cache empty; warm: "
        "a second process with the cache the cold run filled. NumPy/SciPy: `import numpy, scipy` + the "
        "baseline's first call. `benchmarks/cold_start.py` runs this alone.",
        "",
        "| Case | asymalign cold | asymalign warm | of which import | compilations (cold) | NumPy/SciPy | "
        "ratio cold / warm |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rec in recs.items():
        label = name.split("/", 1)[1]
        if "skipped" in rec or "failed" in rec:
            lines.append(f"| `{label}` | {rec.get('skipped') or rec['failed']} | | | | | |")
            continue
        base = rec.get("baseline_s")
        ratios = f"{base / rec['cold_s']:.2g} / {base / rec['warm_s']:.2g}" if base else "—"
        lines.append(
            f"| `{label}` | {_fmt_t(rec['cold_s'])} | {_fmt_t(rec['warm_s'])} | {_fmt_t(rec.get('import_s'))} | "
            f"{rec.get('compilations', '—')} | {_fmt_t(base)} | {ratios} |"
        )
    lines.append("")
    return lines


_METHODOLOGY = [
    "## Baselines, agreement checks and their accuracy",
    "",
    "The baselines (`benchmarks/baselines.py`) are what a careful researcher would write without asymalign. "
    "Every run asserts agreement; a disagreement makes the run exit non-zero.",
    "",
    "- `solve_lambda_grid`: `scipy.optimize.brentq` per instance on K(λ) = λΛ'(λ) - Λ(λ) (shifted by r_max), "
    "bracket found by doubling, `xtol=1e-14`, `rtol=4 eps`. The inner log-sum-exp is hand-written "
    "(`m + log Σ e^(z-m)`): `scipy.special.logsumexp` costs ~12x more per call on an 8-vector. Asserted: "
    "relative difference of λ* < 1e-8. A stronger NumPy baseline, bisection on log λ vectorised over the whole "
    "batch, is reported next to it (not part of the issue's ratio).",
    "- `rate_function_grid`: `scipy.optimize.minimize_scalar` (Brent, `xtol=1e-12`) of Λ(t) - t x with "
    "centred rewards, per instance. Asserted: |ΔI| ≤ 1e-9 + 1e-6 I.",
    "- Strongest NumPy baselines (issue 11; `benchmarks/baselines_vectorised.py`): for both grids a safeguarded "
    "Newton iteration over the WHOLE batch at once (bracket by vectorised doubling, bisection when a step leaves "
    "it; stop at |residual| ≤ 1e-14 max(1, target) or a step below 1e-14 relative), checked against the SciPy "
    "answers with the same tolerances; reported as `ratio vs Newton` in the details.",
    "- `bon_exact`: the same pipeline on both sides — λ* (brentq), the law of r_n, log S(s) accumulated from the "
    "top (`np.logaddexp.accumulate`), N log F = -exp(log N + log(-log F)), B_N = e^A (1 - e^(-N D)) with "
    "D = log1p(P(s)/F(s-)), reward and both KLs. Bernoulli: exact binomial law from `gammaln` (full relative "
    "accuracy on every level). k = 8 lattice: ONE exponentially tilted FFT convolution power at θ = λ* "
    "(`scipy.fft`, length ≥ n·span + 1, no aliasing). Its absolute error is ~1e-16 of the tilted peak, so it "
    "keeps relative accuracy only where the tilted law Q ≥ 1e-12 max Q (about ±7 tilted standard deviations "
    "around nΛ'(λ*)); other levels are dropped. That suffices for best-of-N at log N = nΔ (there "
    "B_N ≤ Q above the centre and B_N ≤ e^(-N S) below), and the measured agreement with asymalign is ~1e-11 "
    "relative, but the baseline cannot give the rest of the law (the bulk, worst-of-N, other Δ without a new "
    "FFT). asymalign's `bon_vs_klrl` (no law passed) computes the law only on the window of levels where "
    "φ_{λ*}^n leaves out at most e^-60 on either side (Chernoff cutoffs; binomial law, or every other tilted "
    "FFT window of its full lattice law, each level read within ~3 tilted sd of a window centre: relative "
    "accuracy ~1e-12), with the mass below lumped into one level so F and S stay exact; its full `reward_law` "
    "(every level relatively accurate, ~1e-10) is timed alongside. Asserted: λ*, reward "
    "< 1e-9, KL(π_N‖p^n) < 1e-8, KL(π_N‖φ^n) < 1e-6 relative.",
    "- `bon_monte_carlo`: NumPy `Generator.random` uniforms mapped to tokens by `searchsorted` on the CDF "
    "(inverse CDF), rewards summed, best of N kept; chunks of ~4M tokens. Both simulators are checked against "
    "each other and against the exact `bon_reward` (means within 5 standard errors; fixed seeds). The ceiling "
    "is `jax.random.bits` of one 32-bit word per token, jitted; fraction = bits time / simulate_bon time. "
    "`simulate_bon` draws one word per group of 4 tokens (k = 8; an exact integer alias table, every token's "
    "law still p rounded to 2^-32), so this fraction exceeds 1; the fraction of the time needed to draw only "
    "the words it consumes (bits time scaled by words/tokens) is reported too.",
    "- `sweep`: no NumPy baseline; the example sweep (`experiments/sweeps/example.toml`, `run_sweep`) in fresh "
    "processes with 1 and with 4 forced host devices (`XLA_FLAGS=--xla_force_host_platform_device_count=4`); "
    "the two result files must agree to 1e-10. The first run of each process (compilation) is excluded from "
    "the steady-state times and reported separately.",
    "- `cold_start`: fresh Python processes (`benchmarks/cold_start.py`): import + first call at the README "
    "quick-start sizes, asymalign with JAX's persistent compilation cache empty (cold) and filled by the cold "
    "run (warm), against `import numpy, scipy` + the baseline's first call; compilations counted with "
    "`jax.monitoring`. At full scale also `asymalign reproduce --quick` and the example sweep, cold and warm.",
    "- Memory: baseline = `tracemalloc` peak of its warm-up call (NumPy buffers included); asymalign = device "
    "`peak_bytes_in_use` increase where the backend reports it (GPU), else the peak increase of the process "
    "RSS during the first call (compilation included), sampled every 2 ms.",
    "",
]


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes (under 2 minutes on 2 CPU cores)")
    ap.add_argument(
        "--json", metavar="PATH", help="write {case: {baseline_s, asymalign_s, compile_s, ratio, size, ...}}"
    )
    ap.add_argument("--markdown", metavar="PATH", help="write a RESULTS.md-style report")
    ap.add_argument(
        "--only", nargs="+", metavar="NAME", help=f"case families or names: {', '.join(bench_cases.FAMILIES)}"
    )
    ap.add_argument("--gpu-json", metavar="PATH", help="add a GPU column to --markdown from a JSON of a GPU run")
    ap.add_argument(
        "--update", action="store_true", help="merge into an existing --json file (e.g. rerun one case with --only)"
    )
    ap.add_argument(
        "--from-json", metavar="PATH", help="run nothing: write --markdown from a stored --json (add --gpu-json)"
    )
    args = ap.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            results = json.load(f)
        gpu = None
        if args.gpu_json:
            with open(args.gpu_json) as f:
                gpu = json.load(f)
        text = to_markdown(results, gpu)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(text)
        else:
            print(text)
        return 0
    t0 = time.perf_counter()
    results = run_cases(quick=args.quick, only=args.only, raise_on_failure=False)
    failed = [name for name, rec in results.items() if isinstance(rec, dict) and "failed" in rec]
    results["_machine"]["total_wall_s"] = time.perf_counter() - t0
    print(f"total wall time {results['_machine']['total_wall_s']:.1f} s")
    results = _jsonable(results)
    if args.update and args.json and os.path.exists(args.json):
        with open(args.json) as f:
            merged = json.load(f)
        merged.update(results)
        merged.update(_jsonable(_fits(merged)))
        results = merged
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.markdown:
        gpu = None
        if args.gpu_json:
            with open(args.gpu_json) as f:
                gpu = json.load(f)
        with open(args.markdown, "w") as f:
            f.write(to_markdown(results, gpu))
    if failed:
        print(f"FAILED: {', '.join(failed)} (see the records above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
