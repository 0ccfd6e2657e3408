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
import contextlib
import os
import subprocess


class FdWatch:
    """Readiness of one descriptor, awaited by any number of coroutines at once.

    asyncio keeps one reader (and one writer) per descriptor, and a second add_reader
    silently replaces the first: so the watch registers once per direction, for all its
    waiters, and wakes every one of them when the descriptor is ready.
    """

    def __init__(self, fd: int, closed_error: type[Exception] = ConnectionAbortedError) -> None:
        self.fd = fd
        self._closed_error = closed_error
        self._waiters: dict[bool, set[asyncio.Future[None]]] = {False: set(), True: set()}
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._waiters[False])} reading"
        return f"<FdWatch fd={self.fd} {state}, {len(self._waiters[True])} writing>"

    async def wait(self, writing: bool = False, timeout: float | None = None) -> None:
        """Until the descriptor is readable (or writable). TimeoutError after *timeout*
        seconds; the `closed_error` given at creation if the watch is closed meanwhile."""
        if self.closed:
            raise self._closed_error(f"fd {self.fd} is closed")
        loop = asyncio.get_running_loop()
        waiters = self._waiters[writing]
        if not waiters:
            (loop.add_writer if writing else loop.add_reader)(self.fd, self._ready, writing)
        future: asyncio.Future[None] = loop.create_future()
        waiters.add(future)
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            if future in waiters:  # timed out or cancelled: the others may still wait
                waiters.discard(future)
                if not waiters:
                    self._unregister(writing)

    def _ready(self, writing: bool) -> None:
        waiters = self._waiters[writing]
        ready = list(waiters)
        waiters.clear()
        self._unregister(writing)  # the next wait registers again
        for future in ready:
            if not future.done():
                future.set_result(None)

    def _unregister(self, writing: bool) -> None:
        loop = asyncio.get_running_loop()
        (loop.remove_writer if writing else loop.remove_reader)(self.fd)

    def close(self) -> None:
        """Unregister the descriptor and fail every pending wait. Idempotent; call it
        before the descriptor is closed."""
        if self.closed:
            return
        self.closed = True
        for writing, waiters in self._waiters.items():
            if not waiters:
                continue
            self._unregister(writing)
            for future in waiters:
                if not future.done():
                    future.set_exception(self._closed_error(f"fd {self.fd} was closed"))
            waiters.clear()


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


async def wait_reaped(proc: subprocess.Popen[bytes], timeout: float | None) -> bool:
    """True once *proc* has exited and been reaped (by pidfd, no thread); False on timeout."""
    if proc.poll() is not None:
        return True
    if not await wait_exited(proc.pid, timeout):
        return False
    proc.wait()  # it has exited: this only reaps
    return True


async def _read_to_end(fd: int, deadline: float) -> bytes:
    """Everything readable from *fd* until end of file, by the loop's *deadline*."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    watch = FdWatch(fd)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                await watch.wait(False, max(0.0, deadline - loop.time()))
                continue
            if not data:
                return b"".join(chunks)
            chunks.append(data)
    finally:
        watch.close()


async def communicate(proc: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bytes]:
    """`proc.communicate()` on the event loop: its stdout and stderr (both pipes) read
    through FdWatch, its exit awaited by pidfd, then reaped. No thread is held, however
    long the process takes. TimeoutError after *timeout* seconds (the process is left
    running, for the caller to kill)."""
    assert proc.stdout is not None and proc.stderr is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    reads = [
        loop.create_task(_read_to_end(stream.fileno(), deadline))
        for stream in (proc.stdout, proc.stderr)
    ]
    try:
        stdout, stderr = await asyncio.gather(*reads)
    finally:
        for task in reads:
            task.cancel()
        for task in reads:
            with contextlib.suppress(BaseException):
                await task
    if not await wait_exited(proc.pid, max(0.0, deadline - loop.time())):
        raise TimeoutError(f"pid {proc.pid} did not exit within {timeout:.0f} s")
    proc.wait()  # it has exited: this only reaps
    proc.stdout.close()
    proc.stderr.close()
    return stdout, stderr


async def kill_and_reap(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGKILL *proc* and reap it, waiting by pidfd (never a thread, never a bare wait)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        if await wait_exited(proc.pid, timeout):
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
