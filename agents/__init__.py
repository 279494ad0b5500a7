"""Fixed and learned controllers for the hffm-env environments.

Planned (issue #6): the paper's Table I schedules as policies with SB3's
``predict`` signature, heuristics for relaying, specialization and offloading, and
a random policy. Nothing is implemented here yet.
"""
