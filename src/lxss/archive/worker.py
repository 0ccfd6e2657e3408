"""The archive worker: unpacks, packs and removes a distribution's tree with the
owner's rights and no more.

lxssd starts it with `spawn_mapped`; it enters the owner's user namespace
(uid 0 inside = the owner outside, 1..65535 = the owner's subordinate ids),
opens the distribution's directory *after* that (so the kernel checks the
owner's rights, not root's), starts any (de)compressor, then chroots into the
tree and works there. It reports one JSON object on stdout; exit status 0 means
success, 1 a failure the report explains, anything else a crash (stderr).

    unpack --base PATH                        archive on stdin; creates rootfs/
           [--layers JSON [--image JSON]]    ... or an image's layers (lxss.archive.layers)
    pack   --base PATH --out-fd FD --format F
    remove --base PATH [--identity DEV:INO]   deletes rootfs/; reports what it could not
    inspect --base PATH                       what rootfs/ is (os-release, is it Linux)
    move   --base PATH --identity DEV:INO --to PATH --to-identity DEV:INO
                                              renames rootfs/ into another base directory
"""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from typing import IO, Any

from lxss.archive import formats, icon, image, layers
from lxss.archive.pack import Packer
from lxss.archive.unpack import Unpacker, UnpackError, looks_like_linux, read_os_release
from lxss.config.wslconf import read_wsl_distribution_conf
from lxss.linux import userns

ROOTFS = "rootfs"


class WorkerError(Exception):
    """A failure to report to the user (exit status 1)."""


def _options(argv: list[str]) -> dict[str, str | bool]:
    """`--key value` pairs (every option takes a value)."""
    options: dict[str, str | bool] = {}
    for i in range(0, len(argv), 2):
        key = argv[i].removeprefix("--")
        if i + 1 >= len(argv):
            raise WorkerError(f"--{key} needs a value")
        options[key] = argv[i + 1]
    return options


def _open_base(options: dict[str, str | bool]) -> int:
    """The base directory, opened with the owner's rights (never through a final link);
    if --identity is given, it must be that directory."""
    base = str(options["base"])
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise WorkerError(f"cannot open {base}: {e.strerror}") from None
    if "identity" in options:
        st = os.fstat(fd)
        if f"{st.st_dev}:{st.st_ino}" != options["identity"]:
            os.close(fd)
            raise WorkerError(f"{base} is not the directory registered; its files were left alone")
    return fd


