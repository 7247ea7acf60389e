"""The `asymalign` command line: list, help, version, errors, experiment discovery, compile cache."""

import argparse
import multiprocessing.connection
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from asymalign import _compile_cache, cli
from asymalign._registry import EXPERIMENTS

_REPO = Path(__file__).resolve().parent.parent


def test_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in out]
    assert names == list(EXPERIMENTS)
    assert len(names) >= 7 and "frontier" in names
    for line, (name, desc) in zip(out, EXPERIMENTS.items(), strict=True):
        assert line.split(None, 1)[1].strip() == desc, name


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    assert "reproduce" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("asymalign ")
    with pytest.raises(SystemExit) as e:
        cli.main(["reproduce", "--help"])
    text = capsys.readouterr().out
    assert "--quick" in text and "--compile-cache" in text and "--no-compile-cache" in text


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("asymalign: error:"), err
    return err[0]


def test_unknown_experiment(capsys, tmp_path):
    assert cli.main(["reproduce", "--only", "nope", "--out", str(tmp_path)]) != 0
    assert "nope" in _one_error_line(capsys)
    assert not any(tmp_path.iterdir())


def test_bad_arguments(capsys):
    assert cli.main(["frobnicate"]) != 0
    _one_error_line(capsys)
    assert cli.main(["reproduce", "--seed", "x"]) != 0
    _one_error_line(capsys)


