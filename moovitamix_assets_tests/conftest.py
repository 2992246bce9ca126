"""Shared fixtures: a real PostgreSQL server and the API stand-in on loopback."""

pytest_plugins = [
    "moovitamix_assets_tests.fixtures.postgres",
    "moovitamix_assets_tests.fixtures.api",
]
