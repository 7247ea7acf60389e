"""Monte-Carlo best-of-N simulator (THEORY.md §8) against exact laws (§6).

The exact reference is an independent NumPy computation written here: the law
of ``r_n`` by enumerating all ``k^n`` sequences, then ``B_N(s) = F(s)^N -
F(s-)^N``, ``W_N(s) = (1 - F(s-))^N - (1 - F(s))^N``, their means and the win
rate ``Σ_s B_N(s)[F(s-) + P(s)/2]``.

All Monte-Carlo comparisons are probabilistic: they use fixed PRNG keys and a
tolerance of 4 standard errors derived from the sample size (for level
frequencies from the exact probability, plus one count of slack for
discreteness). Each comparison is also shown to reject the exact law shifted
up by one level, so the tolerance is tight enough to catch an off-by-one.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.stats import binom

import asymalign as aa
from asymalign import sampling as smp
from asymalign import simulation as sim_mod

Z = 4.0  # standard errors of tolerance

# ---------------------------------------------------------------------------
# independent exact reference (NumPy, float64)
# ---------------------------------------------------------------------------


def np_level_law(p, r, n):
    """Law of r_n under p^n by enumerating all k^n sequences; equal levels merged."""
    p, r = np.asarray(p, np.float64), np.asarray(r, np.float64)
    law: dict[float, float] = {}
    for seq in itertools.product(range(len(p)), repeat=n):
        prob = float(np.prod(p[list(seq)]))
        if prob == 0.0:
            continue
        s = round(float(sum(r[list(seq)])), 9)  # merge levels equal up to round-off
        law[s] = law.get(s, 0.0) + prob
    levels = np.array(sorted(law))
    return levels, np.array([law[s] for s in levels])


def np_cdfs(prob):
    f = np.cumsum(prob)
    return f, f - prob  # F(s), F(s-)


def np_bon_law(prob, num):
    f, fm = np_cdfs(prob)
    return f**num - fm**num


def np_worst_law(prob, num):
    f, fm = np_cdfs(prob)
    return (1 - fm) ** num - (1 - f) ** num


def np_win_rate(chosen, prob):
    """P(X > Y') + P(X = Y')/2 for X ~ chosen, Y' ~ prob on the same levels."""
    _, fm = np_cdfs(prob)
    return float(np.sum(chosen * (fm + prob / 2)))


def shifted_up(law):
    """The same probabilities moved up one level (top mass stays on the top level)."""
    out = np.zeros_like(law)
    out[1:] = law[:-1]
    out[-1] += law[-1]
    return out


# ---------------------------------------------------------------------------
# agreement checks (return bool so a wrong law can be shown to fail them)
# ---------------------------------------------------------------------------


def mean_agrees(rewards, levels, law):
    est = aa.mc_mean(rewards)
    return abs(float(est.mean) - float(np.sum(law * levels))) <= Z * float(est.stderr)


def levels_agree(rewards, levels, law):
    m = len(rewards)
    lf = aa.mc_level_frequencies(rewards, levels)
    assert float(jnp.sum(lf.freq)) == pytest.approx(1.0, abs=1e-12)  # every reward is a level
    se = np.sqrt(law * (1 - law) / m)
    return bool(np.all(np.abs(np.asarray(lf.freq) - law) <= Z * se + 1.0 / m))


def win_agrees(win_est, exact):
    return abs(float(win_est.mean) - exact) <= Z * float(win_est.stderr)


# ---------------------------------------------------------------------------
# cases: (p, r, n, N, trials); simulations are cached so static shapes compile once
# ---------------------------------------------------------------------------

CASES = {  # one alphabet size, n and trial count: the win-rate reference draws compile once
    "lattice-ties": ([0.5, 0.25, 0.15, 0.1], [0.0, 1.0, 2.0, 3.0], 4, 16, 4000),
    "real-rewards": ([0.5, 0.2, 0.2, 0.1], [0.1, -0.7, 1.3, 0.4], 4, 8, 4000),
    "zero-in-p": ([0.3, 0.0, 0.7, 0.0], [1.0, 5.0, -0.5, 9.0], 4, 4, 4000),
}
KEY = jax.random.key(20240401)  # fixed: every Monte-Carlo assertion is probabilistic


@functools.cache
def simulate(name, worst=False):
    p, r, n, num, trials = CASES[name]
    return aa.simulate_bon(
        jax.random.fold_in(KEY, 1), jnp.array(p), jnp.array(r), n, num, trials, worst=worst, return_tokens=True
    )


@functools.cache
def win_rate(name):
    p, r, n, _, _ = CASES[name]
    return aa.mc_win_rate(jax.random.fold_in(KEY, 2), simulate(name).rewards, jnp.array(p), jnp.array(r), n)


