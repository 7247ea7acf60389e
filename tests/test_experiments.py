"""Every experiment runs in --quick mode, writes its files, and its data show the claims.

The quick run happens once per module (in-process, so JIT caches are shared).
"""

import csv
import json
import math

import numpy as np
import pytest

from asymalign import cli


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    # in this process (--jobs 1): the suite's strict promotion and warnings apply to every experiment
    assert cli.main(["reproduce", "--quick", "--out", str(out), "--seed", "0", "--jobs", "1"]) == 0
    return out


def _names():
    return list(cli.load_experiments().EXPERIMENTS)


def _rows(out, name):
    with open(out / f"{name}.csv") as fh:
        rows = list(csv.DictReader(fh))
    return rows


def _series(out, name, panel, series):
    rows = [r for r in _rows(out, name) if r["panel"] == panel and r["series"] == series]
    assert rows, f"{name}: no data for {panel}/{series}"
    return (np.array([float(r["x"]) for r in rows]), np.array([float(r["y"]) for r in rows]))


def _finite(obj):
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


def test_every_experiment_writes_every_file(quick_run):
    for name in _names():
        for ext in ("png", "pdf", "csv", "json"):
            path = quick_run / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
        rows = _rows(quick_run, name)
        assert rows, name
        vals = np.array([[float(r[c]) for c in ("x", "y", "yerr")] for r in rows])
        assert np.all(np.isfinite(vals)), name
        doc = json.loads((quick_run / f"{name}.json").read_text())
        assert doc["seed"] == 0 and doc["quick"] is True
        assert doc["versions"]["jax"] and doc["jax_backend"]
        assert doc["params"] and _finite(doc["summary"]), name


def test_claim_bon_reaches_klrl_curve(quick_run):
    doc = json.loads((quick_run / "frontier.json").read_text())
    gaps = doc["summary"]["max_reward_gap_to_klrl_curve"]
    bern = gaps["Bernoulli p = (0.7, 0.3), r = (0, 1)"]
    # The last (largest n) BoN points are within 1e-2 of the KL-RL curve ...
    assert 0 <= bern[str(doc["summary"]["largest_n"])] < 1e-2
    # ... and the distance shrinks with n (from n = 4 on, for both models).
    for g in gaps.values():
        v = [g[k] for k in sorted(g, key=int) if int(k) >= 4]
        assert all(b < a for a, b in zip(v, v[1:], strict=False)), v


def test_claim_rate_function_gap_shrinks(quick_run):
    n, gap = _series(quick_run, "ldp", "gap", "max_x |exponent − I_λ(x)|")
    assert np.all(np.diff(gap) < 0) and gap[-1] < 0.05
    doc = json.loads((quick_run / "ldp.json").read_text())
    assert doc["summary"]["max_legendre_vs_kl_form"] < 1e-3


def test_claim_bound_and_identity(quick_run):
    doc = json.loads((quick_run / "bon_kl_bound.json").read_text())
    for s in doc["summary"]["bound_minus_exact"].values():
        assert s["min_bound_minus_kl"] > -1e-12  # log N - (N-1)/N is an upper bound
    near = json.loads((quick_run / "near_optimal.json").read_text())["summary"]
    assert near["num_feasible"] > 0 and near["bound_violations_feasible"] == 0
    assert near["max_identity_residual"] < 1e-12


def test_claim_bon_kl_to_tilt_vanishes_per_token(quick_run):
    doc = json.loads((quick_run / "bon_vs_rl_kl.json").read_text())
    for row in doc["summary"]["monte_carlo"]:  # probabilistic (fixed seed)
        assert abs(row["mc"] - row["exact"]) <= 5 * row["stderr"] + 1e-12, row
    for lab, slope in doc["summary"]["slope_of_total_kl_vs_log_n"].items():
        n, kl = _series(quick_run, "bon_vs_rl_kl", "per_token", f"{lab}, exact")
        assert np.all(np.diff(kl[n >= 4]) < 0)
        assert 0.2 < slope < 0.8


