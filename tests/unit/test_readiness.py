"""lxss.readiness: select()'s answers for any descriptor number."""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Iterator

import pytest

from lxss import readiness


@pytest.fixture
def high_pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose ends are numbered above FD_SETSIZE (1024), where select() fails."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2100:
        pytest.skip(f"the open-file limit ({soft}) is too low for descriptors above 2048")
    r, w = os.pipe()
    high_r, high_w = os.dup2(r, 2000), os.dup2(w, 2001)
    os.close(r)
    os.close(w)
    yield high_r, high_w
    for fd in (high_r, high_w):
        try:
            os.close(fd)
        except OSError:
            pass


def test_descriptors_above_fd_setsize(high_pipe: tuple[int, int]) -> None:
    r, w = high_pipe
    assert readiness.ready((r,), (w,), 0) == ([], [w])
    os.write(w, b"x")
    assert readiness.ready((r,), (), 0) == ([r], [])
    assert readiness.readable(r, 0)


def test_a_hang_up_is_readable_and_a_timeout_is_nothing(high_pipe: tuple[int, int]) -> None:
    r, w = high_pipe
    assert not readiness.readable(r, 0.01)
    os.close(w)
    assert readiness.readable(r, 0)  # EOF: the next read says so


def test_a_closed_descriptor_raises_ebadf_as_select_does(high_pipe: tuple[int, int]) -> None:
    r, _ = high_pipe
    os.close(r)
    with pytest.raises(OSError) as raised:
        readiness.ready((r,), (), 0)
    assert raised.value.errno == errno.EBADF
