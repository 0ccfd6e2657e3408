"""The progress reporter (lxss.cli.progress): its figures, the terminal's bar, the log's
lines at each tenth, and silence with --quiet."""

from __future__ import annotations

import io

import pytest

from lxss.cli.progress import (
    Progress,
    bar_line,
    describe,
    format_bytes,
    format_duration,
    percent,
)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Stream(io.StringIO):
    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
     (27.4 * 2**20, "27.4 MiB"), (3 * 2**30, "3.0 GiB"), (5 * 2**50, "5120.0 TiB")],
)  # fmt: skip
def test_format_bytes(count: float, text: str) -> None:
    assert format_bytes(count) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0:00"), (7.4, "0:07"), (59.6, "1:00"), (754, "12:34"), (3723, "1:02:03"), (-3, "0:00")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_describe_says_what_it_knows() -> None:
    mib = 2**20
    assert describe(12 * mib, 27 * mib, 5 * mib) == "12.0 MiB of 27.0 MiB, 5.0 MiB/s, 0:03 left"
    assert describe(12 * mib, None, 5 * mib) == "12.0 MiB, 5.0 MiB/s"
    assert describe(12 * mib, 27 * mib, None) == "12.0 MiB of 27.0 MiB"
    assert describe(27 * mib, 27 * mib, 5 * mib) == "27.0 MiB of 27.0 MiB, 5.0 MiB/s"
    assert (
        describe(3, 10, 1.5, unit="packages")
        == "3 packages of 10 packages, 1.5 packages/s, 0:05 left"
    )


def test_percent_reaches_100_only_at_the_end() -> None:
    assert percent(0, 10) == 0
    assert percent(999, 1000) == 99
    assert percent(1000, 1000) == 100
    assert percent(5, 0) == 100


def test_bar_line_fits_its_width() -> None:
    mib = 2**20
    label = "Downloading Debian GNU/Linux"
    for width in (10, 20, 40, 60, 79, 200):
        line = bar_line(label, 10 * mib, 40 * mib, 2 * mib, width, None)
        assert len(line) <= width, (width, line)
    wide = bar_line(label, 10 * mib, 40 * mib, 2 * mib, 200, None)
    assert wide == (f"{label}  [##########{'.' * 30}]   25%  10.0 MiB / 40.0 MiB  2.0 MiB/s  "
                    "ETA 0:15")  # fmt: skip
    # 79 columns: no room for a bar, the whole label and the figures.
    assert bar_line(label, 10 * mib, 40 * mib, 2 * mib, 79, None) == (
        f"{label}   25%  10.0 MiB / 40.0 MiB  2.0 MiB/s  ETA 0:15"
    )
    # Narrower: the label gives way, never the figures.
    narrow = bar_line(label, 10 * mib, 40 * mib, 2 * mib, 60, None)
    assert narrow == "Downloading…   25%  10.0 MiB / 40.0 MiB  2.0 MiB/s  ETA 0:15"
    assert bar_line("Downloading", 10 * mib, None, None, 80, None) == "Downloading  10.0 MiB"
    assert bar_line("d", 3, 10, 1.0, 80, "packages").endswith(
        " 30%  3 packages / 10 packages  1.0 packages/s  ETA 0:07"
    )


def _run(stream: _Stream, total: int | None, chunks: int, quiet: bool = False) -> str:
    clock = _Clock()
    with Progress("Downloading x", total, quiet=quiet, stream=stream, clock=clock) as progress:
        for _ in range(chunks):
            clock.now += 0.5
            progress.advance(100)
    return stream.getvalue()


def test_not_a_terminal_prints_one_line_per_tenth() -> None:
    text = _run(_Stream(terminal=False), total=10_000, chunks=100)
    lines = text.splitlines()
    assert [line.split(":")[1].split("%")[0].strip() for line in lines] == [
        str(p) for p in range(10, 101, 10)
    ], text
    assert lines[0] == "Downloading x: 10% (1000 B of 9.8 KiB, 200 B/s, 0:45 left)"
    assert lines[-1] == "Downloading x: 100% (9.8 KiB of 9.8 KiB, 200 B/s)"
    assert "\r" not in text and "\x1b" not in text


def test_not_a_terminal_in_big_chunks_prints_one_line_per_chunk_not_per_step() -> None:
    stream, clock = _Stream(terminal=False), _Clock()
    with Progress("d", 1000, stream=stream, clock=clock) as progress:
        for _ in range(3):
            clock.now += 1.0
            progress.advance(350)
    percents = [line.split("%")[0] for line in stream.getvalue().splitlines()]
    assert percents == ["d: 35", "d: 70", "d: 100"]


def test_not_a_terminal_without_a_total_prints_only_the_end() -> None:
    text = _run(_Stream(terminal=False), total=None, chunks=50)
    assert text == "Downloading x: 4.9 KiB, 200 B/s\n"


def test_a_resumed_transfer_starts_where_it_was() -> None:
    stream, clock = _Stream(terminal=False), _Clock()
    with Progress("d", 1000, already=450, stream=stream, clock=clock) as progress:
        for _ in range(11):
            clock.now += 1.0
            progress.advance(50)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("d: 50% (500 B of 1000 B, 50 B/s")  # 50 B a second: this run's
    assert lines[-1].startswith("d: 100%")
    assert len(lines) == 6


def test_a_terminal_redraws_in_place_at_most_ten_times_a_second() -> None:
    stream, clock = _Stream(terminal=True), _Clock()
    with Progress("d", 100_000, stream=stream, clock=clock) as progress:
        for _ in range(1000):
            clock.now += 0.01  # 100 advances a second
            progress.advance(100)
    text = stream.getvalue()
    draws = text.count("\r")
    assert 2 <= draws <= 1000 * 0.01 * 10 + 3, draws
    assert text.endswith("\n") and text.count("\n") == 1
    last = text.rsplit("\r", 1)[1]
    assert last.startswith("d  [") and " 100%  97.7 KiB / 97.7 KiB" in last
    assert "\x1b[K" in last


def test_a_failure_ends_the_terminal_line_and_prints_no_final_figures() -> None:
    stream, clock = _Stream(terminal=True), _Clock()
    with pytest.raises(OSError), Progress("d", 1000, stream=stream, clock=clock) as progress:
        progress.advance(100)
        raise OSError("connection reset")
    text = stream.getvalue()
    assert text.endswith("\n") and "100%" not in text
    log = _Stream(terminal=False)
    with pytest.raises(OSError), Progress("d", 1000, stream=log, clock=clock) as progress:
        progress.advance(50)
        raise OSError("connection reset")
    assert log.getvalue() == ""


@pytest.mark.parametrize("terminal", [True, False])
def test_quiet_prints_nothing(terminal: bool) -> None:
    assert _run(_Stream(terminal), total=10_000, chunks=100, quiet=True) == ""


class _FullStream(io.StringIO):
    """A stderr on a full disk (`2>/dev/full`): every write fails."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("terminal", [False, True])
def test_a_stream_that_cannot_be_written_ends_the_report_not_the_transfer(
    terminal: bool,
) -> None:
    stream = _FullStream()
    stream.isatty = lambda: terminal  # type: ignore[method-assign]
    ticks = iter(range(100))
    with Progress("d", 1000, stream=stream, clock=lambda: float(next(ticks))) as progress:
        for _ in range(10):
            progress.advance(100)
    assert progress.done == 1000
    assert stream.writes == 1  # tried once, then quiet
