"""Test configuration: float64 reference precision, strict JAX promotion, warnings as errors, hypothesis profiles.

Profiles (select with HYPOTHESIS_PROFILE=...; CI=true selects "ci"):
  ci      - 30 examples per property, no deadline (JAX compile time).
  dev     - 60 examples (default locally).
  nightly - 500 examples.
Shapes are drawn from a small fixed set (see asymalign.testing) so JAX does
not recompile for every example.

Strictness: ``jax_numpy_rank_promotion="raise"`` makes an implicit rank
broadcast (a ``(k,)`` array meeting a ``(b, k)`` one without an explicit
``[..., None]`` or ``broadcast_to``) an error, and every warning not listed in
``_IGNORED_WARNINGS`` fails the test that raised it. A test that expects a
warning asserts it with ``pytest.warns``.
"""

import gc
import os

# The suite never reads or writes the user's persistent compilation cache (~/.cache/asymalign/jax, which
# `asymalign reproduce` and `asymalign sweep` turn on by default), so results and failures do not depend
# on what other runs left there. Tests that exercise the cache pass their own temporary directories.
# Set ASYMALIGN_COMPILE_CACHE=DIR to opt in deliberately.
os.environ.setdefault("ASYMALIGN_COMPILE_CACHE", "off")
# XLA compiles for compile speed in this suite: the options the package itself uses for small problems
# on CPU (asymalign._jit.FAST_COMPILE_OPTIONS: XLA's classic loop emitters, no LLVM optimisation of the
# generated code) are put in XLA_FLAGS before JAX starts, so that they apply also to what the package cannot
# choose options for: the tests' own jit, grad and vmap of its functions, and eager operations. About two
# thirds of the suite's CPU time went to compiling (tracing, lowering, XLA) programs that then run for
# microseconds. The suite checks numbers, not the speed of generated code; results agree to rounding
# (tests/test_executable_cache.py compares the package's kernels compiled both ways). Tests marked
# ``xla_defaults`` (which options a call gets, and that comparison) need XLA's defaults: here they are
# skipped, and tests/test_xla_defaults.py runs them in a process of their own with the XLA_FLAGS you gave.
# ASYMALIGN_TEST_XLA_DEFAULTS=1 runs the whole suite with XLA's defaults. A flag you set yourself is kept.
from asymalign._jit import FAST_COMPILE_OPTIONS  # noqa: E402  (imports JAX; its backend starts later)

FAST_XLA_FLAGS = tuple(f"--{k}={str(v).lower()}" for k, v in FAST_COMPILE_OPTIONS.items())
XLA_DEFAULTS = os.environ.get("ASYMALIGN_TEST_XLA_DEFAULTS", "0") == "1"
if not XLA_DEFAULTS:
    os.environ.setdefault("ASYMALIGN_TEST_USER_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    _flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = " ".join([_flags, *(f for f in FAST_XLA_FLAGS if f.split("=")[0] not in _flags)]).strip()
# pytest-xdist (`pytest -n 2`): on a GPU, each worker process must not preallocate most of its memory.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

# A persistent compilation cache private to this test session, in a new temporary directory (never the
# user's): test modules drop their compiled kernels (``_release_compiled_kernels`` below), and later
# modules read the same kernels back from disk instead of compiling them again. Each run starts empty, so
# a fresh clone measures what a fresh clone gets. ASYMALIGN_TEST_SESSION_CACHE=0 turns it off.
if os.environ.get("ASYMALIGN_TEST_SESSION_CACHE", "1") != "0" and not jax.config.jax_compilation_cache_dir:
    import atexit
    import shutil
    import tempfile

    if "ASYMALIGN_TEST_SESSION_CACHE_DIR" not in os.environ:  # the first process; pytest-xdist workers share it
        os.environ["ASYMALIGN_TEST_SESSION_CACHE_DIR"] = tempfile.mkdtemp(prefix="asymalign-tests-jax-cache-")
        atexit.register(shutil.rmtree, os.environ["ASYMALIGN_TEST_SESSION_CACHE_DIR"], ignore_errors=True)
    jax.config.update("jax_compilation_cache_dir", os.environ["ASYMALIGN_TEST_SESSION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Known warnings from third-party code that say nothing about asymalign
# ("action:message regex:category:module regex", pytest's -W syntax). Each
# entry names the package and why it is harmless. Checked: importing jax,
# optax, chex, scipy, mpmath, pyarrow, mkdocs, pymdownx, wordfreq, afinn and
# vaderSentiment with -W error raises nothing, so the list starts short.
_IGNORED_WARNINGS = [
    # jax: XLA on CPU cannot reuse donated buffers and says so; results are unaffected.
    "ignore:Some donated buffers were not usable:UserWarning",
]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "xla_defaults: needs XLA's default compiler options (run by tests/test_xla_defaults.py)"
    )
    config.addinivalue_line("filterwarnings", "error")
    for spec in _IGNORED_WARNINGS:  # added after "error": later lines win
        config.addinivalue_line("filterwarnings", spec)


# CPU seconds of the costliest modules (each run alone, 2 CPU cores, 2026-12-04), a scheduling hint only:
# with ``pytest -n 2 --dist loadfile`` each worker takes the next module from the front of the queue, so
# the costliest go first and the cheap ones fill in at the end (xdist's own order, by number of tests,
# left the 70 s experiment run and the 25 s run of tests/test_xla_defaults.py for the end). Modules not
# listed count as 10 s.
_MODULE_COST_S = {
    "test_experiments.py": 60,
    "test_best_of_n.py": 50,
    "test_cli.py": 48,
    "test_sweep.py": 37,
    "test_docs.py": 36,
    "test_soft_bon.py": 32,
    "test_simulation.py": 28,
    "test_executable_cache.py": 26,
    "test_xla_defaults.py": 25,
    "test_large_deviations.py": 23,
    "test_benchmarks.py": 22,
    "test_markov.py": 22,
    "test_compilation.py": 21,
    "test_tilting.py": 21,
    "test_levels.py": 21,
    "test_infalign.py": 17,
    "test_docs_site.py": 15,
    "test_sequence_laws.py": 12,
}


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -_MODULE_COST_S.get(item.path.name, 10))  # stable: modules stay whole
    if XLA_DEFAULTS:
        return
    skip = pytest.mark.skip(reason="needs XLA's defaults: run by tests/test_xla_defaults.py in a process of its own")
    for item in items:
        if item.get_closest_marker("xla_defaults") is not None:
            item.add_marker(skip)


_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=30, derandomize=True, **_common)
settings.register_profile("dev", max_examples=60, **_common)
settings.register_profile("nightly", max_examples=500, **_common)
_default = "ci" if os.environ.get("CI") else "dev"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", _default))


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_kernels():
    """Drop JAX's compiled executables after each test module.

    Every CPU executable holds about six memory mappings, and one process running
    the whole suite compiles well over 10 000 of them: without this, the process
    reaches the kernel's ``vm.max_map_count`` (65 530) and XLA segfaults while
    compiling (seen in a fresh-clone CI run). Later modules recompile what they use.
    """
    yield
    jax.clear_caches()
    gc.collect()