def test_unwritable_directory(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    args = ["reproduce", "--quick", "--only", "ldp", "--out", str(blocker / "sub"), "--no-compile-cache"]
    assert cli.main(args) != 0
    assert "cannot write" in _one_error_line(capsys)


# ---------------------------------------------------------------------------
# experiment discovery (issue 10): no sys.modules injection; one-line message
# ---------------------------------------------------------------------------


def test_load_experiments_uses_the_import_system():
    path_before = list(sys.path)
    exps = cli.load_experiments()
    assert Path(exps.__file__).resolve() == _REPO / "experiments" / "__init__.py"
    assert sys.path == path_before  # the checkout root was on sys.path only during the import
    assert list(exps.EXPERIMENTS) == list(EXPERIMENTS)
    assert cli.load_experiments() is exps


def test_missing_experiments_folder(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "experiments_dir", lambda: tmp_path / "site-packages" / "experiments")
    monkeypatch.delenv(cli.EXPERIMENTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["list"]) == 0  # list needs only the package
    capsys.readouterr()
    assert cli.main(["reproduce", "--quick", "--out", str(tmp_path / "figs")]) == 1
    line = _one_error_line(capsys)
    assert "experiments folder not found" in line and str(tmp_path / "site-packages" / "experiments") in line
    assert cli.EXPERIMENTS_ENV in line and "git clone" in line
    assert not (tmp_path / "figs").exists()


def test_experiments_env_var(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "experiments_dir", lambda: tmp_path / "nowhere")
    monkeypatch.setenv(cli.EXPERIMENTS_ENV, str(_REPO / "experiments"))
    assert cli.find_experiments() == _REPO / "experiments"
    monkeypatch.setenv(cli.EXPERIMENTS_ENV, str(tmp_path))
    assert cli.main(["reproduce", "--only", "ldp", "--out", str(tmp_path / "f")]) == 1
    assert "is not an experiments folder" in _one_error_line(capsys)


def test_clashing_experiments_module(capsys, monkeypatch, tmp_path):
    other = argparse.Namespace(__file__=str(tmp_path / "experiments" / "__init__.py"))
    monkeypatch.setitem(sys.modules, "experiments", other)
    assert cli.main(["reproduce", "--only", "ldp", "--out", str(tmp_path / "f")]) == 1
    assert "already imported" in _one_error_line(capsys)


_OUTSIDE = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {site!r})
    import asymalign.cli as cli
    assert cli.__file__.startswith({site!r}), cli.__file__
    sys.exit(cli.main(sys.argv[1:]))
    """
)


@pytest.fixture(scope="module")
def installed_copy(tmp_path_factory):
    """The package copied outside the checkout, as ``pip install .`` would place it."""
    site = tmp_path_factory.mktemp("site-packages")
    shutil.copytree(_REPO / "asymalign", site / "asymalign", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def _run_outside(site, cwd, *args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in (cli.EXPERIMENTS_ENV, "PYTHONPATH")}
    env.update(env_extra or {})
    script = _OUTSIDE.format(site=str(site))
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_installed_package_outside_a_checkout(installed_copy, tmp_path):
    res = _run_outside(installed_copy, tmp_path, "list")
    assert res.returncode == 0, res.stderr
    assert [ln.split()[0] for ln in res.stdout.splitlines()] == list(EXPERIMENTS)
    res = _run_outside(installed_copy, tmp_path, "reproduce", "--quick", "--out", str(tmp_path / "figs"))
    err = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(err) == 1, res.stderr
    assert err[0].startswith("asymalign: error: experiments folder not found")
    assert str(installed_copy / "experiments") in err[0] and "git clone" in err[0]
    assert not (tmp_path / "figs").exists()


def test_installed_package_run_from_a_clone(installed_copy):
    # `pip install .` then `asymalign reproduce` in the clone: ./experiments is found.
    res = _run_outside(installed_copy, _REPO, "reproduce", "--only", "nope")
    assert res.returncode == 2 and "unknown experiment 'nope'" in res.stderr
    script = _OUTSIDE.format(site=str(installed_copy)).replace(
        "sys.exit(cli.main(sys.argv[1:]))", "print(cli.find_experiments()); print(cli.load_experiments().__file__)"
    )
    env = {k: v for k, v in os.environ.items() if k not in (cli.EXPERIMENTS_ENV, "PYTHONPATH")}
    res = subprocess.run([sys.executable, "-c", script], cwd=_REPO, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    found, init = res.stdout.split()
    assert Path(found) == _REPO / "experiments" and Path(init) == _REPO / "experiments" / "__init__.py"


def test_console_entry_point_runs():
    # `python -m asymalign.cli` is the same entry point as the `asymalign` script.
    res = subprocess.run([sys.executable, "-m", "asymalign.cli", "list"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "frontier" in res.stdout


# ---------------------------------------------------------------------------
# persistent compilation cache (issue 11)
# ---------------------------------------------------------------------------


def test_resolve_compile_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(_compile_cache.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    import jax

    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        _check_resolution(monkeypatch, tmp_path)
        monkeypatch.delenv(_compile_cache.ENV_VAR)
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jaxcfg"))
        assert _compile_cache.resolve_compile_cache(None) == str(tmp_path / "jaxcfg")  # a user's JAX setting
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def _check_resolution(monkeypatch, tmp_path):
    assert _compile_cache.resolve_compile_cache(None) == str(tmp_path / "xdg" / "asymalign" / "jax")
    assert _compile_cache.resolve_compile_cache(True) == str(tmp_path / "xdg" / "asymalign" / "jax")
    assert _compile_cache.resolve_compile_cache(False) is None
    assert _compile_cache.resolve_compile_cache(tmp_path / "c") == str(tmp_path / "c")
    for off in ("0", "off", "OFF", "false", "no", "none"):
        monkeypatch.setenv(_compile_cache.ENV_VAR, off)
        assert _compile_cache.resolve_compile_cache(None) is None
        assert _compile_cache.resolve_compile_cache(tmp_path / "c") == str(tmp_path / "c")  # the flag wins
    monkeypatch.setenv(_compile_cache.ENV_VAR, str(tmp_path / "env"))
    assert _compile_cache.resolve_compile_cache(None) == str(tmp_path / "env")


def _capture_reproduce(monkeypatch):
    calls = {}
    monkeypatch.setattr(cli, "reproduce", lambda names, out, **kw: calls.setdefault("names", names))
    monkeypatch.setattr(_compile_cache, "enable_compile_cache", lambda s=None: calls.setdefault("cache", s) or None)
    return calls


def test_reproduce_compile_cache_flags(monkeypatch, tmp_path):
    monkeypatch.delenv(_compile_cache.ENV_VAR, raising=False)
    calls = _capture_reproduce(monkeypatch)
    assert cli.main(["reproduce", "--only", "ldp", "--compile-cache", str(tmp_path)]) == 0
    assert calls == {"names": ["ldp"], "cache": str(tmp_path)}
    calls = _capture_reproduce(monkeypatch)
    assert cli.main(["reproduce", "--only", "ldp"]) == 0
    assert calls == {"names": ["ldp"], "cache": None}  # None: environment, else the default directory
    calls = _capture_reproduce(monkeypatch)
    assert cli.main(["reproduce", "--only", "ldp", "--no-compile-cache"]) == 0
    assert calls == {"names": ["ldp"]}  # never turned on


_CACHE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import jax, jax.numpy as jnp
    from asymalign._compile_cache import enable_compile_cache
    d = enable_compile_cache(sys.argv[1] if len(sys.argv) > 1 else None)
    print(d)
    jax.jit(lambda x: jnp.sin(x) * 2.0)(jnp.arange(3.0)).block_until_ready()
    print(len(os.listdir(d)) if d else -1)
    """
)


