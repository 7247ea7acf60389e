"""The persistent executable cache of :mod:`asymalign._jit` (issue 11).

A kernel's executable, once written, is loaded in a new process instead of
traced, lowered and compiled. What must hold: the results are those of
``jax.jit`` with the same compiler options, bit for bit; a loaded executable builds nothing (no compilation
event); tracers (``jit``/``vmap``/``grad`` of a caller) bypass the cache; every
part of the key (static values, shapes, dtypes) separates entries; a damaged
entry is rebuilt; and an executable that JAX's own cache already held is still
written so that it runs in a new process (XLA:CPU cannot re-serialize what it
read back from JAX's cache; that bug failed with "Function ... not found").
"""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asymalign import _jit
from asymalign._compile_cache import CompileCounter


@pytest.fixture
def exec_cache(tmp_path):
    _jit.set_executable_cache_dir(str(tmp_path / "exe"))
    yield tmp_path / "exe"
    _jit.set_executable_cache_dir(None)


@functools.partial(_jit.jit, static_argnames=("order", "scale"))
def _kernel(x, key, tree, order=2, scale=1.0):
    noise = jax.random.uniform(key, x.shape, x.dtype)
    return {"power": scale * x**order + noise, "sum": tree["a"].sum() + tree["b"][0]}


# These calls are small: compiled with the fast-compile options (tested below).
_plain = jax.jit(_kernel.__wrapped__, static_argnames=("order", "scale"), compiler_options=_jit._fast_compile_options())


def _args(n=5, dtype=jnp.float64):
    x = jnp.linspace(0.0, 1.0, n, dtype=dtype)
    return x, jax.random.key(3), {"a": jnp.arange(3.0), "b": (jnp.float64(2.0),)}


def _same(a, b):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
        assert u.dtype == v.dtype


def test_results_are_jax_jit_results_and_a_reload_builds_nothing(exec_cache):
    x, key, tree = _args()
    first = _kernel(x, key, tree, order=3)
    _same(first, _plain(x, key, tree, order=3))
    assert len(os.listdir(exec_cache)) == 1
    _jit.clear_memory()  # as a new process: only the file is left
    with CompileCounter() as c:
        again = _kernel(x, key, tree, order=3)
        jax.block_until_ready(again)
    assert c.count == 0
    _same(first, again)
    # static by keyword or by position, defaults left out or given: one entry
    _same(_kernel(x, key, tree, 3, 1.0), first)
    assert len(os.listdir(exec_cache)) == 1


def test_key_separates_static_values_shapes_and_dtypes(exec_cache):
    x, key, tree = _args()
    _kernel(x, key, tree)
    _kernel(x, key, tree, order=3)
    _kernel(x, key, tree, scale=2.0)
    _kernel(_args(n=7)[0], key, tree)
    _kernel(x.astype(jnp.float32), key, tree)
    with jax.numpy_rank_promotion("allow"):  # a setting that changes tracing (the suite runs with "raise")
        _kernel(x, key, tree)
    assert len(os.listdir(exec_cache)) == 6
    _same(_kernel(x, key, tree, scale=2.0), _plain(x, key, tree, scale=2.0))
    _same(_kernel(x.astype(jnp.float32), key, tree), _plain(x.astype(jnp.float32), key, tree))


def test_tracers_bypass_the_cache(exec_cache):
    x, key, tree = _args()
    grad = jax.grad(lambda v: _kernel(v, key, tree, order=3)["power"].sum())(x)
    np.testing.assert_allclose(grad, 3.0 * x**2, rtol=1e-14)
    batched = jax.vmap(lambda v: _kernel(v, key, tree)["power"])(jnp.stack([x, 2 * x]))
    _same(batched[1], _plain(2 * x, key, tree)["power"])
    assert not os.path.exists(exec_cache) or len(os.listdir(exec_cache)) == 0


@functools.partial(_jit.jit, static_argnames=("fn",))
def _apply(x, fn):
    return fn(x)


def test_a_static_value_without_a_stable_repr_is_left_to_jax_jit(exec_cache):
    x = jnp.arange(4.0)
    double = lambda v: 2.0 * v  # noqa: E731  (its repr holds an address: not a key across processes)
    np.testing.assert_array_equal(_apply(x, double), 2.0 * x)
    np.testing.assert_array_equal(_apply(x, double), 2.0 * x)
    assert not os.path.exists(exec_cache) or os.listdir(exec_cache) == []
    assert len(_apply._loaded) == 1  # decided once (compiled in memory), not at every call
    np.testing.assert_array_equal(_apply(x, jnp.sin), jnp.sin(x))


