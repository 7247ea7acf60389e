"""Policies on reward levels (THEORY.md §10–§12): laws in, laws out.

Independent references written here: explicit double sums over pairs of
levels (win rates), brute-force enumeration of all k^n sequences and of all
N-tuples of them (best-of-N of a tilt), the truncated Poisson mixture of
best-of-N laws (Best-of-Poisson), and solve_lambda/kl_rl on the per-token
model (the level tilt by the raw reward). All laws here have at most 64
levels, so every jitted function compiles once.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import asymalign as aa
from asymalign.testing import strategies as S


@st.composite
def law_pairs(draw):
    """(ref, q): a reward law (ties and zeros allowed) and a random law over its levels (with zeros)."""
    p, r = draw(S.models(k=3))
    n = draw(st.sampled_from([1, 2, 4]))
    ref = aa.reward_law(p, r, n, method="types")
    size = ref.levels.shape[0]
    w = np.asarray(draw(st.lists(st.floats(0.0, 1.0), min_size=size, max_size=size)))
    if size > 1:
        w[draw(st.integers(0, size - 1))] = 0.0  # a zero-probability level
    w = w if w.sum() > 0 else np.ones(size)
    with np.errstate(divide="ignore"):
        q = aa.RewardLaw(ref.levels, jnp.log(jnp.asarray(w / w.sum())), n, ref.fingerprint)
    return ref, q


def np_win(a, b, levels):
    """Σ_{s,t} a(s) b(t) [1{s > t} + ½ 1{s = t}] over pairs of entries."""
    lv = np.asarray(levels)
    gt = (lv[:, None] > lv[None, :]) + 0.5 * (lv[:, None] == lv[None, :])
    return float(np.asarray(a) @ gt @ np.asarray(b))


@given(law_pairs())
def test_win_rate_against_double_sum_antisymmetry_and_self(pair):
    ref, q = pair
    w_qr, w_rq = float(aa.win_rate(q, ref)), float(aa.win_rate(ref, q))
    assert abs(w_qr - np_win(q.prob, ref.prob, ref.levels)) <= 1e-12
    assert abs(w_qr + w_rq - 1.0) <= 1e-12
    assert abs(float(aa.win_rate(q, q)) - 0.5) <= 1e-12
    assert abs(float(aa.win_rate(ref, ref)) - 0.5) <= 1e-12


@given(law_pairs())
def test_standard_win_rate_is_the_mean_calibrated_reward(pair):
    ref, q = pair
    c = np.asarray(aa.calibrated_reward(ref))
    assert abs(float(np.sum(np.asarray(q.prob) * c)) - float(aa.win_rate(q, ref))) <= 1e-12
    assert abs(float(np.sum(np.asarray(ref.prob) * c)) - 0.5) <= 1e-12
    # equal levels get equal C; C increases with the level
    lv = np.asarray(ref.levels)
    assert np.all(np.diff(c)[np.diff(lv) == 0] == 0) and np.all(np.diff(c) >= -1e-15)


@given(law_pairs(), st.sampled_from([0.0, 1e-3, 1.0, 20.0]))
def test_inference_win_rate_is_win_rate_of_decoded_laws(pair, log_n):
    ref, q = pair
    for worst in (False, True):
        got = float(aa.inference_win_rate(q, ref, log_n, worst=worst))
        want = np_win(aa.best_of_n(q, log_n, worst=worst).prob, aa.best_of_n(ref, log_n, worst=worst).prob, ref.levels)
        assert abs(got - want) <= 1e-11
    assert abs(float(aa.inference_win_rate(q, ref, 0.0)) - float(aa.win_rate(q, ref))) <= 1e-12


@given(law_pairs())
def test_best_of_n_log_zero_is_identity_and_mean_kl_of_laws(pair):
    ref, q = pair
    for law in (ref, q):
        for worst in (False, True):
            out = aa.best_of_n(law, 0.0, worst=worst)
            np.testing.assert_allclose(np.asarray(out.prob), np.asarray(law.prob), rtol=1e-12, atol=1e-15)
            assert out.n == law.n and out.fingerprint == law.fingerprint
    lv, pq, pr = np.asarray(ref.levels), np.asarray(q.prob), np.asarray(ref.prob)
    assert abs(float(aa.law_mean(q)) - float(np.sum(pq * lv))) <= 1e-12 * max(1.0, np.abs(lv).max())
    on = pq > 0
    kl = float(np.sum(pq[on] * np.log(pq[on] / pr[on]))) if np.all(pr[on] > 0) else np.inf
    assert float(aa.law_kl(q, ref)) == pytest.approx(kl, rel=1e-10, abs=1e-12)


def _sequences(p, r, n):
    """All k^n sequences: (probability under p^n, total reward)."""
    k = len(p)
    seqs = np.array(list(itertools.product(range(k), repeat=n)))
    return np.prod(np.asarray(p)[seqs], axis=1), np.sum(np.asarray(r)[seqs], axis=1)


@pytest.mark.parametrize("n, num, lam", [(2, 3, 0.7), (3, 2, -1.3), (3, 3, 2.0)])
def test_best_of_n_of_a_tilt_matches_enumeration(n, num, lam):
    """Tokens from φ_λ, best of N sequences: the law of the max over all N-tuples of all k^n sequences."""
    p, r = np.array([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 2.5])
    law = aa.reward_law(p, r, n)
    tilted = aa.level_tilt(law, np.sign(lam) * law.levels, 1.0 / abs(lam))
    phi = p * np.exp(lam * r) / np.sum(p * np.exp(lam * r))
    prob, rew = _sequences(phi, r, n)
    want = np.zeros(law.levels.shape[0])
    lv = np.asarray(law.levels)
    for tup in itertools.product(range(prob.size), repeat=num):
        best = max(rew[list(tup)])
        want[np.argmin(np.abs(lv - best))] += np.prod(prob[list(tup)])
    for worst in (False, True):
        if worst:
            want = np.zeros_like(want)
            for tup in itertools.product(range(prob.size), repeat=num):
                want[np.argmin(np.abs(lv - min(rew[list(tup)])))] += np.prod(prob[list(tup)])
        got = np.asarray(aa.best_of_n(tilted, math.log(num), worst=worst).prob)
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-16)
    # and the tilt itself is the law of r_n under φ_λ^n
    np.testing.assert_allclose(
        np.asarray(tilted.prob), [prob[np.abs(rew - s) < 1e-9].sum() for s in lv], rtol=1e-12, atol=1e-16
    )


@given(law_pairs(), st.sampled_from([0.0, 0.3, 2.0, 15.0]))
def test_best_of_poisson_is_the_poisson_mixture(pair, mean):
    ref, q = pair
    for law in (ref, q):
        k = np.arange(120)
        weights = np.exp(-mean + k * math.log(mean) - np.array([math.lgamma(x + 1) for x in k])) if mean else k == 0
        mix = sum(
            w * np.asarray(aa.best_of_n(law, math.log(j + 1)).prob)
            for j, w in zip(k, weights, strict=True)
            if w > 1e-300
        )
        np.testing.assert_allclose(np.asarray(aa.best_of_poisson(law, mean).prob), mix, rtol=1e-10, atol=1e-15)


def test_best_of_poisson_upper_tail_relative_accuracy():
    """μ = 1e4 on a sequence law: the top levels (P ~ 1e-40) keep relative accuracy (vs mpmath)."""
    import mpmath as mp

    mp.mp.dps = 60
    law = aa.reward_law([0.7, 0.3], [0.0, 1.0], 80)
    mu = 1e4
    got = np.asarray(aa.best_of_poisson(law, mu).log_prob)
    probs = [mp.binomial(80, j) * mp.mpf("0.3") ** j * mp.mpf("0.7") ** (80 - j) for j in range(81)]
    F = [mp.fsum(probs[: j + 1]) for j in range(81)]

    def G(x):
        return x * mp.exp(-mu * (1 - x))

    for j in (60, 70, 80):
        want = float(mp.log(G(F[j]) - G(F[j - 1])))
        assert abs(got[j] - want) <= 1e-10 * max(1.0, abs(want))


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("delta", [0.0, 0.05, 0.4, 10.0])
def test_solve_level_tilt_with_raw_reward_is_klrl(n, delta):
    p, r = np.array([0.2, 0.5, 0.3]), np.array([0.0, 1.0, 2.5])
    law = aa.reward_law(p, r, n)
    sol = aa.solve_level_tilt(law, law.levels, n * delta)
    res = aa.kl_rl(p, r, delta)
    lam = float(res.lam)
    assert float(aa.law_kl(sol.law, law)) == pytest.approx(n * float(res.kl), rel=1e-9, abs=1e-12)
    if np.isinf(lam):
        assert float(sol.beta) == 0.0
        assert float(sol.law.prob[-1]) == 1.0
    else:
        assert float(sol.beta) == pytest.approx(1.0 / lam if lam else np.inf, rel=1e-9)
        want = aa.reward_law(np.asarray(res.policy), r, n)  # the law of r_n under φ_λ*^n, built from scratch
        np.testing.assert_allclose(np.asarray(sol.law.prob), np.asarray(want.prob), rtol=1e-9, atol=1e-15)
    if n == 1:  # levels are the rewards themselves
        np.testing.assert_allclose(np.asarray(sol.law.prob), np.asarray(res.policy), rtol=1e-9, atol=1e-15)
    assert abs(float(aa.law_mean(sol.law)) / n - float(res.reward)) <= 1e-9


def test_level_tilt_any_score_and_budget_edges():
    law = aa.reward_law([0.5, 0.3, 0.2], [0.0, 1.0, 2.0], 3)
    score = np.asarray(aa.calibrated_reward(law)) ** 3
    sol = aa.solve_level_tilt(law, score, jnp.array([0.0, 0.2, 50.0]))
    assert np.isinf(float(sol.beta[0])) and float(sol.beta[2]) == 0.0
    np.testing.assert_allclose(np.asarray(sol.law.prob[0]), np.asarray(law.prob), rtol=1e-14)
    assert float(aa.law_kl(aa.RewardLaw(law.levels, sol.law.log_prob[1], 3), law)) == pytest.approx(0.2, rel=1e-10)
    direct = aa.level_tilt(law, score, sol.beta[1])
    np.testing.assert_allclose(np.asarray(direct.prob), np.asarray(sol.law.prob[1]), rtol=1e-12)
    assert float(sol.law.prob[2, -1]) == 1.0  # Δ >= max: the argmax level of the score


def test_padding_and_neg_inf_entries_change_nothing():
    law = aa.reward_law([0.5, 0.0, 0.3, 0.2], [0.0, 1.0, 3.0, 4.0], 6)
    assert np.any(np.asarray(law.log_prob) == -np.inf) or law.levels.shape[0] > 0
    big = aa.pad_law(law, 128)
    size = law.levels.shape[0]
    for f in (
        lambda x: aa.best_of_n(x, 3.0).log_prob,
        lambda x: aa.best_of_n(x, 3.0, worst=True).log_prob,
        lambda x: aa.best_of_poisson(x, 5.0).log_prob,
        lambda x: aa.soft_best_of_n(x, 3.0, 0.5).log_prob,
        lambda x: aa.calibrated_reward(x),
    ):
        a, b = np.asarray(f(law)), np.asarray(f(big))
        np.testing.assert_allclose(b[:size], a, rtol=1e-12)
        assert np.all(np.asarray(big.log_prob)[size:] == -np.inf)
    assert float(aa.law_mean(big)) == pytest.approx(float(aa.law_mean(law)), rel=1e-14)
    with pytest.raises(ValueError, match="^length"):
        aa.pad_law(law, size - 1)


@pytest.mark.parametrize("log_n", [0.0, 1e6])
def test_single_level_law(log_n):
    law = aa.reward_law([0.3, 0.7], [2.0, 2.0], 4)
    assert law.levels.shape == (1,)
    for out in (
        aa.best_of_n(law, log_n),
        aa.best_of_n(law, log_n, worst=True),
        aa.best_of_poisson(law, 1e3),
        aa.soft_best_of_n(law, log_n, 1e-3),
        aa.level_tilt(law, law.levels, 0.5),
        aa.solve_level_tilt(law, law.levels, 1.0).law,
    ):
        np.testing.assert_allclose(np.asarray(out.log_prob), [0.0], atol=1e-14)
    assert float(aa.win_rate(law, law)) == 0.5
    assert float(aa.inference_win_rate(law, law, log_n, worst=True)) == 0.5
    assert float(aa.law_kl(law, law)) == 0.0


def test_huge_log_n_no_nan_and_concentrates():
    law = aa.reward_law([0.5, 0.3, 0.2], [0.0, 1.0, 2.0], 10)
    for log_n in (1e3, 1e6):
        for out in (aa.best_of_n(law, log_n), aa.best_of_poisson(law, math.exp(min(log_n, 700.0)))):
            lp = np.asarray(out.log_prob)
            assert not np.any(np.isnan(lp)) and lp[-1] == pytest.approx(0.0, abs=1e-12)


def test_bad_input_names_the_argument():
    p, r = np.array([0.2, 0.3, 0.5]), np.array([0.0, 1.0, 2.0])
    law = aa.reward_law(p, r, 3)
    other_n = aa.reward_law(p, r, 2)
    other_model = aa.reward_law([0.3, 0.2, 0.5], r, 3)
    shifted = aa.RewardLaw(law.levels + 1.0, law.log_prob, 3)
    for bad, match in ((other_n, "same levels"), (other_model, "different models"), (shifted, "level values")):
        with pytest.raises(ValueError, match=match):
            aa.win_rate(law, bad)
        with pytest.raises(ValueError, match=match):
            aa.law_kl(bad, law)
    with pytest.raises(ValueError, match="^law and ref"):
        aa.inference_win_rate(law, other_model, 1.0)
    with pytest.raises(ValueError, match="^log_num_samples"):
        aa.best_of_n(law, -1.0)
    with pytest.raises(ValueError, match="^log_num_samples"):
        aa.soft_best_of_n(law, -0.1, 1.0)
    for tau in (0.0, -1.0):
        with pytest.raises(ValueError, match="^temperature"):
            aa.soft_best_of_n(law, 1.0, tau)
    with pytest.raises(ValueError, match="^mean"):
        aa.best_of_poisson(law, -1.0)
    for beta in (0.0, -2.0):
        with pytest.raises(ValueError, match="^beta"):
            aa.level_tilt(law, law.levels, beta)
    with pytest.raises(ValueError, match="^score"):
        aa.level_tilt(law, law.levels[:-1], 1.0)
    with pytest.raises(ValueError, match="^score"):
        aa.solve_level_tilt(law, np.zeros(3), 0.1)
    with pytest.raises(ValueError, match="^delta"):
        aa.solve_level_tilt(law, law.levels, -0.1)
    with pytest.raises(ValueError, match="^law must be a RewardLaw"):
        aa.best_of_poisson((law.levels, law.log_prob), 1.0)


def test_jit_vmap_grad():
    law = aa.reward_law([0.5, 0.3, 0.2], [0.0, 1.0, 2.5], 4)
    log_ns = jnp.array([0.0, 0.5, 3.0, 1e6])
    eager = np.stack([np.asarray(aa.best_of_n(law, float(x)).log_prob) for x in log_ns])
    mapped = jax.vmap(lambda x: aa.best_of_n(law, x).log_prob)(log_ns)
    np.testing.assert_allclose(np.asarray(mapped), eager, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda x: aa.best_of_n(law, x).log_prob)(log_ns)), eager, rtol=1e-12)
    # stacked laws: the tilts of one law at several temperatures, as one batch
    tilts = aa.level_tilt(law, law.levels, jnp.array([0.5, 1.0, 4.0]))
    wins = aa.win_rate(tilts, law)
    for i, b in enumerate([0.5, 1.0, 4.0]):
        single = aa.level_tilt(law, law.levels, b)
        assert float(wins[i]) == pytest.approx(float(aa.win_rate(single, law)), rel=1e-13)
    # d/dlog N of the best-of-N mean reward, against a central difference
    f = lambda x: aa.law_mean(aa.best_of_n(law, x))  # noqa: E731
    g = float(jax.grad(f)(2.0))
    fd = (float(f(2.0 + 1e-5)) - float(f(2.0 - 1e-5))) / 2e-5
    assert g == pytest.approx(fd, rel=1e-6)
    # d/dβ of the tilt's win rate
    h = lambda b: aa.win_rate(aa.level_tilt(law, law.levels, b), law)  # noqa: E731
    assert float(jax.grad(h)(1.0)) == pytest.approx((float(h(1.0 + 1e-5)) - float(h(1.0 - 1e-5))) / 2e-5, rel=1e-6)


def test_float32_follows_input_dtype():
    law = aa.reward_law([0.5, 0.3, 0.2], [0.0, 1.0, 2.5], 4)
    law32 = aa.RewardLaw(law.levels.astype(jnp.float32), law.log_prob.astype(jnp.float32), 4, law.fingerprint)
    for out, ref in (
        (aa.best_of_n(law32, 2.0), aa.best_of_n(law, 2.0)),
        (aa.best_of_poisson(law32, 3.0), aa.best_of_poisson(law, 3.0)),
        (aa.soft_best_of_n(law32, 2.0, 0.7), aa.soft_best_of_n(law, 2.0, 0.7)),
    ):
        assert out.log_prob.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(out.prob), np.asarray(ref.prob), rtol=2e-4, atol=1e-7)
    assert aa.win_rate(law32, law32).dtype == jnp.float32
