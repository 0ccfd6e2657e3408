"""The caller's standard streams, as lxss found them, and lxss's own output on them.

A stream the caller closed (`lxss ... >&-`) must stay closed: for lxss, whose output then
cannot be written (one `lxss:` line, exit 255), and for the program it runs, which gets
the stream closed as a local shell would give it. Before lxss opens anything, the free
numbers among 0-2 are taken by an O_PATH descriptor: the sockets lxss opens next cannot
land there and be mistaken for a standard stream, and reading or writing the placeholder
fails with EBADF exactly as the closed stream would.
"""

from __future__ import annotations

import os
import sys

CLOSED: set[int] = set()
"""The standard streams (0, 1, 2) the caller had closed: placeholders hold their numbers."""


def occupy_standard_fds() -> None:
    """Hold every closed one of fds 0-2 with a placeholder; call before opening anything."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            # The lowest free number is taken: this one.
            placeholder = os.open(os.devnull, os.O_PATH | os.O_CLOEXEC)
            if placeholder != fd:  # cannot be, unless something else races us for numbers
                os.dup2(placeholder, fd, inheritable=False)
                os.close(placeholder)
            CLOSED.add(fd)
    # Python left sys.stdout/sys.stderr None for a stream closed at start: writes to them
    # must fail as writes to a closed stream do, not as an AttributeError.
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - fd 1 belongs to the caller
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - fd 2 belongs to the caller


class OutputError(Exception):
    """lxss's own output could not be written to standard output."""

    def __init__(self, error: OSError) -> None:
        super().__init__(f"cannot write to standard output: {error.strerror or error}")


def write(text: str) -> None:
    """Write *text* to standard output; OutputError when that fails (a full disk, a closed
    stream, a reader gone)."""
    try:
        sys.stdout.write(text)
    except OSError as e:
        raise OutputError(e) from None


def flush() -> None:
    """Flush standard output; OutputError when that fails. What could not be written is
    dropped, so that nothing tries again at exit (Python would print a traceback)."""
    try:
        sys.stdout.flush()
    except OSError as e:
        discard_stdout()
        raise OutputError(e) from None


def discard_stdout() -> None:
    """Point fd 1 at /dev/null: whatever is still buffered for it goes nowhere, quietly."""
    _discard(1)


def _discard(fd: int) -> None:
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)
    try:
        (sys.stdout if fd == 1 else sys.stderr).flush()
    except (OSError, ValueError):
        pass  # the buffer may not be written even to /dev/null (a closed file object)


def say(line: str) -> None:
    """Write one of lxss's own lines to standard error, if it can be written at all: when
    it cannot, there is nowhere left to say anything, and the exit status speaks."""
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except OSError:
        _discard(2)
    except ValueError:
        pass  # a closed file object: nothing is buffered in it either