def test_the_default_optimisers_are_keys_and_a_users_optimiser_is_left_to_jax_jit(exec_cache):
    """optax transformations are closures; the package's defaults get a stable repr, so that the
    optimisation drivers' executables are written and loaded in a new process (not traced,
    lowered and compiled again: 0.1-0.4 s a kernel)."""
    import optax

    import asymalign as aa
    from asymalign import _policy

    p, r = np.array([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 2.0])
    first = aa.optimize_policy(p, r, 0.5, num_steps=20)
    aa.optimize_constrained_policy(p, r, 0.1, num_steps=20)
    aa.reinforce_policy(jax.random.key(0), p, r, 0.5, num_steps=20, num_samples=8)
    entries = set(os.listdir(exec_cache))
    assert len(entries) == 4  # the three drivers and their shared start (softmax(θ) = p)
    _jit.clear_memory()  # as a new process
    with CompileCounter() as c:
        again = aa.optimize_policy(p, r, 0.5, num_steps=20)
        jax.block_until_ready(again)
    assert c.count == 0
    _same(first, again)
    # the repr names what was built, and optax's version; equal and hashed as the transformation
    adam = _policy._default_adam(0.05)
    assert repr(adam) == f"optax {optax.__version__} adam(0.05)" and " at 0x" not in repr(adam)
    assert adam == tuple(adam) and hash(adam) == hash(tuple(adam))
    assert " at 0x" not in repr(_policy._default_cosine_adam(20))
    aa.optimize_policy(p, r, 0.5, num_steps=20, optimizer=optax.adam(0.05))  # a user's: in memory only
    assert set(os.listdir(exec_cache)) == entries


@functools.partial(_jit.jit, static_argnames=("m",), work=lambda s: s["m"])
def _scaled(x, m):
    return jnp.exp(x) * m


@pytest.fixture
def compile_options(monkeypatch):
    """The compiler options of every compilation by :mod:`asymalign._jit`, in order."""
    seen = []
    compile_ = _jit._compile

    def record(lowered, options, **kw):
        seen.append(dict(options))
        return compile_(lowered, options, **kw)

    monkeypatch.setattr(_jit, "_compile", record)
    return seen


@pytest.mark.xla_defaults
@pytest.mark.parametrize("with_cache", [False, True])
def test_small_calls_compile_for_compile_speed_large_ones_for_run_speed(compile_options, tmp_path, with_cache):
    if jax.devices()[0].platform != "cpu":
        pytest.skip("the fast-compile options are for XLA:CPU")
    _jit.set_executable_cache_dir(str(tmp_path / "exe") if with_cache else None)
    try:
        fast = _jit.FAST_COMPILE_OPTIONS
        small = jnp.linspace(0.0, 1.0, _jit.SMALL_ELEMENTS - 1)
        big = jnp.linspace(0.0, 1.0, _jit.SMALL_ELEMENTS)
        np.testing.assert_allclose(_scaled(small, m=3), 3 * np.exp(np.asarray(small)), rtol=1e-15)
        np.testing.assert_allclose(_scaled(big, m=3), 3 * np.exp(np.asarray(big)), rtol=1e-15)
        _scaled(small, m=_jit.SMALL_WORK - 1)  # small arrays, declared work below its own threshold
        _scaled(small, m=_jit.SMALL_WORK)  # small arrays, large declared work
        _scaled(small, m=3)  # known signature: nothing new
        if with_cache:  # every executable is compiled here, so that it can be written
            assert compile_options == [fast, {}, fast, {}]
        else:  # a large call is jax.jit's own
            assert compile_options == [fast, fast]
    finally:
        _jit.set_executable_cache_dir(None)


@functools.partial(_jit.jit, small_elements=_jit.SMALL_ELEMENTS_HEAVY)
def _heavy(x):
    return jnp.exp(x) * 2.0


