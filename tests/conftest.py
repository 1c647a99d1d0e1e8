"""Shared fixtures: real NATS (JetStream), PostgreSQL and an S3 API server."""

pytest_plugins = [
    "tests.fixtures.nats",
    "tests.fixtures.s3",
    "tests.fixtures.postgres",
    "tests.fixtures.smtp",
]
