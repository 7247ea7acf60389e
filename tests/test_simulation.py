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


def lib_bon_law(law, log_n, worst=False):
    """The package's exact best-of-N (worst-of-N) level law, as probabilities."""
    if hasattr(aa, "best_of_n"):
        return np.exp(np.asarray(aa.best_of_n(law, log_n, worst=worst).log_prob))
    return np.exp(np.asarray((aa.worst_of_n_level_law if worst else aa.bon_level_law)(law, log_n)))


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
    bon = lib_bon_law(law, log_n)
    x = np.asarray(sim.rewards)
    est = aa.mc_mean(x)
    assert abs(float(est.mean) - float(np.sum(bon * levels))) <= Z * float(est.stderr)
    assert levels_agree(x, levels, bon)
    assert win_agrees(win, np_win_rate(bon, prob))
    if hasattr(aa, "win_rate"):
        assert win_agrees(win, float(aa.win_rate(aa.best_of_n(law, log_n), law)))
    assert not levels_agree(x, levels, shifted_up(bon))
    if name == "lattice-ties":
        worst = lib_bon_law(law, log_n, worst=True)
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
    assert plain.tokens is None and plain.gold is None
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


# ---------------------------------------------------------------------------
# Monte-Carlo twins of the level methods (THEORY.md §10, §12, §13)
# ---------------------------------------------------------------------------
# Model of issue 13: the top proxy token is bad for gold. n = 2 gives 7 levels.
TP, TR, TG = np.array([0.4, 0.3, 0.2, 0.1]), np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0, -1.0])
TN, TNUM, TTRIALS = 2, 4, 4000


def np_gold_given_level(p, r, g, n):
    """Levels, P_n(s) and m(s) = E[G_n | R_n = s] by enumerating all k^n sequences."""
    levels, prob = np_level_law(p, r, n)
    gsum = np.zeros_like(prob)
    for seq in itertools.product(range(len(p)), repeat=n):
        pr = float(np.prod(np.asarray(p)[list(seq)]))
        s = round(float(np.asarray(r)[list(seq)].sum()), 9)
        gsum[np.searchsorted(levels, s)] += pr * float(np.asarray(g)[list(seq)].sum())
    return levels, prob, gsum / prob


def np_soft_law(levels, prob, num, temperature, worst=False):
    """Soft best-of-N level law by enumerating all num-tuples of levels."""
    sgn = -1.0 if worst else 1.0
    w = np.exp(sgn * (levels - (levels.max() if not worst else levels.min())) / temperature)
    q = np.zeros_like(prob)
    for tup in itertools.product(range(len(levels)), repeat=num):
        t = list(tup)
        pr, wt = np.prod(prob[t]), w[t]
        np.add.at(q, t, pr * wt / wt.sum())
    return q


def np_poisson_law(prob, mean, worst=False):
    """Best-of-Poisson B_μ(s) = F(s) e^{-μ(1-F(s))} - F(s-) e^{-μ(1-F(s-))} (worst: by symmetry)."""
    f, fm = np_cdfs(prob)
    if worst:
        return (1 - fm) * np.exp(-mean * fm) - (1 - f) * np.exp(-mean * f)
    return f * np.exp(-mean * (1 - f)) - fm * np.exp(-mean * (1 - fm))


def shifted_down(law):
    out = np.zeros_like(law)
    out[:-1] = law[1:]
    out[0] += law[0]
    return out


@functools.cache
def twin(mode, worst=False):
    """Cached simulations of the toy model: 'hard', 'soft' (τ = 0.7), 'soft0' (τ = 1e-3),
    'softinf' (τ = ∞), 'poisson' (μ = 3), 'tilt' (best-of-N from φ_λ, λ = 0.8)."""
    key = jax.random.fold_in(KEY, 30)
    args = (TN, TNUM, TTRIALS)
    kw = dict(worst=worst, g=TG, return_tokens=True)
    if mode == "poisson":
        return aa.simulate_best_of_poisson(key, TP, TR, TN, 3.0, TTRIALS, **kw)
    if mode == "tilt":
        return aa.simulate_bon(key, np.asarray(aa.tilt(TP, TR, 0.8)), TR, *args, **kw)
    temperature = {"hard": None, "soft": 0.7, "soft0": 1e-3, "softinf": np.inf}[mode]
    return aa.simulate_bon(key, TP, TR, *args, temperature=temperature, **kw)


def twin_law(mode, worst=False):
    """The exact level law of each twin, by independent NumPy formulas and enumeration."""
    levels, prob = np_level_law(TP, TR, TN)
    if mode == "soft":
        return np_soft_law(levels, prob, TNUM, 0.7, worst)
    if mode == "poisson":
        return np_poisson_law(prob, 3.0, worst)
    if mode == "tilt":
        tilted = prob * np.exp(0.8 * levels)
        prob = tilted / tilted.sum()
    return np_worst_law(prob, TNUM) if worst else np_bon_law(prob, TNUM)


