"""asymalign: exact, fast, checkable numbers for the asymptotics of LM alignment.

Implements Yang, Salamatian, Sun, Suresh and Beirami, "Asymptotics of Language
Model Alignment" (ISIT 2024) and the work around it, as stated in the
package's theory page (docs/theory.md, cited as "THEORY.md §N"): exact
KL-constrained RL (exponential tilts), information measures, large deviations
of the reward, the exact law of the total reward and of best-of-N for
astronomically large N, every alignment method as a policy on reward levels
(soft best-of-N, Best-of-Poisson, InfAlign, win rates), proxy and gold rewards,
Markov references (``asymalign.markov``), Monte-Carlo twins, sweeps
(``asymalign.sweep``) and hypothesis strategies (``asymalign.testing``).
Every function is pure JAX; float64 is the reference precision
(``jax.config.update("jax_enable_x64", True)``). Naming: ``n`` is the sequence
length, ``num_samples`` the N of best-of-N, ``log_num_samples`` its logarithm.
"""

from importlib.metadata import PackageNotFoundError as _PNF
from importlib.metadata import version as _version

from . import markov  # noqa: E402  (Markov references, THEORY.md §14)
from ._compile_cache import enable_compile_cache
from .best_of_n import (
    BoNvsKLRL,
    bon_kl_bound,
    bon_vs_klrl,
    bon_vs_klrl_on_law,
)
from .estimators import (
    Estimate,
    LevelFrequencies,
    bon_gold_unbiased,
    mc_bon_gold_unbiased,
    mc_level_frequencies,
    mc_mean,
    mc_win_rate,
)
from .goodhart import GoldGivenLevel, GoldReward, gold_given_level, gold_pushforward, gold_reward
from .goodhart_tilt import GaoFit, GoodhartPeak, fit_gao, goodhart_peak, tilt_gold, tilt_gold_covariance
from .infalign import InfAlignOptimum, infalign_optimum, transformed_reward
from .information import (
    cross_entropy,
    entropy,
    kl,
    renyi_cross_entropy,
    renyi_divergence,
    renyi_entropy,
)
from .large_deviations import (
    cgf_via_renyi_cross_entropy,
    cgf_via_renyi_divergence,
    rate_function,
    reward_softmax,
    scaled_cgf,
    scaled_cumulants,
)
from .levels import (
    LevelTilt,
    best_of_n,
    best_of_poisson,
    calibrated_reward,
    inference_win_rate,
    law_kl,
    law_mean,
    level_tilt,
    pad_law,
    solve_level_tilt,
    win_rate,
)
from .optimize import (
    PolicyOptResult,
    optimize_constrained_policy,
    optimize_policy,
    policy_objective,
    reinforce_gradient,
    reinforce_policy,
)
from .sequence_laws import (
    RewardLaw,
    law_from_lattice,
    law_from_types,
    pushforward,
    reward_law,
)
from .simulation import (
    BoNSimulation,
    Draws,
    simulate_best_of_poisson,
    simulate_bon,
    simulate_draws,
)
from .soft_bon import soft_best_of_n
from .tilting import (
    KLRLResult,
    kl_regularized,
    kl_rl,
    log_partition,
    log_tilt,
    max_kl,
    solve_lambda,
    tilt,
    tilt_kl,
    tilt_reward,
    tilt_variance,
)
from .vocab import MAX_VOCABULARY, Vocabulary, load_vocabulary

__all__ = [
    "best_of_n",
    "best_of_poisson",
    "bon_gold_unbiased",
    "bon_kl_bound",
    "bon_vs_klrl",
    "bon_vs_klrl_on_law",
    "BoNSimulation",
    "BoNvsKLRL",
    "calibrated_reward",
    "cgf_via_renyi_cross_entropy",
    "cgf_via_renyi_divergence",
    "cross_entropy",
    "Draws",
    "enable_compile_cache",
    "entropy",
    "Estimate",
    "fit_gao",
    "GaoFit",
    "gold_given_level",
    "gold_pushforward",
    "gold_reward",
    "GoldGivenLevel",
    "GoldReward",
    "goodhart_peak",
    "GoodhartPeak",
    "infalign_optimum",
    "InfAlignOptimum",
    "inference_win_rate",
    "kl",
    "kl_regularized",
    "kl_rl",
    "KLRLResult",
    "law_from_lattice",
    "law_from_types",
    "law_kl",
    "law_mean",
    "level_tilt",
    "LevelFrequencies",
    "LevelTilt",
    "load_vocabulary",
    "log_partition",
    "log_tilt",
    "markov",
    "max_kl",
    "MAX_VOCABULARY",
    "mc_bon_gold_unbiased",
    "mc_level_frequencies",
    "mc_mean",
    "mc_win_rate",
    "optimize_constrained_policy",
    "optimize_policy",
    "pad_law",
    "policy_objective",
    "PolicyOptResult",
    "pushforward",
    "rate_function",
    "reinforce_gradient",
    "reinforce_policy",
    "renyi_cross_entropy",
    "renyi_divergence",
    "renyi_entropy",
    "reward_law",
    "reward_softmax",
    "RewardLaw",
    "scaled_cgf",
    "scaled_cumulants",
    "simulate_best_of_poisson",
    "simulate_bon",
    "simulate_draws",
    "soft_best_of_n",
    "solve_lambda",
    "solve_level_tilt",
    "tilt",
    "tilt_gold",
    "tilt_gold_covariance",
    "tilt_kl",
    "tilt_reward",
    "tilt_variance",
    "transformed_reward",
    "Vocabulary",
    "win_rate",
    "__version__",
]

try:
    __version__ = _version("asymalign")
except _PNF:  # running from a source tree without installation
    __version__ = "0+unknown"
