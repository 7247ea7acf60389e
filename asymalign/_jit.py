"""``jax.jit`` with a persistent cache of compiled executables (issue 11).

JAX's persistent compilation cache saves XLA's compilation in a new process,
but not the tracing and lowering that come before it: for the kernels of this
package these take 0.1-0.5 s each, every process, every shape. :func:`jit`
is ``jax.jit`` plus a second cache, of whole executables: when a kernel is
called with concrete arguments, its executable for those static values and
argument shapes/dtypes is loaded from disk (``jax.experimental.serialize_executable``,
about 50 ms) or, the first time, compiled and written there. A fresh process
then pays neither tracing nor lowering nor compilation.

The executable cache is on exactly when the persistent compilation cache is
turned on through :func:`asymalign._compile_cache.enable_compile_cache` (the
CLI and sweeps do it by default); it lives in ``<cache dir>/executables``.
Otherwise executables are kept in memory only (compiled as below). Whenever
an argument is a tracer (a kernel called inside a user's ``jax.jit``, ``vmap``
or ``grad``) or more than one device is visible, the call is exactly
``jax.jit``'s. Looking up a call signature costs a few microseconds (about
11 µs a call against 5 µs for a bare ``jax.jit`` call of a small kernel).

An entry's key holds the kernel's module and name, its static argument
values, the argument tree, shapes, dtypes and weak types, ``jax_enable_x64``
and the other settings that change tracing, the JAX and jaxlib versions, the
backend, device kind and platform version, the machine, ``XLA_FLAGS``, and a
hash of this package's source files: editing
the code, upgrading JAX or moving the cache to another machine never loads a
stale executable. Entries are written atomically (parallel processes may share
a directory); one that cannot be read is deleted and rebuilt. Like JAX's cache
the directory holds executable code: keep it where only you can write.

Small problems compile for compile speed. On CPU, a kernel call whose input and
output arrays each hold fewer than :data:`SMALL_ELEMENTS` elements, and whose
declared work (the ``work`` argument of :func:`jit`: the tokens a Monte-Carlo kernel
draws) is below :data:`SMALL_WORK`, is compiled with :data:`FAST_COMPILE_OPTIONS`:
XLA's classic loop emitters instead of its newer fusion emitters, and no LLVM
optimisation of the generated code. Measured on 2 CPU cores, in one process:
compiling and running the experiments of ``asymalign reproduce --quick`` took 114 s
of CPU time with the classic emitters alone and 66 s with both options (the emitters
alone had cut compilation by about 35% against XLA's defaults); run again from the
cache, the same small executables took 11 s instead of 9 s (unoptimised code ran 1
to 4 times slower, which at these sizes is milliseconds). Above the threshold run
time outweighs compilation (the fusion emitters alone ran large calls up to 2x
faster), so large calls keep XLA's defaults. Monte-Carlo work is cheaper per
element: ``simulate_bon`` drawing 5e5 tokens gave its first result in 0.53 s instead
of 1.45 s, and then ran 9 ms instead of 4 ms a call; at 2.6e7 tokens, 257 ms instead
of 42 ms a call (2 CPU cores), hence a separate threshold, :data:`SMALL_WORK`. Kernels
with much work per element of their inputs and outputs (exact best-of-N on a law's
levels, a lattice law's FFT windows) declare a lower bound, :data:`SMALL_ELEMENTS_HEAVY`
(``jit(small_elements=)``): for best-of-N on 1e5 tokens (window laws of 4096 and 16 384
levels) their unoptimised code took 3.4 ms instead of 1.9 ms, 13 ms instead of 5 ms and
32 ms instead of 14 ms a call, which lost the ratio of 2 against NumPy that the benchmarks
target, while the quick experiments compile one more kernel with XLA's defaults. The
choice is made once per call signature (shapes, dtypes, static values); results
agree to rounding (a test compares the package's kernels both ways to 1e-12; soft
best-of-N's lattice is exact in binary so that its sums at ``log N = 1e6`` do not
depend on the options). An option that ``XLA_FLAGS`` sets
(``--xla_cpu_use_fusion_emitters``, ``--xla_backend_optimization_level``) wins over
this choice.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
import operator
import os
import pickle
import platform
import tempfile

import jax

__all__ = ["jit", "set_executable_cache_dir", "executable_cache_dir", "clear_memory"]

#: XLA options for a small problem on CPU: the classic loop emitters, and the
#: generated code not optimised by LLVM (see the module docstring).
FAST_COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}
#: A call is small when each input and output array has fewer elements...
SMALL_ELEMENTS = 1 << 16
#: ...and its declared work (a Monte-Carlo kernel: the tokens it draws) is below this.
SMALL_WORK = 1 << 22
#: The bound of :data:`SMALL_ELEMENTS` for kernels with much work per element (``jit(small_elements=)``):
#: exact best-of-N on a law's levels, FFT windows of a lattice law.
SMALL_ELEMENTS_HEAVY = 1 << 12

_state = {"dir": None, "fingerprint": None, "environment": None}
# In ``_loaded``: a call signature left to jax.jit (a large problem without the
# executable cache, or a static value without a stable repr), decided once.
_PLAIN = object()
_kernels: list[_CachedJit] = []
_name_counts: dict[str, int] = {}


def set_executable_cache_dir(path: str | None) -> None:
    """Use ``path`` for executables (``None``: no executable cache)."""
    if path is not None:
        os.makedirs(path, exist_ok=True)
    _state["dir"] = path
    clear_memory()


def executable_cache_dir() -> str | None:
    """The directory of the executable cache, or ``None`` when it is off."""
    return _state["dir"]


def clear_memory() -> None:
    """Forget the executables loaded in this process (the files stay)."""
    for k in _kernels:
        k._loaded.clear()


def _source_fingerprint() -> str:
    """Hash of every source file of the package (computed once per process)."""
    if _state["fingerprint"] is None:
        root = os.path.dirname(os.path.abspath(__file__))
        h = hashlib.sha256()
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    h.update(os.path.relpath(path, root).encode())
                    with open(path, "rb") as f:
                        h.update(f.read())
        _state["fingerprint"] = h.hexdigest()
    return _state["fingerprint"]


def _environment() -> tuple:
    if _state["environment"] is None:
        import jaxlib

        dev = jax.devices()[0]
        _state["environment"] = (
            jax.__version__,
            jaxlib.__version__,
            dev.platform,
            dev.device_kind,
            getattr(dev.client, "platform_version", ""),
            platform.machine(),
            platform.processor(),
            _source_fingerprint(),
        )
    return _state["environment"]


_TRACE_CONFIG = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_numpy_rank_promotion",
    "jax_numpy_dtype_promotion",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
    "jax_debug_nans",
    "jax_debug_infs",
)


_get_trace_config = operator.attrgetter(*_TRACE_CONFIG)


def _trace_config() -> tuple:
    """The JAX settings that change what tracing produces (or whether it raises)."""
    return _get_trace_config(jax.config)


def _fast_compile_options() -> dict:
    """:data:`FAST_COMPILE_OPTIONS` on CPU, less those that ``XLA_FLAGS`` sets; ``{}`` elsewhere."""
    if "fast_options" not in _state:
        on_cpu = jax.devices()[0].platform == "cpu"
        flags = os.environ.get("XLA_FLAGS", "")
        _state["fast_options"] = {k: v for k, v in FAST_COMPILE_OPTIONS.items() if on_cpu and k not in flags}
    return _state["fast_options"]


def _compile(lowered, options: dict, fresh: bool = False):
    """``lowered.compile`` with ``options``; without them if this XLA does not know them.

    ``fresh``: never the executable that JAX keeps on the lowering (``Lowered.compile()``
    without options returns the one its dispatch compiled, or read from its cache, for
    the same lowering); any ``compiler_options``, ``{}`` included, compiles anew."""
    if not options:
        return lowered.compile(compiler_options={}) if fresh else lowered.compile()
    try:
        return lowered.compile(compiler_options=options)
    except Exception as e:  # an XLA without the option (tested with a stand-in)
        if "compile option" not in str(e):
            raise
        _state["fast_options"] = {}
        return lowered.compile(compiler_options={}) if fresh else lowered.compile()


def _prepare_lapack() -> None:
    """What lowering would have set up: JAX registers the CPU LAPACK kernels lazily,
    when it first lowers a linear-algebra operation (``jax.export`` does the same
    before it loads a module). A loaded executable that calls LAPACK needs them
    (without them it crashes the process); the others skip the ~0.2 s import."""
    if not _state.get("runtime_ready"):
        try:
            from jax._src.lax import linalg as _linalg

            _linalg.initialize_lapack()
        except (ImportError, AttributeError):  # pragma: no cover - other JAX versions
            pass
        _state["runtime_ready"] = True


def _compile_fresh(lowered, options: dict):
    """:func:`_compile` without JAX's persistent cache, or ``None`` if that cannot be done.

    An executable that JAX read back from its own cache cannot be serialized
    again: XLA:CPU keeps only part of it, and the copy fails when run
    ("Function ... not found"). So an entry of this cache is always compiled
    afresh (once), with JAX's cache skipped for that one compilation, and
    without the executables JAX keeps in memory by lowering: one of them may
    have been read from JAX's cache earlier in this process.
    """
    try:
        from jax._src import compilation_cache as cc
        from jax._src.interpreters import pxla

        pxla._cached_compilation.cache_clear()
        lock = cc._cache_initialized_mutex
        with lock:
            saved = (cc._cache_checked, cc._cache_used)
            cc._cache_checked, cc._cache_used = True, False
    except (ImportError, AttributeError):  # pragma: no cover - other JAX versions: no executable cache
        return None
    try:
        return _compile(lowered, options, fresh=True)
    finally:
        with lock:
            cc._cache_checked, cc._cache_used = saved


try:
    from jax._src.array import ArrayImpl as _ArrayImpl
except ImportError:  # pragma: no cover - other JAX versions: the general path below
    _ArrayImpl = None


def _aval_key(x):
    """``(shape, dtype, weak_type)`` of a concrete leaf; ``None`` for a tracer or an unknown type."""
    if type(x) is _ArrayImpl:  # the common case, without jax.typeof
        return (x.shape, x.dtype, x.weak_type)
    if isinstance(x, jax.core.Tracer):
        return None
    if isinstance(x, bool | int | float | complex):
        return ((), type(x).__name__, True)
    try:
        aval = jax.typeof(x)
    except TypeError:
        return None
    return (aval.shape, aval.dtype, bool(getattr(aval, "weak_type", False)))


def _elements(shapes) -> int:
    return max((math.prod(shape) for shape in shapes), default=0)


class _CachedJit:
    """A ``jax.jit`` function whose executables persist in the executable cache."""

    def __init__(self, fun, static_argnums=(), static_argnames=(), work=None, small_elements=None, **jit_kwargs):
        functools.update_wrapper(self, fun)
        self._work = work
        self._small_elements = small_elements
        # Two kernels of one function (other static arguments, another vectorize
        # signature) get distinct names: the n-th made in this process is name#n.
        name = f"{getattr(fun, '__module__', '?')}.{getattr(fun, '__qualname__', repr(fun))}"
        count = _name_counts[name] = _name_counts.get(name, 0) + 1
        self._name = name if count == 1 else f"{name}#{count}"
        try:
            params = list(inspect.signature(fun).parameters.values())
        except (TypeError, ValueError):  # e.g. a jnp.vectorize object without a signature
            params = None
        self._params = params
        nums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
        names = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
        if params is not None:
            names = names + tuple(params[i].name for i in nums if i < len(params))
        self._static_names = frozenset(names)
        if params is not None and names:  # both, so that a static argument is static by position or keyword
            nums = tuple(
                sorted(
                    set(nums)
                    | {
                        i
                        for i, p in enumerate(params)
                        if p.name in self._static_names and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                    }
                )
            )
            self._jitted = jax.jit(
                fun, static_argnums=nums, static_argnames=tuple(sorted(self._static_names)), **jit_kwargs
            )
        else:
            self._jitted = jax.jit(fun, static_argnums=static_argnums, static_argnames=static_argnames, **jit_kwargs)
        # Cached calls bind every argument to its parameter: positional parameters
        # are passed by position, keyword-only ones by keyword (no *args/**kwargs).
        simple = params is not None and all(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params
        )
        self._usable = simple or not names  # without static arguments any signature works
        self._loaded: dict = {}
        _kernels.append(self)

    def __getattr__(self, name):  # lower, trace, ...
        return getattr(self._jitted, name)

    def _cache_size(self) -> int:
        """Executables of this kernel in this process (the count ``jax.jit`` reports, for tests)."""
        return sum(v is not _PLAIN for v in self._loaded.values()) + self._jitted._cache_size()

    def clear_cache(self) -> None:
        self._loaded.clear()
        self._jitted.clear_cache()

    def __call__(self, *args, **kwargs):
        if not self._usable or jax.device_count() != 1:
            return self._jitted(*args, **kwargs)
        bound = self._bind(args, kwargs)
        if bound is None:
            return self._jitted(*args, **kwargs)
        pos, kw, dynamic, static = bound
        leaves, treedef = jax.tree_util.tree_flatten(dynamic)
        avals = tuple(_aval_key(x) for x in leaves)
        if any(a is None for a in avals):  # a tracer: the caller is tracing
            return self._jitted(*args, **kwargs)
        try:
            mem_key = (tuple(sorted(static.items())), treedef, avals, _trace_config())
            hash(mem_key)
        except TypeError:  # an unhashable static value: jax.jit will say so
            return self._jitted(*args, **kwargs)
        compiled = self._loaded.get(mem_key)
        if compiled is None:
            compiled = self._load_or_compile(mem_key, pos, kw)
            self._loaded[mem_key] = compiled
        if compiled is _PLAIN:
            return self._jitted(*args, **kwargs)
        dyn_pos, dyn_kw = dynamic
        return compiled(*dyn_pos, **dyn_kw)

    def _bind(self, args, kwargs):
        """``(positional args, keyword args, (dynamic positional, dynamic keyword), static)``
        with defaults filled in, or ``None`` to leave the call to ``jax.jit``."""
        if not self._static_names:
            return (tuple(args), {}, (tuple(args), {}), {}) if not kwargs else None
        if len(args) > len(self._params):
            return None
        values = {}
        for p, a in zip(self._params, args, strict=False):
            if p.kind is p.KEYWORD_ONLY:
                return None
            values[p.name] = a
        for k, v in kwargs.items():
            if k in values or all(p.name != k for p in self._params):
                return None  # let jax.jit raise its error
            values[k] = v
        pos, kw, dyn_pos, dyn_kw, static = [], {}, [], {}, {}
        for p in self._params:
            if p.name in values:
                v = values[p.name]
            elif p.default is not p.empty:
                v = p.default
            else:
                return None
            if p.kind is p.KEYWORD_ONLY:
                kw[p.name] = v
            else:
                pos.append(v)
            if p.name in self._static_names:
                static[p.name] = v
            elif p.kind is p.KEYWORD_ONLY:
                dyn_kw[p.name] = v
            else:
                dyn_pos.append(v)
        return tuple(pos), kw, (tuple(dyn_pos), dyn_kw), static

    def _path(self, mem_key) -> str | None:
        static, treedef, avals, config = mem_key
        text = repr((self._name, static, str(treedef), avals, config, _environment(), os.environ.get("XLA_FLAGS", "")))
        if " at 0x" in text:  # a static value without a stable repr: do not cache it
            return None
        return os.path.join(_state["dir"], hashlib.sha256(text.encode()).hexdigest() + ".exe")

    def _options(self, mem_key, lowered) -> dict:
        """:func:`_fast_compile_options` for a small call (see the module docstring), else ``{}``."""
        options = _fast_compile_options()
        if not options:
            return options
        static, _, avals, _ = mem_key
        outs = jax.tree_util.tree_leaves(lowered.out_info)
        size = max(_elements(a[0] for a in avals), _elements(getattr(o, "shape", ()) for o in outs))
        work = int(self._work(dict(static))) if self._work is not None else 0
        small = SMALL_ELEMENTS if self._small_elements is None else self._small_elements
        return options if size < small and work < SMALL_WORK else {}

    def _load_or_compile(self, mem_key, pos, kw):
        """This signature's executable: from the executable cache (when on), else compiled;
        :data:`_PLAIN` to leave it to ``jax.jit``."""
        from jax.experimental import serialize_executable as se

        path = self._path(mem_key) if _state["dir"] is not None else None
        if path is not None:
            try:
                with open(path, "rb") as f:
                    blob, in_tree, out_tree = pickle.load(f)
                if b"lapack" in blob:
                    _prepare_lapack()
                return se.deserialize_and_load(blob, in_tree, out_tree)
            except FileNotFoundError:
                pass
            except Exception:  # a truncated or foreign entry: rebuild it
                try:
                    os.remove(path)
                except OSError:
                    pass
        lowered = self._jitted.lower(*pos, **kw)
        options = self._options(mem_key, lowered)
        compiled = _compile_fresh(lowered, options) if path is not None else None
        if compiled is None:  # no executable cache (or it cannot be used)
            return _compile(lowered, options) if options else _PLAIN
        try:
            data = pickle.dumps(se.serialize(compiled), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # not serializable (e.g. host callbacks): in-process only
            return compiled
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError:  # a read-only or full cache is not an error
            if tmp is not None and os.path.exists(tmp):
                os.remove(tmp)
        return compiled


def jit(fun=None, /, *, static_argnums=(), static_argnames=(), work=None, small_elements=None, **jit_kwargs):
    """``jax.jit`` whose executables persist in the executable cache (see the module docstring).

    Same arguments as ``jax.jit``; usable as ``@jit``, ``@jit(static_argnames=...)``
    or ``jit(f, static_argnums=...)``. The result forwards ``lower``, ``trace``
    and the other attributes of the jitted function. ``work``, if given, maps
    the static arguments (a dict by name) to the number of elements the kernel
    processes when that exceeds its inputs and outputs (a Monte-Carlo kernel
    with small inputs and outputs): a call compiles for compile speed only
    when this is below :data:`SMALL_WORK`. ``small_elements``, if given, replaces
    :data:`SMALL_ELEMENTS` for this kernel: a lower bound for kernels that do much
    work per element of their inputs and outputs, whose unoptimised code is slow
    sooner (see the module docstring).
    """
    kwargs = dict(static_argnums=static_argnums, static_argnames=static_argnames)
    kwargs.update(work=work, small_elements=small_elements)
    if fun is None:
        return functools.partial(jit, **kwargs, **jit_kwargs)
    return _CachedJit(fun, **kwargs, **jit_kwargs)
