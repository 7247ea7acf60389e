"""Tests of the sweep engine (asymalign.sweep, `asymalign sweep`).

Multi-device and multi-process runs happen in subprocesses: XLA_FLAGS
(--xla_force_host_platform_device_count) must be set before `import jax`,
and this pytest process has already imported jax with one CPU device. All
runs of one device count share a persistent compilation cache, so only the
first of them pays for compilation.
"""

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import asymalign as aa
from asymalign import _jit, sweep

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
name = "t"
quantities = ["lambda_star", "delta_max", "klrl_reward", "bon_reward", "bon_kl",
              "bon_kl_to_tilt", "bon_kl_bound", "bon_win_rate", "rate_function"]

[[reference]]
family = "bernoulli"
prob = 0.3

[[reference]]
family = "zipf"
k = 3
s = 1.2

[[reference]]
family = "dirichlet"
k = 3
concentration = 2.0
count = 2
seed = 1

[[reward]]
family = "linear"

[[reward]]
family = "random"
seed = 3

[grid]
delta = [0.0, 0.1, 0.3, 5.0]
n = [4]
x_relative = [0.0, 0.3, 0.7]
"""
# Eight (reference, reward, n) units of 12 points, all built-in quantities: one
# fused group (alphabets padded to k = 4, laws from the host padded to 64
# levels, n traced), so one compilation; two units per chunk: 4 chunks.
CHUNK = "24"
NUM_POINTS = 8 * 4 * 3


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    (d / "t.toml").write_text(CONFIG)
    return d


def _env(devices=1, **extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    # the suite's XLA_FLAGS (conftest.py: compiled for compile speed) and the device count
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env.update(extra)
    return env


def _cmd(cfg, out, *args):
    return [
        sys.executable,
        "-m",
        "asymalign.sweep",
        str(cfg),
        "--out",
        str(out),
        "--chunk-size",
        CHUNK,
        "--no-progress",
        *args,
    ]


def _run(work, out, devices=1, *args, **env):
    cache = work / f"cache-{devices}"
    proc = subprocess.run(
        _cmd(work / "t.toml", out, "--compile-cache", str(cache), *args),
        env=_env(devices, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _results(out):
    return sweep.read_results(out)


def _assert_same(a, b, tol=0.0):
    assert list(a) == list(b)
    for k in a:
        if a[k].dtype.kind in "fc":
            np.testing.assert_allclose(a[k], b[k], rtol=tol, atol=tol, err_msg=k)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def reference_run(work):
    out = work / "ref"
    proc = _run(work, out, JAX_LOG_COMPILES="1")
    (work / "ref-stderr.txt").write_text(proc.stderr)
    return out


def test_reference_run_compiles_once(work, reference_run):
    """The whole memoryless sweep (k = 2 and k = 3, lattice and types laws) is
    one executable; an unfused plan of the same config has three groups."""
    log = (work / "ref-stderr.txt").read_text()
    assert log.count("Compiling jit(_unit_batch)") == 1, log[-3000:]
    cfg = sweep.load_config(work / "t.toml")
    plan = sweep.make_plan(cfg, int(CHUNK))
    assert [key for key, _ in plan.groups] == [sweep.plan.GroupKey("iid", 4, "host", None, 64)]
    assert len(plan.chunks) == 4


def test_plan_fuses_only_padded_safe_quantities(tmp_path):
    example = sweep.load_config(ROOT / "experiments" / "sweeps" / "example.toml")
    assert sweep.plan.fused(example)
    plan = sweep.make_plan(example, 256)
    # Bernoulli (k = 2) and k = 4 models, n = 8 and 32, lattice and types laws: one group.
    assert [key for key, _ in plan.groups] == [sweep.plan.GroupKey("iid", 4, "host", None, 8192)]
    # A quantity outside PADDED_SAFE (here a user's function) gets the static
    # groups: (kind, k, law method, n).
    text = (ROOT / "experiments" / "sweeps" / "example.toml").read_text()
    path = tmp_path / "user.toml"
    path.write_text(text.replace('"rate_function",\n]', '"rate_function", "math:fabs",\n]'))
    user = sweep.load_config(path)
    assert user.columns[-1] == "fabs" and not sweep.plan.fused(user)
    keys = [key for key, _ in sweep.make_plan(user, 256).groups]
    assert [(k.k, k.method, k.n) for k in keys] == [
        (2, "lattice", 8),
        (2, "lattice", 32),
        (4, "lattice", 8),
        (4, "lattice", 32),
        (4, "types", 8),
        (4, "types", 32),
    ]


def test_law_buckets():
    """Laws share the longest bucket when that costs little, else keep their own."""
    lb = sweep.plan._law_buckets
    assert lb([9, 33, 6545], 4) == [8192] * 3
    assert lb([1, 64, 65], 1) == [128] * 3
    many = [9] * 2000 + [100_000]
    assert lb(many, 20) == [64] * 2000 + [131072]


def test_single_device_run(reference_run):
    res = _results(reference_run)
    assert res["index"].tolist() == list(range(NUM_POINTS))
    meta = json.loads((reference_run / "meta.json").read_text())
    assert meta["num_points"] == NUM_POINTS
    assert meta["devices"]["device_count"] == 1
    assert {"config", "versions", "devices", "timing"} <= set(meta)
    csv = (reference_run / "results.csv").read_text().splitlines()
    assert len(csv) == NUM_POINTS + 1
    header = csv[0].split(",")
    assert header[:3] == ["index", "model", "reference"]
    assert {"n", "delta", "x", "x_relative", "bon_kl_to_tilt", "rate_function"} <= set(header)
    # The CSV round-trips the binary results exactly.
    col = header.index("bon_reward")
    np.testing.assert_array_equal([float(line.split(",")[col]) for line in csv[1:]], res["bon_reward"])
    for q in ("lambda_star", "klrl_reward", "bon_reward", "bon_kl", "bon_win_rate"):
        assert not np.any(np.isnan(res[q])), q


def test_killed_and_resumed_matches_uninterrupted(work, reference_run):
    out = work / "killed"
    cache = work / "cache-1"
    env = _env(1, ASYMALIGN_SWEEP_TEST_DELAY_S="1.0")
    proc = subprocess.Popen(
        _cmd(work / "t.toml", out, "--compile-cache", str(cache)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    chunks = out / "chunks"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if chunks.is_dir() and any(f.suffix == ".npz" for f in chunks.iterdir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    done = [f for f in chunks.iterdir() if f.suffix == ".npz"]
    assert 1 <= len(done) < 5
    assert not (out / "results.csv").exists()
    resumed = _run(work, out)
    assert "resumed" in resumed.stdout and " 0 resumed" not in resumed.stdout
    assert (out / "results.csv").read_bytes() == (reference_run / "results.csv").read_bytes()
    _assert_same(_results(out), _results(reference_run))
    # A rerun of a finished sweep computes nothing and changes nothing.
    again = _run(work, out)
    assert "(0 computed" in again.stdout
    assert (out / "results.csv").read_bytes() == (reference_run / "results.csv").read_bytes()


# The package's jit: jax.jit that compiles small calls for compile speed, as the package's own kernels.
@_jit.jit
def _klrl_and_rate(p, r, delta, x):
    klrl = aa.kl_rl(p, r, delta)
    return klrl.lam, klrl.reward, aa.max_kl(p, r), aa.rate_function(p, r, x)


@functools.partial(_jit.jit, static_argnums=(0,))
def _bon_lattice(n, p, r, log_w, a, h, delta):
    return aa.bon_vs_klrl(p, r, n, delta, law=aa.law_from_lattice(log_w, n, a, h))


@functools.partial(_jit.jit, static_argnums=(0,))
def _bon_types(n, p, r, delta):
    return aa.bon_vs_klrl(p, r, n, delta, law=aa.law_from_types(p, r, n))


def _bon(m, n, delta):
    if m.reward_family == "linear":  # r = 0..k-1
        return _bon_lattice(n, m.p, m.r, jnp.log(m.p), 0.0, 1.0, delta)
    if m.p.size == 2:  # two rewards r_lo < r_hi: r = r_lo + (r_hi - r_lo) m
        o = np.argsort(m.r)
        return _bon_lattice(n, m.p, m.r, jnp.log(m.p[o]), m.r[o[0]], m.r[o[1]] - m.r[o[0]], delta)
    return _bon_types(n, m.p, m.r, delta)


def test_matches_direct_calls(reference_run):
    """Sampled rows equal direct calls of the public API (jitted one point at a
    time), and the best-of-N numbers agree with the host-side exact law."""
    cfg = sweep.load_config(reference_run.parent / "t.toml")
    models = sweep.build_models(cfg)
    res = _results(reference_run)
    # Rows of the bernoulli reference with random rewards first (two-reward
    # lattice law), then random ones.
    rng = np.random.default_rng(0)
    special = np.flatnonzero((res["reference"] == "bernoulli") & (res["reward"] == "random"))
    rows = np.concatenate([rng.choice(special, 1), rng.choice(NUM_POINTS, size=5, replace=False)])
    for j, i in enumerate(rows):
        m = models[res["model"][i]]
        n, delta, x = int(res["n"][i]), float(res["delta"][i]), float(res["x"][i])
        lam, reward, dmax, rate = _klrl_and_rate(m.p, m.r, delta, x)
        bon = _bon(m, n, delta)
        want = {
            "lambda_star": lam,
            "klrl_reward": reward,
            "delta_max": dmax,
            "rate_function": rate,
            "bon_reward": bon.bon_reward,
            "bon_kl": bon.bon_kl,
            "bon_kl_to_tilt": bon.bon_kl_to_tilt,
            "bon_win_rate": bon.win_rate,
            "bon_kl_bound": aa.bon_kl_bound(n * delta) / n,
        }
        for q, v in want.items():
            np.testing.assert_allclose(res[q][i], float(v), rtol=1e-12, atol=1e-14, err_msg=f"{q} row {i}")
        if j >= 2:
            continue
        law = aa.reward_law(m.p, m.r, n)  # exact, host side, merged levels
        exact = aa.bon_vs_klrl(m.p, m.r, n, delta, law=law)
        for q, f in (("bon_reward", "bon_reward"), ("bon_kl", "bon_kl"), ("bon_win_rate", "win_rate")):
            np.testing.assert_allclose(res[q][i], float(getattr(exact, f)), rtol=1e-9, atol=1e-12, err_msg=q)
    # The parameter columns are those of the grid.
    assert set(res["delta"].tolist()) == {0.0, 0.1, 0.3, 5.0}
    lo = np.array([models[j].r.min() for j in res["model"]])
    hi = np.array([models[j].r.max() for j in res["model"]])
    np.testing.assert_allclose(res["x"], lo + res["x_relative"] * (hi - lo), rtol=1e-15)


def test_four_devices_match_one(work, reference_run):
    out = work / "four"
    _run(work, out, devices=4)
    assert json.loads((out / "meta.json").read_text())["devices"]["device_count"] == 4
    _assert_same(_results(out), _results(reference_run), tol=1e-12)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(work, out, *extra, delay=None):
    """Start the two processes of one local two-process sweep."""
    port = _free_port()
    env = _env(1) if delay is None else _env(1, ASYMALIGN_SWEEP_TEST_DELAY_S=str(delay))
    return [
        subprocess.Popen(
            _cmd(
                work / "t.toml",
                out,
                "--compile-cache",
                str(work / "cache-2p"),
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
                *extra,
            ),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


@pytest.fixture(scope="module")
def two_process_run(work):
    out = work / "two"
    for pr in _two_processes(work, out):
        _, err = pr.communicate(timeout=300)
        assert pr.returncode == 0, err[-3000:]
    return out


def test_two_processes_match_one(two_process_run, reference_run):
    meta = json.loads((two_process_run / "meta.json").read_text())
    assert meta["devices"]["process_count"] == 2 and meta["devices"]["device_count"] == 2
    _assert_same(_results(two_process_run), _results(reference_run), tol=1e-12)


def test_dead_process_stops_the_other_and_rerun_resumes(work, two_process_run):
    """SIGKILL one process of a two-process sweep after its first chunk: the
    survivor exits with status 3 and a one-line error (bounded by
    --distributed-timeout), the finished chunks stay, and rerunning the same
    command resumes and gives the results of an uninterrupted run exactly."""
    out = work / "dead"
    timeout = 10
    procs = _two_processes(work, out, "--distributed-timeout", str(timeout), delay=1.0)
    chunks = out / "chunks"
    deadline = time.time() + 240
    while time.time() < deadline and all(pr.poll() is None for pr in procs):
        if chunks.is_dir() and any(f.suffix == ".npz" for f in chunks.iterdir()):
            break
        time.sleep(0.05)
    assert all(pr.poll() is None for pr in procs), "a process ended before it could be killed"
    procs[1].send_signal(signal.SIGKILL)
    procs[1].communicate()
    # The survivor must stop on its own: a generous bound (the timeout plus
    # start-up slack on a busy machine), not a timing measurement.
    _, err = procs[0].communicate(timeout=timeout + 60)
    assert procs[0].returncode == 3, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("asymalign sweep: error:")]
    assert len(lines) == 1, err[-3000:]
    assert "another process of this sweep died or stopped answering" in lines[0]
    assert "rerun the same command to resume" in lines[0]
    done = [f for f in chunks.iterdir() if f.suffix == ".npz"]
    assert 1 <= len(done) < 5
    assert not (out / "results.csv").exists()
    for pr in _two_processes(work, out, "--distributed-timeout", str(timeout)):
        so, err = pr.communicate(timeout=300)
        assert pr.returncode == 0, err[-3000:]
        if "resumed" in so:
            assert " 0 resumed" not in so
    assert (out / "results.csv").read_bytes() == (two_process_run / "results.csv").read_bytes()
    _assert_same(_results(out), _results(two_process_run))


def test_changed_config_is_refused(work, reference_run):
    out = work / "changed"
    shutil.copytree(reference_run, out)
    cfg = sweep.parse_config(tomllib.loads(CONFIG.replace("s = 1.2", "s = 1.3")))
    with pytest.raises(sweep.SweepConfigError, match="different config.*--no-resume"):
        sweep.run_sweep(cfg, out, progress=False, compile_cache=False)
    # The same config resumes without computing anything.
    same = sweep.load_config(work / "t.toml")
    res = sweep.run_sweep(same, out, progress=False, compile_cache=False)
    assert res.computed_points == 0 and res.resumed_points == NUM_POINTS
    _assert_same(_results(out), _results(reference_run))


BASE = """
[[reference]]
family = "bernoulli"
prob = [0.3]
[[reward]]
family = "linear"
[grid]
delta = [0.1]
n = [4]
x = [0.5]
"""

INVALID = [
    (BASE + "\nfoo = 1\n", "unknown key 'foo' in [grid]; valid keys: delta, n, x, x_relative"),
    ("colour = 'red'\n" + BASE, "unknown key 'colour' in the top level; valid keys: name,"),
    ('quantities = ["bon_reward", "entropy"]\n' + BASE, "unknown quantity 'entropy'; valid quantities: lambda_star,"),
    (
        BASE.replace('"bernoulli"', '"gauss"'),
        "unknown reference family 'gauss'; valid families: bernoulli, zipf, dirichlet",
    ),
    (BASE.replace('family = "linear"', 'family = "linear"\nseed = 2'), "unknown key 'seed' in [[reward]] #1"),
    (BASE.replace('"linear"', '"quadratic"'), "unknown reward family 'quadratic'; valid families: linear, random"),
    (BASE.replace("prob = [0.3]", "prob = [1.3]"), "success probabilities must lie in (0, 1)"),
    (BASE.replace("delta = [0.1]", "delta = [-0.1]"), "KL budgets must be >= 0"),
    (BASE.replace("n = [4]", "n = [4.5]"), "grid.n must be integers"),
    ('quantities = ["bon_kl"]\n' + BASE.replace("n = [4]\n", ""), "quantity 'bon_kl' needs grid axis n"),
    (
        BASE.replace('"linear"', '"random"').replace('"bernoulli"\nprob = [0.3]', '"zipf"\nk = 50\ns = 1.0'),
        "C(n+k-1, k-1) = 292825 types for k = 50, n = 4 (limit 100000)",
    ),
    (BASE.replace('[[reward]]\nfamily = "linear"\n', ""), "missing [[reward]]"),
    (BASE.replace("delta = [0.1]", "delta = { linspace = [0.1, 0.2] }"), "linspace takes [start, stop, num]"),
    (BASE + "x_relative = [0.5]\n", "not both"),
    (BASE.replace('family = "bernoulli"\nprob = [0.3]', 'family = "zipf"\nk = 4'), "is missing 's'"),
    ("name = 'x'\n[grid\n", "not valid TOML"),
]


@pytest.mark.parametrize("text, message", INVALID)
def test_invalid_configs(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(sweep.SweepConfigError) as e:
        sweep.load_config(path)
    assert message in str(e.value)
    assert "\n" not in str(e.value).strip()


def test_valid_config_forms():
    cfg = sweep.parse_config(
        tomllib.loads(
            BASE.replace("delta = [0.1]", "delta = { linspace = [0.0, 0.4, 5] }").replace(
                "n = [4]", "n = { geomspace = [4, 64, 5] }"
            )
        )
    )
    assert cfg.grid["delta"] == (0.0, 0.1, 0.2, 0.30000000000000004, 0.4)
    assert cfg.grid["n"] == (4, 8, 16, 32, 64)
    # Without a quantities list every quantity the grid and the reference kinds support is computed.
    assert cfg.quantities == tuple(q for q, spec in sweep.QUANTITIES.items() if "iid" in spec.reference_kinds)
    assert {"lambda_star", "bon_reward", "rate_function", "klrl_reward_n"} <= set(cfg.quantities)
    plan = sweep.make_plan(cfg, 7)
    assert plan.num_points == 5 * 5 and len(plan.chunks) == 5  # one unit (5 points) per chunk


def test_cli_reports_config_errors(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('quantities = ["nope"]\n' + BASE)
    proc = subprocess.run(
        [sys.executable, "-m", "asymalign.sweep", str(path)],
        env=_env(1),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    sweep.quantities.load_plugins()
    assert proc.stderr.strip().splitlines() == [
        "asymalign sweep: error: unknown quantity 'nope'; valid quantities: " + ", ".join(sweep.QUANTITIES)
    ]


def test_example_configs_parse():
    for name in ("example.toml", "paper.toml"):
        cfg = sweep.load_config(ROOT / "experiments" / "sweeps" / name)
        assert sweep.make_plan(cfg, 256).num_points > 0


def test_asymalign_cli_has_sweep(tmp_path, capsys):
    from asymalign import cli

    path = tmp_path / "bad.toml"
    path.write_text(BASE.replace("n = [4]", "m = [4]"))
    assert cli.main(["sweep", str(path)]) == 2
    assert "unknown key 'm' in [grid]; valid keys: delta, n, x, x_relative" in capsys.readouterr().err
