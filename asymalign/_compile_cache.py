"""JAX's persistent compilation cache for the command line and the experiments.

Compilation dominates a first run of ``asymalign reproduce`` or ``asymalign
sweep`` (the numbers take seconds); with JAX's persistent compilation cache a
second run reuses the compiled executables from disk. The CLI turns it on by
default, in the user cache directory, resolved in this order:

1. ``--no-compile-cache`` (off) or ``--compile-cache DIR`` on the command line;
2. ``ASYMALIGN_COMPILE_CACHE``: a directory, or ``0`` / ``off`` / ``false`` /
   ``no`` / ``none`` to turn the cache off;
3. a cache the user already configured for JAX (``JAX_COMPILATION_CACHE_DIR``
   or ``jax.config.update("jax_compilation_cache_dir", ...)``);
4. ``$XDG_CACHE_HOME/asymalign/jax`` (``~/.cache/asymalign/jax``).

Next to JAX's cache, in ``<dir>/executables``, the package keeps its kernels'
whole executables (:mod:`asymalign._jit`): a second process then skips the
tracing and lowering as well, which JAX's cache does not save.

Importing :mod:`asymalign` as a library changes nothing: only the CLI (and
whoever calls :func:`enable_compile_cache`) turns the cache on. Every
executable that took at least :data:`MIN_COMPILE_TIME_S` to compile is stored;
the cache is trusted code, so keep it in a directory only you can write to.
"""

from __future__ import annotations

import collections
import os

__all__ = [
    "ENV_VAR",
    "EXECUTABLES_SUBDIR",
    "MIN_COMPILE_TIME_S",
    "CompileCounter",
    "default_compile_cache",
    "enable_compile_cache",
    "resolve_compile_cache",
]

ENV_VAR = "ASYMALIGN_COMPILE_CACHE"
# Whole executables of the package's kernels (:mod:`asymalign._jit`): a new
# process skips tracing and lowering too, not only XLA's compilation.
EXECUTABLES_SUBDIR = "executables"
# JAX's default (1 s) leaves out every small kernel: the experiments compile
# hundreds of kernels of 10-300 ms each. Reading an entry costs ~1 ms, so cache
# all but the trivial ones (measured: see benchmarks/cold_start.py).
MIN_COMPILE_TIME_S = 0.0
_OFF = {"0", "off", "false", "no", "none", ""}


