"""Inference-aware alignment, exactly: win rate after best-of-4 / worst-of-4 decoding against KL (THEORY.md §10, §11).

An aligned level law ``q`` is decoded with best-of-4 (or worst-of-4, the
jailbreak direction) and compared with the reference decoded the same way:
``W_T(q) = win_rate(T(q), T(P))`` (``inference_win_rate``). At each KL budget
(total nats, ``KL(q||p^n)``) five alignments are compared: the exact optimum
(``infalign_optimum``), the best exponential transform of the calibrated
reward ``Φ(C)`` (best ``t`` per budget), the power transform ``C^{2N-1}``,
KL-RL on the calibrated reward ``C`` and standard KL-RL on the raw reward,
each a level tilt solved to the budget (``solve_level_tilt``). The
reference is the 4-letter model of ``frontier`` at ``n = 1`` and ``n = 16``.
"""

from __future__ import annotations

import math

import numpy as np

import asymalign as aa

from ._common import COLORS, Result, Table, new_figure, plain_log_ticks, reward_law

NAME = "infalign"

P = [0.4, 0.3, 0.2, 0.1]
R = [0.0, 1.0, 2.0, 3.0]
NUM_SAMPLES = 4
METHODS = (
    "exact optimum",
    "best exponential Φ(C)",
    "power C^(2N-1)",
    "KL-RL on calibrated C",
    "standard KL-RL (raw reward)",
)


LENGTH = 64  # one padded law length for every n: each kernel compiles once


def _family_wins(ref, scores, deltas, log_n, worst):
    """Win rates of the level tilts of every score (rows) at every budget: ``(families, budgets)``."""
    sol = aa.solve_level_tilt(ref, scores[:, None, :], deltas[None, :])
    return np.asarray(aa.inference_win_rate(sol.law, ref, log_n, worst=worst))


def compute(key, *, quick: bool = False) -> Result:
    del key  # exact computation
    log_n = math.log(NUM_SAMPLES)
    num_kl = 8 if quick else 24
    ts = np.geomspace(0.1, 100.0, 10 if quick else 40)
    t = Table()
    summary: dict = {}
    params = dict(p=P, r=R, num_samples=NUM_SAMPLES, ns=[1, 16], exponential_t_grid=[0.1, 100.0, ts.size])
    for n, kl_max in ((1, 1.5), (16, 4.0)):
        # padded to one length, so n = 1 and n = 16 share every compiled kernel
        ref = aa.pad_law(reward_law(P, R, n), LENGTH)
        x = np.linspace(kl_max / num_kl, kl_max, num_kl)
        deltas = x
        for worst in (False, True):
            tag = f"n = {n}, {'worst' if worst else 'best'}-of-{NUM_SAMPLES}"
            opt = aa.infalign_optimum(ref, log_n, deltas, worst=worst)
            # every transform family in one batch: exponentials (one row per t), power, calibrated, raw
            # (host-side glue: eager stacking would compile per shape)
            expo = [aa.transformed_reward(ref, "exponential", t=float(s), worst=worst) for s in ts]
            scores = np.concatenate(
                [
                    np.stack([np.asarray(e) for e in expo]),
                    np.asarray(aa.transformed_reward(ref, "power", log_num_samples=log_n, worst=worst))[None],
                    np.asarray(aa.calibrated_reward(ref))[None],
                    np.asarray(ref.levels)[None],
                ]
            )
            fam = _family_wins(ref, scores, deltas, log_n, worst)
            k = ts.size
            wins = {
                METHODS[0]: np.asarray(opt.win_rate),
                METHODS[1]: fam[:k].max(axis=0),
                METHODS[2]: fam[k],
                METHODS[3]: fam[k + 1],
                METHODS[4]: fam[k + 2],
            }
            base = wins[METHODS[4]]
            for m in METHODS:
                t.add(f"W, {tag}", m, x, wins[m])
                t.add(f"gain, {tag}", m, x, 100.0 * (wins[m] - base))
            gain = wins[METHODS[0]] - base
            summary[tag] = dict(
                kl=x,
                optimum_win_rate=wins[METHODS[0]],
                gain_of_optimum_over_standard_klrl=gain,
                relative_gain_percent=100.0 * gain / base,
                max_gain=float(gain.max()),
                max_gain_over_calibrated_klrl=float(np.max(wins[METHODS[0]] - wins[METHODS[3]])),
                max_gain_over_best_exponential=float(np.max(wins[METHODS[0]] - wins[METHODS[1]])),
                min_margin_of_optimum_over_families=float(min(np.min(wins[METHODS[0]] - wins[m]) for m in METHODS[1:])),
                optimum_beats_every_family=bool(all(np.all(wins[METHODS[0]] >= wins[m] - 1e-12) for m in METHODS[1:])),
            )
    return Result(NAME, t, params, summary)


def plot(result: Result):
    t = result.table
    tags = [p[len("W, ") :] for p in t._order if p.startswith("W, ")]
    fig, axes = new_figure(len(tags), 2, width=4.0, height=3.6)
    styles = ["-", "-", "--", "-.", ":"]
    for j, tag in enumerate(tags):
        for row, (panel, ylabel) in enumerate(
            (
                (f"W, {tag}", "inference-time win rate $W_T$"),
                (f"gain, {tag}", "$W_T - W_T$(standard KL-RL)  [points]"),
            )
        ):
            ax = axes[row, j]
            for i, m in enumerate(t.series(panel)):
                x, y, _ = t.get(panel, m)
                color = "k" if i == 0 else COLORS[(i - 1) % len(COLORS)]
                ax.plot(
                    x, y, styles[i], color=color, lw=2.2 if i == 0 else 1.3, ms=3, label=m, marker="o" if i else None
                )
            ax.set_xlabel("KL$(q \\| p^{\\otimes n})$  [nats, whole sequence]")
            ax.set_ylabel(ylabel)
            ax.set_title(tag, fontsize=9)
            if row == 1:
                ax.axhline(0.0, color="grey", lw=0.6)
    # one legend for all panels, below them (inside an axis it covered the curves)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=7.5)
    fig.suptitle(
        "Exact InfAlign on reward levels: the optimum of the decoded win rate against KL-RL on transforms of the "
        "calibrated reward (4-letter reference, N = 4)",
        fontsize=10,
    )
    return plain_log_ticks(fig)