# ---------------------------------------------------------------------------
# exact vs simulation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_best_of_n_matches_exact_law(name):
    p, r, n, num, _ = CASES[name]
    levels, prob = np_level_law(p, r, n)
    sim = simulate(name)
    x = np.asarray(sim.rewards)
    bon = np_bon_law(prob, num)
    assert bon.sum() == pytest.approx(1.0, abs=1e-12)
    assert mean_agrees(x, levels, bon)
    assert levels_agree(x, levels, bon)
    assert win_agrees(win_rate(name), np_win_rate(bon, prob))
    # The same checks reject the exact law shifted by one level.
    wrong = shifted_up(bon)
    assert not mean_agrees(x, levels, wrong)
    assert not levels_agree(x, levels, wrong)
    assert not win_agrees(win_rate(name), np_win_rate(wrong, prob))


@pytest.mark.parametrize("name", list(CASES))
def test_returned_tokens_are_the_chosen_sequences(name):
    p, r, n, _, trials = CASES[name]
    sim = simulate(name)
    tok = np.asarray(sim.tokens)
    assert tok.shape == (trials, n) and tok.dtype == np.int32
    assert np.all((tok >= 0) & (tok < len(p)))
    assert np.all(np.asarray(p)[tok] > 0)  # zeros in p are never drawn
    np.testing.assert_allclose(np.asarray(r)[tok].sum(axis=1), np.asarray(sim.rewards), rtol=0, atol=1e-12)


def test_worst_of_n_matches_exact_law_and_uses_the_same_samples():
    name = "lattice-ties"
    p, r, n, num, _ = CASES[name]
    levels, prob = np_level_law(p, r, n)
    worst = simulate(name, worst=True)
    x = np.asarray(worst.rewards)
    w = np_worst_law(prob, num)
    assert mean_agrees(x, levels, w)
    assert levels_agree(x, levels, w)
    wrong = np.zeros_like(w)  # worst-of-N law shifted down one level
    wrong[:-1] = w[1:]
    wrong[0] += w[0]
    assert not mean_agrees(x, levels, wrong)
    assert not levels_agree(x, levels, wrong)
    # Same key and shapes: the same N sequences per trial, so worst <= best.
    assert np.all(x <= np.asarray(simulate(name).rewards))
    np.testing.assert_allclose(np.asarray(r)[np.asarray(worst.tokens)].sum(axis=1), x, atol=1e-12)


def test_single_sample_gives_the_reference_law():
    # Zeros at both ends and in the middle of p; N = 1 must reproduce p^n exactly.
    p = np.array([0.0, 0.45, 0.0, 0.35, 0.2, 0.0])
    r = np.array([9.0, 0.3, -9.0, 1.1, -0.4, 7.0])
    n, trials = 3, 6000
    sim = aa.simulate_bon(jax.random.fold_in(KEY, 3), p, r, n, 1, trials, return_tokens=True)
    levels, prob = np_level_law(p, r, n)
    x = np.asarray(sim.rewards)
    assert mean_agrees(x, levels, prob)
    assert levels_agree(x, levels, prob)
    assert not levels_agree(x, levels, shifted_up(prob))
    tok = np.asarray(sim.tokens).ravel()
    counts = np.bincount(tok, minlength=len(p))
    assert np.all(counts[p == 0] == 0)
    m = tok.size
    assert np.all(np.abs(counts / m - p) <= Z * np.sqrt(p * (1 - p) / m))


@pytest.mark.parametrize("worst", [False, True])
def test_partial_groups_return_the_chosen_tokens(worst):
    # n = 7 with groups of 4 (the last one partial), several blocks and chunks.
    p, r = np.array([0.1, 0.4, 0.2, 0.3, 0.0, 0.0]), np.array([0.3, -0.1, 0.7, 0.2, 5.0, -5.0])
    n, num, trials = 7, 1000, 20
    runs = [
        aa.simulate_bon(KEY, p, r, n, num, trials, worst=worst, return_tokens=True, chunk_size=cs) for cs in (1, None)
    ]
    for sim in runs:
        tok = np.asarray(sim.tokens)
        assert tok.shape == (trials, n) and np.all(p[tok] > 0)
        np.testing.assert_allclose(r[tok].sum(axis=1), np.asarray(sim.rewards), atol=1e-12)
    np.testing.assert_array_equal(np.asarray(runs[0].tokens), np.asarray(runs[1].tokens))


