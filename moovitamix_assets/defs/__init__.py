"""Dagster definitions of the platform, one package per domain."""
