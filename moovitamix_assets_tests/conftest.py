"""Shared fixtures: a real PostgreSQL server and the API stand-in on loopback."""

import os

# The tests' partitions start early enough for every date they use, and reading the first day
# from the environment keeps the definitions from recording one in the clone's state folder.
os.environ.setdefault("MOOVITAMIX_FIRST_DAY", "2024-01-01")

pytest_plugins = [
    "moovitamix_assets_tests.fixtures.postgres",
    "moovitamix_assets_tests.fixtures.api",
]
