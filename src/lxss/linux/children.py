"""SIGCHLD as a readable descriptor, for the guest roles' single-threaded loops.

The handler only records (Python's wakeup fd carries the signal); the loop sees
the descriptor readable and reaps. Each role that forks keeps one watch.
"""

from __future__ import annotations

import contextlib
import os
import signal


def exit_code(status: int) -> int:
    """A raw wait(2) *status* as lxss reports it: the exit code, or 128+N for death by signal N.

    The one place for the rule (the shell's): the relay reports programs with it, nsboot
    the end of mini_init, mini_init the end of a distribution's init.
    """
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _record(signum: int, frame: object) -> None:
    pass  # the wakeup fd already says a child changed state


class ChildWatch:
    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.write_fd)
        signal.signal(signal.SIGCHLD, _record)

    def fileno(self) -> int:
        return self.read_fd

    def reap(self) -> list[tuple[int, int]]:
        """Every child that has exited since the last call: (pid, wait status)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.read_fd, 4096):
                pass
        exited = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            exited.append((pid, status))
        return exited

    def close(self) -> None:
        """Undo the set-up (in a forked child that must not inherit it)."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
