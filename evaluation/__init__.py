"""Evaluation of policies on held-out seeds: Table-I-style tables, learning curves,
accuracy-vs-energy plots. Planned in issue #6; nothing is implemented here yet."""
