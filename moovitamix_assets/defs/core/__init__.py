"""Core layer: current-state tables merged from the raw snapshots, their checks, sql/."""