def test_compile_cache_writes_small_kernels(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != _compile_cache.ENV_VAR}
    cache = tmp_path / "cache"
    res = subprocess.run(
        [sys.executable, "-c", _CACHE_SCRIPT, str(cache)], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    d, count = res.stdout.split()
    assert Path(d) == cache and int(count) >= 1  # a kernel compiled in milliseconds is cached
    env[_compile_cache.ENV_VAR] = "off"
    res = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["None", "-1"]


def test_jobs_flag(capsys):
    for bad in ("0", "-1", "x"):
        assert cli.main(["reproduce", "--jobs", bad]) == 2
        assert "--jobs" in _one_error_line(capsys)
    assert cli.default_jobs(1) == 1
    assert 1 <= cli.default_jobs(100) <= (os.cpu_count() or 1)


def test_parallel_reproduce_writes_what_one_process_writes(tmp_path):
    """With the worker the ``asymalign`` script starts before it imports JAX (its own pool,
    without it, is run by the failing-worker tests below)."""
    import _asymalign_cli

    names = ["ldp", "cumulants"]
    serial = cli.reproduce(names, tmp_path / "one", quick=True, seed=3, progress=False, jobs=1)
    pool = _asymalign_cli._start_pool(1)
    parallel = cli.reproduce(names, tmp_path / "two", quick=True, seed=3, progress=False, jobs=2, pool=pool)
    assert pool._shutdown_thread  # used, and shut down by reproduce
    assert list(parallel) == names
    for name in names:
        for ext in ("csv", "png", "pdf"):
            assert (tmp_path / "two" / f"{name}.{ext}").stat().st_size > 0
        assert (tmp_path / "one" / f"{name}.csv").read_text() == (tmp_path / "two" / f"{name}.csv").read_text()
        assert serial[name].summary.keys() == parallel[name].summary.keys()


def test_the_script_imports_neither_the_package_nor_jax_before_it_starts_workers():
    code = "import sys, _asymalign_cli; print(sorted({'jax', 'asymalign', 'numpy'} & set(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr


@pytest.mark.parametrize(
    "argv, cores, wanted",
    [
        (["reproduce", "--quick"], 2, True),
        (["reproduce", "--only", "ldp", "--jobs", "2"], 2, True),
        (["reproduce", "--quick"], 1, False),
        (["reproduce", "--jobs", "1"], 4, False),
        (["reproduce", "-j", "1"], 4, False),
        (["reproduce", "--jobs=1"], 4, False),
        (["reproduce", "-j1", "--quick"], 4, False),
        (["reproduce", "--help"], 4, False),
        (["list"], 4, False),
        (["sweep", "c.toml"], 4, False),
        ([], 4, False),
    ],
)
def test_the_script_starts_workers_only_for_a_parallel_reproduce(monkeypatch, argv, cores, wanted):
    import _asymalign_cli

    monkeypatch.setattr(_asymalign_cli, "_cores", lambda: cores)
    assert _asymalign_cli._wants_workers(argv) is wanted


def test_the_script_reports_ctrl_c_during_its_import_as_one_line(monkeypatch, capsys):
    import types

    import _asymalign_cli

    def interrupted(name):
        raise KeyboardInterrupt

    fake = types.ModuleType("asymalign")
    fake.__getattr__ = interrupted  # `from asymalign import cli` is interrupted
    monkeypatch.setitem(sys.modules, "asymalign", fake)
    assert _asymalign_cli.main(["list"]) == 130
    assert capsys.readouterr().err == "asymalign: interrupted\n"


def test_the_script_ends_reproduce_after_the_atexit_handlers_without_the_teardown():
    code = textwrap.dedent(
        """
        import atexit, sys, _asymalign_cli

        class Teardown:
            def __del__(self):
                print("teardown")

        keep = Teardown()  # freed by the interpreter's teardown, which the script skips
        atexit.register(print, "atexit ran")
        sys.stdout.write("buffered ")  # flushed before the process ends
        sys.argv = ["asymalign", "reproduce", "--only", "nope", "--jobs", "1"]
        sys.exit(_asymalign_cli.main())
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr  # the status of the failed command, kept
    assert "unknown experiment 'nope'" in res.stderr
    assert res.stdout == "buffered atexit ran\n"
    # in-process callers (argv given) get the status back
    res = subprocess.run(
        [sys.executable, "-c", code.replace("_asymalign_cli.main()", "_asymalign_cli.main(sys.argv[1:])")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and res.stdout == "buffered atexit ran\nteardown\n", res.stdout


def test_workers_started_for_a_run_that_fails_are_stopped(capsys):
    import _asymalign_cli

    pool = _asymalign_cli._start_pool(1)
    (proc,) = pool._processes.values()
    manager = pool._executor_manager_thread  # CPython's pool: this thread reaps the workers
    assert cli.main(["reproduce", "--only", "nope"], pool=pool) == 2
    assert "unknown experiment 'nope'" in _one_error_line(capsys)
    # Not proc.join(): two threads waiting for one child race, and the loser reads no exit code.
    assert multiprocessing.connection.wait([proc.sentinel], timeout=30)  # the worker is gone
    manager.join(timeout=30)
    assert proc.exitcode == -signal.SIGTERM  # terminated while still importing, not left to finish its start


def test_errors_of_worker_processes_keep_their_status():
    import pickle

    err = pickle.loads(pickle.dumps(cli.CLIError("cannot write outputs", 1)))
    assert str(err) == "cannot write outputs" and err.status == 1


def test_a_skipped_note_gets_its_own_line_under_the_progress_bar(capsys, monkeypatch, tmp_path):
    """An experiment's ``skipped`` note (e.g. the ``data`` extra missing) is printed by the CLI, once, on a
    line of its own (it used to be printed by the experiment, after the progress bar on the same line)."""

    class _Result:
        def __init__(self, name):
            self.summary = {"skipped": f"{name} skipped: needs the data extra"} if name == "sentiment" else {}

    monkeypatch.setattr(cli, "_run_one", lambda name, *args: _Result(name))
    cli.reproduce(["ldp", "sentiment"], tmp_path, quick=True, seed=0, progress=True, jobs=1)
    pieces = re.split(r"[\r\n]", capsys.readouterr().err)
    assert [p for p in pieces if "needs the data extra" in p] == ["sentiment skipped: needs the data extra"], pieces


def _reproduce_with_a_failing_worker(tmp_path, failure: str):
    """``reproduce --only ldp cumulants --jobs 2`` on fake experiments that run ``failure`` in a spawned
    worker and succeed in the calling process (which runs the costlier ``ldp`` itself)."""
    fake = tmp_path / "experiments"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import importlib\n"
        "from asymalign._registry import EXPERIMENTS\n"
        "from . import _common\n"
        "def load(name):\n"
        "    return importlib.import_module(f'{__name__}.{name}')\n"
    )
    (fake / "_common.py").write_text("def to_jsonable(x):\n    return x\n")
    for name in ("ldp", "cumulants"):
        (fake / f"{name}.py").write_text(
            "import multiprocessing, os\n"
            "from types import SimpleNamespace\n"
            "from matplotlib.figure import Figure\n"
            "from asymalign.cli import CLIError\n"
            "def compute(key, *, quick=False):\n"
            "    if multiprocessing.parent_process() is not None:  # in a spawned worker\n"
            f"        {failure}\n"
            f"    table = SimpleNamespace(write_csv=lambda path: open(path, 'w').write('x\\n'))\n"
            f"    return SimpleNamespace(name={name!r}, table=table, params={{}}, summary={{}})\n"
            "def plot(result):\n"
            "    return Figure()\n"
        )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env[cli.EXPERIMENTS_ENV] = str(fake)
    res = subprocess.run(
        [sys.executable, "-m", "asymalign.cli", "reproduce", "--only", "ldp", "cumulants", "--jobs", "2",
         "--no-compile-cache", "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("asymalign: error:")]
    # the calling process's experiment completed and wrote its files; the worker's did not
    assert (tmp_path / "out" / "ldp.csv").read_text() == "x\n" and not (tmp_path / "out" / "cumulants.csv").exists()
    return res, errors


def test_a_dead_worker_is_one_clear_error(tmp_path):
    """A worker process that dies (here: os._exit in an experiment) ends the run with one error line."""
    res, errors = _reproduce_with_a_failing_worker(tmp_path, "os._exit(3)")
    assert res.returncode == 1, res.stderr[-2000:]
    assert len(errors) == 1 and "worker process died" in errors[0] and "--jobs 1" in errors[0], res.stderr[-2000:]
    assert "'cumulants'" in errors[0]


def test_an_error_in_a_worker_is_its_own_error_line_and_status(tmp_path):
    """An experiment's error raised in a worker reaches the calling process as itself (message and status)."""
    failure = "raise CLIError('cannot write cumulants.png: disk full', 3)"
    res, errors = _reproduce_with_a_failing_worker(tmp_path, failure)
    assert res.returncode == 3, res.stderr[-2000:]
    assert errors == ["asymalign: error: cannot write cumulants.png: disk full"], res.stderr[-2000:]


def test_worker_processes_exit_at_once_without_losing_output(tmp_path):
    """reproduce's workers skip the interpreter's teardown at exit (os._exit from an atexit
    handler): what they printed is still flushed, and they exit with status 0."""
    script = tmp_path / "pool.py"
    script.write_text(
        "import concurrent.futures as cf, multiprocessing as mp, sys\n"
        "from asymalign import cli\n"
        "def job():\n"
        "    print('printed in the worker', end='')  # left in the buffer\n"
        "    return mp.current_process().pid\n"
        "if __name__ == '__main__':\n"
        "    ctx = mp.get_context('spawn')\n"
        "    pool = cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=cli._worker_import)\n"
        "    pool.submit(job).result()\n"
        "    (proc,) = pool._processes.values()\n"
        "    pool.shutdown()\n"
        "    print('', proc.exitcode)\n"
    )
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["printed", "in", "the", "worker", "0"], res.stdout


def test_saved_figures_are_those_savefig_lays_out_itself(tmp_path):
    """``_save`` runs the layout engine once, for the PNG and the PDF; the files are byte for
    byte what ``savefig`` writes when it lays the figure out for the PNG itself (the PDF keeping
    that layout)."""
    exps = cli.load_experiments()
    common = exps._common

    def figure():
        fig, axes = common.new_figure(ncols=2, nrows=2)
        for i, ax in enumerate(axes.flat):
            ax.loglog([1, 10, 100], [3e-3, 2e-1, 7 * (i + 1)], "o-", label=r"$\varphi_{\lambda^*}^{\otimes n}$")
            ax.set_xlabel(r"KL$(\pi_N \,\|\, p^{\otimes n})$  [nats]")
            ax.set_ylabel("a long label " * (i + 1))
            ax.legend()
        common.plain_log_ticks(fig)
        fig.suptitle("a title over the panels")
        return fig

    table = common.Table()
    table.add("a", "s", [1.0], [2.0])
    cli._save(common.Result("fig", table, {}, {}), figure(), tmp_path, {}, common.to_jsonable)
    reference = figure()
    reference.savefig(tmp_path / "ref.png", dpi=cli._PNG_DPI, metadata={"Software": None})
    reference.set_layout_engine("none")
    reference.savefig(tmp_path / "ref.pdf", metadata={"CreationDate": None, "Producer": None, "Creator": None})
    for ext in ("png", "pdf"):
        assert (tmp_path / f"fig.{ext}").read_bytes() == (tmp_path / f"ref.{ext}").read_bytes(), ext


@pytest.mark.parametrize("seed", [0, 3, 2**31, 2**40 + 5])
def test_experiment_keys_fold_the_name_into_the_seed(seed):
    import zlib

    import jax

    for name in ("ldp", "frontier"):
        expected = jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)
        got = cli._experiment_key(seed, name)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(jax.random.key_data(got), jax.random.key_data(expected))
