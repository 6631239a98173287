"""A small progress bar for long jobs (training, dataset-scale explanations).

No dependency: on a terminal it redraws one line; in a log (not a TTY) it prints a line
at most every `log_every` seconds and a last line when done, so CI logs stay short. Each
state is printed once: closing after a line that already showed the final count and
metrics prints nothing more, and closing twice closes once.
Set JAXPLAIN_PROGRESS=0 to silence it everywhere.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress:
    """Counts finished work and shows rate, ETA and the latest metrics.

    Example:
      >>> with Progress(total=3, description="epoch 1", enabled=False) as bar:
      ...     for _ in range(3):
      ...         bar.update(1, loss=0.5)
    """

    def __init__(
        self,
        total: int | None,
        *,
        description: str = "",
        unit: str = "it",
        enabled: bool | None = None,
        stream: TextIO | None = None,
        log_every: float = 10.0,
        initial: int = 0,
    ):
        self.total, self.description, self.unit = total, description, unit
        self.stream = stream or sys.stderr
        silenced = os.environ.get("JAXPLAIN_PROGRESS", "1") == "0"
        self.enabled = (True if enabled is None else enabled) and not silenced
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log_every = log_every
        # Work finished before this bar started (a resumed job): counted as done, but
        # not in the rate, which measures this run only.
        self.initial = self.count = int(initial)
        self.metrics: dict = {}
        self._start = self._last_draw = time.perf_counter()
        self._drawn = None  # (count, metrics, description) of the last line written
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def update(self, n: int = 1, **metrics) -> None:
        """Adds `n` finished units and records metrics (shown with 4 significant digits)."""
        self.count += n
        self.metrics.update(metrics)
        now = time.perf_counter()
        interval = 0.1 if self.interactive else self.log_every
        if self.enabled and now - self._last_draw >= interval:
            self._draw(now, final=False)

    def close(self) -> None:
        """Writes the last line, unless a log already holds it; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self.interactive or self._drawn != self._state():
            self._draw(time.perf_counter(), final=True)

    def line(self, now: float | None = None) -> str:
        """The text of the bar as it would be drawn now."""
        elapsed = (now or time.perf_counter()) - self._start
        rate = (self.count - self.initial) / elapsed if elapsed > 0 else 0.0
        parts = [self.description] if self.description else []
        if self.total:
            filled = int(20 * min(1.0, self.count / self.total))
            parts.append(f"[{'#' * filled}{'.' * (20 - filled)}] {self.count}/{self.total}")
            eta = (self.total - self.count) / rate if rate > 0 else 0.0
            parts.append(f"{rate:.1f} {self.unit}/s, elapsed {_duration(elapsed)}, eta {_duration(eta)}")
        else:
            parts.append(f"{self.count} {self.unit}, {rate:.1f} {self.unit}/s")
        parts += [f"{key} {value:.4g}" for key, value in self.metrics.items()]
        return " | ".join(parts)

    def _state(self) -> tuple:
        """What a line shows besides the clock: two lines with the same state say the same."""
        return self.count, self.description, tuple(f"{k} {v:.4g}" for k, v in self.metrics.items())

    def _draw(self, now: float, *, final: bool) -> None:
        self._last_draw = now
        self._drawn = self._state()
        text = self.line(now)
        if self.interactive:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
