"""Evaluation: metrics computed from a model and an iterable of batches (no data or tracking code)."""
