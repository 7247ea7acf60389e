r"""The quantity registry of sweeps: what a column of ``results.csv`` is and how it is computed.

A *quantity* is a per-unit function. A sweep unit is one model (a memoryless
reference ``p`` with rewards ``r``, or a Markov chain with per-state rewards
``r``) at one sequence length ``n``, carrying all the ``D`` KL budgets ``Δ``
and ``X`` reward levels ``x`` of the grid. The engine builds a
:class:`SweepUnit` inside ``jit`` + ``vmap`` (so every field is a traced array
of the unit's own shape) and calls each requested quantity once::

    fn(unit: SweepUnit) -> array broadcastable to (D, X)

Return ``v[:, None]`` for a per-``Δ`` vector, ``v[None, :]`` for a per-``x``
vector, a scalar for a per-model number (:meth:`SweepUnit.per_delta` and
:meth:`SweepUnit.per_x` do the reshaping). Values shared by several quantities
— ``λ*`` for every ``Δ``, the exact law of ``r_n``, the per-token best-of-N
numbers at ``log N = nΔ`` — are properties of the unit computed on first use
and reused by every quantity of the same trace.

Register a quantity from any module (the built-in ones below, the Markov ones
in :mod:`asymalign.sweep._markov`, a user's)::

    from asymalign import sweep

    def entropy(unit):
        '''Shannon entropy of the reference (nats).'''
        return -jnp.sum(unit.p * jnp.log(unit.p))

    sweep.register_quantity("entropy", entropy, axes=(), description="H(p)")

or name a function by import path in the config, ``quantities =
["mypkg.mod:entropy"]`` (its column is the function's ``__name__``); decorate it
with :func:`quantity` to declare its axes, description and reference kinds.
Modules in :data:`PLUGIN_MODULES` are imported before a config is validated,
so library modules register their quantities lazily, without the engine
importing them (a module may also call :func:`register_quantity` when it is
imported). A resumed sweep recognises its config by the quantity *names*, not
their code: after changing a quantity's code, rerun with ``--no-resume``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Sequence

__all__ = [
    "AXES",
    "KINDS",
    "PADDED_SAFE",
    "PLUGIN_MODULES",
    "QUANTITIES",
    "Quantity",
    "SweepUnit",
    "quantity",
    "register_quantity",
    "resolve_quantity",
]

AXES = ("delta", "n", "x")
KINDS = ("iid", "markov")
# Modules imported (once) before quantity names are resolved; each registers
# its quantities with register_quantity at import time.
PLUGIN_MODULES: list[str] = ["asymalign.sweep._markov"]
# Memoryless per-unit functions known to accept a *padded* unit: ``p`` and
# ``r`` padded with zero-probability letters (each function used gives them
# weight 0 and returns bit-for-bit what the unpadded alphabet gives, up to
# the summation order), ``n`` a traced integer and the exact law built on the
# host. When every requested quantity is one of these, the engine evaluates
# all memoryless units of a sweep with one executable per law-length bucket
# (issue 11); any other function gets the unpadded unit with a static ``n``.
PADDED_SAFE: set = set()


@dataclasses.dataclass(frozen=True)
class Quantity:
    """A registered sweep quantity.

    Attributes:
      name: the column name in the results.
      impls: reference kind (``"iid"``, ``"markov"``) -> per-unit function.
      axes: grid axes the quantity needs (subset of ``("delta", "n", "x")``);
        ``"n"`` makes ``n`` a static Python int of the unit (a traced
        integer when every requested quantity is in :data:`PADDED_SAFE`).
      description: one line, recorded in ``meta.json``.
      exact_law: whether it uses :attr:`SweepUnit.law` (the exact law of
        ``r_n``), so the config is checked for laws that are too large.
    """

    name: str
    impls: tuple  # ((kind, fn), ...)
    axes: tuple
    description: str
    exact_law: bool = False

    @property
    def reference_kinds(self) -> tuple:
        return tuple(k for k, _ in self.impls)

    def fn(self, kind: str) -> Callable:
        return dict(self.impls)[kind]


# name -> Quantity, in registration order (the canonical column order).
QUANTITIES: dict[str, Quantity] = {}


def _check_spec(name, fn, axes, reference_kinds):
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Python identifier (it becomes a column name), got {name!r}")
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {type(fn).__name__}")
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    bad = [a for a in axes if a not in AXES]
    if bad:
        raise ValueError(f"axes must be among {', '.join(AXES)}, got {bad}")
    kinds = (reference_kinds,) if isinstance(reference_kinds, str) else tuple(reference_kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"reference_kinds must be a non-empty subset of {', '.join(KINDS)}, got {list(kinds)}")
    return tuple(a for a in AXES if a in axes), kinds


def register_quantity(
    name: str,
    fn: Callable,
    *,
    axes: Sequence[str] = (),
    description: str = "",
    reference_kinds: Sequence[str] = ("iid",),
    exact_law: bool = False,
    replace: bool = False,
) -> Quantity:
    """Register ``fn`` as the sweep quantity ``name`` for the given reference kinds.

    ``fn(unit: SweepUnit)`` returns an array broadcastable to ``(D, X)`` (see
    the module docstring); it must be jittable and vmappable. Registering an
    existing name for *other* reference kinds (with the same axes) adds an
    implementation: e.g. ``lambda_star`` is computed by
    :func:`asymalign.solve_lambda` for memoryless references and by
    :func:`asymalign.markov.solve_lambda` for Markov chains.

    Args:
      name: column name (a Python identifier).
      fn: the per-unit function.
      axes: grid axes it needs: ``"delta"``, ``"n"`` (static), ``"x"``.
      description: one line for ``meta.json`` and ``--help`` texts.
      reference_kinds: ``"iid"`` and/or ``"markov"``.
      exact_law: it reads :attr:`SweepUnit.law`.
      replace: replace an existing implementation of the same kind.

    Returns:
      The :class:`Quantity` now registered under ``name``.

    Raises:
      ValueError: a bad name, axis or kind, or a clash with an existing
        registration (without ``replace``).

    >>> import jax.numpy as jnp
    >>> from asymalign import sweep
    >>> def tilt_entropy(unit):  # H(φ_λ*) for every Δ: shape (D, 1)
    ...     import asymalign as aa
    ...     phi = aa.tilt(*unit.batched(unit.delta.shape[0]), unit.lam)
    ...     return unit.per_delta(aa.entropy(phi))
    >>> q = sweep.register_quantity("tilt_entropy", tilt_entropy, axes=("delta",), description="H(φ_λ*)")
    >>> q.axes, q.reference_kinds
    (('delta',), ('iid',))
    >>> _ = sweep.QUANTITIES.pop("tilt_entropy")  # (unregister)
    """
    axes, kinds = _check_spec(name, fn, axes, reference_kinds)
    old = QUANTITIES.get(name)
    impls = dict(old.impls) if old is not None else {}
    if old is not None and old.axes != axes:
        raise ValueError(f"quantity {name!r} is registered with axes {old.axes}, not {axes}")
    clash = [k for k in kinds if k in impls and impls[k] is not fn]
    if clash and not replace:
        raise ValueError(f"quantity {name!r} is already registered for {', '.join(clash)}; pass replace=True")
    impls.update({k: fn for k in kinds})
    q = Quantity(
        name,
        tuple((k, impls[k]) for k in KINDS if k in impls),
        axes,
        old.description if old is not None and old.description and not description else description,
        exact_law or (old.exact_law if old is not None else False),
    )
    QUANTITIES[name] = q
    return q


def quantity(
    *,
    axes: Sequence[str] = (),
    description: str = "",
    reference_kinds: Sequence[str] = ("iid",),
    exact_law: bool = False,
):
    """Decorator: declare a function a sweep quantity usable as ``"module:function"``
    in a config (it is not registered under a global name; the column is the
    function's name). Arguments as for :func:`register_quantity`.

    >>> from asymalign import sweep
    >>> @sweep.quantity(axes=("x",), description="x minus the mean reward")
    ... def x_excess(unit):
    ...     return unit.per_x(unit.x - unit.p @ unit.r)
    >>> x_excess.__sweep_quantity__.axes
    ('x',)
    """

    def wrap(fn):
        a, k = _check_spec(fn.__name__, fn, axes, reference_kinds)
        doc = (fn.__doc__ or "").strip().splitlines()
        fn.__sweep_quantity__ = Quantity(
            fn.__name__, tuple((kind, fn) for kind in k), a, description or (doc[0] if doc else ""), exact_law
        )
        return fn

    return wrap


@functools.cache
def _load_plugins() -> None:
    for mod in PLUGIN_MODULES:
        importlib.import_module(mod)


def load_plugins() -> None:
    """Import :data:`PLUGIN_MODULES` (once each)."""
    _load_plugins()
    for mod in PLUGIN_MODULES:  # appended after the first call
        importlib.import_module(mod)


def resolve_quantity(spec: str) -> Quantity:
    """The :class:`Quantity` for a registered name or a ``"module:function"`` path.

    Raises:
      ValueError: unknown name, a module that does not import, a missing or
        non-callable attribute (the message names the spec).

    >>> from asymalign import sweep
    >>> sweep.resolve_quantity("bon_reward").reference_kinds
    ('iid', 'markov')
    >>> sweep.resolve_quantity("math:fabs").name
    'fabs'
    """
    if ":" not in spec:
        load_plugins()
        if spec not in QUANTITIES:
            raise ValueError(f"unknown quantity {spec!r}; valid quantities: {', '.join(QUANTITIES)}")
        return QUANTITIES[spec]
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"quantity {spec!r}: a path must read 'package.module:function'")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - any import failure is reported the same way
        raise ValueError(f"quantity {spec!r}: cannot import module {mod_name!r} ({type(e).__name__}: {e})") from None
    fn = mod
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ValueError(f"quantity {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if isinstance(fn, Quantity):
        return fn
    if not callable(fn):
        raise ValueError(f"quantity {spec!r}: {attr!r} is not callable")
    q = getattr(fn, "__sweep_quantity__", None)
    if isinstance(q, Quantity):
        return q
    name = getattr(fn, "__name__", attr.rsplit(".", 1)[-1])
    doc = (getattr(fn, "__doc__", None) or "").strip().splitlines()
    return Quantity(name, (("iid", fn),), (), doc[0] if doc else spec, False)


class SweepUnit:
    """What a quantity function receives: one unit of the grid, traced.

    Attributes:
      kind: ``"iid"`` (memoryless reference) or ``"markov"``.
      p: ``(k,)`` the reference law (``iid``); for ``markov`` the initial law.
      r: ``(k,)`` per-token (per-state) rewards.
      chain: the :class:`asymalign.markov.MarkovChain` (``markov``), else ``None``.
      n: the sequence length when a requested quantity has the ``n`` axis,
        else ``None``: a static int, or a traced integer scalar when every
        requested quantity is in :data:`PADDED_SAFE` (then ``p`` and ``r``
        may carry padding letters with ``p = 0``).
      delta: ``(D,)`` KL budgets per token (``(1,)`` zeros if the grid has none).
      x: ``(X,)`` absolute per-token reward levels (``(1,)`` zeros if none).
      lattice: ``(log_w, a, h)`` with ``r = a + h m`` when the exact law is
        the lattice law (``law_method == "lattice"``).
      law_method: ``"lattice"``, ``"types"``, ``"markov"`` or ``"host"``
        (memoryless, exact law built on the host by :func:`asymalign.reward_law`).
    """

    def __init__(self, kind, arrays, delta, x, *, n, law_method):
        self.kind = kind
        self.r = arrays["r"]
        self.p = arrays["p"]
        self.delta = delta
        self.x = x
        self.n = n
        self.law_method = law_method
        self.lattice = (arrays.get("log_w"), arrays.get("a"), arrays.get("h"))
        self._host_law = (arrays.get("law_levels"), arrays.get("law_log_prob"))
        self.chain = None
        if kind == "markov":
            from asymalign import markov

            self.chain = markov.MarkovChain(arrays["transition"], arrays["p"])
        self._cache: dict = {}

    @property
    def shape(self) -> tuple:
        """``(D, X)``."""
        return (self.delta.shape[0], self.x.shape[0])

    @staticmethod
    def per_delta(v):
        """A ``(D,)`` vector as ``(D, 1)``."""
        return v[:, None]

    @staticmethod
    def per_x(v):
        """An ``(X,)`` vector as ``(1, X)``."""
        return v[None, :]

    def batched(self, size: int) -> tuple:
        """``(p, r)`` broadcast to ``(size, k)``: one model against ``size`` values of a
        parameter (the package's batching convention, with explicit ranks)."""
        import jax.numpy as jnp

        k = self.r.shape[-1]
        return jnp.broadcast_to(self.p, (size, k)), jnp.broadcast_to(self.r, (size, k))

    def cached(self, key, make: Callable):
        """``make()`` once per unit and trace: share work between quantities."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def lam(self):
        """``λ*`` for every ``Δ`` (``(D,)``; ``inf`` for ``Δ >= Δ_max``; THEORY.md §3, §14):
        :func:`asymalign.solve_lambda`, or :func:`asymalign.markov.solve_lambda` for chains."""
        if self.kind == "markov":
            import jax

            from asymalign import markov

            return self.cached(
                "lam", lambda: jax.vmap(lambda d: markov.solve_lambda(self.chain, self.r, d))(self.delta)
            )
        import asymalign as aa

        return self.cached("lam", lambda: aa.solve_lambda(*self.batched(self.delta.shape[0]), self.delta))

    @property
    def law(self):
        """The exact law of ``r_n`` (a :class:`~asymalign.RewardLaw`; THEORY.md §7, §14):
        :func:`asymalign.law_from_lattice` or :func:`asymalign.law_from_types` in the trace, or
        :func:`asymalign.reward_law` (memoryless, ``law_method == "host"``) or
        :func:`asymalign.markov.reward_law` (chains) on the host, padded to a power-of-two bucket."""
        return self.cached("law", self._make_law)

    def _make_law(self):
        import asymalign as aa

        if self.n is None:
            raise ValueError("the exact law needs the grid axis n (declare axes=('n', ...))")
        if self._host_law[0] is not None:  # built on the host (markov.reward_law), padded
            return aa.RewardLaw(*self._host_law, self.n)
        if self.law_method == "lattice":
            log_w, a, h = self.lattice
            return aa.law_from_lattice(log_w, self.n, a, h)
        return aa.law_from_types(self.p, self.r, self.n)


from . import _builtin as _builtin  # noqa: E402  (registers the built-in quantities, in column order)
