r"""Parameter sweeps sharded over every device and host, resumable (THEORY.md §3, §5, §6, §14).

A sweep evaluates registered *quantities* on the Cartesian grid

    references × rewards × n × Δ × x.

Built in (memoryless references): the KL-RL multiplier ``lambda_star`` and
reward ``klrl_reward`` ``Λ'(λ*)`` (§3), ``delta_max``, the exact best-of-N
reward ``bon_reward``, ``bon_kl`` ``KL(π_N‖p^n)/n``, ``bon_kl_to_tilt``
``KL(π_N‖φ_{λ*}^n)/n``, ``bon_kl_bound`` and ``bon_win_rate`` at
``log N = nΔ`` (§6), and the Cramér rate function ``rate_function`` ``I_0(x)``
(§5). Markov references (§14) get the same names where the concept is the same
(see :mod:`asymalign.sweep._markov`). Every number comes from the public
functions of the package under ``jit`` + ``vmap``; the test-suite checks
sampled rows against direct calls.

The package, by concern:

* :mod:`~asymalign.sweep.config` — the TOML schema, :func:`load_config`,
  :func:`parse_config`, :class:`SweepConfig`;
* :mod:`~asymalign.sweep.quantities` — the registry
  (:func:`register_quantity`, :func:`quantity`, :class:`SweepUnit`);
* :mod:`~asymalign.sweep.plan` — models, units, chunks, parameter columns;
* :mod:`~asymalign.sweep.store` — atomic chunk files and the results;
* :mod:`~asymalign.sweep.run` — :func:`run_sweep`, the sharded evaluation;
* :mod:`~asymalign.sweep.distributed` — ``jax.distributed`` and failures.

Engine
------
* The grid is flattened into *units* ``(model, n)``; a unit carries all its
  ``Δ`` and ``x`` values (``λ*`` and the exact law of ``r_n`` are computed
  once per unit and shared by every quantity and every ``Δ``). Units are
  grouped by what fixes static shapes, one compilation per group. With only
  built-in quantities, memoryless units are fused: alphabets padded with
  zero-probability letters to one power-of-two ``k``, ``n`` traced, the exact
  law built on the host (:func:`asymalign.reward_law`) and padded to a
  power-of-two length, so a small sweep is one group (``example.toml``: one
  compilation). Otherwise the key is (reference kind, alphabet size ``k``, law
  method — lattice, types or Markov — and ``n`` when a quantity needs it).
* Each group is cut into chunks of about ``chunk_size`` grid points; a chunk
  is padded to a multiple of the global device count and evaluated by one
  jitted, vmapped function whose inputs carry a
  ``NamedSharding(Mesh(jax.devices(), ("batch",)), PartitionSpec("batch"))``:
  one CPU, one GPU, all devices of a host, or all devices of all hosts
  (``jax.distributed``) run the same code. Chunk boundaries depend only on
  the config and the chunk size, never on the device count.
* Multi-host: every process runs the same program (SPMD); each evaluates the
  shards on its own devices, results are all-gathered, and process 0 alone
  writes to the output directory. If a process dies, the others stop with a
  :class:`SweepDistributedError` within a configurable timeout
  (``--distributed-timeout``, ``ASYMALIGN_DISTRIBUTED_TIMEOUT``).
* Resumable: every finished chunk is written atomically to ``DIR/chunks/``;
  a rerun computes only the missing chunks, so a run killed at any moment
  and resumed gives results identical to an uninterrupted run. A different
  config in the same directory is refused unless ``resume=False``.
* Output: ``DIR/results.csv`` (one row per grid point; floats written with
  ``repr``, so they round-trip exactly), ``DIR/results.npz``,
  ``DIR/results.parquet`` (typed columns, when ``pyarrow`` is installed:
  ``pip install asymalign[parquet]``) and ``DIR/meta.json`` (config, models,
  quantity descriptions, versions, devices, timing).

Config (TOML)
-------------
::

    name = "example"
    quantities = ["lambda_star", "klrl_reward", "bon_reward", "rate_function",
                  "mypkg.quantities:entropy"]       # registered names or module:function
    chunk_size = 256                      # optional; --chunk-size overrides

    [[reference]]
    family = "bernoulli"                  # p = (1 - q, q)
    prob = [0.1, 0.3]
    [[reference]]
    family = "zipf"                       # p(x) ∝ (x + 1)^-s, x = 0..k-1
    k = [4, 8]
    s = 1.1
    [[reference]]
    family = "dirichlet"                  # count draws of Dirichlet(concentration · 1_k)
    k = 5
    concentration = 1.0
    count = 8
    seed = 0
    [[reference]]
    family = "markov"                     # an explicit chain (THEORY §14)
    transition = [[0.9, 0.1], [0.3, 0.7]]
    initial = [0.5, 0.5]                  # optional; default: the stationary law
    [[reference]]
    family = "markov"                     # count random chains, rows ~ Dirichlet(concentration · 1_k)
    k = 3
    concentration = 1.0
    count = 4
    seed = 0

    [[reward]]
    family = "linear"                     # r = 0..k-1 (per token, or per state of a chain)
    [[reward]]
    family = "random"                     # r ~ Uniform(0, 1)^k (NumPy default_rng(seed))
    seed = 0

    [grid]
    delta = [0.05, 0.1, 0.2]
    n = [16, 64]
    x_relative = [0.25, 0.5, 0.75]        # or x = [...] (absolute per-token reward)

Any grid value may be a list, a scalar, or ``{ linspace = [a, b, num] }`` /
``{ geomspace = [a, b, num] }``. Without ``quantities`` every registered
quantity that the grid axes and the reference kinds support is computed.
Linear rewards (and random rewards over two letters, ``a + h m`` with
``m ∈ {0, 1}``) use the lattice law (:func:`~asymalign.law_from_lattice`, any
``n``); random rewards over ``k >= 3`` letters use the types law
(:func:`~asymalign.law_from_types`, ``C(n+k-1, k-1) <= 100 000`` types);
Markov references use :func:`asymalign.markov.reward_law`.

Example (a user quantity from a module of one's own):

>>> import jax.numpy as jnp
>>> from asymalign import sweep
>>> @sweep.quantity(axes=("delta",), description="λ*·Δ")
... def lam_delta(unit):
...     return unit.per_delta(unit.lam * unit.delta)
>>> lam_delta.__sweep_quantity__.axes
('delta',)
"""

