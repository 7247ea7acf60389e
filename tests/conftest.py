"""Test configuration: float64 reference precision and hypothesis profiles.

Profiles (select with HYPOTHESIS_PROFILE=...; CI=true selects "ci"):
  ci      - 30 examples per property, no deadline (JAX compile time).
  dev     - 60 examples (default locally).
  nightly - 500 examples.
Shapes are drawn from a small fixed set (see strategies.py) so JAX does not
recompile for every example.
"""

import os

import jax

jax.config.update("jax_enable_x64", True)

from hypothesis import HealthCheck, settings  # noqa: E402

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=30, derandomize=True, **_common)
settings.register_profile("dev", max_examples=60, **_common)
settings.register_profile("nightly", max_examples=500, **_common)
_default = "ci" if os.environ.get("CI") else "dev"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", _default))
