"""Progress of the long commands: a bar in a terminal, flushed lines elsewhere.

Every long command (``hffm demo``, ``train``, ``evaluate``, ``schedules``, ``bench``)
counts its work (rounds, steps, runs) through :class:`Progress`. When stdout and
stderr are both terminals it draws a tqdm bar on stderr. Otherwise (output piped or
redirected to a file, as in ``make demo > demo.log``) it prints lines such as::

    hffm train: 1024/4096 steps (25%), 3.41 steps/s, elapsed 5 min 0 s, ETA 15 min 1 s

when the work starts, every ``interval_s`` seconds while it runs, and when it ends,
each flushed at once. The periodic lines come from a timer thread, so a single step
longer than the interval (a PPO update, a long evaluation episode) still gets its
line. ``interval_s`` defaults to the environment variable ``HFFM_PROGRESS_INTERVAL_S``,
else 10 s.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time

from hffm_env import ConfigError

INTERVAL_ENV = "HFFM_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 10.0


def interval_from_env() -> float:
    """Seconds between progress lines: ``HFFM_PROGRESS_INTERVAL_S`` when set, else 10."""
    text = os.environ.get(INTERVAL_ENV)
    if text is None:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{INTERVAL_ENV} must be a number of seconds > 0, got {text!r}")
    return value


def _isatty(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def in_terminal() -> bool:
    """Whether stdout and stderr are both terminals (where a progress bar can redraw)."""
    return _isatty(sys.stdout) and _isatty(sys.stderr)


def duration(seconds: float) -> str:
    """``75`` -> ``"1 min 15 s"``; ``3700`` -> ``"1 h 1 min"``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


class Progress:
    """``total`` units of work (``unit``: "rounds", "steps", …) counted by :meth:`update`.

    A context manager: entering prints the first line (or opens the bar), leaving the
    last. ``stream`` (default stdout) takes the lines; a command that prints JSON on
    stdout passes stderr. ``enabled=False`` shows nothing. ``bar`` (default: whether
    :func:`in_terminal`) picks the tqdm bar over the lines.
    """

    def __init__(
        self,
        total: int,
        unit: str,
        desc: str,
        *,
        stream=None,
        interval_s: float | None = None,
        bar: bool | None = None,
        enabled: bool = True,
    ):
        self.total, self.unit, self.desc = int(total), unit, desc
        self.stream = stream
        self.interval_s = interval_from_env() if interval_s is None else float(interval_s)
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ValueError(f"interval_s must be a number of seconds > 0, got {interval_s!r}")
        self.enabled = enabled
        self.bar = in_terminal() if bar is None else bar
        self.done = 0
        self._tqdm = None
        self._thread = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()

    def __enter__(self) -> Progress:
        self._t0 = time.perf_counter()
        if not self.enabled:
            return self
        if self.bar:
            from tqdm import tqdm

            self._tqdm = tqdm(total=self.total, desc=self.desc, unit=f" {self.unit}", file=sys.stderr)
        else:
            self._write(f"{self.desc}: 0/{self.total} {self.unit}, started")
            self._thread = threading.Thread(target=self._tick, name="hffm-progress", daemon=True)
            self._thread.start()
        return self

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.done += n
        if self._tqdm is not None:
            self._tqdm.update(n)

    def line(self) -> str:
        """The progress line for now: units done, rate, elapsed time and ETA."""
        elapsed = time.perf_counter() - self._t0
        done, total = self.done, self.total
        rate = done / elapsed if elapsed > 0 else 0.0
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        eta = duration((total - done) / rate) if rate > 0 and done < total else "unknown" if done < total else "0 s"
        return (
            f"{self.desc}: {done}/{total} {self.unit}{pct}, {rate:.3g} {self.unit}/s, "
            f"elapsed {duration(elapsed)}, ETA {eta}"
        )

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stdout
        with self._lock:
            print(text, file=stream, flush=True)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._write(self.line())
            except OSError:  # the reader went away (a closed pipe): the command's own writes will say so
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.enabled:
            elapsed = time.perf_counter() - self._t0
            rate = self.done / elapsed if elapsed > 0 else 0.0
            end = "done" if exc[0] is None else "stopped"
            self._write(
                f"{self.desc}: {end}, {self.done}/{self.total} {self.unit} in {duration(elapsed)} "
                f"({rate:.3g} {self.unit}/s)"
            )
