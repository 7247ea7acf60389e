"""The ``asymalign`` command: list and reproduce the experiments (figures + data).

::

    asymalign list
    asymalign reproduce [--quick] [--only NAME ...] [--out DIR] [--seed S]

``reproduce`` writes, for each experiment, ``DIR/NAME.png``, ``DIR/NAME.pdf``,
``DIR/NAME.csv`` (the plotted data) and ``DIR/NAME.json`` (all parameters, the
seed, package versions, the JAX backend and devices, and derived numbers).
The experiments live in the repository's ``experiments/`` folder next to the
package source (install with ``pip install -e .`` from a checkout).
Runs are deterministic for a given seed; float64 is enabled.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
import zlib
from pathlib import Path

_PROG = "asymalign"


class CLIError(Exception):
    """An error reported as one line on stderr with a non-zero exit status."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of usage + message
        raise CLIError(f"{message} (see '{_PROG} --help')", 2)


def _version() -> str:
    from . import __version__

    return __version__


def experiments_dir() -> Path:
    """The ``experiments/`` folder of the checkout this package was imported from."""
    return Path(__file__).resolve().parent.parent / "experiments"


def load_experiments():
    """Import the repository's ``experiments`` package (its registry and loader)."""
    d = experiments_dir()
    init = d / "__init__.py"
    if not init.is_file():
        raise CLIError(
            f"experiments folder not found at {d}: run from a source checkout installed with 'pip install -e .'",
            1,
        )
    mod = sys.modules.get("experiments")
    if mod is not None and Path(getattr(mod, "__file__", "") or "").resolve() == init.resolve():
        return mod
    spec = importlib.util.spec_from_file_location("experiments", init, submodule_search_locations=[str(d)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["experiments"] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception:
        sys.modules.pop("experiments", None)
        raise
    return mod


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=_PROG,
        description="Reproduce the figures and data of the asymptotics-of-alignment study.",
    )
    parser.add_argument("--version", action="version", version=f"{_PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("list", help="list the experiments, one line each")
    rep = sub.add_parser(
        "reproduce",
        help="run experiments and write NAME.png/.pdf/.csv/.json",
        description="Run the experiments and write DIR/NAME.png, .pdf, .csv (plotted data) and "
        ".json (parameters, seed, versions, backend).",
    )
    rep.add_argument("--quick", action="store_true", help="smaller n and trials, same plots (< 60 s)")
    rep.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    rep.add_argument("--out", default="figures", metavar="DIR", help="output folder (default: figures/)")
    rep.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    from ._sweep_cli import add_sweep_parser

    add_sweep_parser(sub)
    return parser


def _environment() -> dict:
    import importlib.metadata as md

    import jax

    versions = {"python": platform.python_version(), "asymalign": _version()}
    for pkg in ("jax", "jaxlib", "optax", "numpy", "scipy", "matplotlib"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "versions": versions,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_enable_x64": bool(jax.config.jax_enable_x64),
        "platform": platform.platform(),
    }


def _check_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".asymalign-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise CLIError(f"cannot write to output directory '{out}': {e.strerror or e}", 1) from None


def _experiment_key(seed: int, name: str):
    import jax

    # A per-experiment key that does not depend on which others are selected.
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)


def _save(result, fig, out: Path, meta: dict) -> list[Path]:
    from experiments._common import to_jsonable  # loaded by load_experiments

    name = result.name
    paths = [out / f"{name}.{ext}" for ext in ("png", "pdf", "csv", "json")]
    fig.savefig(paths[0], dpi=150, metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "Producer": None, "Creator": None})
    result.table.write_csv(paths[2])
    doc = {
        "experiment": name,
        **meta,
        "params": to_jsonable(result.params),
        "summary": to_jsonable(result.summary),
    }
    paths[3].write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return paths


def reproduce(names, out: Path, *, quick: bool, seed: int, progress: bool = True) -> dict:
    """Run ``names`` and write their outputs to ``out``; returns ``{name: Result}``."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")
    from tqdm import tqdm

    exps = load_experiments()
    _check_out_dir(out)
    env = _environment()
    results = {}
    bar = tqdm(names, desc="reproduce", unit="exp", disable=not progress, file=sys.stderr)
    t_all = time.perf_counter()
    for name in bar:
        bar.set_postfix_str(name)
        mod = exps.load(name)
        t0 = time.perf_counter()
        res = mod.compute(_experiment_key(seed, name), quick=quick)
        fig = mod.plot(res)
        elapsed = time.perf_counter() - t0
        meta = {
            "description": exps.EXPERIMENTS[name],
            "seed": seed,
            "quick": quick,
            "elapsed_s": round(elapsed, 3),
            **env,
        }
        try:
            _save(res, fig, out, meta)
        except OSError as e:
            raise CLIError(f"cannot write outputs of '{name}' to '{out}': {e.strerror or e}", 1) from None
        results[name] = res
    bar.close()
    if progress:
        print(
            f"wrote {len(names)} experiment(s) to {out}/ in {time.perf_counter() - t_all:.1f} s",
            file=sys.stderr,
        )
    return results


def main(argv=None) -> int:
    """Entry point of the ``asymalign`` command; returns the exit status."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "sweep":
            return args.func(args)
        exps = load_experiments()
        if args.command == "list":
            width = max(len(n) for n in exps.EXPERIMENTS)
            for name, desc in exps.EXPERIMENTS.items():
                print(f"{name:<{width}}  {desc}")
            return 0
        names = list(exps.EXPERIMENTS)
        if args.only:
            unknown = [n for n in args.only if n not in exps.EXPERIMENTS]
            if unknown:
                raise CLIError(f"unknown experiment {unknown[0]!r} (choose from: {', '.join(names)})", 2)
            names = [n for n in names if n in set(args.only)]
        reproduce(names, Path(args.out), quick=args.quick, seed=args.seed)
        return 0
    except CLIError as e:
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
