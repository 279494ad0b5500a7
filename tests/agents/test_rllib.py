"""The RLlib script on the PettingZoo env: runs where the optional `rllib` extra is installed."""

import pytest


def test_rllib_trains_two_iterations(tmp_path):
    pytest.importorskip("ray.rllib", reason="the optional extra rllib (ray[rllib]) is not installed")
    from training.rllib_train import main

    assert (
        main(
            [
                "--preset",
                "tiny",
                "--iterations",
                "1",
                "--batch",
                "32",
                "--set",
                "env__max_rounds=2",
                "--out",
                str(tmp_path / "rllib"),
            ]
        )
        == 0
    )
    assert (tmp_path / "rllib" / "checkpoint").is_dir()
