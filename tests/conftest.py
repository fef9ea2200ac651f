"""Project-wide test settings.

Hypothesis' per-example deadline is a timing assertion; on shared, noisy machines it
flakes, so it is off. Examples still run to completion and every test has a hard
timeout (pytest-timeout, pyproject.toml).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "vigo", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("vigo")