def default_compile_cache() -> str:
    """``$XDG_CACHE_HOME/asymalign/jax`` (``~/.cache/asymalign/jax``): the default
    directory of JAX's persistent compilation cache for the CLI and sweeps."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "asymalign", "jax")


def resolve_compile_cache(setting: bool | str | os.PathLike | None = None) -> str | None:
    """The cache directory to use, or ``None`` for no cache.

    Args:
      setting: ``False``: off; a path: that directory; ``None`` or ``True``:
        the environment variable :data:`ENV_VAR` if set (a path, or ``0``/``off``
        to disable), else a directory already configured in JAX, else
        :func:`default_compile_cache`.

    Returns:
      An absolute directory path, or ``None`` when the cache is off.

    >>> resolve_compile_cache(False) is None
    True
    >>> resolve_compile_cache("/tmp/asymalign-cache")
    '/tmp/asymalign-cache'
    """
    if setting is False:
        return None
    if setting is not None and setting is not True:
        return os.path.abspath(os.fspath(setting))
    env = os.environ.get(ENV_VAR)
    if env is not None:
        if env.strip().lower() in _OFF:
            return None
        return os.path.abspath(os.path.expanduser(env))
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return configured
    return default_compile_cache()


def enable_compile_cache(setting: bool | str | os.PathLike | None = None) -> str | None:
    """Turn on the persistent caches: JAX's compilation cache and the package's executables.

    The first call of a function in a new Python process then costs tens of
    milliseconds instead of seconds: JAX's cache saves XLA's compilation, and
    the package's own cache (``DIR/executables``, :mod:`asymalign._jit`) keeps
    each kernel's whole executable, so tracing and lowering are skipped too.
    ``asymalign reproduce`` and ``asymalign sweep`` call it by default; call it
    once at the top of a notebook or script to get the same. Results are
    bit-for-bit those computed without it.

    Safe to call more than once and after JAX has compiled: a different
    directory re-initialises JAX's cache. A directory that cannot be created
    leaves the cache off (a cache is an optimisation, never an error). The
    directory holds executable code: keep it where only you can write.
    Entries of older package or JAX versions are not read again, nor
    removed: delete the directory to reclaim the space (tens of MB for the
    experiments).

    Args:
      setting: ``None`` or ``True``: ``$ASYMALIGN_COMPILE_CACHE`` if set (a
        directory, or ``off``), else a directory already configured for JAX,
        else ``~/.cache/asymalign/jax``; a path: that directory; ``False``:
        nothing is turned on (see :func:`resolve_compile_cache`).

    Returns:
      The directory in use, or ``None`` when the cache is off.

    Example::

        import asymalign as aa
        aa.enable_compile_cache()  # '~/.cache/asymalign/jax' (expanded)
        aa.solve_lambda([0.6, 0.3, 0.1], [0.0, 1.0, 2.0], 0.2)  # second process: ~0.06 s
    """
    path = resolve_compile_cache(setting)
    if path is None:
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    import jax

    if jax.config.jax_compilation_cache_dir != path:
        jax.config.update("jax_compilation_cache_dir", path)
        try:  # JAX initialises its cache object once per process
            from jax._src import compilation_cache as _cc

            if getattr(_cc, "_cache_initialized", False):
                _cc.reset_cache()
        except (ImportError, AttributeError):  # pragma: no cover - other JAX versions
            pass
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
    from . import _jit

    try:
        _jit.set_executable_cache_dir(os.path.join(path, EXECUTABLES_SUBDIR))
    except OSError:
        _jit.set_executable_cache_dir(None)
    return path


_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"


class CompileCounter:
    """Count XLA compilations (and persistent-cache hits) inside a ``with`` block.

    Listens to ``jax.monitoring``'s backend-compile event, which JAX records
    once per executable it builds (a jitted function's new shape/dtype/static
    signature, or an eager ``jnp`` operation's first call), whether compiled
    or read from the persistent cache. Robust to machine load, unlike timings.

    Attributes:
      count: executables built (compiled or read from the persistent cache).
      cache_hits: of those, read from the persistent cache.
      seconds: total time spent building them.
      names: ``Counter`` of the built executables' names (``jit_<function>``,
        or the primitive's name for eager operations).

    >>> import jax, jax.numpy as jnp
    >>> f = jax.jit(lambda x: 2.0 * x)
    >>> a, b, c4 = jnp.ones(3), jnp.zeros(3), jnp.ones(4)
    >>> with CompileCounter() as c:
    ...     _ = f(a); _ = f(b); _ = f(c4)
    >>> c.count  # one per shape
    2
    """

    def __init__(self):
        self.count = 0
        self.cache_hits = 0
        self.seconds = 0.0
        self.names: collections.Counter[str] = collections.Counter()

    def _on_duration(self, event, duration_secs, **kwargs):
        if event == _BACKEND_COMPILE:
            self.count += 1
            self.seconds += duration_secs
            self.names[str(kwargs.get("fun_name", "?"))] += 1

    def _on_event(self, event, **kwargs):
        if event == _CACHE_HIT:
            self.cache_hits += 1

    def __enter__(self):
        from jax import monitoring

        monitoring.register_event_duration_secs_listener(self._on_duration)
        monitoring.register_event_listener(self._on_event)
        return self

    def __exit__(self, *exc):
        from jax import monitoring

        monitoring.unregister_event_duration_listener(self._on_duration)
        monitoring.unregister_event_listener(self._on_event)
        return False

    def __repr__(self):
        top = ", ".join(f"{k}: {v}" for k, v in self.names.most_common(5))
        head = f"CompileCounter(count={self.count}, cache_hits={self.cache_hits}, seconds={self.seconds:.2f}"
        return f"{head}, top=[{top}])"
