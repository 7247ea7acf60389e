"""Reward overoptimisation, exactly: gold gain against d = sqrt(KL) when a proxy is optimised (THEORY.md §13).

Every method that selects on the proxy ``r`` is a policy on proxy levels, so
its gold reward is ``Σ_s q(s) m(s)`` with ``m = gold_given_level(p, r, g, n)``.
Curves: the KL-RL tilt on the proxy (``tilt_gold``, ``d = sqrt(n K(λ))``),
best-of-N (``log N`` up to ``n Δ_max``), soft best-of-N (temperature
``1/(2λ†)``: its target tilt lies past the peak; only on laws of at most 400
levels, its exact quadrature costs ``O(L^2)``) and Best-of-Poisson
(``N = 1 + Poisson(μ)``, ``μ = e^{log N} - 1``), all selected on the proxy.
Both Gao, Schulman, Hilton (2023) forms are fitted to the best-of-N and to the
tilt curve (whole curves); the exact peak ``d† = sqrt(n K(λ†))`` of the
tilt is marked. Models: a toy whose top proxy token is bad for gold, and a
real 20 000-word English unigram model with proxy AFINN / gold VADER and the
reverse (skipped with a message when the ``data`` extra is missing).
"""

from __future__ import annotations

import numpy as np

import asymalign as aa

from ._common import COLORS, Result, Table, new_figure, pad_model, plain_log_ticks

NAME = "goodhart"

TOY = ([0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, -1.0])
METHODS = ("KL-RL tilt", "best-of-N", "soft best-of-N", "Best-of-Poisson")
_SOFT_MAX_LEVELS = 400
_MIN_LENGTH = 128  # laws padded to at least this length: the toy (n = 8, 32) and AFINN laws share compilations


def _models(quick: bool):
    models = {"toy  p=(.4,.3,.2,.1) r=(0,1,2,3) g=(0,1,2,-1)": TOY}
    try:
        v = aa.load_vocabulary(20_000)
    except ImportError as exc:
        return models, f"real vocabulary skipped: {exc}"
    models["English 20k words: proxy AFINN, gold VADER"] = (v.p, v.afinn, v.vader)
    models["English 20k words: proxy VADER, gold AFINN"] = (v.p, v.vader, v.afinn)
    return models, None


def _curves(p, r, g, n, num):
    """Gold gain against d for the four methods, exact."""
    # exact reduction to the proxy push-forward with the mean gold per proxy letter (§7, §13)
    r, p, g, _ = aa.gold_pushforward(p, r, g)
    gl = aa.gold_given_level(p, r, g, n)
    # zero-probability padding changes no quantity; gold_reward matches padded levels (§10)
    law = aa.pad_law(gl.law, max(_MIN_LENGTH, gl.law.levels.shape[-1]))
    base = float(aa.gold_reward(law, gl).mean)
    pp, rp = pad_model(p, r)  # zero-probability letters: every model shares one compiled solver
    dmax = float(aa.max_kl(pp, rp))
    peak = aa.goodhart_peak(p, r, g, n=n)
    lam_dag = float(peak.lam)
    out = {}
    deltas = 0.995 * dmax * np.linspace(0.0, 1.0, num) ** 2  # dense at small d
    lam = np.asarray(aa.solve_lambda(pp, rp, deltas))
    out["KL-RL tilt"] = (np.sqrt(n * deltas), np.asarray(aa.tilt_gold(p, r, g, lam, n=n)) - base)
    log_ns = np.concatenate([[0.0], np.geomspace(1e-2, min(n * dmax, 700.0), num - 1)])
    laws = {"best-of-N": aa.best_of_n(law, log_ns)}
    # soft best-of-N costs O(L^2) quadrature windows per point: only on laws of
    # at most _SOFT_MAX_LEVELS levels, on every third log N
    if law.levels.shape[-1] <= _SOFT_MAX_LEVELS:
        tau = 1.0 / (2.0 * lam_dag) if 0 < lam_dag < np.inf else 1.0
        laws["soft best-of-N"] = aa.soft_best_of_n(law, log_ns[::3], tau)
    laws["Best-of-Poisson"] = aa.best_of_poisson(law, np.expm1(log_ns))
    for name, q in laws.items():
        kl = np.maximum(np.asarray(aa.law_kl(q, law)), 0.0)
        out[name] = (np.sqrt(kl), np.asarray(aa.gold_reward(q, gl).mean) - base)
    return out, peak, base


