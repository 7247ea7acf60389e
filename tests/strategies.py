"""Hypothesis strategies for random reference models (p, r) shared by the tests.

Alphabet sizes come from a small fixed set so jitted functions compile once
per size. Models may contain zeros in p, tied rewards and constant rewards
when asked for.
"""

import numpy as np
from hypothesis import strategies as st

SIZES = (2, 3, 5, 8)


@st.composite
def probs(draw, k=None, zeros=True, min_support=1):
    """A probability vector of length k (drawn from SIZES if None), possibly with zeros."""
    if k is None:
        k = draw(st.sampled_from(SIZES))
    w = np.array(draw(st.lists(st.floats(1e-3, 1.0), min_size=k, max_size=k)))
    # heavy-tailed weights: exponentiate a spread so some entries are tiny
    spread = draw(st.floats(0.0, 8.0))
    w = w ** (1.0 + spread)
    if zeros and k > min_support:
        nz = draw(st.integers(0, k - min_support))
        idx = draw(st.permutations(range(k)))[:nz]
        w[list(idx)] = 0.0
    if w.sum() <= 0:
        w[0] = 1.0
    return w / w.sum()


@st.composite
def rewards(draw, k, ties=True, lattice=False, scale=None):
    """A finite reward vector of length k; optionally with ties or on an integer lattice."""
    if lattice:
        r = np.array(draw(st.lists(st.integers(-5, 5), min_size=k, max_size=k)), dtype=float)
    else:
        if scale is None:
            scale = draw(st.sampled_from([1e-2, 1.0, 10.0]))
        r = scale * np.array(draw(st.lists(st.floats(-1.0, 1.0), min_size=k, max_size=k)))
    if ties and k > 1 and draw(st.booleans()):
        i, j = draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))
        r[i] = r[j]
    return r


@st.composite
def models(draw, k=None, zeros=True, ties=True, lattice=False, nonconstant=False):
    """(p, r) with matching length; `nonconstant` forces r to vary on supp p."""
    p = draw(probs(k=k, zeros=zeros, min_support=2 if nonconstant else 1))
    r = draw(rewards(len(p), ties=ties, lattice=lattice))
    if nonconstant:
        s = p > 0
        if np.ptp(r[s]) < 1e-6 * max(1.0, np.abs(r[s]).max()):
            i = int(np.flatnonzero(s)[0])
            r[i] = r[i] + 1.0
    return p, r


@st.composite
def wide_rewards(draw, k):
    """Rewards whose magnitudes span 1e-3 .. 1e3 (random signs), at least two distinct."""
    mags = 10.0 ** np.array(draw(st.lists(st.floats(-3.0, 3.0), min_size=k, max_size=k)))
    signs = np.array(draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=k, max_size=k)))
    r = signs * mags
    # make sure both ends of the decade range are present
    r[0], r[-1] = 1e-3 * signs[0], 1e3 * signs[-1]
    return r


def alphas(lo=0.0, hi=50.0):
    """Rényi orders in [lo, hi], away from the removable point α = 1 by ≥ 1e-3."""
    return st.floats(lo, hi).filter(lambda a: abs(a - 1.0) > 1e-3)


@st.composite
def abs_continuous(draw, p):
    """A probability vector q with supp q ⊆ supp p (possibly with extra zeros)."""
    k = len(p)
    w = np.array(draw(st.lists(st.floats(0.0, 1.0, allow_subnormal=False), min_size=k, max_size=k)))
    w = w ** draw(st.floats(1.0, 4.0))
    w[(p == 0) | (w < 1e-30)] = 0.0
    if w.sum() <= 0:
        w = (p > 0).astype(float)
    return w / w.sum()


def _flush_tiny(model):
    """Rewards 30+ decades below the largest one (or below 1e-100) become 0.

    XLA on CPU flushes subnormal numbers to zero, so a subnormal reward (or a
    power r^j that underflows) means something different to JAX than to a
    NumPy/mpmath reference; rewards 1e-30 of the scale keep every quantity the
    tests compare normal, while still spanning far more decades than any
    realistic model.
    """
    p, r = model
    r = r.copy()
    r[(np.abs(r) < 1e-30 * np.abs(r).max(initial=0.0)) | (np.abs(r) < 1e-100)] = 0.0
    return p, r


def normal_models(**kwargs):
    """:func:`models` with :func:`_flush_tiny` applied (same draws, same keywords)."""
    return models(**kwargs).map(_flush_tiny)
