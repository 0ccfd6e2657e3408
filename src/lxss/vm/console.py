"""A VM's console: what its kernel and pid 1 print, read from a pipe into the service's log.

Both backends have one (the namespace VM's boot process's stderr, QEMU's serial port).
The last lines are kept, so a VM that fails to boot can say what it printed last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

log = logging.getLogger(__name__)

KEPT_LINES = 20


class Console:
    """Reads *fd* (owned from now on) on the running loop, a line at a time, into the log."""

    def __init__(self, fd: int, label: str) -> None:
        self.fd = fd
        self.label = label
        self.last_lines: list[str] = []
        self._tail = b""
        self._closed = False
        asyncio.get_running_loop().add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.fd)
            return
        lines = (self._tail + data).split(b"\n")
        self._tail = lines.pop()[-4096:]
        for line in lines:
            text = line.decode(errors="replace").rstrip("\r")
            self.last_lines = [*self.last_lines[1 - KEPT_LINES :], text]
            log.warning("%s: %s", self.label, text)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)
