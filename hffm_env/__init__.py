"""hffm-env: RL environments for orchestrating hierarchical federated foundation models."""

from hffm_env._validation import ConfigError
from hffm_env.scenario import PRESETS, Scenario, make_scenario

__version__ = "0.1.0"

__all__ = ["ConfigError", "PRESETS", "Scenario", "make_scenario", "__version__"]
