"""Progress of a long extraction: a tqdm bar on a terminal, timed plain lines anywhere else.

tqdm redraws one line with carriage returns, which a log file (CI, `make extract > log`, nohup, a batch job)
shows as nothing until the end; there a line with counts, rate and ETA is written every `interval_s` seconds.
Lines hold counts only, never report text.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def format_duration(seconds: float) -> str:
    """`1h02m`, `12m05s` or `42s` (seconds rounded)."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class LineProgress:
    """Writes `extract: 12/42 reports (29%), 2.4 reports/min, ETA 12m30s` at most every `interval_s` seconds,
    and always once at the start and once when closed."""

    def __init__(self, total: int, stream: TextIO, interval_s: float = 30.0, label: str = "extract",
                 clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.done = 0
        self._stream = stream
        self._interval_s = interval_s
        self._label = label
        self._clock = clock
        self._start = clock()
        self._last_line = self._start
        self._write(f"{self._label}: 0/{total} reports")

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self._clock()
        if now - self._last_line >= self._interval_s:
            self._last_line = now
            self._write(self._status(now))

    def close(self) -> None:
        now = self._clock()
        self._write(self._status(now, final=True))

    def _status(self, now: float, final: bool = False) -> str:
        elapsed = now - self._start
        pct = 100 * self.done / self.total if self.total else 100.0
        line = f"{self._label}: {self.done}/{self.total} reports ({pct:.0f}%)"
        if elapsed > 0 and self.done:
            per_min = 60 * self.done / elapsed
            line += f", {per_min:.1f} reports/min"
            if not final and self.done < self.total:
                line += f", ETA {format_duration((self.total - self.done) * elapsed / self.done)}"
        if final:
            line += f", {format_duration(elapsed)} elapsed"
        return line

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool = True, interval_s: float = 30.0, stream: TextIO | None = None,
                 label: str = "extract") -> Any:
    """A tqdm bar when `stream` (default stderr) is a terminal, `LineProgress` otherwise, nothing when disabled."""
    stream = stream or sys.stderr
    if not enabled:
        return _Silent()
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, unit="report", file=stream, dynamic_ncols=True, desc=label)
    return LineProgress(total, stream, interval_s, label=label)
