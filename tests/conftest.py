"""Shared fixtures: real processes (Redis, the Kafka-protocol broker, the gateway simulator).

A test whose real component cannot be started fails; it never skips (``.ci/run`` installs them).
"""

pytest_plugins = ["tests.fixtures.processes", "tests.fixtures.sim", "tests.fixtures.brokers", "tests.fixtures.node"]
