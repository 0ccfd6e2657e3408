"""The benchmark suite still runs: `bench/run --quick` writes a complete table.

This asserts no speed. It checks that every figure has its lxss row and that
every row holds either a number or an explicit "not available: <reason>", so
a figure can never vanish from the table or be silently skipped.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"

# First runs install podman and friends (apt) and matplotlib (pip); the quick
# run itself takes under two minutes once they are there.
TIMEOUT = 1200.0

NUMBER = re.compile(r"^\d[\d.]* (ms|s|MB/s|cmd/s|MiB)$")
UNAVAILABLE = re.compile(r"^not available: \S")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="bench/run needs root"),
]


def _figure_ids() -> tuple[str, ...]:
    sys.path.insert(0, str(BENCH))
    try:
        from lxssbench.figures import ORDER
    finally:
        sys.path.remove(str(BENCH))
    return ORDER


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.Popen(
        [str(BENCH / "run"), "--quick", "--out", str(out)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the bench turns it into an orderly cleanup of its
        # users, containers, mounts and distributions.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        pytest.fail(f"bench/run --quick took over {TIMEOUT:g} s:\n{output.decode()[-4000:]}")
    assert proc.returncode == 0, output.decode()[-4000:]
    yield out


def _cells(line: str) -> list[str]:
    # Split a markdown table row on unescaped pipes.
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_writes_table_and_plot(results: Path) -> None:
    assert (results / "latest.md").stat().st_size > 0
    assert (results / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_figure_has_an_lxss_row(results: Path) -> None:
    text = (results / "latest.md").read_text()
    for fid in _figure_ids():
        rows = [ln for ln in text.splitlines() if ln.startswith(f"| `{fid}` |")]
        assert len(rows) == 1, f"figure {fid} missing from the summary"
        lxss = _cells(rows[0])[2]
        assert NUMBER.match(lxss) or UNAVAILABLE.match(lxss), f"{fid}: {lxss!r}"


def test_every_row_has_a_number_or_a_reason(results: Path) -> None:
    text = (results / "latest.md").read_text()
    sections = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    assert len(sections) == len(_figure_ids())
    for section in sections:
        fid = section.split("`")[1]
        table = [
            ln
            for ln in section.splitlines()
            if ln.startswith("| ") and not ln.startswith(("| row ", "| what "))
        ]
        measured = [_cells(ln) for ln in table if len(_cells(ln)) == 6]
        assert measured, f"{fid}: no rows"
        assert any(c[0].startswith("**") for c in measured), f"{fid}: no lxss row"
        for cells in measured:
            median = cells[2]
            assert NUMBER.match(median) or UNAVAILABLE.match(median), f"{fid}: {cells}"
