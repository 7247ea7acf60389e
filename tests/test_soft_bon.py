"""Exact soft best-of-N (THEORY.md §12) against enumeration of all N-tuples and its limits.

The reference is brute force: every N-tuple of levels, its probability, and
the selection probabilities w_j / Σ w_i computed with the weights shifted by
the tuple's maximum (so τ = 1e-3 does not overflow). Beyond N = 4 the
quadrature is checked by its limits (best-of-N, the reference, the tilt at the
§12 rate) and by its total mass up to log N = 1e6.
"""

import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest

import asymalign as aa

LAWS = {
    "3 levels": ([0.5, 0.3, 0.2], [0.0, 1.0, 2.5], 1),
    "ties and a zero": ([0.4, 0.0, 0.3, 0.3], [0.0, 5.0, 1.0, 1.0], 1),
    "sequence n = 2": ([0.6, 0.4], [0.0, 0.7], 2),
}


def brute(law, num, tau):
    lv, P = np.asarray(law.levels), np.asarray(law.prob)
    q = np.zeros(lv.size)
    for tup in itertools.product(range(lv.size), repeat=num):
        idx = list(tup)
        pr = np.prod(P[idx])
        if pr == 0:
            continue
        w = np.exp((lv[idx] - lv[idx].max()) / tau)
        for j, i in enumerate(idx):
            q[i] += pr * w[j] / w.sum()
    return q


@pytest.mark.parametrize("name", list(LAWS))
@pytest.mark.parametrize("num", [1, 2, 3, 4])
def test_matches_enumeration_of_all_tuples(name, num):
    law = aa.reward_law(*LAWS[name])
    taus = [1e-3, 0.3, 1.0, 1e3]
    got = np.asarray(aa.soft_best_of_n(law, jnp.full(4, math.log(num)), jnp.asarray(taus)).prob)
    for i, tau in enumerate(taus):
        np.testing.assert_allclose(got[i], brute(law, num, tau), rtol=1e-11, atol=1e-300)


def test_a_slightly_wrong_law_is_rejected():
    """The enumeration test has teeth: shifting the temperature by 1e-6 relative fails it."""
    law = aa.reward_law(*LAWS["3 levels"])
    got = np.asarray(aa.soft_best_of_n(law, math.log(3), 1.0 * (1 + 1e-6)).prob)
    assert not np.allclose(got, brute(law, 3, 1.0), rtol=1e-11, atol=0)


@pytest.mark.parametrize("log_n", [1.0, 5.0, 50.0, 1e6])
def test_small_temperature_is_best_of_n_and_large_is_the_reference(log_n):
    law = aa.reward_law([0.5, 0.3, 0.2], [0.0, 1.0, 2.0], 6)  # 13 levels, spacing 1
    cold = aa.soft_best_of_n(law, log_n, 1e-3)
    bon = aa.best_of_n(law, log_n)
    # lower levels weigh e^{-1000} relative: best-of-N to double precision (in probability; in log
    # space soft best-of-N keeps the tilt's e^{-1000 k} where best-of-N has F^N, far smaller)
    np.testing.assert_allclose(np.asarray(cold.prob), np.asarray(bon.prob), rtol=1e-10, atol=1e-300)
    if log_n <= 5.0:
        hot = aa.soft_best_of_n(law, log_n, 1e9)
        np.testing.assert_allclose(np.asarray(hot.prob), np.asarray(law.prob), rtol=1e-6 * math.exp(log_n))


@pytest.mark.parametrize("tau", [1e-3, 0.1, 1.0, 1e3])
@pytest.mark.parametrize("log_n", [0.0, 2.0, 40.0, 1e3, 1e6])
def test_normalised_and_finite_across_ranges(tau, log_n):
    law = aa.reward_law([0.7, 0.3], [0.0, 1.0], 30)
    lp = np.asarray(aa.soft_best_of_n(law, log_n, tau).log_prob)
    assert not np.any(np.isnan(lp)) and not np.any(lp == np.inf)
    assert abs(float(np.sum(np.exp(lp))) - 1.0) <= 5e-14  # measured: 8.2e-15 at most