@pytest.mark.xla_defaults
def test_a_kernel_with_much_work_per_element_has_a_lower_bound(compile_options, monkeypatch):
    """``jit(small_elements=)`` moves the bound for one kernel; exact best-of-N on 1e5 tokens
    (a window law of 4096 and 16 384 levels) runs optimised code: with the fast options its
    kernels took 2-2.6x longer a call (``benchmarks/RESULTS.md``, issue 6's targets)."""
    if not _jit._fast_compile_options():
        pytest.skip("the fast-compile options are for XLA:CPU")
    import asymalign as aa

    _jit.clear_memory()
    fast = _jit.FAST_COMPILE_OPTIONS
    for size in (_jit.SMALL_ELEMENTS_HEAVY - 1, _jit.SMALL_ELEMENTS_HEAVY):
        x = jnp.linspace(0.0, 1.0, size)
        np.testing.assert_allclose(_heavy(x), 2 * np.exp(np.asarray(x)), rtol=1e-15)
    assert compile_options == [fast]  # the call at the bound is jax.jit's own, with XLA's defaults

    chosen = []  # (kernel, options) of every new signature
    options = _jit._CachedJit._options

    def spy(self, mem_key, lowered):
        chosen.append((self._name.rsplit(".", 1)[-1], options(self, mem_key, lowered)))
        return chosen[-1][1]

    monkeypatch.setattr(_jit._CachedJit, "_options", spy)
    aa.bon_vs_klrl([0.7, 0.3], [0.0, 1.0], 100_000, 0.2)  # the kernel on a window law of 4096 levels
    aa.bon_vs_klrl([0.1, 0.2, 0.05, 0.15, 0.1, 0.1, 0.2, 0.1], np.arange(8.0), 100_000, 0.2)  # 16 384
    heavy = [o for name, o in chosen if name in ("_bon_vs_klrl_kernel", "_best_windows")]
    assert len(heavy) == 3 and all(o == {} for o in heavy), chosen
    assert any(o == fast for name, o in chosen if name == "_klrl_part")  # small kernels keep the fast options


@pytest.mark.xla_defaults
def test_fast_compiled_kernels_agree_with_default_compiled_ones_to_rounding(monkeypatch, compile_options):
    """The package's kernels (level laws, soft best-of-N, InfAlign's solver, the λ solve),
    compiled with the fast-compile options and with XLA's defaults."""
    import asymalign as aa

    if not _jit._fast_compile_options():
        pytest.skip("the fast-compile options are for XLA:CPU")
    law = aa.reward_law([0.5, 0.3, 0.2], [0.0, 1.0, 2.5], 12)

    def run():
        _jit.clear_memory()
        return [
            aa.best_of_n(law, 3.0).log_prob,
            aa.soft_best_of_n(law, 2.0, 0.5).log_prob,
            aa.infalign_optimum(law, 2.0, jnp.asarray([0.1, 0.5])).win_rate,
            aa.solve_lambda([0.5, 0.3, 0.2], [0.0, 1.0, 2.5], jnp.asarray([0.05, 0.3])),
        ]

    fast = run()
    assert compile_options and all(o == _jit.FAST_COMPILE_OPTIONS for o in compile_options)
    monkeypatch.setitem(_jit._state, "fast_options", {})
    del compile_options[:]
    default = run()
    assert compile_options == []  # every kernel left to jax.jit, with XLA's defaults
    _jit.clear_memory()
    for a, b in zip(fast, default, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
        np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], rtol=1e-12, atol=1e-15)


@pytest.mark.xla_defaults
def test_a_monte_carlo_kernel_is_sized_by_the_tokens_it_draws(monkeypatch):
    """The simulator's inputs and outputs are small whatever it draws: its declared work
    (tokens drawn; with N traced, as many as the bucket's largest N) decides, so a large
    simulation keeps XLA's defaults and a middling one compiles for compile speed."""
    import asymalign as aa
    from asymalign import _sim_kernel

    if not _jit._fast_compile_options():
        pytest.skip("the fast-compile options are for XLA:CPU")
    chosen = []
    options = _jit._CachedJit._options

    def record(self, mem_key, lowered):
        out = options(self, mem_key, lowered)
        if self is _sim_kernel._simulate:
            chosen.append((_sim_kernel._simulation_work(dict(mem_key[0])), out))
        return out

    monkeypatch.setattr(_jit._CachedJit, "_options", record)
    p, r = [0.5, 0.3, 0.2], [0.0, 1.0, 2.0]
    aa.simulate_bon(jax.random.key(0), p, r, n=2, num_samples=4, num_trials=8)
    aa.simulate_bon(jax.random.key(0), p, r, n=10, num_samples=200, num_trials=200)  # n and N traced
    aa.simulate_bon(jax.random.key(0), p, r, n=64, num_samples=1024, num_trials=64)
    assert len(chosen) == 3, chosen
    (small_work, small), (mid_work, mid), (big_work, big) = chosen
    assert small_work == 2 * 4 * 8 and small == _jit.FAST_COMPILE_OPTIONS
    # the tokens drawn at least; at most those of twice the largest n and N of the buckets ([8, 16), (128, 256])
    assert 10 * 200 * 200 <= mid_work <= 2 * 16 * 256 * 200 and mid_work < _jit.SMALL_WORK
    assert mid == _jit.FAST_COMPILE_OPTIONS
    # counted up to where it reaches SMALL_WORK (so buckets of N beyond share an executable)
    assert _jit.SMALL_WORK <= big_work <= 2 * 128 * 1024 * 64 and big == {}


