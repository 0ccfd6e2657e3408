"""Downloading a distribution image into the user's cache, verified, resumable.

The lxss client downloads as the user who runs it, with that user's proxy settings (urllib
reads http_proxy, https_proxy and no_proxy from the environment), as wsl.exe downloads for
its user: the root service never fetches a URL. The image goes to a per-user cache,
``$XDG_CACHE_HOME/lxss/downloads`` (``~/.cache/lxss/downloads``), as
``<sha256>.partial`` until it is complete and verified, then ``<sha256>.wsl``:

- the SHA-256 is computed while the bytes arrive (no second pass over them);
- an interrupted download keeps its partial file, and the next run asks the server for the
  rest with an HTTP Range request (the bytes already there are hashed once, from the file);
  a server that ignores the Range gets the download started over;
- a file whose SHA-256 is not the catalog's is deleted, and the error gives both hashes;
- a verified image stays in the cache until the caller has used it (an install whose
  registration failed, say for a taken name, needs no second download);
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
    from http.client import HTTPResponse
    from urllib.response import addinfourl

CHUNK = 1 << 20
TIMEOUT = 60.0  # seconds without a byte from the server before giving up (resumable)


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


def _hash_of_file(fd: int, size: int) -> hashlib._Hash:
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    remaining = size
    while remaining:
        chunk = os.read(fd, min(CHUNK, remaining))
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    return digest


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


def _transfer(url: str, fd: int, label: str, quiet: bool) -> hashlib._Hash:
    """Fill the open partial file `fd` from `url`, resuming after what it holds; returns
    the SHA-256 of the whole file."""
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
        digest = _hash_of_file(fd, offset) if offset else hashlib.sha256()
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


def download(url: str, sha256: str, label: str, quiet: bool = False) -> str:
    """The path of a verified copy of `url` in the user's cache, downloading what is missing.

    `sha256` is the lower-case hex digest the file must have. Raises CommandError on any
    failure: a transfer that stopped keeps its partial file for the next run; a file with
    the wrong hash is deleted. The caller removes the returned file once it is used.
    """
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
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CommandError(
                f"another lxss command is downloading {url}; wait for it to finish"
            ) from None
        if not _still_named(fd, partial):  # another lxss finished it while we opened it
            if _verified(complete, sha256):
                return complete
            raise CommandError(f"another lxss command has just used {url}; run this one again")
        actual = _transfer(url, fd, label, quiet).hexdigest()
        if actual != sha256:
            os.unlink(partial)
            raise CommandError(
                f"the download of {url} is corrupt: its SHA-256 is {actual}, the catalog "
                f"expects {sha256}; the file was deleted"
            )
        os.rename(partial, complete)
    finally:
        os.close(fd)
    return complete
