"""The experiments of the study: name -> one-line description, in run order.

Kept inside the package so that ``asymalign list`` works from anywhere; the
experiment code itself lives in the repository's ``experiments/`` folder (one
file per figure). A new experiment adds one line here.
"""

EXPERIMENTS: dict[str, str] = {
    "frontier": "reward vs KL per token: exact best-of-N at N = e^{nΔ} converging onto the KL-RL curve",
    "bon_vs_rl_kl": "KL(π_N || φ_λ*^n)/n -> 0 against n (exact and Monte Carlo); the total KL grows like ½ log n",
    "ldp": "exact finite-n tail exponents -(1/n) log P(R_n >= x) converging to the rate function I_λ",
    "cumulants": "scaled CGF = Rényi cross-entropy form; scaled cumulants (autodiff) vs simulated cumulants",
    "bon_kl_bound": "exact KL(π_N || p^n) against the bound log N - (N-1)/N, with and without ties, N up to 1e6",
    "near_optimal": "KL(q || φ_λ) <= λ·(reward gap) within the KL budget, and the exact identity (THEORY §4)",
    "optimize": "optax policy optimisation (exact, REINFORCE, Lagrangian) converging to the closed-form tilts",
    "infalign": (
        "exact InfAlign: decoded win rate vs KL for best-of-4 / worst-of-4, the optimum against CTRL transforms"
    ),
    "soft_bon": "soft best-of-N and Best-of-Poisson: one-token KL rate ~1/N^2, the sequence cut-off at c = KL(φ||p)",
    "goodhart": (
        "proxy vs gold reward, exactly: gold gain against sqrt(KL) for KL-RL, "
        "best-of-N, soft BoN, Best-of-Poisson; Gao fits, peak d†"
    ),
    "sentiment": (
        "a 20 000-word English unigram model aligned toward positive sentiment "
        "(AFINN): exact best-of-N vs KL-RL, n = 8..4096"
    ),
    "markov": (
        "Markov references: best-of-N vs finite-n and limiting KL-RL with "
        "memory, and Rényi cross-entropy rates of chains"
    ),
}

# Rough cold-run cost of each experiment in ``reproduce --quick`` (seconds on 2
# CPU cores with an empty compilation cache; ``benchmarks/cold_start.py
# --experiments``). ``reproduce --jobs J`` starts the costliest first, so that
# no worker is left alone with a long experiment at the end.
COLD_COST_S: dict[str, float] = {
    "goodhart": 19,
    "sentiment": 18,
    "infalign": 15,
    "soft_bon": 12,
    "frontier": 11,
    "bon_vs_rl_kl": 11,
    "markov": 11,
    "optimize": 7,
    "bon_kl_bound": 5.5,
    "ldp": 5,
    "near_optimal": 5,
    "cumulants": 4.5,
}
