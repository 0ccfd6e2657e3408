"""Downloading a distribution image into the user's cache, verified, resumable, and
streamed to the service as it arrives.

The lxss client downloads as the user who runs it, with that user's proxy settings (urllib
reads http_proxy, https_proxy and no_proxy from the environment), as wsl.exe downloads for
its user: the root service never fetches a URL. The image goes to a per-user cache,
``$XDG_CACHE_HOME/lxss/downloads`` (``~/.cache/lxss/downloads``), as
``<sha256>.partial`` until it is complete and verified, then ``<sha256>.wsl``:

- the SHA-256 is computed while the bytes arrive (no second pass over them);
- the bytes also go, as they arrive, into a pipe the service unpacks from, so unpacking
  overlaps the download; the last `HOLD` bytes (and any zeros after them) are held back
  until the SHA-256 is right. A download that fails or does not match closes the pipe
  without them: the service sees a truncated archive (its decompressor's trailer or tar's
  end-of-archive blocks are missing), refuses it and removes what it had unpacked, so
  nothing unverified is ever registered;
- an interrupted download keeps its partial file, and the next run asks the server for the
  rest with an HTTP Range request (the bytes already there are hashed and streamed once,
  from the file); a server that ignores the Range gets the download started over;
- a file whose SHA-256 is not the catalog's is deleted, and the error gives both hashes;
- a verified image stays in the cache until it is registered (an install whose registration
  failed needs no second download);
- two lxss commands downloading the same image do not write the same file: the second one
  is told to wait (flock on the partial file).
"""

from __future__ import annotations

import hashlib
import os

from lxss.cli.errors import CommandError
from lxss.cli.progress import Progress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from http.client import HTTPResponse
    from urllib.response import addinfourl

CHUNK = 1 << 20
TIMEOUT = 60.0  # seconds without a byte from the server before giving up (resumable)
# Held back from the service until verified: more than any trailer (gzip's 8 bytes, zstd's
# and xz's checksums) and than tar's end-of-archive blocks plus a record's padding (10 KiB).
HOLD = 64 << 10


def cache_directory() -> str:
    """The user's lxss cache: $XDG_CACHE_HOME/lxss, else ~/.cache/lxss."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):
        home = os.environ.get("HOME")
        if not home:
            import pwd

            home = pwd.getpwuid(os.getuid()).pw_dir
        base = os.path.join(home, ".cache")
    return os.path.join(base, "lxss")


def _make_private_directory(path: str) -> None:
    try:
        os.makedirs(path, 0o700, exist_ok=True)
    except OSError as e:
        raise CommandError(f"cannot create the download cache {path}: {e.strerror}") from None


def _hash_of_file(fd: int, size: int, feed: _Feed | None = None) -> hashlib._Hash:
    """The SHA-256 of the first `size` bytes of `fd`, which also go to `feed` if given."""
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    remaining = size
    while remaining:
        chunk = os.read(fd, min(CHUNK, remaining))
        if not chunk:
            break
        digest.update(chunk)
        if feed is not None:
            feed.write(chunk)
        remaining -= len(chunk)
    return digest


class ServiceStopped(Exception):
    """The service closed its end of the image's pipe: its own error says why."""