def test_an_xla_without_the_option_compiles_without_it(monkeypatch):
    """Another jaxlib may not know the option: the kernel is compiled without it, and
    later calls no longer ask for it; any other compile error is raised."""

    class _Lowered:
        def __init__(self, message):
            self.message, self.calls = message, []

        def compile(self, compiler_options=None):
            self.calls.append(compiler_options)
            if compiler_options:
                raise RuntimeError(self.message)
            return "compiled"

    monkeypatch.setitem(_jit._state, "fast_options", dict(_jit.FAST_COMPILE_OPTIONS))
    lowered = _Lowered("INVALID_ARGUMENT: No such compile option: 'xla_cpu_use_fusion_emitters'")
    assert _jit._compile(lowered, _jit._state["fast_options"]) == "compiled"
    assert lowered.calls == [_jit.FAST_COMPILE_OPTIONS, None]
    assert _jit._state["fast_options"] == {}
    monkeypatch.setitem(_jit._state, "fast_options", dict(_jit.FAST_COMPILE_OPTIONS))
    with pytest.raises(RuntimeError, match="out of memory"):
        _jit._compile(_Lowered("RESOURCE_EXHAUSTED: out of memory"), _jit.FAST_COMPILE_OPTIONS)


@pytest.mark.xla_defaults
@pytest.mark.parametrize(
    "flags, left",
    [
        ("--xla_cpu_use_fusion_emitters=true", {"xla_backend_optimization_level": 0}),
        ("--xla_backend_optimization_level=2", {"xla_cpu_use_fusion_emitters": False}),
        ("--xla_cpu_use_fusion_emitters=true --xla_backend_optimization_level=3", None),
    ],
)
def test_options_set_in_xla_flags_win(monkeypatch, compile_options, flags, left):
    """An option that XLA_FLAGS sets is not overridden; with both set the call is left to jax.jit."""
    if jax.devices()[0].platform != "cpu":
        pytest.skip("the fast-compile options are for XLA:CPU")
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "") + " " + flags)
    monkeypatch.delitem(_jit._state, "fast_options", raising=False)
    try:
        _jit.clear_memory()
        _scaled(jnp.arange(3.0), m=2)
        assert compile_options == ([] if left is None else [left])  # [] : left to jax.jit, which reads XLA_FLAGS
    finally:
        monkeypatch.delitem(_jit._state, "fast_options", raising=False)


def test_a_damaged_entry_is_rebuilt(exec_cache):
    x, key, tree = _args()
    want = _kernel(x, key, tree)
    (entry,) = os.listdir(exec_cache)
    (exec_cache / entry).write_bytes(b"not an executable")
    _jit.clear_memory()
    _same(_kernel(x, key, tree), want)
    assert (exec_cache / entry).stat().st_size > 1000


def test_off_is_plain_jit(tmp_path):
    _jit.set_executable_cache_dir(None)
    x, key, tree = _args()
    _same(_kernel(x, key, tree), _plain(x, key, tree))
    assert _jit.executable_cache_dir() is None


