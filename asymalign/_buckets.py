"""Shape buckets: one compilation per bucket of batch sizes, not per batch size (issue 11).

A jitted solver compiles once per input shape. Called eagerly on many small
batches of different sizes (a figure's grid of Δ values, a notebook's
scalars), that is one compilation of a few seconds per size. :func:`call_bucketed`
flattens the broadcast batch on the host, pads it to a bucket (powers of two
up to :data:`MAX_BUCKETED`) by repeating the first problem, calls the jitted
function once per bucket, and cuts the padding off on the host again, so no
eager JAX operation (which would compile per size too) touches the result.
Problems must be independent (row ``i`` of the output depends only on row
``i`` of the inputs), as they are for the batched solvers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ._validate import is_concrete

__all__ = ["MAX_BUCKETED", "bucket", "call_bucketed", "device_array"]

# Larger batches compile per size: their run time dwarfs a compilation, and
# padding a big batch would cost more than it saves.
MAX_BUCKETED = 4096


def device_array(x, dtype=None) -> jax.Array:
    """``jnp.asarray(x, dtype)`` without a compilation for concrete ``x``.

    In JAX 0.10 ``jnp.asarray`` of a NumPy array, list or Python scalar compiles
    a small executable per shape and dtype; converting on the host and
    ``jax.device_put`` compiles nothing (a Python scalar without a ``dtype``
    stays weakly typed, as with ``jnp.asarray``). Traced ``x`` goes to
    ``jnp.asarray``.
    """
    if isinstance(x, jax.Array) and (dtype is None or x.dtype == dtype):
        return x
    if dtype is None and isinstance(x, bool | int | float | complex):
        return jax.device_put(x)  # stays weakly typed (a float32 computation stays float32), as jnp.asarray
    if not is_concrete(x):
        return jnp.asarray(x, dtype)
    return jax.device_put(np.asarray(x, dtype))


def unpad(x, length: int) -> jax.Array:
    """``x[..., :length]``: the padding dropped on the host for concrete ``x`` (an eager
    slice compiles once per shape), by a slice for traced ``x``; ``x`` itself when it has no padding."""
    if x.shape[-1] == length:
        return x
    return device_array(np.asarray(x)[..., :length]) if is_concrete(x) else x[..., :length]


def bucket(size: int) -> int:
    """The padded batch size for ``size`` problems: the next power of two (``1`` for ``0``/``1``).

    >>> [bucket(s) for s in (1, 2, 3, 5, 100, 4096)]
    [1, 2, 4, 8, 128, 4096]
    """
    return 1 if size <= 1 else 1 << (size - 1).bit_length()


def call_bucketed(fn, args, core_ndims):
    """``fn(*args)`` with the batch flattened and padded to :func:`bucket` of its size.

    Args:
      fn: a (jitted) function of arrays whose leading axes are a batch of
        independent problems; returns a pytree of arrays with a leading batch
        axis.
      args: arrays that broadcast in their batch axes (all but the last
        ``core_ndims[i]`` axes of ``args[i]``).
      core_ndims: number of trailing per-problem axes of each argument.

    Returns:
      ``fn``'s outputs with the broadcast batch shape restored. Traced
      arguments (inside ``jit``/``grad``/``vmap``) go straight to
      ``fn(*args)`` (the caller broadcasts them); empty batches and batches
      above :data:`MAX_BUCKETED` to ``fn`` of the broadcast arguments.
    """
    if not is_concrete(*args):
        return fn(*args)
    host = [np.asarray(a) for a in args]
    batch = np.broadcast_shapes(*(a.shape[: a.ndim - c] for a, c in zip(host, core_ndims, strict=True)))
    size = math.prod(batch)
    full = [np.broadcast_to(a, batch + a.shape[a.ndim - c :]) for a, c in zip(host, core_ndims, strict=True)]
    if size == 0 or size > MAX_BUCKETED:
        return fn(*full)
    padded = bucket(size)
    flat = []
    for a, c in zip(full, core_ndims, strict=True):
        core = a.shape[a.ndim - c :]
        f = a.reshape((size,) + core)
        if padded > size:
            f = np.concatenate([f, np.broadcast_to(f[:1], (padded - size,) + core)])
        flat.append(f)
    out = fn(*flat)
    return jax.tree.map(lambda o: device_array(np.asarray(o)[:size].reshape(batch + o.shape[1:])), out)
