"""Shared fixtures: real processes (Redis, the Kafka-protocol broker, the gateway simulator).

A test whose real component cannot be started fails; it never skips (``.ci/run`` installs them).
No test depends on the machine's speed: property tests run without hypothesis's per-example
deadline and without its "too slow" health check (a loaded machine is not a failure).
"""

from hypothesis import HealthCheck, settings

settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")

pytest_plugins = ["tests.fixtures.processes", "tests.fixtures.sim", "tests.fixtures.brokers"]