# Three fresh processes on one cache directory: (1) JAX's cache alone (as before
# this cache existed), (2) the executable cache turned on: its entries are
# compiled afresh and written, (3) they are loaded and run. The kernels: the
# Markov λ solver (LAPACK, which JAX registers only when it lowers) and a
# lattice law.
_SCRIPT = textwrap.dedent(
    """
    import sys, json
    import jax, numpy as np
    jax.config.update("jax_enable_x64", True)
    mode, cache = sys.argv[1], sys.argv[2]
    if mode == "jax-only":
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    else:
        from asymalign._compile_cache import enable_compile_cache
        enable_compile_cache(cache)
    import asymalign as aa
    from asymalign import markov as mk
    from asymalign._compile_cache import CompileCounter
    P = np.array([[0.9, 0.1], [0.3, 0.7]])
    chain = mk.MarkovChain(P, np.array([0.75, 0.25]))
    with CompileCounter() as c:
        lam = float(mk.solve_lambda(chain, np.array([0.0, 1.0]), 0.1))
        law = aa.reward_law([0.6, 0.3, 0.1], [0.0, 1.0, 2.0], 64)
        out = [lam, float(np.asarray(law.log_prob)[40])]
    print(json.dumps({"out": out, "kernels": c.names.get("jit(_solve_lambda)", 0)}))
    """
)


