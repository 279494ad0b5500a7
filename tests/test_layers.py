"""The direction of dependencies (DESIGN.md §1): the library imports none of the layers above it."""

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
