"""Shared fixtures: real processes (Redis, the Kafka-protocol broker, the gateway simulator).

In CI (``CI=true``) a test whose real component cannot be started fails; it never skips.
"""

pytest_plugins = ["tests.fixtures.processes", "tests.fixtures.sim", "tests.fixtures.brokers"]