class _Prefixed(io.RawIOBase):
    """A stream that yields *head* and then whatever is left on *fd*."""

    def __init__(self, head: bytes, fd: int) -> None:
        self._head = head
        self._fd = fd

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = os.read(self._fd, len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _feed(head: bytes, source: int, sink: int) -> None:
    """Copy *head* then all of *source* into the pipe *sink* (splice: no copies through us)."""
    try:
        os.write(sink, head)
        while True:
            try:
                moved = os.splice(source, sink, 1 << 20)
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: source cannot splice; copy instead
                    raise
                data = os.read(source, 1 << 20)
                moved = len(data)
                if moved:
                    os.write(sink, data)
            if moved == 0:
                break
    except BrokenPipeError:
        pass  # the decompressor stopped reading; it reports its own error
    finally:
        os.close(sink)


class _Input:
    """The archive on stdin, decompressed: a byte stream plus the decompressor, if any."""

    def __init__(self) -> None:
        head = b""
        while len(head) < formats.TAR_BLOCK:
            chunk = os.read(0, formats.TAR_BLOCK - len(head))
            if not chunk:
                break
            head += chunk
        kind = formats.detect(head)
        if kind == "empty":
            raise WorkerError("the archive is empty")
        if kind == "unknown":
            raise WorkerError("the file is not a tar archive (nor gzip, xz, zstd or bzip2 of one)")
        self.kind = kind
        self.process: subprocess.Popen[bytes] | None = None
        seekable = stat.S_ISREG(os.fstat(0).st_mode)
        if kind == "tar":
            if seekable:
                os.lseek(0, 0, os.SEEK_SET)
                head = b""
            self.stream: IO[bytes] = io.BufferedReader(_Prefixed(head, 0), 1 << 20)
            return
        command = formats.decompress_command(kind)
        if seekable:
            os.lseek(0, 0, os.SEEK_SET)
            stdin: int = 0
        else:
            pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)
            threading.Thread(target=_feed, args=(head, 0, pipe_w), daemon=True).start()
            stdin = pipe_r
        self.process = subprocess.Popen(
            command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        if stdin != 0:
            os.close(stdin)
        assert self.process.stdout is not None
        self.stream = self.process.stdout

    def finish(self) -> None:
        """Drain and check the decompressor: a corrupt or truncated stream fails here."""
        if self.process is None:
            return
        while self.stream.read(1 << 20):
            pass
        assert self.process.stderr is not None
        error = self.process.stderr.read().decode(errors="replace").strip()
        code = self.process.wait(timeout=60)
        if code != 0:
            raise WorkerError(f"the {self.kind} stream is corrupt: {error or f'exit {code}'}")

    def abort(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def unpack(options: dict[str, str | bool]) -> dict[str, Any]:
    base_fd = _open_base(options)
    try:
        os.fchdir(base_fd)
    finally:
        os.close(base_fd)  # an fd outside the chroot would be a way out of it
    try:
        os.mkdir(ROOTFS, 0o755)
    except FileExistsError:
        raise WorkerError("the install location already holds a distribution (rootfs/)") from None
    except OSError as e:
        raise WorkerError(f"cannot create the distribution's root: {e.strerror}") from None
    os.chdir(ROOTFS)
    if "layers" in options:
        return _unpack_layers(options)
    source = _Input()
    try:
        os.chroot(".")
        os.umask(0)
        report = Unpacker(source.stream).run()
        source.finish()
    except UnpackError as e:
        source.abort()
        raise WorkerError(str(e)) from None
    except BaseException:
        source.abort()
        raise
    return _unpacked(report.summary(), report)


def _unpacked(warnings: list[str], report: Any) -> dict[str, Any]:
    release = read_os_release()
    # Read at install, as WSL does: whether to make a shortcut (with which icon), the name
    # the image suggests.
    distribution_conf, _ = read_wsl_distribution_conf()
    shortcut_icon = None
    if distribution_conf.shortcut_enabled and distribution_conf.shortcut_icon:
        found = icon.read_icon(distribution_conf.shortcut_icon)
        if isinstance(found, str):
            warnings = [*warnings, found]
        else:
            shortcut_icon = {"format": found[0], "data": base64.b64encode(found[1]).decode()}
    return {
        "shortcut": distribution_conf.shortcut_enabled,
        "shortcutIcon": shortcut_icon,
        "defaultName": distribution_conf.oobe_default_name,
        "warnings": warnings,
        "files": report.files,
        "bytes": report.bytes,
        "osId": release.get("ID", ""),
        "osVersionId": release.get("VERSION_ID", ""),
        "isLinux": looks_like_linux(),
    }


def _json_option(options: dict[str, str | bool], key: str) -> Any:
    try:
        return json.loads(str(options.get(key) or "null"))
    except ValueError:
        raise WorkerError(f"--{key} is not JSON") from None


def _unpack_layers(options: dict[str, str | bool]) -> dict[str, Any]:
    """An image: its layers in order on stdin, then its config's defaults."""
    described = _json_option(options, "layers")
    config = _json_option(options, "image") or {}
    stack = [layers.Layer(str(item["digest"]), int(item["size"])) for item in described]
    try:
        report = layers.apply_layers(0, stack)  # unpacks in chrooted children
    except (UnpackError, OSError) as e:
        raise WorkerError(str(e)) from None
    os.chroot(".")
    os.umask(0o022)
    default_uid, warnings = image.apply(
        [str(v) for v in config.get("env", [])],
        str(config.get("user", "")),
        str(config.get("workingDir", "")),
    )
    result = _unpacked(report.summary() + warnings, report)
    result["defaultUid"] = default_uid
    return result


def pack(options: dict[str, str | bool]) -> dict[str, Any]:
    out_fd = int(str(options["out-fd"]))
    base_fd = _open_base(options)
    try:
        os.fchdir(base_fd)
    finally:
        os.close(base_fd)
    try:
        os.chdir(ROOTFS)
    except OSError as e:
        raise WorkerError(f"the distribution's root is missing: {e.strerror}") from None
    command = formats.compress_command(str(options["format"]))
    process = None
    if command is None:
        out: IO[bytes] = open(out_fd, "wb", buffering=1 << 20)  # noqa: SIM115
    else:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out_fd)
        os.close(out_fd)
        assert process.stdin is not None
        out = process.stdin
    try:
        os.chroot(".")
        report = Packer(out).run()
        out.close()
    except BrokenPipeError:
        raise WorkerError("the output was closed before the export finished") from None
    finally:
        if process is not None:
            if process.stdin is not None and not process.stdin.closed:
                process.stdin.close()
            if process.wait(timeout=600) != 0:
                raise WorkerError(f"{command and command[0]} failed (exit {process.returncode})")
    return {"warnings": report.warnings, "files": report.files, "bytes": report.bytes}


MAX_LEFT_NAMED = 5


def remove(options: dict[str, str | bool]) -> dict[str, Any]:
    """Delete base/rootfs as far as the owner may; what could not be deleted is reported
    (unregistering goes on without it, as WSL's does), not raised."""
    try:
        base_fd = _open_base(options)
    except WorkerError:
        if not os.path.lexists(str(options["base"])):
            return {"left": [], "failures": 0}  # already gone: unregistering must still work
        raise
    left: list[str] = []
    failures = 0

    def failed(function: Any, path: str, exc_info: Any) -> None:
        nonlocal failures
        error = exc_info[1]
        if function is os.rmdir and getattr(error, "errno", None) == errno.ENOTEMPTY:
            return  # a directory holding what could not be deleted: counted there
        if isinstance(error, FileNotFoundError) and path == ROOTFS:
            return
        failures += 1
        if len(left) < MAX_LEFT_NAMED:
            left.append(f"{path}: {getattr(error, 'strerror', None) or error}")

    try:
        shutil.rmtree(ROOTFS, dir_fd=base_fd, onerror=failed)
    finally:
        os.close(base_fd)
    # The base directory itself is left to whoever made it: lxssd (who checks it is the one
    # it made), or the user for distributions registered before lxssd made its own.
    return {"left": left, "failures": failures}


def inspect(options: dict[str, str | bool]) -> dict[str, Any]:
    """os-release and whether base/rootfs looks like Linux, read inside the tree (chrooted,
    so the tree's own links resolve there)."""
    base_fd = _open_base(options)
    try:
        os.fchdir(base_fd)
    finally:
        os.close(base_fd)
    try:
        root_fd = os.open(ROOTFS, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise WorkerError(f"{options['base']} holds no {ROOTFS}/ directory: {e.strerror}") from None
    os.fchdir(root_fd)
    os.close(root_fd)
    os.chroot(".")
    release = read_os_release()
    return {
        "osId": release.get("ID", ""),
        "osVersionId": release.get("VERSION_ID", ""),
        "isLinux": looks_like_linux(),
    }


def move(options: dict[str, str | bool]) -> dict[str, Any]:
    """rename base/rootfs to to/rootfs: both directories checked, one file system only."""
    source_fd = _open_base(options)
    try:
        target_fd = _open_base({"base": options["to"], "identity": options["to-identity"]})
        try:
            os.rename(ROOTFS, ROOTFS, src_dir_fd=source_fd, dst_dir_fd=target_fd)
        except OSError as e:
            if e.errno == errno.EXDEV:
                return {"moved": False}  # another file system: the service copies instead
            raise WorkerError(f"cannot move {options['base']}/{ROOTFS}: {e.strerror}") from None
        finally:
            os.close(target_fd)
    finally:
        os.close(source_fd)
    return {"moved": True}


OPERATIONS = {"unpack": unpack, "pack": pack, "remove": remove, "inspect": inspect, "move": move}


def main(argv: list[str]) -> int:
    userns.die_with_parent()
    if not argv or argv[0] not in OPERATIONS:
        print(f"usage: worker {{{'|'.join(OPERATIONS)}}} ...", file=sys.stderr)
        return 2
    try:
        options = _options(argv[1:])
        userns.enter_user_namespace()
        result = {"ok": True, **OPERATIONS[argv[0]](options)}
        code = 0
    except WorkerError as e:
        result, code = {"ok": False, "error": str(e)}, 1
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return code
