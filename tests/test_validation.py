"""Bad input at the public boundary: ValueError naming the argument.

Concrete inputs are validated; under ``jit`` the arguments are tracers, nothing
is raised and valid inputs give NaN-free results (tested in the module tests).
"""

import jax
import numpy as np
import pytest

import asymalign as aa

P = np.array([0.5, 0.3, 0.2])
R = np.array([0.0, 1.0, 2.0])

# probability vectors that must be rejected, and the reason
BAD_PROBS = {
    "negative": np.array([0.6, 0.5, -0.1]),
    "nan": np.array([0.5, np.nan, 0.5]),
    "inf": np.array([np.inf, 0.0, 0.0]),
    "sum_high": np.array([0.5, 0.3, 0.2 + 2e-6]),
    "sum_low": np.array([0.5, 0.3, 0.2 - 2e-6]),
    "scalar": np.array(1.0),
}
BAD_REWARDS = {
    "nan": np.array([0.0, np.nan, 1.0]),
    "inf": np.array([0.0, np.inf, 1.0]),
    "neg_inf": np.array([-np.inf, 0.0, 1.0]),
    "too_short": np.array([0.0, 1.0]),
    "too_long": np.array([0.0, 1.0, 2.0, 3.0]),
}

# public functions of (p, r, ...) with valid extra arguments
MODEL_FUNCS = {
    "log_partition": lambda p, r: aa.log_partition(p, r, 0.5),
    "log_tilt": lambda p, r: aa.log_tilt(p, r, 0.5),
    "tilt": lambda p, r: aa.tilt(p, r, 0.5),
    "tilt_kl": lambda p, r: aa.tilt_kl(p, r, 0.5),
    "tilt_reward": lambda p, r: aa.tilt_reward(p, r, 0.5),
    "tilt_variance": lambda p, r: aa.tilt_variance(p, r, 0.5),
    "max_kl": lambda p, r: aa.max_kl(p, r),
    "solve_lambda": lambda p, r: aa.solve_lambda(p, r, 0.1),
    "kl_rl": lambda p, r: aa.kl_rl(p, r, 0.1),
    "kl_regularized": lambda p, r: aa.kl_regularized(p, r, 2.0),
    "scaled_cgf": lambda p, r: aa.scaled_cgf(p, r, 0.5, 0.1),
    "scaled_cumulants": lambda p, r: aa.scaled_cumulants(p, r, 2, 0.1),
    "rate_function": lambda p, r: aa.rate_function(p, r, 1.0, 0.1),
    "reward_softmax": lambda p, r: aa.reward_softmax(p, r),
    "cgf_via_renyi_cross_entropy": lambda p, r: aa.cgf_via_renyi_cross_entropy(p, r, -2.0, 0.1),
    "cgf_via_renyi_divergence": lambda p, r: aa.cgf_via_renyi_divergence(p, r, -2.0, 0.1),
}

# public functions of two distributions (first-argument name, second-argument name)
PAIR_FUNCS = {
    "kl": (lambda a, b: aa.kl(a, b), "q", "p"),
    "cross_entropy": (lambda a, b: aa.cross_entropy(a, b), "q", "s"),
    "renyi_divergence": (lambda a, b: aa.renyi_divergence(a, b, 2.0), "q", "p"),
    "renyi_cross_entropy": (lambda a, b: aa.renyi_cross_entropy(a, b, 0.5), "q", "s"),
}
SINGLE_FUNCS = {
    "entropy": lambda p: aa.entropy(p),
    "renyi_entropy": lambda p: aa.renyi_entropy(p, 2.0),
}


def _names(arg):
    """A message that names `arg` as a word (not as part of another word)."""
    return rf"(^|[^A-Za-z_]){arg}([^A-Za-z_]|$)"


@pytest.mark.parametrize("fname", sorted(MODEL_FUNCS))
def test_valid_model_input_passes(fname):
    out = MODEL_FUNCS[fname](P, R)
    leaves = jax.tree_util.tree_leaves(out)
    assert leaves and all(not np.any(np.isnan(np.asarray(x))) for x in leaves)
    # sums off by less than the tolerance are accepted
    MODEL_FUNCS[fname](P + np.array([0.0, 0.0, 5e-7]), R)


@pytest.mark.parametrize("why", sorted(BAD_PROBS))
@pytest.mark.parametrize("fname", sorted(MODEL_FUNCS))
def test_bad_p_is_rejected(fname, why):
    with pytest.raises(ValueError, match=_names("p")):
        MODEL_FUNCS[fname](BAD_PROBS[why], R)


@pytest.mark.parametrize("why", sorted(BAD_REWARDS))
@pytest.mark.parametrize("fname", sorted(MODEL_FUNCS))
def test_bad_r_is_rejected(fname, why):
    with pytest.raises(ValueError, match=_names("r")):
        MODEL_FUNCS[fname](P, BAD_REWARDS[why])


@pytest.mark.parametrize("why", sorted(k for k in BAD_PROBS if k != "scalar"))
@pytest.mark.parametrize("fname", sorted(PAIR_FUNCS))
def test_bad_distributions_are_rejected(fname, why):
    f, first, second = PAIR_FUNCS[fname]
    with pytest.raises(ValueError, match=_names(first)):
        f(BAD_PROBS[why], P)
    with pytest.raises(ValueError, match=_names(second)):
        f(P, BAD_PROBS[why])
    with pytest.raises(ValueError, match=_names(first) if why != "scalar" else ""):
        f(BAD_PROBS[why], BAD_PROBS[why])


