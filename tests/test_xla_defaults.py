"""The tests marked ``xla_defaults`` pass with XLA's default compiler options.

The suite compiles for compile speed (see ``conftest.py``); the marked tests
check the choice of compiler options itself and compare the package's kernels
compiled both ways, so they need XLA's defaults. This test runs them in a
process of its own with the ``XLA_FLAGS`` the suite was started with.
"""

import os
import pathlib
import re
import subprocess
import sys

import jax
import pytest

TESTS = pathlib.Path(__file__).parent


def _files_with_marked_tests():
    return sorted(
        str(f) for f in TESTS.glob("test_*.py") if "pytest.mark.xla_defaults" in f.read_text(encoding="utf-8")
    )


def test_marked_tests_pass_with_xla_defaults():
    if os.environ.get("ASYMALIGN_TEST_XLA_DEFAULTS", "0") == "1":
        pytest.skip("this session runs with XLA's defaults: the marked tests run in it")
    files = _files_with_marked_tests()
    assert len(files) >= 2, files  # the executable cache's and soft best-of-N's
    env = dict(os.environ, ASYMALIGN_TEST_XLA_DEFAULTS="1", XLA_FLAGS=os.environ["ASYMALIGN_TEST_USER_XLA_FLAGS"])
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "xla_defaults", *files],
        cwd=TESTS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and "failed" not in summary and "error" not in summary, summary
    if jax.devices()[0].platform == "cpu":  # every marked test ran (they skip only off CPU)
        assert int(passed.group(1)) >= 9 and "skipped" not in summary, summary
