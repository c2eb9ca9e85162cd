"""Tracking: local metric files (the source of truth), provenance, and the wandb mirror."""
