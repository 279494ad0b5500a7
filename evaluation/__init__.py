"""Evaluation of policies on held-out seeds (``evaluate``): Table-I-style tables with
paired differences against a baseline, learning curves, accuracy-vs-energy plots."""

# Held-out seeds start here: evaluation uses seeds EVAL_SEED_BASE + i, and training
# refuses a seed at or above it.
EVAL_SEED_BASE = 10_000
