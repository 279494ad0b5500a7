"""Progress of the long commands: away from a terminal, flushed lines with the work done,
the rate and the ETA, at the start, every interval and at the end."""

import io
import re
import time
import types

import pytest

import hffm_cli.progress as progress_module
from hffm_cli.main import main as hffm
from hffm_cli.progress import INTERVAL_ENV, Progress, duration

LINE = re.compile(
    r"^(?P<desc>.+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \(\d+%\), (?P<rate>[\d.e+-]+) (?P=unit)/s, "
    r"elapsed .+, ETA .+$"
)
DONE = re.compile(
    r"^(?P<desc>.+): done, (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) in .+ \((?P<rate>[\d.e+-]+) \w+/s\)$"
)


def _periodic(text: str, desc: str) -> list[re.Match]:
    return [m for m in map(LINE.match, text.splitlines()) if m and m["desc"] == desc]


def _wait_for(out: io.StringIO, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in out.getvalue():
        assert time.monotonic() < deadline, f"no line with {text!r} within 30 s"
        time.sleep(0.005)


def test_a_line_says_what_is_done_how_fast_and_how_long_is_left(monkeypatch):
    clock = types.SimpleNamespace(perf_counter=lambda: 100.0)
    monkeypatch.setattr(progress_module, "time", clock)
    p = Progress(120, "steps", "job", stream=io.StringIO(), bar=False, interval_s=5)
    p.update(30)
    clock.perf_counter = lambda: 110.0
    assert p.line() == "job: 30/120 steps (25%), 3 steps/s, elapsed 10 s, ETA 30 s"
    p.update(90)
    assert p.line().endswith("ETA 0 s")
    assert [duration(s) for s in (7, 75, 3700)] == ["7 s", "1 min 15 s", "1 h 1 min"]


def test_lines_at_start_while_running_and_at_the_end_are_flushed():
    out = io.StringIO()
    with Progress(10, "rounds", "job", stream=out, interval_s=0.01, bar=False) as p:
        assert out.getvalue() == "job: 0/10 rounds, started\n"
        p.update(3)
        _wait_for(out, "job: 3/10 rounds (30%)")
        p.update(7)
        _wait_for(out, "job: 10/10 rounds (100%)")
    lines = out.getvalue().splitlines()
    done = [int(m["done"]) for m in _periodic(out.getvalue(), "job")]
    assert done == sorted(done) and {3, 10} <= set(done)
    assert all(float(m["rate"]) > 0 for m in _periodic(out.getvalue(), "job"))
    end = DONE.match(lines[-1])
    assert end and (end["done"], end["total"], end["unit"]) == ("10", "10", "rounds") and float(end["rate"]) > 0


def test_a_terminal_gets_the_bar_and_disabled_progress_says_nothing(capsys):
    out = io.StringIO()
    with Progress(4, "rounds", "job", stream=out, bar=True) as p:
        p.update(4)
    with Progress(4, "rounds", "quiet", stream=out, bar=False, enabled=False) as p:
        p.update(4)
    assert out.getvalue() == "" and "job: 100%" in capsys.readouterr().err


def test_a_bad_interval_is_refused_naming_the_variable_before_any_work(monkeypatch, capsys):
    for bad in ("0", "-1", "soon", "nan"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        assert hffm(["schedules", "--preset", "tiny", "--rounds", "1", "--seeds", "1"]) == 2
        err = capsys.readouterr().err
        assert f"{INTERVAL_ENV} must be a number of seconds > 0, got {bad!r}" in err
    with pytest.raises(ValueError, match="interval_s must be a number of seconds > 0"):
        Progress(1, "rounds", "job", interval_s=0)


def test_train_prints_steps_done_and_rate_when_stdout_is_not_a_terminal(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(INTERVAL_ENV, "0.01")
    argv = ["train", "--steps", "16", "--n-steps", "8", "--batch-size", "8", "--n-epochs", "1", "--out", str(tmp_path)]
    argv += ["--set", "federation__local_steps=0", "--set", "federation__eval_max_samples=2"]
    assert hffm(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "hffm train: 0/16 steps, started"
    periodic = _periodic("\n".join(out), "hffm train")
    assert periodic and all(m["total"] == "16" and m["unit"] == "steps" for m in periodic)
    done = [int(m["done"]) for m in periodic]
    assert done == sorted(done) and done[-1] <= 16
    assert all(float(m["rate"]) > 0 for m in periodic if m["done"] != "0")
    end = DONE.match(out[-2])
    assert end and end["desc"] == "hffm train" and end["done"] == "16" and float(end["rate"]) > 0
    assert out[-1] == f"model: {tmp_path / 'model.zip'}"
    # --no-progress: neither bar nor lines
    assert hffm(argv + ["--no-progress", "--steps", "8", "--out", str(tmp_path / "quiet")]) == 0
    assert "hffm train:" not in capsys.readouterr().out


def test_evaluate_counts_rounds_and_the_rounds_an_early_end_skipped(capsys, tmp_path):
    from evaluation.evaluate import evaluate

    # an energy budget of 1 nJ ends every episode after its first round
    overrides = {"env__max_rounds": 3, "env__energy_budget_j": 1e-9, "federation__local_steps": 0}
    evaluate("hffm_env/Aggregation-v0", "tiny", 2, ["star"], tmp_path, overrides, baseline="star")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "hffm evaluate: 0/6 rounds, started"
    end = DONE.match(out[-1])
    assert end and (end["desc"], end["done"], end["total"]) == ("hffm evaluate", "6", "6")