def test_lattice_step_is_dyadic_so_every_node_is_an_exact_double():
    """u = j h and the origin o = j_o h (j_o ~ -log N / h, up to 5e6 at log N = 1e6) are exact
    doubles, so the nearly cancelling sums log N + o and o + (u - o) come out the same however
    the compiler evaluates them (the next test). h = 0.2 is not: j h is rounded, by up to 6e-11."""
    from fractions import Fraction

    from asymalign import soft_bon as sb

    def exact(h):
        js = [1, 3, 5, 12345, -4_999_999, -5_000_000, 2**40 + 1]
        return all(Fraction(j * h) == j * Fraction(h) for j in js)

    assert Fraction(sb._H).denominator <= 64 and exact(sb._H)
    assert not exact(0.2)
    assert (sb._W - 1) * sb._H >= sb._A + sb._TOP  # a window spans [-A, TOP] around its feature


@pytest.mark.parametrize("compile_options", ["fast", pytest.param("xla defaults", marks=pytest.mark.xla_defaults)])
def test_huge_log_n_keeps_the_mass_under_every_compile_option(monkeypatch, compile_options):
    """With h = 0.2 the unoptimised code (the fast-compile options) put the mass of a one-level law
    at log N = 1e6 at 1 - 5.6e-11 and the optimised code at 1; with the dyadic step both are exact.
    (XLA's defaults are checked on that law only: each of its compilations takes seconds.)"""
    from asymalign import _jit

    laws = [aa.reward_law([0.3, 0.7], [2.0, 2.0], 4)]
    if compile_options == "fast":
        laws.append(aa.reward_law([0.7, 0.3], [0.0, 1.0], 30))
    else:
        monkeypatch.setitem(_jit._state, "fast_options", {})
    _jit.clear_memory()
    try:
        for log_n in (1e3, 1e5, 1e6):
            for tau in (1e-3, 1.0, 1e3):
                for law in laws:
                    lp = np.asarray(aa.soft_best_of_n(law, log_n, tau).log_prob)
                    assert abs(float(np.sum(np.exp(lp))) - 1.0) <= (1e-14 if lp.size == 1 else 5e-14), (log_n, tau, lp)
    finally:
        _jit.clear_memory()


def test_many_samples_tend_to_the_tilt_at_rate_one_over_n_squared():
    """KL(φ || SBoN_N) N² -> (exp(2 D_3) - exp(2 D_2)) / 2 (§12), with φ the tilt by 1/τ."""
    p, r, tau = np.array([0.4, 0.3, 0.2, 0.1]), np.array([0.0, 1.0, 2.0, 3.0]), 1.0
    law = aa.reward_law(p, r, 1)
    phi = aa.level_tilt(law, law.levels, tau)
    f = np.asarray(phi.prob)
    const = 0.5 * (np.sum(f**3 / p**2) - np.sum(f**2 / p) ** 2)
    nums = np.array([2.0**10, 2.0**14])
    kl = np.asarray(aa.law_kl(phi, aa.soft_best_of_n(law, jnp.asarray(np.log(nums)), tau)))
    scaled = kl * nums**2
    assert abs(scaled[1] - const) <= 0.01 * const
    assert abs(scaled[1] - const) < abs(scaled[0] - const)  # converging


@pytest.mark.parametrize("pad", [False, True])
def test_gradients_match_finite_differences(pad):
    """d/dτ, d/dlog N and d/dlog P of the soft best-of-N mean reward against central differences
    (a padded law adds -inf levels, whose terms must carry zero, not NaN, gradient)."""
    import jax

    law = aa.reward_law(jnp.array([0.5, 0.3, 0.2]), jnp.array([0.0, 1.0, 2.0]), 3)
    if pad:
        law = aa.pad_law(law, 16)

    def mean(log_prob, log_n, tau):
        q = aa.soft_best_of_n(aa.RewardLaw(law.levels, log_prob, law.n, law.fingerprint), log_n, tau)
        return aa.law_mean(q)

    args = (law.log_prob, jnp.log(4.0), 0.7)
    g_lp, g_ln, g_tau = jax.grad(mean, argnums=(0, 1, 2))(*args)
    h = 1e-5
    fd_ln = (mean(args[0], args[1] + h, args[2]) - mean(args[0], args[1] - h, args[2])) / (2 * h)
    fd_tau = (mean(args[0], args[1], args[2] + h) - mean(args[0], args[1], args[2] - h)) / (2 * h)
    assert float(g_ln) == pytest.approx(float(fd_ln), rel=1e-6)
    assert float(g_tau) == pytest.approx(float(fd_tau), rel=1e-6)
    on = np.isfinite(np.asarray(law.log_prob))
    assert np.all(np.isfinite(np.asarray(g_lp))) and np.all(np.asarray(g_lp)[~on] == 0.0)
    e = np.zeros(law.log_prob.shape)
    e[2] = 1.0
    fd_lp = (mean(args[0] + h * e, *args[1:]) - mean(args[0] - h * e, *args[1:])) / (2 * h)
    assert float(g_lp[2]) == pytest.approx(float(fd_lp), rel=1e-6)