def gold_agrees(gold, law, m):
    est = aa.mc_mean(gold)
    return abs(float(est.mean) - float(np.sum(law * m))) <= Z * float(est.stderr)


@pytest.mark.parametrize("mode", ["soft", "poisson", "tilt"])
@pytest.mark.parametrize("worst", [False, True])
def test_sampled_twins_match_exact_level_laws_and_gold(mode, worst):
    # Probabilistic (fixed key): level law, mean and gold of the chosen sequence
    # within Z standard errors of the exact law and of Σ_s q(s) m(s); the same
    # checks reject the law shifted by one level (and its gold).
    levels, prob, m = np_gold_given_level(TP, TR, TG, TN)
    law = twin_law(mode, worst)
    assert law.sum() == pytest.approx(1.0, abs=1e-12)
    sim = twin(mode, worst)
    x, gold, tok = np.asarray(sim.rewards), np.asarray(sim.gold), np.asarray(sim.tokens)
    np.testing.assert_array_equal(TR[tok].sum(axis=1), x)  # proxy and gold are those of the chosen tokens
    np.testing.assert_array_equal(TG[tok].sum(axis=1), gold)
    assert mean_agrees(x, levels, law) and levels_agree(x, levels, law)
    assert gold_agrees(gold, law, m)
    wrong = shifted_down(law) if worst else shifted_up(law)
    assert not mean_agrees(x, levels, wrong) and not levels_agree(x, levels, wrong)
    assert not gold_agrees(gold, wrong, m)  # the gold of the shifted law


def test_soft_best_of_n_limits_and_shared_samples():
    # Same key: the soft rule sees the same sequences as the hard one. τ = 1e-3
    # on integer levels picks a top level every time (exp(-1000) ≈ 0), so the
    # rewards equal best-of-N's bit for bit; τ = ∞ picks uniformly: the reference law.
    hard, _, _ = twin("hard"), twin("soft"), twin("poisson")
    compiled = sim_mod._simulate._cache_size()
    soft0 = twin("soft0")
    np.testing.assert_array_equal(np.asarray(soft0.rewards), np.asarray(hard.rewards))
    np.testing.assert_array_equal(np.asarray(hard.num_drawn), TNUM)
    levels, prob = np_level_law(TP, TR, TN)
    x = np.asarray(twin("softinf").rewards)
    assert levels_agree(x, levels, prob) and not levels_agree(x, levels, shifted_up(prob))
    assert np.all(np.asarray(twin("soft").rewards) <= np.asarray(hard.rewards))
    # The temperature and the Poisson mean (within a size class) are not static:
    # τ = 1e-3, ∞ and μ = 2.5 reuse the programs compiled for τ = 0.7 and μ = 3.
    aa.simulate_best_of_poisson(KEY, TP, TR, TN, 2.5, TTRIALS, g=TG, return_tokens=True)
    assert sim_mod._simulate._cache_size() == compiled


@pytest.mark.skipif(not hasattr(aa, "soft_best_of_n"), reason="level laws (asymalign.levels) not available")
@pytest.mark.parametrize("mode", ["soft", "poisson", "tilt", "hard"])
def test_sampled_twins_match_the_library_level_laws(mode):
    law = aa.reward_law(TP, TR, TN)
    log_n = np.log(float(TNUM))
    lib = {
        "soft": lambda: aa.soft_best_of_n(law, log_n, 0.7),
        "poisson": lambda: aa.best_of_poisson(law, 3.0),
        "tilt": lambda: aa.best_of_n(aa.level_tilt(law, law.levels, 1 / 0.8), log_n),
        "hard": lambda: aa.best_of_n(law, log_n),
    }[mode]()
    q = np.exp(np.asarray(lib.log_prob))
    np.testing.assert_allclose(q, twin_law(mode), rtol=1e-8, atol=1e-13)  # the library law is the enumerated one
    x = np.asarray(twin(mode).rewards)
    assert levels_agree(x, np.asarray(law.levels), q)
    assert not levels_agree(x, np.asarray(law.levels), shifted_up(q))
    if hasattr(aa, "gold_given_level"):
        m = np.asarray(aa.gold_given_level(TP, TR, TG, TN).mean)
        assert gold_agrees(np.asarray(twin(mode).gold), q, m)


