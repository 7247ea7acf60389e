"""Shared plumbing of the level-law modules: validation of laws and the pad/broadcast/slice wrapper."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ._buckets import device_array, unpad
from ._level_kernels import _broadcast, _pad
from ._validate import check_nonneg, check_real, is_concrete
from .sequence_laws import RewardLaw


def _check_law(law, name: str = "law") -> None:
    if not isinstance(law, RewardLaw):
        raise ValueError(f"{name} must be a RewardLaw (from asymalign.reward_law), got {type(law).__name__}")


def _check_same_levels(law_a, law_b, name_a: str, name_b: str) -> None:
    """Two laws must be level laws of the same reference: same levels, ``n`` and model."""
    _check_law(law_a, name_a)
    _check_law(law_b, name_b)
    la, lb = np.shape(law_a.levels)[-1], np.shape(law_b.levels)[-1]
    if la != lb:
        raise ValueError(f"{name_a} and {name_b} must be over the same levels, got {la} and {lb} levels")
    if law_a.n != law_b.n:
        raise ValueError(f"{name_a} and {name_b} must have the same n, got {law_a.n} and {law_b.n}")
    fa, fb = law_a.fingerprint, law_b.fingerprint
    if fa is not None and fb is not None and fa != fb:
        raise ValueError(f"{name_a} and {name_b} come from different models (fingerprints {fa} and {fb})")
    if is_concrete(law_a.levels, law_b.levels):
        a, b = np.asarray(law_a.levels), np.asarray(law_b.levels)
        try:
            same = np.array_equal(*np.broadcast_arrays(a, b))
        except ValueError:
            same = False
        if not same:
            raise ValueError(f"{name_a} and {name_b} must be over the same levels (level values differ)")


def _check_log_n(log_num_samples) -> None:
    check_real(log_num_samples, "log_num_samples", allow_inf=True)
    check_nonneg(log_num_samples, "log_num_samples")


def _like(law: RewardLaw, log_prob) -> RewardLaw:
    """A law over ``law``'s levels with the given log-probabilities (levels broadcast to its shape)."""
    if is_concrete(law.levels, log_prob):  # on the host: an eager broadcast would compile once per shape
        shape = np.broadcast_shapes(np.shape(law.levels), np.shape(log_prob))
        levels, log_prob = (
            device_array(x) if np.shape(x) == shape else device_array(np.broadcast_to(np.asarray(x), shape))
            for x in (law.levels, log_prob)
        )
        return RewardLaw(levels, log_prob, law.n, law.fingerprint)
    log_prob = jnp.asarray(log_prob)
    levels = jnp.broadcast_to(law.levels, jnp.broadcast_shapes(jnp.shape(law.levels), log_prob.shape))
    return RewardLaw(levels, jnp.broadcast_to(log_prob, levels.shape), law.n, law.fingerprint)


def _apply(kernel, law: RewardLaw, *params, rows=()) -> RewardLaw:
    """Pad ``law`` (and the per-level ``rows``) to its bucket, broadcast, run the
    vectorised ``kernel(levels, log_prob, *rows, *params)``, slice back."""
    length = law.levels.shape[-1]
    dt = law.log_prob.dtype
    if is_concrete(law.levels, law.log_prob, *params, *rows):
        # glue on the host (eager jnp operations would compile once per shape)
        levels, log_prob = _pad(device_array(law.levels, dt), device_array(law.log_prob))
        padded = [_pad(device_array(law.levels, dt), device_array(x, dt))[1] for x in rows]
        padded = [device_array(np.where(np.isfinite(np.asarray(x)), np.asarray(x), 0.0)) for x in padded]
        arrays, scalars = _broadcast((levels, log_prob, *padded), [device_array(x, dt) for x in params])
        return _like(law, unpad(kernel(*arrays, *scalars), length))
    levels, log_prob = _pad(jnp.asarray(law.levels, dt), jnp.asarray(law.log_prob))
    padded = [_pad(levels[..., :length], jnp.asarray(x, dt))[1] for x in rows]  # zeros would do; -inf is harmless
    padded = [jnp.where(jnp.isfinite(x), x, 0.0) for x in padded]
    arrays, scalars = _broadcast((levels, log_prob, *padded), [jnp.asarray(x, dt) for x in params])
    return _like(law, kernel(*arrays, *scalars)[..., :length])