# ---------------------------------------------------------------------------
# comparison with the package's exact best-of-N (THEORY.md §6–§7)
# ---------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(aa, "reward_law"), reason="exact best-of-N not available")
@pytest.mark.parametrize("name", list(CASES))
def test_matches_package_exact_best_of_n(name):
    p, r, n, num, _ = CASES[name]
    law = aa.reward_law(jnp.array(p), jnp.array(r), n)
    levels, prob = np_level_law(p, r, n)  # the package's exact law is the enumerated one
    np.testing.assert_allclose(np.asarray(law.levels), levels, atol=1e-9)
    np.testing.assert_allclose(np.exp(np.asarray(law.log_prob)), prob, rtol=1e-9)
    sim, win = simulate(name), win_rate(name)
    log_n = jnp.log(float(num))
    bon = np.exp(np.asarray(aa.bon_level_law(law, log_n)))
    x = np.asarray(sim.rewards)
    est = aa.mc_mean(x)
    assert abs(float(est.mean) - float(aa.bon_reward(law, log_n))) <= Z * float(est.stderr)
    assert levels_agree(x, levels, bon)
    assert win_agrees(win, float(aa.bon_win_rate(law, log_n)))
    assert not levels_agree(x, levels, shifted_up(bon))
    if name == "lattice-ties":
        worst = np.exp(np.asarray(aa.worst_of_n_level_law(law, log_n)))
        assert levels_agree(np.asarray(simulate(name, worst=True).rewards), levels, worst)


# ---------------------------------------------------------------------------
# chunking, compilation, memory
# ---------------------------------------------------------------------------


def test_result_is_bit_identical_for_every_chunk_size():
    p = jnp.array([0.3, 0.25, 0.45])
    r = jnp.array([0.1, 0.7, -1.3])  # non-dyadic: summation order would show
    n, num, trials = 7, 1000, 50  # 2 random blocks of 585 sequences, the last one partial
    plans = {cs: sim_mod._plan(n, num, trials, cs or sim_mod._DEFAULT_CHUNK) for cs in (1, 24570, None)}
    assert len(set(plans.values())) == 3  # sample chunks and trial chunks (with a remainder) all differ
    assert plans[24570].trials_per_chunk == 3 and plans[1].blocks_per_chunk == 1  # 50 = 17 x 3 - 1
    runs = [aa.simulate_bon(KEY, p, r, n, num, trials, return_tokens=True, chunk_size=cs) for cs in plans]
    for other in runs[1:]:
        np.testing.assert_array_equal(np.asarray(other.rewards), np.asarray(runs[0].rewards))
        np.testing.assert_array_equal(np.asarray(other.tokens), np.asarray(runs[0].tokens))
    # Asking for tokens does not change the rewards; another key changes them.
    plain = aa.simulate_bon(KEY, p, r, n, num, trials, chunk_size=24570)
    assert plain.tokens is None
    np.testing.assert_array_equal(np.asarray(plain.rewards), np.asarray(runs[0].rewards))
    other_key = aa.simulate_bon(jax.random.fold_in(KEY, 9), p, r, n, num, trials, chunk_size=24570)
    assert not np.array_equal(np.asarray(other_key.rewards), np.asarray(plain.rewards))


def test_compiles_once_for_repeated_calls():
    n, num, trials = 2, 3, 5  # shapes used nowhere else
    before = sim_mod._simulate._cache_size()
    r = jnp.array([0.0, 1.0], jnp.float32)
    a = aa.simulate_bon(jax.random.key(1), jnp.array([0.5, 0.5]), r, n, num, trials)
    b = aa.simulate_bon(jax.random.key(2), jnp.array([0.9, 0.1]), r + 1, n, num, trials)
    assert sim_mod._simulate._cache_size() == before + 1
    assert a.rewards.dtype == jnp.float32 and b.rewards.shape == (trials,)
    # Usable inside an outer jit and vmap over keys (p, r traced).
    f = jax.jit(lambda k, p: aa.simulate_bon(k, p, r, n, num, trials).rewards)
    out = jax.vmap(f, in_axes=(0, None))(jax.random.split(jax.random.key(3), 2), jnp.array([0.5, 0.5]))
    assert out.shape == (2, trials) and bool(jnp.all(jnp.isfinite(out)))


def test_far_more_tokens_than_memory_runs_in_bounded_memory():
    # 2^17 x 64 x 16 = 2^27 tokens: unchunked, the uint32 bits, int32 tokens and
    # float64 rewards alone would take 2 GiB. Bernoulli(0.2) rewards make r_n
    # Binomial(64, 0.2), an exact check of the result.
    p, r = jnp.array([0.8, 0.2]), jnp.array([0.0, 1.0])
    n, num, trials, chunk = 64, 2**17, 16, 2**16
    sim = aa.simulate_bon(jax.random.fold_in(KEY, 6), p, r, n, num, trials, chunk_size=chunk)
    levels = np.arange(n + 1.0)
    bon = np_bon_law(binom.pmf(np.arange(n + 1), n, 0.2), num)
    assert mean_agrees(np.asarray(sim.rewards), levels, bon)  # probabilistic; fixed key
    # The compiled program's scratch memory is bounded by the chunk, not the problem.
    # Both samplers: groups of tokens (concrete p) and one word per token (traced p).
    plan = sim_mod._plan(n, num, trials, chunk)
    group = smp._group_size(2, n)
    for g, sampler in ((group, smp._alias_table(p, group)), (0, smp._thresholds(p))):
        compiled = sim_mod._simulate.lower(
            KEY,
            sampler,
            r,
            None,
            jnp.zeros(()),
            jnp.ones(()),
            n=n,
            num_samples=num,
            num_trials=trials,
            plan=plan,
            worst=False,
            soft=False,
            poisson=False,
            return_tokens=False,
            group=g,
        ).compile()
        mem = compiled.memory_analysis()
        if mem is not None:
            assert mem.temp_size_in_bytes < 2**26  # < 64 MiB vs >= 2 GiB unchunked


