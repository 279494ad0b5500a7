"""Evaluation of policies on held-out seeds (``evaluate``): Table-I-style tables with
paired differences against a baseline, learning curves, accuracy-vs-energy plots."""
