"""The check that ``make test`` runs before pytest: it finds asserts that cannot fail,
and finds none in this suite."""

import subprocess
import sys
from pathlib import Path

from tests.check_asserts import problems

SCRIPT = Path(__file__).with_name("check_asserts.py")

CANNOT_FAIL = """\
assert True
assert (x == 1, "message")
assert len(items) >= 0
assert 0 <= abs(x)
assert x == x
assert len(items) is not None
assert x > 1 or True
assert res.correct == 3 or res is not None
assert info["energy_j"] < 1 or info["energy_j"] >= 0
assert ok and (cost.latency_s > 1 or cost.latency_s >= 0)
assert all(v is None or [v] for v in values)
"""

CAN_FAIL = """\
assert False
assert x
assert len(items) >= 1
assert abs(x) > 0
assert x == y
assert f() == f()
assert res is not None
assert res is None or res.correct == 3
assert info["energy_j"] > 0
assert info["energy_j"] >= 0
assert info["accuracy"] < 1 or info["accuracy"] >= 0
assert any(n in text for n in names or ("fallback",))
assert not (x or True)
"""


def test_every_assert_that_cannot_fail_is_found_and_no_other():
    assert [line for line, _ in problems(CANNOT_FAIL)] == list(range(1, 12))
    assert problems(CAN_FAIL) == []


def test_command_names_file_and_line_and_fails(tmp_path):
    bad = tmp_path / "test_bad.py"
    bad.write_text("def test_x():\n    assert len([]) >= 0\n")
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stdout.startswith(f"{bad}:2: assert cannot fail: len(...) / abs(...)")


def test_this_suite_has_no_assert_that_cannot_fail():
    run = subprocess.run([sys.executable, str(SCRIPT), str(SCRIPT.parent)], capture_output=True, text=True)
    assert (run.returncode, run.stdout) == (0, "")
