"""Progress of a long transfer on stderr: downloads, image layers, builders.

One reporter for every part of the client that moves many bytes, so that they all look
alike. Usage::

    with Progress("Downloading Debian", total=size, quiet=quiet) as progress:
        for chunk in chunks:
            progress.advance(len(chunk))

What it prints depends on where stderr goes:

- a terminal: one line redrawn in place (at most ten times a second) with a bar, bytes done,
  the total when known, the rate and the time left (ETA); the last drawing stays on screen;
- anything else (a log, a pipe, CI): one line at each tenth of the total, so a log
  shows how far a transfer got without a line per chunk (with no known total: only the
  final line);
- nothing at all with ``quiet`` (the command's ``-q``/``--quiet``).

`total` may be None (a server that sends no length, a builder that cannot tell); `already`
counts what was done before this run (a resumed download), so the bar starts there and the
rate counts only what this run moved. `unit` names what is counted when it is not bytes
(``unit="packages"``). The formatting functions are pure and imported by the unit tests.
Imports nothing beyond os, sys and time, so the client pays nothing for it.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import TextIO

REDRAW_INTERVAL = 0.1  # seconds between two drawings on a terminal
_STEPS = 10  # lines per transfer when not on a terminal


def format_bytes(count: float) -> str:
    """``512 B``, ``1.5 KiB``, ``27.4 MiB``, ``3.0 GiB``: binary units, one decimal."""
    if count < 1024:
        return f"{int(count)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        count /= 1024
        if count < 1024 or unit == "TiB":
            break
    return f"{count:.1f} {unit}"


def format_duration(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``: minutes and seconds, hours when needed."""
    whole = max(0, int(seconds + 0.5))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def format_amount(count: float, unit: str | None) -> str:
    return format_bytes(count) if unit is None else f"{int(count)} {unit}"


def format_rate(per_second: float, unit: str | None) -> str:
    if unit is None:
        return f"{format_bytes(per_second)}/s"
    return f"{per_second:.1f} {unit}/s"


def describe(done: int, total: int | None, rate: float | None, unit: str | None = None) -> str:
    """The figures of one report: ``12.0 MiB of 27.4 MiB, 5.1 MiB/s, 0:03 left``.

    `rate` is per second, None while not yet measurable; the time left needs both a rate
    and a total.
    """
    parts = [format_amount(done, unit) if total is None else
             f"{format_amount(done, unit)} of {format_amount(total, unit)}"]  # fmt: skip
    if rate is not None:
        parts.append(format_rate(rate, unit))
        if total is not None and rate > 0 and done < total:
            parts.append(f"{format_duration((total - done) / rate)} left")
    return ", ".join(parts)


def percent(done: int, total: int) -> int:
    """Whole percent done, 100 only when everything is (never rounded up to it)."""
    if total <= 0 or done >= total:
        return 100
    return done * 100 // total


def terminal_figures(done: int, total: int | None, rate: float | None, unit: str | None) -> str:
    """The bar's compact figures: ``12.0 MiB / 27.4 MiB  5.1 MiB/s  ETA 0:03``."""
    parts = [format_amount(done, unit) if total is None else
             f"{format_amount(done, unit)} / {format_amount(total, unit)}"]  # fmt: skip
    if rate is not None:
        parts.append(format_rate(rate, unit))
        if total is not None and rate > 0 and done < total:
            parts.append(f"ETA {format_duration((total - done) / rate)}")
    return "  ".join(parts)


def bar_line(
    label: str, done: int, total: int | None, rate: float | None, width: int, unit: str | None
) -> str:
    """The terminal's line, fitted into `width` columns: ``label  [####....]  45%  figures``.

    With no total there is no bar and no percentage. When the line does not fit, the bar
    goes first, then the label is shortened: the figures are what the user waits for.
    """
    figures = terminal_figures(done, total, rate, unit)
    if total is not None:
        figures = f"{percent(done, total):3d}%  {figures}"
    room = width - len(label) - len(figures) - 6  # "  [" + "]  " around the bar
    if total is not None and room >= 10:
        room = min(room, 40)
        filled = room * min(done, total) // total if total > 0 else room
        return f"{label}  [{'#' * filled}{'.' * (room - filled)}]  {figures}"
    room = width - len(figures) - 2
    if len(label) > room:
        label = label[: max(room - 1, 0)] + "…" if room > 1 else ""
    return f"{label}  {figures}" if label else figures[:width]


class Progress:
    """Reports a transfer's progress on `stream` (stderr by default) until the block ends.

    Not thread-safe: one transfer, advanced from one thread. Leaving the block by an
    exception ends the terminal's line (so the error starts on a line of its own) and
    prints nothing more; leaving it normally prints the final figures.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        quiet: bool = False,
        already: int = 0,
        unit: str | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.done = already
        self.unit = unit
        self._already = already
        self._quiet = quiet
        self._stream = sys.stderr if stream is None else stream
        self._clock = clock
        self._started = clock()
        self._last_draw = float("-inf")
        self._drawn = False
        self._terminal = False
        self._next_step = 0

    def __enter__(self) -> Progress:
        if self._quiet:
            return self
        try:
            self._terminal = self._stream.isatty()
        except (AttributeError, ValueError):
            self._terminal = False
        self._started = self._clock()
        if self.total is not None and self.total > 0:
            # Resumed at 40 %: the first line is the one for 50 %, not five lines at once.
            self._next_step = percent(self.done, self.total) // _STEPS + 1
        if self._terminal:
            self._draw(self._clock())
        return self

    def advance(self, count: int) -> None:
        """`count` more bytes (or units) are done."""
        self.done += count
        if self._quiet:
            return
        now = self._clock()
        if self._terminal:
            if now - self._last_draw >= REDRAW_INTERVAL:
                self._draw(now)
        elif self.total is not None and self.total > 0:
            step = min(percent(self.done, self.total), 100) // _STEPS
            if step >= self._next_step and step < _STEPS:
                self._next_step = step + 1
                self._write_line(now)

    def rate(self, now: float | None = None) -> float | None:
        """Units per second moved by this run; None in its first tenth of a second."""
        elapsed = (self._clock() if now is None else now) - self._started
        if elapsed < 0.1:
            return None
        return (self.done - self._already) / elapsed

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._quiet:
            return
        now = self._clock()
        if kind is not None:
            if self._terminal and self._drawn:
                self._say("\n")
            return
        if self._terminal:
            self._draw(now)
            self._say("\n")
        else:
            self._write_line(now)

    def _say(self, text: str) -> None:
        """Write progress on the stream; a stream that cannot be written (a full disk, a
        closed stderr) ends the progress report, not the transfer it reports on."""
        if self._quiet:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            self._quiet = True

    def _draw(self, now: float) -> None:
        try:
            width = os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            width = 80
        line = bar_line(self.label, self.done, self.total, self.rate(now), width - 1, self.unit)
        # \r and erase-to-end-of-line: redrawn in place, a shorter line leaves no tail.
        self._say(f"\r{line}\x1b[K")
        self._last_draw = now
        self._drawn = True

    def _write_line(self, now: float) -> None:
        figures = describe(self.done, self.total, self.rate(now), self.unit)
        if self.total is None:
            self._say(f"{self.label}: {figures}\n")
        else:
            self._say(f"{self.label}: {percent(self.done, self.total)}% ({figures})\n")