class _Feed:
    """The write end of the pipe the service unpacks from, holding back the last HOLD
    bytes, and every zero byte after them, until release(). Owns the descriptor.

    Why the zeros too: an uncompressed tar written with a large blocking factor ends in
    more than HOLD bytes of zero padding, and its end-of-archive blocks are zeros; held
    back by count alone, an unverified archive would reach the service whole. Held back
    from its last non-zero byte on, it always reaches the service truncated. A run of
    zeros is kept as a count, so a long one costs no memory; it is sent once a non-zero
    byte follows it.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending = bytearray()  # ends where the last non-zero byte so far ends
        self._zeros = 0  # zero bytes received after _pending

    def write(self, data: bytes) -> None:
        meaningful = len(data.rstrip(b"\0"))
        if meaningful == 0:
            self._zeros += len(data)
            return
        zeros, self._zeros = self._zeros, len(data) - meaningful
        # _pending + `zeros` zero bytes + data[:meaningful] may all go but its last HOLD.
        head = data[:meaningful]
        if zeros + len(head) >= HOLD:
            self._send(memoryview(self._pending))
            self._pending.clear()
            keep_zeros = max(0, HOLD - len(head))
            self._send_zeros(zeros - keep_zeros)
            self._pending += bytes(keep_zeros)
            self._pending += head
        else:
            self._pending += bytes(zeros)
            self._pending += head
        if len(self._pending) > HOLD:
            cut = len(self._pending) - HOLD
            self._send(memoryview(self._pending)[:cut])
            del self._pending[:cut]

    def release(self) -> None:
        """The image is verified: the held-back tail goes too."""
        self._send(memoryview(self._pending))
        self._pending.clear()
        self._send_zeros(self._zeros)
        self._zeros = 0

    def _send_zeros(self, count: int) -> None:
        block = bytes(min(count, 1 << 20))
        while count > 0:
            self._send(memoryview(block)[: min(count, len(block))])
            count -= len(block)

    def close(self) -> None:
        os.close(self.fd)

    def _send(self, view: memoryview) -> None:
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except BrokenPipeError:
            raise ServiceStopped from None
        finally:
            view.release()


def _content_range_start(value: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes 100-199/200``; None if unreadable."""
    if not value or not value.startswith("bytes "):
        return None
    first = value[6:].split("-", 1)[0].strip()
    return int(first) if first.isdigit() else None