def test_degenerate_model_gives_no_nan():
    # One-letter alphabet: every sequence ties, the win rate is exactly 1/2.
    one = aa.simulate_bon(KEY, jnp.array([1.0]), jnp.array([2.5]), 3, 4, 5, return_tokens=True)
    np.testing.assert_array_equal(np.asarray(one.rewards), 7.5)
    np.testing.assert_array_equal(np.asarray(one.tokens), 0)
    assert float(aa.mc_mean(one.rewards).stderr) == 0.0
    win = aa.mc_win_rate(jax.random.fold_in(KEY, 7), one.rewards, jnp.array([1.0]), jnp.array([2.5]), 3)
    assert float(win.mean) == 0.5 and float(win.stderr) == 0.0


# ---------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------


def test_estimators_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 50))
    est = aa.mc_mean(x)
    np.testing.assert_allclose(est.mean, x.mean(-1), rtol=1e-12)
    np.testing.assert_allclose(est.stderr, x.std(-1, ddof=1) / np.sqrt(50), rtol=1e-12)
    levels = np.array([-0.7, 0.1, 0.4, 1.3])
    idx = rng.integers(0, 4, size=200)
    noisy = levels[idx] + rng.uniform(-1e-12, 1e-12, size=200)  # summation round-off
    lf = aa.mc_level_frequencies(noisy, levels)
    freq = np.bincount(idx, minlength=4) / 200
    np.testing.assert_allclose(lf.freq, freq, rtol=1e-12)
    np.testing.assert_allclose(lf.stderr, np.sqrt(freq * (1 - freq) / 200), rtol=1e-12)
    # A reward that is no level is not counted.
    lf = aa.mc_level_frequencies(np.array([0.1, 0.25]), levels)
    np.testing.assert_allclose(lf.freq, [0.0, 0.5, 0.0, 0.0])


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

P, R = jnp.array([0.5, 0.5]), jnp.array([0.0, 1.0])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(p=jnp.array([0.5, 0.6])), "p"),
        (dict(p=jnp.array([[0.5, 0.5]])), "p"),
        (dict(p=jnp.array([-0.5, 1.5])), "p"),
        (dict(r=jnp.array([0.0, 1.0, 2.0])), "r"),
        (dict(r=jnp.array([0.0, jnp.nan])), "r"),
        (dict(n=0), "n"),
        (dict(n=2.0), "n"),
        (dict(num_samples=0), "num_samples"),
        (dict(num_trials=-3), "num_trials"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(key=0), "key"),
        (dict(key=jax.random.split(jax.random.key(0), 2)), "key"),
    ],
)
def test_simulate_bon_rejects_bad_input(kwargs, name):
    args = dict(key=KEY, p=P, r=R, n=2, num_samples=2, num_trials=2) | kwargs
    chunk = args.pop("chunk_size", None)
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        aa.simulate_bon(
            args["key"], args["p"], args["r"], args["n"], args["num_samples"], args["num_trials"], chunk_size=chunk
        )


def test_estimators_reject_bad_input():
    with pytest.raises(ValueError, match=r"\bx\b"):
        aa.mc_mean(jnp.array([1.0]))
    with pytest.raises(ValueError, match="levels"):
        aa.mc_level_frequencies(jnp.array([1.0, 2.0]), jnp.array([2.0, 1.0]))
    with pytest.raises(ValueError, match="rewards"):
        aa.mc_level_frequencies(jnp.ones((2, 2)), jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="atol"):
        aa.mc_level_frequencies(jnp.array([1.0, 2.0]), jnp.array([1.0, 2.0]), atol=-1.0)
    with pytest.raises(ValueError, match="rewards"):
        aa.mc_win_rate(KEY, jnp.array([1.0]), P, R, 2)
    with pytest.raises(ValueError, match=r"\bn\b"):
        aa.mc_win_rate(KEY, jnp.array([1.0, 0.0]), P, R, 0)