@pytest.mark.parametrize("fname", sorted(PAIR_FUNCS))
def test_pair_length_mismatch(fname):
    f, first, second = PAIR_FUNCS[fname]
    with pytest.raises(ValueError, match=rf"{first}.*{second}|{second}.*{first}"):
        f(P, np.array([0.5, 0.5]))


@pytest.mark.parametrize("why", sorted(BAD_PROBS))
@pytest.mark.parametrize("fname", sorted(SINGLE_FUNCS))
def test_bad_single_distribution(fname, why):
    with pytest.raises(ValueError, match=_names("p")):
        SINGLE_FUNCS[fname](BAD_PROBS[why])


@pytest.mark.parametrize("delta", [-1e-9, -1.0, -np.inf, np.nan, np.array([0.1, -0.2])])
def test_negative_or_nan_delta(delta):
    for f in (aa.solve_lambda, aa.kl_rl):
        with pytest.raises(ValueError, match=_names("delta")):
            f(P, R, delta)


@pytest.mark.parametrize("alpha", [-1e-9, -2.0, -np.inf, np.nan])
def test_negative_or_nan_alpha(alpha):
    with pytest.raises(ValueError, match=_names("alpha")):
        aa.renyi_divergence(P, P, alpha)
    with pytest.raises(ValueError, match=_names("alpha")):
        aa.renyi_cross_entropy(P, P, alpha)
    with pytest.raises(ValueError, match=_names("alpha")):
        aa.renyi_entropy(P, alpha)


@pytest.mark.parametrize("order", [0, -3, 1.5, 2.0, "2", True, None])
def test_bad_order(order):
    with pytest.raises(ValueError, match=_names("order")):
        aa.scaled_cumulants(P, R, order)


@pytest.mark.parametrize(
    "call,arg",
    [
        (lambda v: aa.log_partition(P, R, v), "lam"),
        (lambda v: aa.tilt(P, R, v), "lam"),
        (lambda v: aa.tilt_kl(P, R, v), "lam"),
        (lambda v: aa.scaled_cgf(P, R, v), "t"),
        (lambda v: aa.scaled_cgf(P, R, 0.5, v), "lam"),
        (lambda v: aa.rate_function(P, R, v), "x"),
        (lambda v: aa.rate_function(P, R, 1.0, v), "lam"),
        (lambda v: aa.cgf_via_renyi_cross_entropy(P, R, v), "t"),
        (lambda v: aa.cgf_via_renyi_divergence(P, R, v, 1.0), "t"),
        (lambda v: aa.kl_regularized(P, R, v), "beta"),
    ],
)
def test_nan_scalars_are_rejected(call, arg):
    with pytest.raises(ValueError, match=_names(arg)):
        call(np.nan)


def test_other_documented_rejections():
    with pytest.raises(ValueError, match=_names("beta")):
        aa.kl_regularized(P, R, 0.0)
    with pytest.raises(ValueError, match=_names("beta")):
        aa.kl_regularized(P, R, -1.0)
    with pytest.raises(ValueError, match=_names("lam")):
        aa.cgf_via_renyi_divergence(P, R, 0.5, 0.0)
    with pytest.raises(ValueError, match=_names("p")):
        aa.log_partition(np.array([]), np.array([]), 0.0)
    with pytest.raises(ValueError, match=_names("p")):
        aa.tilt(np.array(["a", "b"]), R[:2], 0.0)
    with pytest.raises(ValueError, match=_names("r")):
        aa.tilt(P, np.array(1.0), 0.0)
    # batched input: one bad row is enough
    ps = np.stack([P, P[::-1] * np.array([1.0, 1.0, 1.01])])
    with pytest.raises(ValueError, match=_names("p")):
        aa.log_partition(ps, R, 0.0)


def test_no_validation_inside_jit():
    """Under jit the checks are skipped (tracers): no exception is raised from the trace."""
    bad = np.array([0.6, 0.5, -0.1])
    out = jax.jit(aa.log_partition)(bad, R, 0.5)
    assert np.shape(out) == ()
    out = jax.jit(aa.solve_lambda)(P, R, -1.0)
    assert np.shape(out) == ()


def test_check_law_identifies_model_and_n():
    """The validator behind every function that takes a prebuilt law."""
    from asymalign._validate import check_law

    p, r = np.array([0.2, 0.5, 0.3]), np.array([0.0, 1.0, 3.0])
    law = aa.reward_law(p, r, 6)
    perm = np.array([2, 0, 1])
    check_law(law, p[perm], r[perm], 6)  # same push-forward: accepted
    check_law(law, np.array([0.2, 0.5, 0.3, 0.0]), np.array([0.0, 1.0, 3.0, 9.0]), 6)  # zero letter
    with pytest.raises(ValueError, match="law"):
        check_law(law, np.array([0.3, 0.4, 0.3]), r, 6)
    with pytest.raises(ValueError, match="law"):
        check_law(law, p, np.array([0.0, 1.0, 2.0]), 6)
    with pytest.raises(ValueError, match="n = 7"):
        check_law(law, p, r, 7)
    with pytest.raises(ValueError, match="law"):
        check_law((law.levels, law.log_prob), p, r, 6)
