"""Moved to :mod:`asymalign.testing` (public); this re-export goes once every test imports from there."""

from asymalign.testing.strategies import *  # noqa: F401,F403
from asymalign.testing.strategies import _flush_tiny  # noqa: F401
