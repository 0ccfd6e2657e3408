"""The newc cpio writer (lxss.vm.cpio), read back by an independent reader (bsdtar)."""

from __future__ import annotations

import io
import stat
import subprocess

import pytest

from lxss.vm.cpio import CpioWriter


def _archive() -> bytes:
    out = io.BytesIO()
    archive = CpioWriter(out)
    archive.directory("bin")
    archive.file("bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
    archive.file("empty", b"")
    archive.file("odd", b"x" * 5)  # data that needs padding
    archive.symlink("sh", "bin/tool")
    archive.device("console", stat.S_IFCHR, 5, 1)
    archive.close()
    return out.getvalue()


def test_every_record_is_aligned_and_the_trailer_ends_it() -> None:
    data = _archive()
    assert data.startswith(b"070701") and len(data) % 4 == 0
    assert data.rstrip(b"\0").endswith(b"TRAILER!!!")


def test_an_independent_reader_lists_what_was_written() -> None:
    listing = subprocess.run(
        ["bsdtar", "-tvf", "-"], input=_archive(), capture_output=True, check=True
    ).stdout.decode()
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line
             for line in listing.splitlines()}  # fmt: skip
    assert set(lines) == {"bin", "bin/tool", "empty", "odd", "sh", "console"}
    assert lines["bin"].startswith("d") and lines["bin/tool"].startswith("-rwxr-xr-x")
    assert lines["sh"].startswith("l") and lines["sh"].endswith("sh -> bin/tool")
    assert lines["console"].startswith("c")


def test_contents_come_back_byte_for_byte(tmp_path: object) -> None:
    extracted = subprocess.run(
        ["bsdtar", "-xOf", "-", "bin/tool", "odd"], input=_archive(), capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    assert extracted == b"#!/bin/sh\necho hi\n" + b"x" * 5


@pytest.mark.parametrize("name", ["", "/", "a/../b", "x\0y"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        CpioWriter(io.BytesIO()).file(name, b"")


def test_a_name_twice_and_a_write_after_close_are_refused() -> None:
    archive = CpioWriter(io.BytesIO())
    archive.file("a", b"1")
    with pytest.raises(ValueError):
        archive.file("/a", b"2")
    archive.close()
    with pytest.raises(ValueError):
        archive.file("b", b"")
