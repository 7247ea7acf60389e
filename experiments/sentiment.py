"""Align an English unigram model toward positive sentiment: exact best-of-N against KL-RL (THEORY.md §3, §6, §7).

Reference: the 20 000 most frequent English words (``wordfreq``), sentences of
``n`` words drawn independently; reward: AFINN valence summed over the words
(``load_vocabulary``). The 20 000 words push forward to 11 reward levels, so
best-of-N with ``N = e^{nΔ}`` is exact for ``n`` up to 4096 (``bon_vs_klrl``)
and is compared per word with the KL-RL optimum ``φ_λ*`` (reward per word and
KL per word against ``n``). Monte-Carlo best-of-N on the 20 000 real tokens
(``simulate_bon``, integer ``N = round(e^{nΔ})``) checks the small ``n``.
A few sentences sampled from the reference, from the tilt and from best-of-N
at the same KL are written to the JSON summary. Without the ``data`` extra
the experiment is skipped with a message (empty figure with the message).
"""

from __future__ import annotations

import math

import jax
import numpy as np

import asymalign as aa

from ._common import COLORS, Result, Table, new_figure, plain_log_ticks

NAME = "sentiment"
DELTAS = (0.02, 0.1, 0.3)
_LENGTH = 256  # exact laws padded to this many levels (n <= 16 fit): one best-of-N compilation


def _sentences(key, v, n: int, num_samples: int, count: int):
    """Sentences from the reference, from best-of-N and from the tilt with the same KL."""
    p, r = v.p, v.afinn  # host arrays
    law = aa.reward_law(p, r, n)
    law = aa.pad_law(law, max(_LENGTH, law.levels.shape[-1]))  # shares the best-of-N kernel of the MC check
    kl_bon = float(aa.law_kl(aa.best_of_n(law, math.log(num_samples)), law))
    # solved in a batch of len(DELTAS), the shape of the KL-RL solve: one compilation
    lam = np.asarray(aa.solve_lambda(p, r, np.full(len(DELTAS), kl_bon / n)))[0]
    k1, k2, k3 = jax.random.split(key, 3)
    ref = jax.random.categorical(k1, np.log(p), shape=(count, n))
    tilt = jax.random.categorical(k2, aa.log_tilt(p, r, lam), shape=(count, n))
    bon = aa.simulate_bon(k3, p, r, n, num_samples, count, return_tokens=True).tokens

    def show(tok):
        tok = np.asarray(tok)
        return [
            dict(
                sentence=" ".join(v.words[i] for i in row),
                afinn=float(v.afinn[row].sum()),
                vader=round(float(v.vader[row].sum()), 1),
            )
            for row in tok
        ]

    return dict(
        n=n,
        num_samples=num_samples,
        kl_total=kl_bon,
        tilt_lambda=float(lam),
        reference=show(ref),
        tilt=show(tilt),
        best_of_n=show(bon),
    )


