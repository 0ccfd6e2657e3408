"""Applying a container image's layers, in order, from one stream.

The service hands the worker one descriptor carrying the layers' blobs back to
back and the list of their digests and sizes (io.lxss.Service's `layers`). Each
blob is read to exactly its size and hashed as it goes by; its first bytes say
whether it is gzip, zstd or plain tar. The worker's main process stays outside
the tree (the decompressors it starts must find their programs and libraries on
the host) and never opens a path the image names: each layer is unpacked by a
child forked for it, which chroots into the tree first and applies the layer over
what the layers before it left, whiteouts included. A blob whose digest differs
fails the whole import.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Final

from lxss.archive import formats
from lxss.archive.unpack import Unpacker, UnpackError, UnpackReport

CHUNK: Final = 1 << 20
LAYER_COMPRESSIONS: Final = ("gzip", "zstd", "tar")
MAX_REPORT: Final = 16 << 20  # a child's report: warnings about at most every member


@dataclass(frozen=True)
class Layer:
    digest: str  # "sha256:<hex>" (or sha512)
    size: int


class _Blob:
    """Exactly *size* bytes of *fd*, hashed as they are read."""

    def __init__(self, fd: int, layer: Layer) -> None:
        self._fd = fd
        self._remaining = layer.size
        self.hash = hashlib.new(layer.digest.split(":", 1)[0])

    def read(self, limit: int = CHUNK) -> bytes:
        if not self._remaining:
            return b""
        data = os.read(self._fd, min(limit, self._remaining))
        if not data:
            raise UnpackError("the layer stream ended before its last layer did")
        self._remaining -= len(data)
        self.hash.update(data)
        return data

    def head(self) -> bytes:
        """The first TAR_BLOCK bytes (fewer only if the blob is shorter)."""
        head = b""
        while len(head) < formats.TAR_BLOCK and (more := self.read(formats.TAR_BLOCK - len(head))):
            head += more
        return head


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unpacker_child(tar_fd: int, report_fd: int, stream_fd: int) -> None:
    """In the forked child: chroot into the tree (the current directory), unpack the
    tar on *tar_fd*, write the report as JSON on *report_fd*, and exit."""
    code = 0
    try:
        os.close(stream_fd)
        os.chroot(".")
        os.umask(0)
        with open(tar_fd, "rb", buffering=CHUNK) as stream:
            report = Unpacker(stream, layer=True).run()
            while stream.read(CHUNK):
                pass  # padding after the end blocks, so the writer sees no broken pipe
        result: dict[str, object] = {"ok": True, **asdict(report)}
    except UnpackError as e:
        result, code = {"ok": False, "error": str(e)}, 1
    except BaseException as e:  # the parent reports it
        result, code = {"ok": False, "error": f"{type(e).__name__}: {e}"}, 2
    try:
        _write_all(report_fd, json.dumps(result).encode())
    finally:
        sys.stdout.flush()
        os._exit(code)


def _start_unpacker(stream_fd: int) -> tuple[int, int, int]:
    """Fork the child for one layer: returns (pid, the fd to write its tar to, the fd
    to read its report from)."""
    tar_r, tar_w = os.pipe2(os.O_CLOEXEC)
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(tar_w)
        os.close(report_r)
        _unpacker_child(tar_r, report_w, stream_fd)
    os.close(tar_r)
    os.close(report_w)
    return pid, tar_w, report_r


def _finish_unpacker(pid: int, report_fd: int, number: int) -> dict[str, object]:
    chunks = []
    size = 0
    while chunk := os.read(report_fd, CHUNK):
        size += len(chunk)
        if size <= MAX_REPORT:
            chunks.append(chunk)
    os.close(report_fd)
    _, status = os.waitpid(pid, 0)
    try:
        result = json.loads(b"".join(chunks) or b"null")
    except ValueError:
        result = None
    if not isinstance(result, dict):
        raise UnpackError(f"unpacking layer {number} failed (status {status})")
    if not result.get("ok"):
        raise UnpackError(f"layer {number}: {result.get('error')}")
    return result


def _merge(total: UnpackReport, part: dict[str, object]) -> None:
    for key in ("warnings", "skipped_devices", "unmapped_owners", "failed_xattrs"):
        values = part.get(key)
        if isinstance(values, list):
            getattr(total, key).extend(str(v) for v in values)
    for key in ("files", "bytes"):
        value = part.get(key)
        if isinstance(value, int):
            setattr(total, key, getattr(total, key) + value)


def _apply_one(fd: int, layer: Layer, number: int, report: UnpackReport) -> None:
    blob = _Blob(fd, layer)
    head = blob.head()
    compression = formats.detect(head)
    if compression == "empty":
        raise UnpackError(f"layer {number} ({layer.digest}) is empty")
    if compression not in LAYER_COMPRESSIONS:
        raise UnpackError(
            f"layer {number} ({layer.digest}) is not a tar archive (nor gzip or zstd of one)"
        )
    pid, tar_w, report_r = _start_unpacker(fd)
    decompressor = None
    sink = tar_w
    try:
        if compression != "tar":
            decompressor = subprocess.Popen(
                formats.decompress_command(compression),
                stdin=subprocess.PIPE,
                stdout=tar_w,
                stderr=subprocess.PIPE,
            )
            os.close(tar_w)
            tar_w = -1
            assert decompressor.stdin is not None
            sink = decompressor.stdin.fileno()
        try:
            data = head
            while data:
                _write_all(sink, data)
                data = blob.read()
        except BrokenPipeError:
            pass  # the unpacker (or the decompressor) stopped: its report says why
    finally:
        if decompressor is not None:
            assert decompressor.stdin is not None and decompressor.stderr is not None
            try:
                decompressor.stdin.close()
            except BrokenPipeError:
                pass
        elif tar_w >= 0:
            os.close(tar_w)
    error = ""
    if decompressor is not None:
        assert decompressor.stderr is not None
        error = decompressor.stderr.read(1 << 16).decode(errors="replace").strip()
        decompressor.stderr.close()
        decompressor.wait(timeout=600)
    try:
        _merge(report, _finish_unpacker(pid, report_r, number))
        if decompressor is not None and decompressor.returncode != 0:
            raise UnpackError(f"layer {number} is a corrupt {compression} stream: {error}")
    finally:
        # A wrong digest is the cause of whatever else went wrong: it is checked first.
        while blob.read():
            pass
        actual = f"{layer.digest.split(':', 1)[0]}:{blob.hash.hexdigest()}"
        if actual != layer.digest:
            raise UnpackError(
                f"layer {number} does not match its digest: expected {layer.digest}, got {actual}"
            )


def apply_layers(fd: int, layers: list[Layer]) -> UnpackReport:
    """Unpack *layers*, read in order from *fd*, into the current directory (a new
    distribution's root, not yet chrooted into)."""
    report = UnpackReport()
    for number, layer in enumerate(layers, 1):
        _apply_one(fd, layer, number, report)
    return report
