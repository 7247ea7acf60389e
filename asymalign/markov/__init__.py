"""Markov reference models (THEORY.md §14): chains, tilts, exact laws, Rényi rates and Monte Carlo."""

from .chain import MarkovChain, chain_fingerprint, check_chain, log_perron_root
from .laws import reward_law
from .renyi import renyi_cross_entropy_rate, renyi_divergence_rate, renyi_entropy_rate
from .simulation import simulate_bon
from .tilting import (
    MarkovKLRL,
    doob_transform,
    kl_rate,
    kl_rl,
    log_partition,
    rate_function,
    scaled_cgf,
    scaled_cumulants,
    solve_lambda,
)

__all__ = [
    "MarkovChain",
    "MarkovKLRL",
    "chain_fingerprint",
    "check_chain",
    "doob_transform",
    "kl_rate",
    "kl_rl",
    "log_partition",
    "log_perron_root",
    "rate_function",
    "renyi_cross_entropy_rate",
    "renyi_divergence_rate",
    "renyi_entropy_rate",
    "reward_law",
    "scaled_cgf",
    "scaled_cumulants",
    "simulate_bon",
    "solve_lambda",
]
