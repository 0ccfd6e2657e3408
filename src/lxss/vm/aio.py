"""Small asyncio helpers the service shares: readiness of a raw fd, child exit by pidfd."""

from __future__ import annotations

import asyncio
import os


async def _wait(fd: int, timeout: float | None, writing: bool) -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    (loop.add_writer if writing else loop.add_reader)(fd, ready)
    try:
        await asyncio.wait_for(future, timeout)
    finally:
        (loop.remove_writer if writing else loop.remove_reader)(fd)


async def wait_readable(fd: int, timeout: float | None) -> None:
    """Wait until *fd* is readable (or at EOF/HUP); TimeoutError after *timeout* seconds."""
    await _wait(fd, timeout, writing=False)


async def wait_writable(fd: int, timeout: float | None) -> None:
    await _wait(fd, timeout, writing=True)


async def wait_pid(pid: int, timeout: float | None) -> int:
    """Reap child *pid* and return its wait status; TimeoutError leaves it unreaped.

    Uses a pidfd, which is readable once the child has exited, so no thread
    or SIGCHLD handler is involved and pid reuse cannot confuse us.
    """
    pidfd = os.pidfd_open(pid)
    try:
        await wait_readable(pidfd, timeout)
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return status