def plain_grid(law, log_n, tau, h=0.05):
    """Independent reference: one uniform trapezoid grid in u = log t over the whole range
    (no windows, no prefix sums, no interpolation), M^{N-1} by direct log-sum-exp at every node."""
    lv, lp = np.asarray(law.levels), np.asarray(law.log_prob)
    on = np.isfinite(lp)
    lw = np.where(on, (lv - lv[on].max()) / tau, 0.0)
    lp = np.where(on, lp, -np.inf)
    nm1 = math.log(math.expm1(log_n))  # log(N - 1), N > 1
    lo = min(-40.0, -nm1 - float(np.logaddexp.reduce(lp + lw)) - 40.0)
    u = np.arange(lo, -lw[on].min() + 6.0, h)
    x = u[:, None] + lw[None, :]
    with np.errstate(over="ignore", divide="ignore"):
        log_m = np.logaddexp.reduce(lp[None, :] - np.exp(x), axis=1)
        log_e = math.exp(nm1) * log_m  # (N - 1) log M, fine for moderate N
        terms = np.log(h) + x - np.exp(x) + log_e[:, None]
    tail = lw + u[0] + log_e[0] - h - math.log(-math.expm1(-h))  # lattice nodes below u_0: e^{u + log w}
    log_i = np.logaddexp(np.logaddexp.reduce(terms, axis=0), tail)
    return np.where(on, log_n + lp + log_i, -np.inf)


@pytest.mark.parametrize("tau", [0.05, 1.0, 20.0])
@pytest.mark.parametrize("log_n", [math.log(16.0), 12.0])
def test_many_levels_match_a_plain_grid(tau, log_n):
    """A 201-level law (many overlapping windows, gaps, cut-offs between bumps) against the
    plain O(L T) grid; the windows, the shared prefix sums and the gap series must all be right."""
    law = aa.reward_law([0.6, 0.3, 0.1], [0.0, 1.0, 2.0], 100)
    got = np.asarray(aa.soft_best_of_n(law, log_n, tau).log_prob)
    ref = plain_grid(law, log_n, tau)
    keep = ref > math.log(1e-250)
    np.testing.assert_allclose(got[keep], ref[keep], rtol=0, atol=1e-10)  # log q: relative 1e-10 in q
    assert abs(float(np.sum(np.exp(got))) - 1.0) < 1e-12


def test_node_count_retry_and_traced_bounds_agree(monkeypatch):
    """If the device counts more window nodes than the host estimate, the kernel reruns with
    enough nodes; under jit (sizes bounded, not measured) the result is the same."""
    import jax

    from asymalign import soft_bon as sb

    law = aa.reward_law([0.5, 0.3, 0.2], [0.0, 1.0, 2.5], 4)
    want = np.asarray(aa.soft_best_of_n(law, 3.0, 0.5).log_prob)
    traced = jax.jit(lambda lp: aa.soft_best_of_n(aa.RewardLaw(law.levels, lp, law.n, law.fingerprint), 3.0, 0.5))
    np.testing.assert_allclose(np.asarray(traced(law.log_prob).log_prob), want, rtol=1e-13)
    real = sb._host_sizes
    monkeypatch.setattr(sb, "_host_sizes", lambda *a: (1, real(*a)[1]))  # far too few nodes
    np.testing.assert_allclose(np.asarray(aa.soft_best_of_n(law, 3.0, 0.5).log_prob), want, rtol=1e-13)
