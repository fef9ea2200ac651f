"""Project-wide test settings.

Hypothesis' per-example deadline is a timing assertion; on shared, noisy machines it
flakes, so it is off. Examples still run to completion and every test has a hard
timeout (pytest-timeout, pyproject.toml).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))  # tests/fleet_helpers.py

settings.register_profile(
    "vigo", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("vigo")
