"""The direction of dependencies (docs/index.md, Layers): the library imports none of the layers above it."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
ABOVE = {"agents", "training", "evaluation", "benchmarks", "hffm_cli"}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_imports_no_upper_layer():
    for path in (ROOT / "hffm_env").rglob("*.py"):
        assert not (_imports(path) & ABOVE), path


def test_network_layer_needs_no_torch():
    code = "import sys, hffm_env.network, hffm_env; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_federation_knows_no_rl():
    for path in (ROOT / "hffm_env" / "federation").rglob("*.py"):
        text = path.read_text()
        assert not (_imports(path) & {"gymnasium", "pettingzoo", "stable_baselines3"}), path
        assert "hffm_env.envs" not in text, path


def test_runs_offline_and_never_touches_the_global_rngs():
    """A fresh interpreter with every socket connection refused builds, resets and steps
    an env, and numpy's and torch's global generators are exactly as before."""
    import subprocess
    import sys

    code = """
import socket
def refuse(*a, **k):
    raise OSError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
import random, numpy as np, torch
np_state, torch_state, py_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone(), random.getstate()
import gymnasium as gym, hffm_env
env = gym.make("hffm_env/HFFM-v0", preset="tiny")
env.reset(seed=0)
env.step(np.zeros(env.action_space.shape, dtype=np.int64))
assert (np.random.get_state()[1] == np_state).all(), "numpy global RNG touched"
assert torch.equal(torch.get_rng_state(), torch_state), "torch global RNG touched"
assert random.getstate() == py_state, "random module touched"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
