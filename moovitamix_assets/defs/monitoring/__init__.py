"""Monitoring: the alert sensors (failed checks, failed runs, freshness failures)."""
