"""Interleaved measurement: A B C A B C …, warm-ups discarded, medians and ratios.

A figure is one subject row (lxss) and its comparisons, all measured in the
same rounds: round k runs every row once, in a fixed order, so that drift in
the machine (frequency, page cache, a noisy neighbour) lands on every row
alike instead of on whichever ran last.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .proc import Unavailable


@dataclass
class Runner:
    """One row of a figure: how to take one sample, in the figure's unit."""

    label: str
    command: str
    measure: Callable[[], float]
    prepare: Callable[[], None] | None = None  # untimed, before every sample
    subject: bool = False
    unavailable: str | None = None  # already known: setup failed


def unavailable(label: str, command: str, why: str, *, subject: bool = False) -> Runner:
    """A row that could not be set up; it is reported, never dropped."""

    def never() -> float:
        raise Unavailable(why)

    return Runner(label, command, never, subject=subject, unavailable=why)


@dataclass
class Row:
    label: str
    command: str
    subject: bool
    samples: list[float] = field(default_factory=list)
    unavailable: str | None = None

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)


@dataclass
class Figure:
    id: str
    title: str
    unit: str  # "ms", "s", "MB/s", "cmd/s", "MiB"
    better: str  # "lower" or "higher"
    what: str  # one sentence: what is measured
    rows: list[Row]
    runs: int
    warmup: int
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def subject(self) -> Row:
        return next(r for r in self.rows if r.subject)

    def ratio(self, row: Row) -> float | None:
        """lxss ÷ this row, on medians; None where either side has no number."""
        s = self.subject
        if row.subject or s.unavailable or row.unavailable or not s.samples or not row.samples:
            return None
        if row.median == 0:
            return None
        return s.median / row.median


def interleave(runners: list[Runner], *, runs: int, warmup: int, progress: str = "") -> list[Row]:
    """Take warmup + runs rounds over runners; warm-up samples are discarded.

    A row whose prepare or measure raises Unavailable is marked with the reason
    and left out of later rounds; its samples are discarded, never reported in
    part.
    """
    rows = [Row(r.label, r.command, r.subject, unavailable=r.unavailable) for r in runners]
    for k in range(warmup + runs):
        timed = k >= warmup
        for runner, row in zip(runners, rows, strict=True):
            if row.unavailable:
                continue
            try:
                if runner.prepare is not None:
                    runner.prepare()
                value = runner.measure()
            except Unavailable as exc:
                where = f"run {k - warmup + 1} of {runs}" if timed else "warm-up"
                row.unavailable = str(exc) if k == 0 else f"failed in {where}: {exc}"
                row.samples.clear()
                continue
            if timed:
                row.samples.append(value)
        if progress and sys.stderr.isatty():
            print(
                f"\r  {progress}: round {k + 1}/{warmup + runs}",
                end="",
                file=sys.stderr,
                flush=True,
            )
    if progress and sys.stderr.isatty():
        print(file=sys.stderr)
    return rows


def ms_since(start_ns: int) -> float:
    return (time.perf_counter_ns() - start_ns) / 1e6


def fmt(value: float, unit: str) -> str:
    """A number with three significant figures and its unit (ms below 1 s)."""
    if unit == "ms" and value >= 1000:
        value, unit = value / 1000, "s"
    if value >= 100:
        text = f"{value:.0f}"
    elif value >= 10:
        text = f"{value:.1f}"
    elif value >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}"


def fmt_range(low: float, high: float, unit: str) -> str:
    a, b = fmt(low, unit), fmt(high, unit)
    ua, ub = a.rsplit(" ", 1), b.rsplit(" ", 1)
    if ua[1] == ub[1]:
        return f"{ua[0]}–{ub[0]} {ua[1]}"
    return f"{a} – {b}"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    if ratio >= 10:
        return f"{ratio:.0f}×"
    return f"{ratio:.2f}×"
