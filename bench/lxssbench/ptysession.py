"""Drive an interactive shell through a real pty, as a terminal would.

The session is started on the slave side of a new pty (``os.forkpty`` makes
it the controlling terminal of a new session), commands are typed into the
master, and output is read until a marker appears. The marker is printed with
shell arithmetic (``echo M$((6+1))X`` prints ``M7X``) so the terminal's echo
of the typed line can never be mistaken for it.

Two things a real terminal and a real user do, and so does this driver:
nothing is typed until the program has printed its prompt and gone quiet (a
client that puts the terminal in raw mode with TCSAFLUSH discards whatever was
typed before), and a cursor-position query (``ESC[6n``, which busybox's line
editor sends with each prompt) is answered.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import termios
import time
from collections.abc import Mapping, Sequence

from .proc import Unavailable, last_line

DSR_QUERY = b"\x1b[6n"  # "where is the cursor?"
DSR_REPLY = b"\x1b[1;1R"  # "row 1, column 1"
QUIET = 0.3  # seconds without output after which a program is taken to wait for input
MAX_OUTPUT = 1 << 20  # bytes of one answer kept for checking


class PtySession:
    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        label: str,
        cwd: str = "/",
        uid: int | None = None,
        gid: int | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.label = label
        self._counter = 0
        self._tail = b""
        pid, fd = os.forkpty()
        if pid == 0:  # the child: become the session, then exec; never return
            try:
                os.chdir(cwd)
                if gid is not None:
                    os.setgroups([])
                    os.setgid(gid)
                if uid is not None:
                    os.setuid(uid)
                os.execvpe(argv[0], list(argv), dict(env))
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self._status: int | None = None
        try:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            self._settle(timeout)  # the prompt is out and nothing more is coming
            self.roundtrip("", timeout=timeout)  # the shell is up and answering
        except BaseException:
            self.close()
            raise

    def _marker(self) -> tuple[bytes, bytes]:
        self._counter += 1
        n = self._counter * 7
        return f"echo M$(({n}+1))X\n".encode(), f"M{n + 1}X".encode()

    def roundtrip(
        self, line: str, *, timeout: float, expect: tuple[bytes, int] | None = None
    ) -> float:
        """Type line plus a marker echo; ms until the marker comes back.

        expect=(word, n): the output before the marker must hold word at least
        n times, so that a loop failing fast (command not found …) is caught
        rather than timed.
        """
        typed, marker = self._marker()
        data = (line + "\n").encode() + typed if line else typed
        start = time.perf_counter_ns()
        os.write(self.fd, data)
        out = self._read_until(marker, timeout)
        elapsed = (time.perf_counter_ns() - start) / 1e6
        if expect and out.count(expect[0]) < expect[1]:
            raise Unavailable(
                f"{self.label}: expected {expect[1]} × {expect[0].decode()!r}, got "
                f"{out.count(expect[0])}{self._said()}"
            )
        return elapsed

    def _settle(self, timeout: float) -> None:
        """Wait for the first output, then until QUIET seconds pass without any."""
        deadline = time.monotonic() + timeout
        got_any = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                why = "no prompt" if not got_any else "output never stopped"
                raise Unavailable(f"{self.label}: {why} within {timeout:g} s{self._said()}")
            wait = min(left, QUIET) if got_any else left
            if not select.select([self.fd], [], [], wait)[0]:
                if got_any:
                    return
                continue
            self._take(b"")
            got_any = True

    def _take(self, seen: bytes) -> bytes:
        """Read one chunk and answer cursor queries in it; return seen + chunk."""
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the slave side is closed, the session ended
            chunk = b""
        if not chunk:
            raise Unavailable(f"{self.label}: session ended{self._exit_note()}{self._said()}")
        window = self._tail[-(len(DSR_QUERY) - 1) :] + chunk  # a query split across reads
        for _ in range(window.count(DSR_QUERY)):
            os.write(self.fd, DSR_REPLY)
        self._tail = (self._tail + chunk)[-4096:]
        return seen + chunk

    def _read_until(self, marker: bytes, timeout: float) -> bytes:
        """Everything read up to and including the marker (at most MAX_OUTPUT)."""
        deadline = time.monotonic() + timeout
        seen = b""
        while marker not in seen[-(len(marker) + 65536) :]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(f"{self.label}: no answer within {timeout:g} s{self._said()}")
            if select.select([self.fd], [], [], left)[0]:
                seen = self._take(seen)[-MAX_OUTPUT:]
        return seen

    def _said(self) -> str:
        text = last_line(self._tail.decode(errors="replace").replace("\r", "\n"))
        return f"; it printed: {text!r}" if text else ""

    def _exit_note(self) -> str:
        self._reap(block=False)
        if self._status is None:
            return ""
        if os.WIFSIGNALED(self._status):
            return f" (killed by signal {os.WTERMSIG(self._status)})"
        return f" (exit status {os.waitstatus_to_exitcode(self._status)})"

    def _reap(self, *, block: bool) -> None:
        if self._status is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self._status = 0
            return
        if pid:
            self._status = status

    def close(self) -> None:
        """Ask the shell to exit, then hang up, then kill; always reaped."""
        if self._status is None:
            try:
                os.write(self.fd, b"exit\n")
            except OSError:
                pass  # the session is already gone
            for sig in (None, signal.SIGHUP, signal.SIGKILL):
                if sig is not None:
                    try:
                        os.killpg(self.pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass  # already gone
                deadline = time.monotonic() + 3.0
                while self._status is None and time.monotonic() < deadline:
                    self._drain()
                    self._reap(block=False)
                    time.sleep(0.01)
                if self._status is not None:
                    break
            self._reap(block=True)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _drain(self) -> None:
        """Read whatever is pending so a child blocked on output can exit."""
        try:
            while select.select([self.fd], [], [], 0)[0]:
                if not os.read(self.fd, 65536):
                    return
        except OSError:
            return

    def __enter__(self) -> PtySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
