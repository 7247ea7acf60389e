r"""Hypothesis strategies for reference models, rewards, budgets and exact laws.

These generate the inputs the package's own property tests use, so a
researcher checking a new inequality about KL-constrained RL or best-of-N can
draw the same adversarial models: references with zeros and tiny entries,
tied and constant rewards, lattice rewards, budgets anywhere in
``[0, Δ_max]`` (THEORY.md §1–§3) and exact laws of the total reward (§7).

Alphabet sizes come from the small fixed set :data:`SIZES` so jitted functions
compile once per size, not once per example. All arrays are float64 NumPy
arrays (convert with ``jnp.asarray`` as needed).

>>> from hypothesis import given
>>> from asymalign.testing import models
>>> @given(models())
... def test_sums_to_one(model):
...     p, r = model
...     assert abs(p.sum() - 1.0) < 1e-12 and p.shape == r.shape
>>> test_sums_to_one()
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

__all__ = [
    "SIZES",
    "probs",
    "rewards",
    "lattice_rewards",
    "models",
    "normal_models",
    "wide_rewards",
    "alphas",
    "abs_continuous",
    "budgets",
    "model_budgets",
    "reward_laws",
    "markov_chains",
    "MARKOV_SIZES",
]

#: Alphabet sizes drawn when ``k`` is not given (a small fixed set: one compile each).
SIZES = (2, 3, 5, 8)


@st.composite
def probs(draw, k: int | None = None, zeros: bool = True, min_support: int = 1) -> np.ndarray:
    """A probability vector of length ``k`` (drawn from :data:`SIZES` if None).

    Weights are raised to a random power up to 9, so some entries are many
    decades smaller than others; with ``zeros`` up to ``k - min_support``
    entries are exactly 0 (THEORY.md §1 allows zeros in ``p``).
    """
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
def rewards(draw, k: int, ties: bool = True, lattice: bool = False, scale: float | None = None) -> np.ndarray:
    """A finite reward vector of length ``k``.

    Real rewards in ``scale · [-1, 1]`` (``scale`` drawn from 1e-2, 1, 10 if
    None), or integers in ``[-5, 5]`` with ``lattice``; with ``ties`` two
    entries may be made equal.
    """
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
def lattice_rewards(draw, k: int, ties: bool = True) -> np.ndarray:
    """Rewards ``a + h m`` on an affine lattice (integer ``m`` in ``[-5, 5]``).

    The offset ``a`` and step ``h`` are random (``h`` a power of two times a
    small integer ratio), so :func:`asymalign.reward_law` takes its lattice
    (FFT) route (THEORY.md §7).
    """
    m = draw(rewards(k, ties=ties, lattice=True))
    a = draw(st.sampled_from([0.0, -0.5, 0.25, 1.0]))
    h = draw(st.sampled_from([1.0, 0.5, 0.25, 2.0]))
    return a + h * m


@st.composite
def models(
    draw, k: int | None = None, zeros: bool = True, ties: bool = True, lattice: bool = False, nonconstant: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(p, r)`` with matching length; ``nonconstant`` forces ``r`` to vary on ``supp p``."""
    p = draw(probs(k=k, zeros=zeros, min_support=2 if nonconstant else 1))
    r = draw(rewards(len(p), ties=ties, lattice=lattice))
    if nonconstant:
        s = p > 0
        if np.ptp(r[s]) < 1e-6 * max(1.0, np.abs(r[s]).max()):
            i = int(np.flatnonzero(s)[0])
            r[i] = r[i] + 1.0
    return p, r


@st.composite
def wide_rewards(draw, k: int) -> np.ndarray:
    """Rewards whose magnitudes span 1e-3 .. 1e3 (random signs), at least two distinct."""
    mags = 10.0 ** np.array(draw(st.lists(st.floats(-3.0, 3.0), min_size=k, max_size=k)))
    signs = np.array(draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=k, max_size=k)))
    r = signs * mags
    # make sure both ends of the decade range are present
    r[0], r[-1] = 1e-3 * signs[0], 1e3 * signs[-1]
    return r


def alphas(lo: float = 0.0, hi: float = 50.0):
    """Rényi orders in ``[lo, hi]``, away from the removable point ``α = 1`` by ≥ 1e-3."""
    return st.floats(lo, hi).filter(lambda a: abs(a - 1.0) > 1e-3)