def test_best_of_poisson_draws_one_plus_poisson_samples():
    # Probabilistic (fixed key): N - 1 ~ Poisson(3) by a chi-square over counts
    # 0..9 (and >= 10 lumped), rejecting Poisson(3.2).
    counts = np.asarray(twin("poisson").num_drawn) - 1
    assert counts.min() >= 0

    def ok(mean):
        pmf = stats.poisson.pmf(np.arange(10), mean)
        q = np.append(pmf, 1 - pmf.sum())
        c = np.bincount(np.minimum(counts, 10), minlength=11)
        e = counts.size * q
        return float(np.sum((c - e) ** 2 / e)) <= stats.chi2.isf(2 * stats.norm.sf(Z), 10)

    assert ok(3.0) and not ok(3.2)
    # Hard, worst and soft rules share the trial's N (same count stream).
    np.testing.assert_array_equal(np.asarray(twin("poisson", worst=True).num_drawn), counts + 1)


def test_new_modes_are_bit_identical_for_every_chunk_size():
    # Soft Best-of-Poisson with gold and tokens, μ = 300 and n = 64: blocks of 64
    # sequences, so the while loop runs over several chunks with chunk_size = 4096.
    # (Hard, worst and soft selection share the block stream and the running best.)
    p, r, g = np.array([0.3, 0.25, 0.45]), np.array([0.1, 0.7, -1.3]), np.array([0.2, -0.9, 0.35])
    n, trials = 64, 7
    kw = dict(temperature=2.5, g=g, return_tokens=True)
    runs = [aa.simulate_best_of_poisson(KEY, p, r, n, 300.0, trials, chunk_size=cs, **kw) for cs in (4096, None)]
    assert int(np.max(np.asarray(runs[0].num_drawn))) > 4 * 64
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    tok = np.asarray(runs[0].tokens)
    np.testing.assert_allclose(g[tok].sum(axis=1), np.asarray(runs[0].gold), atol=1e-12)
    np.testing.assert_allclose(r[tok].sum(axis=1), np.asarray(runs[0].rewards), atol=1e-12)


# ---------------------------------------------------------------------------
# all draws, and the unbiased best-of-N gold estimator (Nakano et al.; THEORY.md §13)
# ---------------------------------------------------------------------------


def np_u_statistic(x, g, num, worst=False):
    """Brute force: mean over all num-subsets of the gold of the subset's best,
    averaged over the tied best (uniformly random tie-breaking)."""
    x = -x if worst else x
    vals = []
    for sub in itertools.combinations(range(len(x)), num):
        sub = list(sub)
        top = np.isclose(x[sub], x[sub].max(), rtol=0, atol=1e-9)
        vals.append(g[sub][top].mean())
    return float(np.mean(vals))


def test_unbiased_estimator_is_the_u_statistic():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(3, 7)).astype(np.float64) * 0.1  # ties, and round-off in 0.1 steps
    x[0, 2] = 0.1 + 0.2  # 0.30000000000000004: a tie with 0.3 up to round-off
    x[0, 5] = 0.3
    g = rng.normal(size=(3, 7))
    nums = np.arange(1, 8)
    for worst in (False, True):
        est = np.asarray(aa.bon_gold_unbiased(x, g, nums, worst=worst))
        assert est.shape == (3, 7)
        ref = [[np_u_statistic(x[i], g[i], num, worst) for num in nums] for i in range(3)]
        np.testing.assert_allclose(est, ref, rtol=1e-12, atol=1e-12)
    # N = 1 is the plain mean, a constant gold is returned unchanged (weights sum to 1),
    # a scalar N gives one value per row.
    np.testing.assert_allclose(np.asarray(aa.bon_gold_unbiased(x, g, 1)), g.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(aa.bon_gold_unbiased(x, np.full_like(g, 2.5), nums)), 2.5, rtol=1e-12)
    big = np.asarray(aa.bon_gold_unbiased(np.arange(5000.0), np.ones(5000), np.array([1, 70, 4999])))
    np.testing.assert_allclose(big, 1.0, rtol=1e-10)  # log-space weights at K = 5000


@functools.cache
def toy_draws():
    return aa.simulate_draws(jax.random.fold_in(KEY, 40), TP, TR, TN, 16, 2000, g=TG)


def test_draws_are_the_sequences_best_of_n_chooses_from():
    # Same key and N = K: best-of-N keeps the first draw of highest proxy, with its gold.
    key = jax.random.fold_in(KEY, 30)
    d = aa.simulate_draws(key, TP, TR, TN, TNUM, TTRIALS, g=TG)
    hard = twin("hard")
    x, gold = np.asarray(d.rewards), np.asarray(d.gold)
    first = np.argmax(x, axis=1)
    np.testing.assert_array_equal(x.max(axis=1), np.asarray(hard.rewards))
    np.testing.assert_array_equal(gold[np.arange(TTRIALS), first], np.asarray(hard.gold))
    small = aa.simulate_draws(key, TP, TR, TN, TNUM, 20, g=TG, chunk_size=2)  # one block at a time
    np.testing.assert_array_equal(np.asarray(small.rewards), x[:20])
    np.testing.assert_array_equal(np.asarray(small.gold), gold[:20])