def compute(key, *, quick: bool = False) -> Result:
    t = Table()
    ns = [2**j for j in range(3, 9 if quick else 13)]  # 8 .. 4096
    # the Monte-Carlo kernel compiles per (n, N): quick checks one n per Δ
    mc_ns = [16] if quick else [8, 16, 24]
    trials = 400 if quick else 1000
    params = dict(k=20_000, reward="AFINN-165 valence", deltas=DELTAS, ns=ns, mc_ns=mc_ns, mc_trials=trials)
    try:
        v = aa.load_vocabulary(20_000)
    except ImportError as exc:
        msg = f"sentiment skipped: {exc}"  # printed by the CLI, on its own line above its progress bar
        t.add("skipped", msg, [0.0], [0.0])
        return Result(NAME, t, params, dict(skipped=msg))
    p, r = v.p, v.afinn  # host arrays (jnp.asarray compiles per shape)
    params.update(left_out_mass=v.left_out, delta_max=float(aa.max_kl(p, r)))
    deltas = np.asarray(DELTAS)
    rl = aa.kl_rl(p, r, deltas)
    summary: dict = {"klrl_reward_per_word": dict(zip(map(str, DELTAS), np.asarray(rl.reward).tolist(), strict=True))}
    rows = np.stack([np.stack([np.asarray(x) for x in aa.bon_vs_klrl(p, r, n, deltas)[2:4]]) for n in ns])  # (n, 2, Δ)
    nn = np.array(ns, float)
    mc = {}
    keys = jax.random.split(key, len(mc_ns) * len(DELTAS) + 1)
    for j, d in enumerate(DELTAS):
        lab = f"Δ = {d:g} nats/word"
        t.add("reward per word", f"KL-RL optimum, {lab}", nn, np.full(nn.shape, float(np.asarray(rl.reward)[j])))
        t.add("reward per word", f"best-of-N exact, {lab}", nn, rows[:, 0, j])
        t.add("KL per word", f"budget {lab}", nn, np.full(nn.shape, d))
        t.add("KL per word", f"best-of-N exact, {lab}", nn, rows[:, 1, j])
        xs, ys, es, ex = [], [], [], []
        for i, n in enumerate(mc_ns):
            num = max(1, round(math.exp(n * d)))
            sim = aa.simulate_bon(keys[i * len(DELTAS) + j], p, r, n, num, trials)
            est = aa.mc_mean(np.asarray(sim.rewards) / n)
            law = aa.reward_law(p, r, n)
            law = aa.pad_law(law, max(_LENGTH, law.levels.shape[-1]))
            exact = float(aa.law_mean(aa.best_of_n(law, math.log(num)))) / n
            xs.append(n)
            ys.append(float(est.mean))
            es.append(float(est.stderr))
            ex.append(exact)
            mc[f"{lab}, n = {n}, N = {num}"] = dict(mc=float(est.mean), stderr=float(est.stderr), exact=exact)
        t.add("reward per word", f"Monte Carlo (integer N), {lab}", xs, ys, es)
        t.add("reward per word", f"exact at the same integer N, {lab}", xs, ex)
    summary["best_of_n_reward_per_word_at_largest_n"] = dict(zip(map(str, DELTAS), rows[-1, 0].tolist(), strict=True))
    summary["best_of_n_kl_per_word_at_largest_n"] = dict(zip(map(str, DELTAS), rows[-1, 1].tolist(), strict=True))
    summary["monte_carlo"] = mc
    summary["sentences"] = _sentences(keys[-1], v, 12, 64 if quick else 256, 4)
    return Result(NAME, t, params, summary)


def plot(result: Result):
    t = result.table
    fig, axes = new_figure(2, 1, width=5.4, height=4.2)
    if "skipped" in result.summary:
        axes[0, 0].text(0.05, 0.5, result.summary["skipped"], wrap=True, fontsize=8)
        return fig
    ax = axes[0, 0]
    for j, d in enumerate(DELTAS):
        lab = f"Δ = {d:g} nats/word"
        c = COLORS[j]
        x, y, _ = t.get("reward per word", f"KL-RL optimum, {lab}")
        ax.plot(x, y, color=c, ls="--", lw=1.2, label=f"KL-RL optimum, {lab}")
        x, y, _ = t.get("reward per word", f"best-of-N exact, {lab}")
        ax.plot(x, y, "o-", color=c, ms=3, lw=1.0, label=f"best-of-N, N = e^(nΔ), {lab}")
        x, y, e = t.get("reward per word", f"Monte Carlo (integer N), {lab}")
        ax.errorbar(x, y, yerr=2 * e, fmt="s", color=c, mfc="none", ms=6, capsize=2, label=f"Monte Carlo ±2 SE, {lab}")
        x, y, _ = t.get("reward per word", f"exact at the same integer N, {lab}")
        ax.plot(x, y, "x", color="k", ms=5)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sentence length n (words)")
    ax.set_ylabel("AFINN valence per word")
    ax.set_title("reward per word (x: exact at the simulated integer N)", fontsize=9)
    ax.set_ylim(top=1.45 * ax.get_ylim()[1])
    ax.legend(fontsize=6.5, loc="upper left", ncol=2)
    ax = axes[0, 1]
    for j, d in enumerate(DELTAS):
        lab = f"Δ = {d:g} nats/word"
        x, y, _ = t.get("KL per word", f"budget {lab}")
        ax.plot(x, y, color=COLORS[j], ls="--", lw=1.2, label=f"KL-RL budget {lab}")
        x, y, _ = t.get("KL per word", f"best-of-N exact, {lab}")
        ax.plot(x, y, "o-", color=COLORS[j], ms=3, lw=1.0, label=f"best-of-N exact KL(π_N||p^n)/n, {lab}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sentence length n (words)")
    ax.set_ylabel("KL to the reference  [nats per word]")
    ax.set_title("KL per word (the bound log N / n = Δ is loose at small n: ties)", fontsize=9)
    ax.set_ylim(bottom=ax.get_ylim()[0] / 30)  # room below the curves for the legend
    ax.legend(fontsize=6.5, loc="lower right")
    fig.suptitle("Aligning a 20 000-word English unigram model toward positive sentiment (AFINN): best-of-N vs KL-RL")
    return plain_log_ticks(fig)
