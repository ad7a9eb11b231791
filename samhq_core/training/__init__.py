"""Training utilities: synthetic data with exact masks (more to come: losses, HQ fine-tuning)."""
