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
