"""Waiting on raw file descriptors in the service's event loop.

One way to do it for the whole service (the Varlink server's connections, the
guest links, helper processes), because the pitfall is the same everywhere: a
wait left registered on a descriptor that gets closed would, once the number
is reused, swallow the new descriptor's registration (asyncio keys readers by
fd number) or remove it when the old wait ends. A `FdWatch` therefore belongs
to its descriptor's owner, who calls `close()` *before* closing the descriptor.
"""

from __future__ import annotations

import asyncio
import os


class FdWatch:
    """Readiness of one descriptor, awaited by any number of coroutines."""

    def __init__(self, fd: int, closed_error: type[Exception] = ConnectionAbortedError) -> None:
        self.fd = fd
        self._closed_error = closed_error
        self._waits: dict[asyncio.Future[None], bool] = {}  # future -> writing?
        self.closed = False

    async def wait(self, writing: bool = False, timeout: float | None = None) -> None:
        """Until the descriptor is readable (or writable). TimeoutError after *timeout*
        seconds; the `closed_error` given at creation if the watch is closed meanwhile."""
        if self.closed:
            raise self._closed_error(f"fd {self.fd} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not future.done():
                future.set_result(None)

        (loop.add_writer if writing else loop.add_reader)(self.fd, ready)
        self._waits[future] = writing
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            if self._waits.pop(future, None) is not None:  # else close() unregistered it
                (loop.remove_writer if writing else loop.remove_reader)(self.fd)

    def close(self) -> None:
        """Unregister the descriptor and fail every pending wait. Idempotent; call it
        before the descriptor is closed."""
        if self.closed:
            return
        self.closed = True
        if self._waits:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.fd)
            loop.remove_writer(self.fd)
            for future in self._waits:
                if not future.done():
                    future.set_exception(self._closed_error(f"fd {self.fd} was closed"))
            self._waits.clear()


async def wait_readable(fd: int, timeout: float | None) -> None:
    """One wait for *fd* to be readable (or at EOF); TimeoutError after *timeout* seconds."""
    watch = FdWatch(fd)
    try:
        await watch.wait(False, timeout)
    finally:
        watch.close()


async def wait_exited(pid: int, timeout: float | None) -> bool:
    """True once child *pid* has exited (it is left for its owner to reap), False on timeout.

    A pidfd is readable once its process has exited: no thread, no SIGCHLD handler, and
    no confusion with a later process of the same number.
    """
    pidfd = os.pidfd_open(pid)
    try:
        await wait_readable(pidfd, timeout)
    except TimeoutError:
        return False
    finally:
        os.close(pidfd)
    return True
