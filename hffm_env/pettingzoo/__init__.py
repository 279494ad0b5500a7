"""PettingZoo environments: ``hffm_env.pettingzoo.hffm_v0``."""
