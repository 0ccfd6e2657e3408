"""Reading files someone else controls (lxss.linux.files): never blocking, never too much."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from lxss.linux.files import load_regular_file, read_regular_file

T = TypeVar("T")


def _without_blocking(call: Callable[[], T], timeout: float = 5.0) -> T:
    """*call*'s result (or exception), failing the test rather than hanging if it blocks."""
    outcome: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the call blocked"
    if errors:
        raise errors[0]
    return outcome[0]


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "os-release"
    path.write_bytes(b"ID=x\nNAME=caf\xe9\n")
    assert read_regular_file(str(path)) == "ID=x\nNAME=caf\ufffd\n"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert _without_blocking(lambda: read_regular_file(str(fifo))) is None
    with pytest.raises(OSError, match="Not a regular file") as raised:
        _without_blocking(lambda: load_regular_file(str(fifo)))
    assert raised.value.errno == errno.EINVAL


def test_devices_and_directories_are_refused(tmp_path: Path) -> None:
    assert _without_blocking(lambda: read_regular_file("/dev/zero")) is None
    assert read_regular_file(str(tmp_path)) is None
    with pytest.raises(IsADirectoryError):
        load_regular_file(str(tmp_path))


def test_a_missing_file_is_none(tmp_path: Path) -> None:
    assert read_regular_file(str(tmp_path / "absent")) is None
    with pytest.raises(FileNotFoundError):
        load_regular_file(str(tmp_path / "absent"))


def test_a_symlink_is_followed_unless_nofollow(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("text")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert read_regular_file(str(link)) == "text"
    assert read_regular_file(str(link), nofollow=True) is None
    with pytest.raises(OSError) as raised:
        load_regular_file(str(link), nofollow=True)
    assert raised.value.errno == errno.ELOOP
    assert read_regular_file(str(target), nofollow=True) == "text"


def test_the_owner_is_checked_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "mine"
    path.write_text("text")
    assert read_regular_file(str(path), owner_uid=os.getuid()) == "text"
    assert read_regular_file(str(path), owner_uid=os.getuid() + 1) is None
    with pytest.raises(OSError, match=f"Not owned by uid {os.getuid() + 1}") as raised:
        load_regular_file(str(path), owner_uid=os.getuid() + 1)
    assert raised.value.errno == errno.EPERM


def test_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 100)
    assert read_regular_file(str(path), limit=100) == "x" * 100
    assert read_regular_file(str(path), limit=99) is None
    with pytest.raises(OSError, match="larger than 99 bytes") as raised:
        load_regular_file(str(path), limit=99)
    assert raised.value.errno == errno.EFBIG
    assert read_regular_file(str(path)) == "x" * 100  # the default limit is 1 MiB
    path.write_bytes(b"x" * ((1 << 20) + 1))
    assert read_regular_file(str(path)) is None


def test_a_file_that_claims_no_size_is_still_bounded() -> None:
    """/proc files report size 0 and may be longer: the limit holds while reading."""
    text = read_regular_file("/proc/self/status", limit=1 << 20)
    assert text is not None and "Pid:" in text
    assert read_regular_file("/proc/self/status", limit=10) is None


def test_surrogate_escapes_on_request(tmp_path: Path) -> None:
    path = tmp_path / "conf"
    path.write_bytes(b"caf\xe9\r\n")
    assert load_regular_file(str(path), errors="surrogateescape") == "caf\udce9\r\n"


def test_no_descriptor_is_left_open(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 20)
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(3):
        read_regular_file(str(fifo))
        read_regular_file(str(big), limit=10)
        read_regular_file(str(big), owner_uid=os.getuid() + 1)
    assert set(os.listdir("/proc/self/fd")) == before
