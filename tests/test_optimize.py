"""Policy optimisation converges to the closed-form tilts (THEORY.md §9)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import asymalign as aa

P = jnp.array([0.45, 0.25, 0.15, 0.1, 0.05])
R = jnp.array([0.0, 1.0, 0.5, 2.0, 3.0])


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_exact_gradient_converges_to_tilt(beta):
    res = aa.optimize_policy(P, R, beta, num_steps=2000)
    phi = aa.kl_regularized(P, R, beta)
    np.testing.assert_allclose(res.policy, phi, atol=1e-10)
    # The optimum value is β Λ(1/β).
    np.testing.assert_allclose(res.objective[-1], beta * aa.log_partition(P, R, 1 / beta), rtol=1e-12)


def test_zero_in_reference_is_never_used():
    p = jnp.array([0.5, 0.0, 0.5])
    r = jnp.array([0.0, 5.0, 1.0])
    res = aa.optimize_policy(p, r, 1.0, num_steps=1500)
    assert float(res.policy[1]) == 0.0
    assert np.all(np.isfinite(res.policies))
    np.testing.assert_allclose(res.policy, aa.kl_regularized(p, r, 1.0), atol=1e-10)


def test_reinforce_gradient_is_unbiased():
    # Probabilistic test with a fixed key: the mean of M independent estimates
    # is within 5 standard errors (derived from the sample spread) of the
    # exact gradient.
    theta = jnp.log(P) + 0.3 * R
    exact = jax.grad(aa.policy_objective)(theta, P, R, 1.0)
    keys = jax.random.split(jax.random.key(0), 4000)
    for baseline in (True, False):
        g = jax.vmap(lambda k, b=baseline: aa.reinforce_gradient(k, theta, P, R, 1.0, 8, baseline=b))(keys)
        se = g.std(axis=0) / np.sqrt(keys.shape[0])
        assert np.all(np.abs(g.mean(axis=0) - exact) <= 5 * se + 1e-12)


def test_reinforce_converges_to_tilt():
    # Probabilistic (fixed key). Far from the optimum the per-step noise is
    # O(1/sqrt(m)); with the leave-one-out baseline it vanishes at φ_{1/β}
    # (f = r - β log(q/p) is constant there), so after T steps the error is
    # far below the single-step noise level 1/(m T).
    m, steps = 16, 1500
    res = aa.reinforce_policy(jax.random.key(1), P, R, 1.0, m, num_steps=steps)
    phi = aa.kl_regularized(P, R, 1.0)
    assert float(aa.kl(res.policy, phi)) < 1.0 / (m * steps)
    # Without the baseline it only reaches a noise ball, still close.
    res_nb = aa.reinforce_policy(jax.random.key(1), P, R, 1.0, m, num_steps=steps, baseline=False)
    assert float(aa.kl(res_nb.policy, phi)) < 10.0 / m


@pytest.mark.parametrize("delta", [0.05, 0.3, 0.8])
def test_lagrangian_converges_to_klrl(delta):
    res = aa.optimize_constrained_policy(P, R, delta, num_steps=3000)
    sol = aa.kl_rl(P, R, delta)
    np.testing.assert_allclose(res.policy, sol.policy, atol=1e-8)
    np.testing.assert_allclose(res.lam[-1], sol.lam, rtol=1e-6)
    np.testing.assert_allclose(aa.kl(res.policy, P), delta, atol=1e-8)


def test_jit_cache_is_reused():
    # The default optimisers are cached, so a second call with new values
    # (same shapes) does not retrace.
    a = aa.optimize_policy(P, R, 1.0, num_steps=50)
    b = aa.optimize_policy(P, R * 2, 1.0, num_steps=50)
    assert a.policies.shape == b.policies.shape == (50, 5)


def test_validation():
    with pytest.raises(ValueError):
        aa.optimize_policy(P, R, 0.0)
    with pytest.raises(ValueError):
        aa.reinforce_policy(jax.random.key(0), P, R, 1.0, 1)
    with pytest.raises(ValueError):
        aa.optimize_policy(jnp.stack([P, P]), jnp.stack([R, R]), 1.0)