def test_fresh_processes_load_executables_that_jax_cache_had(tmp_path):
    import json

    env = {k: v for k, v in os.environ.items() if k not in ("ASYMALIGN_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    runs = []
    for mode in ("jax-only", "exec", "exec"):
        res = subprocess.run(
            [sys.executable, "-c", _SCRIPT, mode, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
        )
        assert res.returncode == 0, res.stderr[-3000:]
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    assert runs[0]["out"] == runs[1]["out"] == runs[2]["out"]
    assert runs[0]["kernels"] == 1 and runs[1]["kernels"] == 1  # built: read from JAX's cache, then afresh
    assert runs[2]["kernels"] == 0  # loaded whole: no compilation event at all
    assert len(os.listdir(tmp_path / "executables")) >= 2


# One process: a kernel is compiled with JAX's cache alone, then read back from it
# (JAX keeps that executable in memory, by its lowering), then the executable
# cache is turned on. Its entry must still be compiled afresh: the executable
# JAX read back cannot be serialized whole (this failed with "Function
# select_bitcast_fusion not found" when the entry was run).
_SAME_PROCESS = textwrap.dedent(
    """
    import sys, json
    import jax, numpy as np
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_compilation_cache_dir", sys.argv[1])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    import asymalign as aa
    from asymalign import _jit
    if sys.argv[3] == "no compiler options":  # as for a large call, or off CPU
        _jit._state["fast_options"] = {}
    law = aa.reward_law([0.6, 0.3, 0.1], [0.0, 1.0, 2.0], 4)
    run = lambda: np.asarray(aa.best_of_n(law, 2.0).log_prob).tolist()
    want = run()  # compiled, written to JAX's cache
    _jit.clear_memory()
    jax.clear_caches()
    read = run()  # read back from JAX's cache
    _jit.set_executable_cache_dir(sys.argv[2])
    fresh = run()  # the executable cache's entry: compiled afresh, written, run
    _jit.clear_memory()
    loaded = run()  # loaded from the executable cache
    print(json.dumps([want, read, fresh, loaded, len(__import__("os").listdir(sys.argv[2]))]))
    """
)


@pytest.mark.parametrize("options", ["fast options", "no compiler options"])
def test_an_executable_jax_read_from_its_cache_in_this_process_is_compiled_afresh(tmp_path, options):
    """Without compiler options too: ``Lowered.compile()`` without options returned the executable
    JAX had read from its cache for that lowering (fixed: ``_compile(fresh=True)``)."""
    import json

    res = subprocess.run(
        [sys.executable, "-c", _SAME_PROCESS, str(tmp_path / "jax"), str(tmp_path / "exe"), options],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    want, read, fresh, loaded, entries = json.loads(res.stdout.strip().splitlines()[-1])
    assert want == read == fresh == loaded and entries == 1


def test_sweep_kernels_of_package_quantities_only_are_cached():
    from asymalign.sweep import quantities as sq
    from asymalign.sweep.run import _Specs

    builtin = _Specs(tuple(sq.QUANTITIES[name] for name in ("lambda_star", "klrl_reward")))
    assert " at 0x" not in repr(builtin) and "asymalign." in repr(builtin)
    assert builtin == _Specs(builtin.specs) and hash(builtin) == hash(_Specs(builtin.specs))
    user = sq.Quantity("mine", (("iid", lambda unit: unit.deltas),), (), "")
    assert " at 0x" in repr(_Specs((*builtin.specs, user)))  # the cache leaves such a kernel to jax.jit


def test_sweep_through_the_executable_cache_gives_the_same_table(exec_cache, tmp_path):
    import tomllib

    from asymalign import sweep

    cfg = sweep.parse_config(
        tomllib.loads(
            """
            quantities = ["lambda_star", "bon_reward"]
            [[reference]]
            family = "dirichlet"
            k = 3
            concentration = 1.0
            count = 2
            seed = 0
            [[reward]]
            family = "linear"
            [grid]
            delta = [0.05, 0.2]
            n = [4, 16]
            """
        )
    )
    sweep.run_sweep(cfg, tmp_path / "a", resume=False, progress=False, compile_cache=False)
    assert len(os.listdir(exec_cache)) >= 1
    _jit.clear_memory()
    with CompileCounter() as c:
        sweep.run_sweep(cfg, tmp_path / "b", resume=False, progress=False, compile_cache=False)
    assert not any("unit_batch" in name for name in c.names), c.names  # loaded, not built
    first, second = sweep.read_results(tmp_path / "a"), sweep.read_results(tmp_path / "b")
    for col in ("lambda_star", "bon_reward"):
        np.testing.assert_array_equal(np.asarray(first[col]), np.asarray(second[col]))


def _public_calls():
    """Public functions at quick-start sizes, each with host (NumPy / Python) arguments."""
    import asymalign as aa

    p, r = np.array([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 2.0])
    law = aa.reward_law(p, r, 4)
    ref = aa.reward_law(p, r, 3)
    key = jax.random.key(0)  # made by the caller, once
    return {
        "solve_lambda": lambda: aa.solve_lambda(p, r, 0.1),
        "tilt": lambda: aa.tilt(p, r, 0.5),
        "kl_rl": lambda: aa.kl_rl(p, r, 0.1),
        "kl_regularized": lambda: aa.kl_regularized(p, r, np.array([0.5, 2.0])),
        "kl": lambda: aa.kl(np.array([[0.2, 0.3, 0.5]]), p),
        "scaled_cgf": lambda: aa.scaled_cgf(p, r, np.linspace(-1.0, 1.0, 5), 0.5),
        "rate_function": lambda: aa.rate_function(p, r, 0.7, 0.5),
        "cgf_via_renyi_cross_entropy": lambda: aa.cgf_via_renyi_cross_entropy(p, r, 0.5, 0.2),
        "bon_kl_bound": lambda: aa.bon_kl_bound(np.array([0.0, 2.0])),
        "prob": lambda: law.prob,
        "best_of_n": lambda: aa.best_of_n(law, 2.0),
        "solve_level_tilt": lambda: aa.solve_level_tilt(law, law.levels, 0.3),
        "transformed_reward": lambda: aa.transformed_reward(ref, "exponential", t=2.0),
        "transformed_reward power": lambda: aa.transformed_reward(ref, "power", log_num_samples=1.0),
        "inference_win_rate": lambda: aa.inference_win_rate(ref, ref, 1.0),
        "mc_mean": lambda: aa.mc_mean(np.array([1.0, 2.0, 4.0])),
        "optimize_policy": lambda: aa.optimize_policy(p, r, 0.5, num_steps=10),
        "reward_law": lambda: aa.reward_law(p, r, 40).log_prob,
        "bon_vs_klrl": lambda: aa.bon_vs_klrl(p, r, 8, 0.1),
        "simulate_bon": lambda: aa.simulate_bon(key, p, r, 8, 4, 16),
        "soft_best_of_n": lambda: aa.soft_best_of_n(law, 3.0, 0.5),
        "infalign_optimum": lambda: aa.infalign_optimum(ref, 1.0, 0.2),
    }


def test_a_fresh_process_with_the_cache_builds_nothing_for_public_calls(exec_cache):
    """Every executable a public call needs comes from the executable cache: none is left to
    an eager ``jnp`` operation, which JAX would trace, lower and compile again in every process."""
    calls = _public_calls()
    for call in calls.values():
        jax.block_until_ready(call())
    _jit.clear_memory()
    jax.clear_caches()  # as a new process: JAX's own caches of eager operations are gone too
    built = {}
    for name, call in calls.items():
        with CompileCounter() as c:
            jax.block_until_ready(call())
        if c.count:
            built[name] = dict(c.names)
    assert built == {}
