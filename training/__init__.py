"""Training entry points: Stable-Baselines3 and sb3-contrib (``train``), Ray RLlib
(``rllib_train``), the demo (``demo``) and the backbone pretraining script
(``pretrain_backbone``)."""
