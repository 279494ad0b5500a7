"""Training entry points (SB3, sb3-contrib, SuperSuit, RLlib) and the backbone
pretraining script. Planned in issues #3 and #6; nothing is implemented here yet."""