@st.composite
def abs_continuous(draw, p: np.ndarray) -> np.ndarray:
    """A probability vector ``q`` with ``supp q ⊆ supp p`` (possibly with extra zeros)."""
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
    """:func:`models` with rewards far below the scale flushed to 0 (same keywords).

    Use when comparing with a NumPy/mpmath reference: JAX on CPU flushes
    subnormal numbers, NumPy does not.
    """
    return models(**kwargs).map(_flush_tiny)


def _max_kl_host(p: np.ndarray, r: np.ndarray) -> float:
    s = p > 0
    top = s & (r == r[s].max())
    return float(-np.log(p[top].sum()))


@st.composite
def budgets(draw, p: np.ndarray, r: np.ndarray, saturate: bool = True) -> float:
    r"""A KL budget ``Δ`` in ``[0, Δ_max]``, ``Δ_max = -log p(A)`` (THEORY.md §3).

    Drawn as ``Δ_max · u`` with ``u`` uniform, sometimes exactly 0, sometimes
    within ``1e-6`` of ``Δ_max`` (where ``λ*`` is huge); with ``saturate``
    also ``Δ_max`` itself or beyond it (``λ* = inf``).
    """
    dmax = _max_kl_host(np.asarray(p, float), np.asarray(r, float))
    choices = ["interior", "zero", "near_max"] + (["at_max", "beyond"] if saturate else [])
    kind = draw(st.sampled_from(choices))
    if kind == "zero" or dmax == 0:
        return 0.0
    if kind == "near_max":
        return dmax * (1.0 - draw(st.sampled_from([1e-3, 1e-6])))
    if kind == "at_max":
        return dmax
    if kind == "beyond":
        return dmax * (1.0 + draw(st.floats(1e-3, 2.0)))
    return dmax * draw(st.floats(0.0, 1.0))


@st.composite
def model_budgets(draw, saturate: bool = False, **model_kwargs) -> tuple[np.ndarray, np.ndarray, float]:
    """``(p, r, Δ)``: a :func:`models` draw and a :func:`budgets` draw for it."""
    p, r = draw(models(**model_kwargs))
    return p, r, draw(budgets(p, r, saturate=saturate))


@st.composite
def reward_laws(
    draw, n: int | tuple[int, ...] = (1, 2, 3, 5), k: int | None = 3, lattice: bool | None = None, method: str = "auto"
):
    r"""An exact :class:`asymalign.RewardLaw` of ``r_n`` under ``p^n`` (THEORY.md §7).

    Returns ``(p, r, law)``. ``n`` is one length or a tuple to draw from
    (keep it a small set: each ``n`` compiles once). ``lattice=None`` draws
    lattice and real rewards alike. The first draws compile ``reward_law``:
    use ``@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])``.
    """
    from asymalign import reward_law  # deferred: the package imports this module lazily

    if isinstance(n, int):
        n_ = n
    else:
        n_ = draw(st.sampled_from(tuple(n)))
    is_lattice = draw(st.booleans()) if lattice is None else lattice
    p = draw(probs(k=k))
    r = draw(lattice_rewards(len(p))) if is_lattice else draw(rewards(len(p)))
    return p, r, reward_law(p, r, n_, method=method)


MARKOV_SIZES = (2, 3)


@st.composite
def markov_chains(draw, k: int | None = None, zeros: bool = True):
    r"""An irreducible, aperiodic :class:`asymalign.markov.MarkovChain` with zeros (THEORY.md §14).

    The support always contains the cycle ``0 → 1 → … → k-1 → 0`` and the
    loop ``0 → 0`` (so the chain is primitive); every other transition is
    absent with probability about 1/3 (``zeros=True``). Entries span a few
    decades. The initial law may have zeros. ``k`` from :data:`MARKOV_SIZES`.
    """
    from asymalign.markov import MarkovChain  # deferred: keep this module import-light

    k = draw(st.sampled_from(MARKOV_SIZES)) if k is None else k
    w = np.array(draw(st.lists(st.floats(-3.0, 0.0), min_size=k * k, max_size=k * k))).reshape(k, k)
    w = 10.0**w
    if zeros:
        keep = np.array(draw(st.lists(st.booleans() | st.just(True), min_size=k * k, max_size=k * k))).reshape(k, k)
        w = np.where(keep, w, 0.0)
    idx = np.arange(k)
    w[idx, (idx + 1) % k] = np.maximum(w[idx, (idx + 1) % k], 1e-2)
    w[0, 0] = max(w[0, 0], 1e-2)
    P = w / w.sum(axis=1, keepdims=True)
    mu = draw(probs(k=k))
    return MarkovChain(P, mu)
