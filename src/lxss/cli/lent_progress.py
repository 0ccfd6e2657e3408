"""Progress of an import or export that lxssd does on a file the client lent it.

The client opens the archive and hands its descriptor to the service, whose archive worker
reads or writes it: the bytes never pass through the client. But a descriptor passed over a
socket shares its open file description with the client's, so the client can watch the
transfer from outside: the file offset of an archive being read (against its size), the size
of an export being written (with no total: its compressed size is not known in advance).
A watcher thread samples it a few times a second and reports through lxss.cli.progress, as
downloads do. Pipes and terminals (`-` for stdin or stdout) have neither offset nor size to
watch: no progress is shown for them.

Shown only when stderr is a terminal (one line redrawn in place). Unlike a download's, an
import's or export's stderr is often read by scripts that expect nothing but the command's
own one `lxss:` line on failure, or nothing at all: they get no progress lines.
"""

from __future__ import annotations

import os
import stat
import threading

from lxss.cli.progress import Progress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType

SAMPLE_INTERVAL = 0.2  # seconds between two looks at the descriptor
JOIN_TIMEOUT = 5.0  # the watcher only samples: it ends within one interval


class LentFileProgress:
    """``with LentFileProgress(fd, "Importing debian", reading=True, quiet=q): client.call(...)``

    *reading*: the service reads *fd* from its current offset to the end (an import);
    otherwise it writes *fd* (an export). Does nothing when *quiet*, when *fd* is not a
    regular file, or when stderr is not a terminal. The watcher thread is the only one that
    advances the report, as Progress wants.
    """

    def __init__(self, fd: int, label: str, *, reading: bool, quiet: bool) -> None:
        self._fd = fd
        self._reading = reading
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress: Progress | None = None
        if quiet or not os.isatty(2) or not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        if reading:
            start = os.lseek(fd, 0, os.SEEK_CUR)
            self._progress = Progress(label, os.fstat(fd).st_size, already=start)
        else:
            self._progress = Progress(label, None, already=os.fstat(fd).st_size)

    def _position(self) -> int:
        try:
            if self._reading:
                return os.lseek(self._fd, 0, os.SEEK_CUR)
            return os.fstat(self._fd).st_size
        except OSError:
            return 0  # the descriptor is going away with the transfer: nothing new to say

    def _sample(self) -> None:
        assert self._progress is not None
        now = self._position()
        if self._progress.total is not None:
            now = min(now, self._progress.total)
        if now > self._progress.done:
            self._progress.advance(now - self._progress.done)

    def _watch(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self._sample()

    def __enter__(self) -> LentFileProgress:
        if self._progress is not None:
            self._progress.__enter__()
            self._thread = threading.Thread(target=self._watch, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT)
        if kind is None:
            if self._reading and self._progress.total is not None:
                # The service has read all it needed (a tar's end may leave padding unread).
                self._progress.advance(self._progress.total - self._progress.done)
            else:
                self._sample()
        self._progress.__exit__(kind, error, traceback)
