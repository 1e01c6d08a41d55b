"""Test-wide settings: hypothesis profiles (CI runs more examples) and the real-server fixtures."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# Real servers, started by fixtures on free loopback ports (or taken from CHATCORE_TEST_*_URL).
pytest_plugins = [
    "tests.integration.fixtures.redis",
    "tests.integration.fixtures.smtp",
    "tests.integration.fixtures.mongo",
]
