"""``python -m asymalign.sweep CONFIG.toml [...]`` (the same as ``asymalign sweep``)."""

import sys

from .cli import main

sys.exit(main())
