"""Definitions by domain."""