def compute(key, *, quick: bool = False) -> Result:
    del key  # exact computation
    ns = (8, 32)
    real_ns = (8,) if quick else ns
    num = 24 if quick else 64
    models, skipped = _models(quick)
    t = Table()
    params = dict(
        ns=ns,
        real_vocabulary_ns=real_ns,
        points_per_curve=num,
        models={},
        soft_bon_temperature="1/(2 λ†)",
        fit_range="whole curve",
    )
    summary: dict = {"fits": {}, "peaks": {}}
    if skipped:
        summary["skipped"] = skipped  # printed by the CLI, on its own line above its progress bar
    for label, (p, r, g) in models.items():
        values, weights, _, _ = aa.gold_pushforward(p, r, g)  # Δ_max of the proxy, on its push-forward
        params["models"][label] = dict(k=len(p), delta_max=float(aa.max_kl(*pad_model(weights, values))))
        for n in ns if label.startswith("toy") else real_ns:
            panel = f"{label}, n = {n}"
            curves, peak, base = _curves(p, r, g, n, num)
            d_dag = float(peak.d)
            for name, (d, gain) in curves.items():
                t.add(panel, name, d, gain)
            mark = "d† (tilt peak)" if np.isfinite(float(peak.lam)) else "no peak: tilt gold rises up to Δ_max"
            t.add(panel, mark, [d_dag, d_dag], [0.0, float(peak.gain)])
            fits, peaks = {}, {}
            for name, form in (("best-of-N", "bon"), ("KL-RL tilt", "rl"), ("KL-RL tilt", "bon")):
                d, gain = curves[name]
                keep = np.ones_like(d, bool)  # the whole curve, as Gao et al. fit
                f = aa.fit_gao(d[keep], gain[keep], form=form)
                fits[f"{name} / {form} form"] = dict(alpha=float(f.alpha), beta=float(f.beta), rms=float(f.rms))
                if form == ("bon" if name == "best-of-N" else "rl"):
                    dd = np.linspace(0.0, float(d[keep].max()), 80)
                    second = dd * dd if form == "bon" else np.where(dd > 0, dd * np.log(np.maximum(dd, 1e-300)), 0.0)
                    t.add(panel, f"Gao fit {form}: {name}", dd, float(f.alpha) * dd - float(f.beta) * second)
            fits["small-d expansion of the tilt (exact α, β)"] = dict(alpha=float(peak.alpha), beta=float(peak.beta))
            for name, (d, gain) in curves.items():
                i = int(np.argmax(gain))
                peaks[name] = dict(d_at_peak=float(d[i]), gold_gain_at_peak=float(gain[i]))
            peaks["tilt exact"] = dict(
                lam=float(peak.lam), kl_per_token=float(peak.kl), d=d_dag, gold_gain=float(peak.gain)
            )
            summary["fits"][panel] = fits
            summary["peaks"][panel] = peaks
            summary.setdefault("reference_gold", {})[panel] = base
    return Result(NAME, t, params, summary)


def plot(result: Result):
    t = result.table
    panels = [p for p in t._order]  # insertion order
    ncols = 2
    nrows = (len(panels) + 1) // 2
    fig, axes = new_figure(ncols, nrows, width=5.4, height=3.9)
    style = {"KL-RL tilt": ("k", "-", 2.0), "best-of-N": (COLORS[0], "-", 1.4)}
    style["soft best-of-N"] = (COLORS[2], "--", 1.2)
    style["Best-of-Poisson"] = (COLORS[1], ":", 1.6)
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        for s in t.series(panel):
            x, y, _ = t.get(panel, s)
            if s in style:
                c, ls, lw = style[s]
                ax.plot(x, y, color=c, ls=ls, lw=lw, label=s)
            elif s.startswith("Gao fit"):
                c = "k" if "tilt" in s else COLORS[0]
                ax.plot(
                    x, y, color=c, ls=(0, (1, 2)), lw=1.0, alpha=0.8, label=s.replace("Gao fit ", "Gao fit (") + ")"
                )
            elif s.startswith("d†"):
                ax.axvline(x[0], color="grey", lw=0.8, ls="-.", label=f"d† = {x[0]:.2f} (exact tilt peak)")
            else:
                ax.axvline(x[0], color="grey", lw=0.8, ls="-.", label=f"{s} (d = {x[0]:.2f})")
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.set_xlabel("d = sqrt(KL to the reference)  [sqrt(nats)]")
        ax.set_ylabel("gold gain over the reference  [total]")
        ax.set_title(panel, fontsize=8.5)
        ax.legend(fontsize=6.5, loc="best")
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("Optimising a proxy: the gold reward rises, peaks at d†, then falls (exact, THEORY §13)")
    return plain_log_ticks(fig)