def test_same_seed_same_data(quick_run, tmp_path):
    assert cli.main(["reproduce", "--quick", "--only", "near_optimal", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "near_optimal.csv").read_bytes() == (quick_run / "near_optimal.csv").read_bytes()


# ---------------------------------------------------------------------------
# claims of the experiments of issues 12-14, each against an independent NumPy/SciPy reference
# ---------------------------------------------------------------------------


def _summary(out, name):
    return json.loads((out / f"{name}.json").read_text())


def _tilt_np(p, r, lam):
    w = np.log(p) + lam * r
    w = np.exp(w - w.max())
    return w / w.sum()


def _klrl_reward_np(p, r, delta):
    """Λ'(λ*(Δ)) with KL(φ_λ||p) = Δ solved by brentq (SciPy, independent of the package)."""
    from scipy.optimize import brentq

    p, r = np.asarray(p, float), np.asarray(r, float)

    def kl(lam):
        q = _tilt_np(p, r, lam)
        return float(np.sum(np.where(q > 0, q * (np.log(np.where(q > 0, q, 1.0)) - np.log(p)), 0.0)))

    lam = brentq(lambda x: kl(x) - delta, 0.0, 200.0, xtol=1e-14)
    return float(_tilt_np(p, r, lam) @ r)


def test_claim_infalign_optimum_beats_every_transform(quick_run):
    doc = _summary(quick_run, "infalign")
    assert len(doc["summary"]) == 4  # n = 1, 16 x best-, worst-of-N
    for tag, s in doc["summary"].items():
        panel = f"W, {tag}"
        kl, w_opt = _series(quick_run, "infalign", panel, "exact optimum")
        np.testing.assert_allclose(kl, s["kl"])
        assert np.all((w_opt > 0.5) & (w_opt <= 1.0 + 1e-12)), tag  # aligned beats the reference, a probability
        families = [m for m in _series_names(quick_run, "infalign", panel) if m != "exact optimum"]
        assert len(families) == 4
        for m in families:
            _, w = _series(quick_run, "infalign", panel, m)
            assert np.all(w_opt >= w - 1e-9), (tag, m, float(np.min(w_opt - w)))
        _, w_std = _series(quick_run, "infalign", panel, "standard KL-RL (raw reward)")
        gain = w_opt - w_std
        assert np.all(gain >= -1e-9) and gain.max() > 1e-3, tag  # a real gain over standard KL-RL somewhere
        np.testing.assert_allclose(gain, s["gain_of_optimum_over_standard_klrl"], atol=1e-12)
        assert np.all(np.diff(w_opt) >= -1e-9), tag  # more KL budget never hurts the optimum


def _series_names(out, name, panel):
    names = []
    for r in _rows(out, name):
        if r["panel"] == panel and r["series"] not in names:
            names.append(r["series"])
    return names


def test_claim_soft_bon_rate_and_constant(quick_run):
    doc = _summary(quick_run, "soft_bon")
    one = doc["params"]["one_token"]
    p, r, tau = np.asarray(one["p"]), np.asarray(one["r"]), one["tau"]
    # §12 constant, recomputed here: C = (exp(2 D_3) - exp(2 D_2)) / 2 with φ ∝ p e^{r/τ}
    f = _tilt_np(p, r, 1.0 / tau)
    e2d2, e2d3 = np.sum(f**2 / p) ** 2, np.sum(f**3 / p**2)
    const = 0.5 * (e2d3 - e2d2)
    num, kl = _series(quick_run, "soft_bon", "one token", "KL(φ‖SBoN_N), exact")
    big = num >= 2**8
    assert big.sum() >= 3
    slope = np.polyfit(np.log(num[big]), np.log(kl[big]), 1)[0]
    assert abs(slope + 2.0) < 0.1, slope  # C / N^2, not the O(1/N) of the bound
    measured = kl[-1] * num[-1] ** 2
    assert abs(measured / const - 1) < 0.03, (measured, const)
    assert abs(measured / (0.5 * e2d3) - 1) > 0.1  # the tolerance tells the constant from a wrong one
    _, bound = _series(quick_run, "soft_bon", "one token", "bound log(1 + χ²/N)")
    assert np.all(kl <= bound)
    # sequences: best-of-N (KL <= log N = n c) never beats KL-RL at budget c per token; the gap shrinks with n
    seq = doc["params"]["sequences"]
    cs = np.asarray(doc["summary"]["sequences"]["c"])
    cut = doc["summary"]["sequences"]["cutoff_c"]
    curve = np.array([_klrl_reward_np(seq["p"], seq["r"], c) for c in cs])
    ns = sorted(doc["summary"]["sequences"]["n"], key=int)
    gaps = []
    for n in ns:
        _, rew = _series(quick_run, "soft_bon", "sequence reward", f"best-of-N, n = {n}")
        assert np.all(rew <= curve + 1e-9), n
        gaps.append(np.max(curve - rew))
    assert all(b < a for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    # soft best-of-N: above the cut-off its per-token KL to the target falls with n
    kls = [_series(quick_run, "soft_bon", "sequence KL", f"soft best-of-N, n = {n}")[1] for n in ns]
    above = cs > cut
    assert above.any() and np.all(kls[-1][above] < kls[0][above])


def test_claim_goodhart_peak(quick_run):
    doc = _summary(quick_run, "goodhart")
    panels = list(doc["summary"]["peaks"])
    toy = [pl for pl in panels if pl.startswith("toy")]
    assert len(toy) == 2
    p, r, g = (np.array(x, float) for x in ([0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, -1.0]))
    lam = np.linspace(0.0, 3.0, 30001)  # brute force over the tilt path (NumPy)
    w = p * np.exp(np.outer(lam, r))
    q = w / w.sum(axis=1, keepdims=True)
    kl1 = np.sum(q * np.log(q / p), axis=1)
    for panel in toy:
        n = int(panel.rsplit("n = ", 1)[1])
        d, gain = _series(quick_run, "goodhart", panel, "KL-RL tilt")
        dd, mark = _series(quick_run, "goodhart", panel, "d† (tilt peak)")
        d_dag, peak_gain = dd[0], mark[1]
        assert peak_gain > 0 and np.all(gain <= peak_gain + 1e-9), panel  # the gold peaks at d†
        i = int(np.argmax(gain))
        assert d[max(i - 1, 0)] <= d_dag <= d[min(i + 1, d.size - 1)], panel
        assert gain[-1] < 0  # ... and then falls below the reference
        gold = n * (q @ g - p @ g)
        j = int(np.argmax(gold))
        assert abs(np.sqrt(n * kl1[j]) - d_dag) < 1e-3 and abs(gold[j] - peak_gain) < 1e-6, panel
    skipped = doc["summary"].get("skipped")
    real = [pl for pl in panels if pl.startswith("English")]
    if skipped:
        assert "real vocabulary skipped" in skipped and not real
    else:
        assert len(real) == 2
        for panel in real:
            assert _series(quick_run, "goodhart", panel, "best-of-N")[0].size > 1


def test_claim_sentiment_bon_approaches_klrl(quick_run):
    doc = _summary(quick_run, "sentiment")
    if "skipped" in doc["summary"]:
        assert "sentiment skipped" in doc["summary"]["skipped"]
        return
    from asymalign import load_vocabulary

    v = load_vocabulary(20_000)
    for d in doc["params"]["deltas"]:
        lab = f"Δ = {d:g} nats/word"
        ref = _klrl_reward_np(v.p, v.afinn, d)
        _, rl = _series(quick_run, "sentiment", "reward per word", f"KL-RL optimum, {lab}")
        np.testing.assert_allclose(rl, ref, rtol=1e-7)
        n, bon = _series(quick_run, "sentiment", "reward per word", f"best-of-N exact, {lab}")
        gap = ref - bon
        assert np.all(gap >= -1e-9), lab  # KL(best-of-N) <= log N = nΔ
        assert np.all(np.diff(gap) < 0) and gap[-1] < 0.5 * gap[0], (lab, gap)
    mc = doc["summary"]["monte_carlo"]
    assert len(mc) >= 3
    for row in mc.values():  # probabilistic (fixed seed)
        assert abs(row["mc"] - row["exact"]) <= 5 * row["stderr"] + 1e-12, row


def test_claim_markov_limits(quick_run):
    doc = _summary(quick_run, "markov")
    for chain in doc["params"]["chains"]:
        panel = f"reward/{chain}"
        n, bon = _series(quick_run, "markov", panel, "Markov: best-of-N, log N = nΔ")
        _, lim = _series(quick_run, "markov", panel, "Markov: limit Λ'(λ*) (Doob transform)")
        gap = np.abs(lim[0] - bon)
        assert np.all(np.diff(n) > 0) and np.all(np.diff(gap) < 0) and gap[-1] < 0.06, (chain, gap)
    # Rényi cross-entropy rates: the Perron root, recomputed here, and brute force over all sequences at small n
    P, Q = np.array(doc["params"]["renyi_P"]), np.array(doc["params"]["renyi_Q"])
    evals, evecs = np.linalg.eig(P.T)
    mu = np.real(evecs[:, np.argmin(np.abs(evals - 1))])
    mu = mu / mu.sum()
    nu = np.full(len(Q), 1.0 / len(Q))
    for alpha in doc["params"]["alphas"]:
        sers = [s for s in _series_names(quick_run, "markov", "renyi") if s.startswith(f"α = {alpha}:")]
        ns, h = _series(quick_run, "markov", "renyi", sers[0])
        _, rate = _series(quick_run, "markov", "renyi", sers[1])
        m = np.where(P > 0, P * np.where(Q > 0, Q, 1.0) ** (alpha - 1), 0.0)
        perron = np.log(np.max(np.abs(np.linalg.eigvals(m)))) / (1 - alpha)
        assert abs(rate[0] - perron) < 1e-10, alpha
        gap = np.abs(h - perron)
        assert np.all(np.diff(gap) < 0) and gap[-1] < 0.02, (alpha, gap)
        for k in (1, 2, 4):  # all 3^k sequences
            seqs = np.array(np.meshgrid(*[np.arange(len(P))] * k, indexing="ij")).reshape(k, -1).T
            lp = np.log(mu[seqs[:, 0]]) + np.sum(np.log(P[seqs[:, :-1], seqs[:, 1:]] + 1e-300), axis=1)
            lq = np.log(nu[seqs[:, 0]]) + np.sum(np.log(Q[seqs[:, :-1], seqs[:, 1:]]), axis=1)
            ok = np.isfinite(lp) & (lp > -600)
            brute = np.log(np.sum(np.exp(lp[ok] + (alpha - 1) * lq[ok]))) / (1 - alpha) / k
            assert abs(h[list(ns).index(k)] - brute) < 1e-10, (alpha, k)


# ---------------------------------------------------------------------------
# issue 11: the hot paths of the goodhart and markov experiments share compilations across model sizes
# ---------------------------------------------------------------------------


def test_goodhart_and_markov_paths_compile_once_for_models_of_several_sizes():
    import asymalign as aa
    from asymalign import markov as mk
    from asymalign._compile_cache import CompileCounter

    rng = np.random.default_rng(0)
    lam = np.linspace(0.0, 3.0, 24)
    models = [(rng.dirichlet(np.ones(k)), np.arange(k, dtype=float), rng.normal(size=k)) for k in (3, 5, 9)]
    golds = [aa.gold_given_level(p, r, g, 4) for p, r, g in models]  # reward_law's kernels are not counted here

    def goodhart_calls(i):
        p, r, g = models[i]
        gold = np.asarray(aa.tilt_gold(p, r, g, lam, n=4))
        peak = aa.goodhart_peak(p, r, g, n=4)
        law = golds[i].law
        q = aa.RewardLaw(law.levels, law.log_prob, law.n, law.fingerprint)
        assert np.isfinite(float(aa.gold_reward(q, golds[i]).mean)) and float(peak.lam) >= 0  # inf: no peak
        d = np.sqrt(lam)
        assert np.isfinite(float(aa.fit_gao(d, gold - gold[0], form="rl").rms))

    def chain(k):
        P = rng.dirichlet(np.ones(k), size=k)
        return mk.MarkovChain(P, np.full(k, 1.0 / k)), np.arange(k, dtype=float)

    def markov_calls(k, n):
        ch, r = chain(k)
        assert np.isfinite(float(mk.solve_lambda(ch, r, 0.05)))
        sol = mk.kl_rl(ch, r, n, 0.05)
        assert sol.transitions.shape == (n - 1, k, k) and sol.initial.shape == (k,)
        assert np.all(np.isfinite(np.asarray(sol.transitions)))

    goodhart_calls(0)
    markov_calls(2, 8)
    with CompileCounter() as c:  # other alphabet sizes, other n: padded to the same buckets
        goodhart_calls(1)
        goodhart_calls(2)
        markov_calls(3, 32)
        markov_calls(4, 100)
    assert c.count == 0, c


def test_log_tick_labels_are_the_same_text_in_plain_unicode():
    """plain_log_ticks keeps matplotlib's choice of labelled ticks and writes each label
    without mathtext (10⁻³ for $\\mathdefault{10^{-3}}$); other labels pass through."""
    from matplotlib.figure import Figure

    common = cli.load_experiments()._common
    plain_log_ticks, plain_tick_label = common.plain_log_ticks, common.plain_tick_label

    assert plain_tick_label(r"$\mathdefault{2^{5}}$") == "2⁵"
    assert plain_tick_label(r"$\mathdefault{-10^{-12}}$") == "−10⁻¹²"
    assert plain_tick_label(r"$\mathdefault{2\times10^{-1}}$") == "2×10⁻¹"
    assert plain_tick_label("") == "" and plain_tick_label("0.5") == "0.5"
    assert plain_tick_label(r"$\alpha^{2}$") == r"$\alpha^{2}$"  # not a log label: left as mathtext

    def labels(plain):
        fig = Figure()
        ax = fig.subplots()
        ax.plot([1e-4, 3e2], [1.0, 40.0])
        ax.set_xscale("log")
        ax.set_yscale("log", base=2)
        if plain:
            plain_log_ticks(fig)
        fig.canvas.draw()  # Agg: formats the ticks
        return [[t.get_text() for t in a.get_ticklabels(minor=m)] for a in (ax.xaxis, ax.yaxis) for m in (False, True)]

    default, plain = labels(False), labels(True)
    assert [[bool(t) for t in g] for g in default] == [[bool(t) for t in g] for g in plain]
    assert [plain_tick_label(t) for g in default for t in g] == [t for g in plain for t in g]
    assert "10⁻⁴" in plain[0] and "2⁴" in plain[2]
    assert not any(t.startswith("$") for g in plain for t in g)
