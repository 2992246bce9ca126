"""Recommendation: holdout, training, the promotion gate, serving, the registry, retraining."""