@pytest.mark.parametrize("worst", [False, True])
def test_unbiased_gold_estimator_matches_exact(worst):
    # Probabilistic (fixed key): for N = 1, 2, 4, 8, 16 from the same K = 16 draws,
    # the mean over 2000 trials is within Z standard errors of Σ_s B_N(s) m(s);
    # the m shifted by one level is rejected.
    levels, prob, m = np_gold_given_level(TP, TR, TG, TN)
    nums = np.array([1, 2, 4, 8, 16])
    d = toy_draws()
    est = aa.bon_gold_unbiased(d.rewards, d.gold, nums, worst=worst)
    mc = aa.mc_mean(est.T)
    laws = [(np_worst_law if worst else np_bon_law)(prob, num) for num in nums]
    exact = np.array([np.sum(law * m) for law in laws])
    assert np.all(np.abs(np.asarray(mc.mean) - exact) <= Z * np.asarray(mc.stderr))
    m_wrong = np.concatenate([m[1:], m[-1:]]) if worst else np.concatenate([m[:1], m[:-1]])
    wrong = np.array([np.sum(law * m_wrong) for law in laws])
    assert np.any(np.abs(np.asarray(mc.mean) - wrong) > Z * np.asarray(mc.stderr))
    if not worst:  # the one-call version gives the same numbers
        one = aa.mc_bon_gold_unbiased(jax.random.fold_in(KEY, 40), TP, TR, TG, TN, nums, 16, 2000)
        np.testing.assert_allclose(np.asarray(one.mean), np.asarray(mc.mean), rtol=1e-12)
        single = aa.mc_bon_gold_unbiased(jax.random.fold_in(KEY, 40), TP, TR, TG, TN, 4, 16, 2000)
        assert float(single.mean) == pytest.approx(float(mc.mean[2]), rel=1e-12)


# ---------------------------------------------------------------------------
# bad input of the new modes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: aa.simulate_bon(KEY, P, R, 2, 2, 2, temperature=0.0), "temperature"),
        (lambda: aa.simulate_bon(KEY, P, R, 2, 2, 2, temperature=-1.0), "temperature"),
        (lambda: aa.simulate_bon(KEY, P, R, 2, 2, 2, temperature=np.nan), "temperature"),
        (lambda: aa.simulate_bon(KEY, P, R, 2, 2, 2, g=jnp.array([1.0, 2.0, 3.0])), "g"),
        (lambda: aa.simulate_bon(KEY, P, R, 2, 2, 2, g=jnp.array([1.0, jnp.inf])), "g"),
        (lambda: aa.simulate_best_of_poisson(KEY, P, R, 2, -0.5, 2), "mean"),
        (lambda: aa.simulate_best_of_poisson(KEY, P, R, 2, np.nan, 2), "mean"),
        (lambda: aa.simulate_best_of_poisson(KEY, P, R, 2, 1e12, 2), "mean"),
        (lambda: aa.simulate_draws(KEY, P, R, 2, 0, 2), "num_draws"),
        (lambda: aa.simulate_draws(KEY, P, R, 2, 2, 2, g=jnp.array([jnp.nan, 0.0])), "g"),
        (lambda: aa.mc_bon_gold_unbiased(KEY, P, R, R, 2, 4, 3, 10), "num_draws"),
        (lambda: aa.mc_bon_gold_unbiased(KEY, P, R, R, 2, 0, 3, 10), "num_samples"),
        (lambda: aa.mc_bon_gold_unbiased(KEY, P, R, R[:1], 2, 2, 3, 10), "g"),
        (lambda: aa.mc_bon_gold_unbiased(KEY, P, R, R, 2, 2, 3, 1), "num_trials"),
        (lambda: aa.bon_gold_unbiased(jnp.ones((2, 3)), jnp.ones((2, 4)), 2), "gold"),
        (lambda: aa.bon_gold_unbiased(jnp.ones(3), jnp.ones(3), 4), "draws"),
        (lambda: aa.bon_gold_unbiased(jnp.ones(3), jnp.ones(3), 1.5), "num_samples"),
        (lambda: aa.bon_gold_unbiased(jnp.ones(3), jnp.array([1.0, jnp.nan, 0.0]), 2), "gold"),
    ],
)
def test_new_modes_reject_bad_input(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()