def open_url(url: str, failure: str, offset: int = 0) -> HTTPResponse | addinfourl | None:
    """The response to a GET of `url` (from byte `offset` on), through the environment's
    proxies; None when the server says `offset` is past the file's end (416). Any other
    failure is a CommandError starting with `failure` ("cannot download URL")."""
    import urllib.error
    import urllib.request

    from lxss import __version__

    if not url.startswith(("file://", "http://", "https://")):
        raise CommandError(f"{failure}: only file://, http:// and https:// URLs are supported")
    headers = {"User-Agent": f"lxss/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response: HTTPResponse | addinfourl = urllib.request.urlopen(request, timeout=TIMEOUT)
        return response
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:  # asked past the end: the partial file is not a prefix
            return None
        raise CommandError(f"{failure}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise CommandError(f"{failure}: {e.reason}") from None
    except (OSError, ValueError) as e:
        raise CommandError(f"{failure}: {e}") from None


def _transfer(url: str, fd: int, label: str, quiet: bool, feed: _Feed) -> hashlib._Hash:
    """Fill the open partial file `fd` from `url`, resuming after what it holds, and stream
    the whole file into `feed`; returns its SHA-256."""
    import http.client

    offset = os.fstat(fd).st_size
    failure = f"cannot download {url}"
    response = open_url(url, failure, offset)
    if response is None:  # 416: start over
        offset = 0
        response = open_url(url, failure)
    if response is None:
        raise CommandError(f"cannot download {url}: the server refuses to send it from the start")
    with response as reply:
        status = reply.getcode()  # None for file:// URLs, which have no Range
        length = reply.headers.get("Content-Length")
        if offset and (status != 206 or _content_range_start(reply.headers.get("Content-Range"))
                       != offset):  # fmt: skip
            offset = 0  # the server sends the whole file: take it from the start
        os.ftruncate(fd, offset)
        digest = _hash_of_file(fd, offset, feed) if offset else hashlib.sha256()
        os.lseek(fd, offset, os.SEEK_SET)
        total = offset + int(length) if length and length.isdigit() else None
        received = offset
        with Progress(label, total, quiet=quiet, already=offset) as progress:
            while True:
                try:
                    chunk = reply.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
                    raise CommandError(
                        f"the download of {url} stopped after {received} bytes ({reason}); "
                        "run the same command again to resume it"
                    ) from None
                if not chunk:
                    break
                digest.update(chunk)
                _write_all(fd, chunk)
                feed.write(chunk)
                received += len(chunk)
                progress.advance(len(chunk))
        if total is not None and received < total:
            raise CommandError(
                f"the download of {url} ended after {received} of {total} bytes; "
                "run the same command again to resume it"
            )
    return digest


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as e:
        raise CommandError(
            f"cannot write to the download cache {cache_directory()}: {e.strerror}; the "
            "download resumes when the same command runs again"
        ) from None


def _verified(path: str, sha256: str) -> bool:
    """Whether `path` (an earlier run's verified download, whose registration failed) is
    there and still has its hash: checked again because it was never fsync'ed (a crash may
    have left it holding zeros), which costs a pass only on this rare path."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        if _hash_of_file(fd, os.fstat(fd).st_size).hexdigest() == sha256:
            return True
    finally:
        os.close(fd)
    os.unlink(path)
    return False


def _still_named(fd: int, path: str) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _open_partial(url: str, sha256: str) -> tuple[int, str, str] | str:
    """The locked partial file for `sha256` (fd, its path, the complete file's path), or
    the path of an already complete and verified download."""
    import fcntl

    directory = os.path.join(cache_directory(), "downloads")
    _make_private_directory(directory)
    complete = os.path.join(directory, f"{sha256}.wsl")
    if _verified(complete, sha256):
        return complete
    partial = os.path.join(directory, f"{sha256}.partial")
    try:
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise CommandError(f"cannot write {partial}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _still_named(fd, partial):
            return fd, partial, complete
    except BlockingIOError:
        os.close(fd)
        raise CommandError(f"another lxss command is downloading {url}; wait for it") from None
    os.close(fd)  # another lxss finished it while we opened it
    if _verified(complete, sha256):
        return complete
    raise CommandError(f"another lxss command has just used {url}; run this one again")


def _download(url: str, sha256: str, label: str, quiet: bool, fd: int, partial: str,
              complete: str, feed: _Feed) -> None:  # fmt: skip
    """The download thread: fill the partial file and the feed, verify, release the tail."""
    try:
        actual = _transfer(url, fd, label, quiet, feed).hexdigest()
        if actual != sha256:
            os.unlink(partial)
            raise CommandError(
                f"the download of {url} is corrupt: its SHA-256 is {actual}, the catalog "
                f"expects {sha256}; the file was deleted"
            )
        os.rename(partial, complete)
        feed.release()
    finally:
        feed.close()
        os.close(fd)


def download_and_register(
    url: str, sha256: str, label: str, quiet: bool, register: Callable[[int], str]
) -> str:
    """Download `url` (SHA-256 `sha256`, lower-case hex) and `register` it, returning what
    `register` returns: `register` gets a descriptor to read the image from (it keeps it;
    the caller closes it) while the download fills it.

    Raises CommandError for a failed or wrong download, whatever `register` then says (its
    failure is the download's consequence); else `register`'s own error. The cached image
    is removed once registered.
    """
    import threading

    opened = _open_partial(url, sha256)
    if isinstance(opened, str):  # downloaded and verified by an earlier run
        with open(opened, "rb") as image:
            name = register(image.fileno())
        os.unlink(opened)
        return name
    fd, partial, complete = opened
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    _widen_pipe(write_end)
    feed = _Feed(write_end)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            _download(url, sha256, label, quiet, fd, partial, complete, feed)
        except ServiceStopped:
            pass  # register() raises the service's error
        except BaseException as e:  # handed to the main thread, which raises it
            failure.append(e)

    thread = threading.Thread(target=run, name="lxss-download", daemon=True)
    thread.start()
    try:
        name = register(read_end)
    except KeyboardInterrupt:
        raise  # the thread is a daemon; the partial file stays for the next run
    except BaseException:
        os.close(read_end)
        read_end = -1
        thread.join(TIMEOUT + 30)  # its next write fails: the pipe has no reader now
        if failure:
            raise failure[0] from None
        raise
    finally:
        if read_end >= 0:
            os.close(read_end)
    thread.join(TIMEOUT + 30)  # registered: the download has ended
    if failure:
        raise failure[0]
    os.unlink(complete)
    return name


def _widen_pipe(fd: int) -> None:
    """1 MiB of pipe buffer instead of 64 KiB: fewer switches between us and the unpacker."""
    import fcntl

    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size for this user: the default works too
