"""hffm-env: RL environments for orchestrating hierarchical federated foundation models.

Importing the package registers the Gymnasium ids ``hffm_env/Aggregation-v0``,
``Relaying-v0``, ``Specialization-v0``, ``Offloading-v0`` and ``HFFM-v0``.
"""

from hffm_env._validation import ConfigError
from hffm_env.envs import ENV_IDS, register_envs
from hffm_env.scenario import PRESETS, Scenario, make_scenario

__version__ = "0.1.0"

register_envs()

__all__ = ["ConfigError", "ENV_IDS", "PRESETS", "Scenario", "make_scenario", "__version__"]