from .config import DEFAULT_CHUNK_SIZE, MAX_TYPES, SweepConfig, SweepConfigError, load_config, parse_config
from .distributed import (
    DEFAULT_TIMEOUT_S,
    TIMEOUT_ENV_VAR,
    SweepDistributedError,
    distributed_timeout,
    init_distributed,
)
from .plan import Model, build_models, make_plan
from .quantities import (
    PLUGIN_MODULES,
    QUANTITIES,
    Quantity,
    SweepUnit,
    quantity,
    register_quantity,
    resolve_quantity,
)
from .run import SweepResult, run_sweep
from .store import parquet_available, read_results

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TIMEOUT_S",
    "MAX_TYPES",
    "PLUGIN_MODULES",
    "QUANTITIES",
    "TIMEOUT_ENV_VAR",
    "Model",
    "Quantity",
    "SweepConfig",
    "SweepConfigError",
    "SweepDistributedError",
    "SweepResult",
    "SweepUnit",
    "build_models",
    "default_compile_cache",
    "distributed_timeout",
    "init_distributed",
    "load_config",
    "make_plan",
    "parquet_available",
    "parse_config",
    "quantity",
    "read_results",
    "register_quantity",
    "resolve_quantity",
    "run_sweep",
]


def default_compile_cache() -> str:
    """``$XDG_CACHE_HOME/asymalign/jax`` (``~/.cache/asymalign/jax``): where sweeps keep
    JAX's persistent compilation cache unless told otherwise."""
    from .._compile_cache import default_compile_cache as _default

    return _default()
