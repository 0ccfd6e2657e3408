"""The relay's interop socket: how a program inside reaches the host (WSL's interop server,
`/run/WSL/<pid>_interop`; technical documentation: interop.md).

Each relay of a distribution with interop enabled listens on `/run/lxss/interop/<its pid>`
and names it in its program's LXSS_INTEROP. lxss-host-exec (lxss/guest/native) connects
there; the relay checks who connected and hands the connection, as it is, to the session's
interop server on the host (the `lxss` client, or lxss-host once the client is gone) over
the control channel. Everything else — the request, the streams, signals, the exit status
— passes between lxss-host-exec and the host directly on that connection.

Only the program's own user (and the distribution's root) may connect: the socket is that
user's, mode 0600, in a directory no one else may list or write.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import struct
from typing import Final

INTEROP_DIR: Final = "/run/lxss/interop"  # lxss-guest.c checks it to tell "disabled"
TOOLS_DIR: Final = "/run/lxss/bin"  # the native tools, bound read-only by mini_init
HOST_MOUNT_FILE: Final = "/run/lxss/host-mount"  # for lxsspath: where the host's root is
TOOL_NAMES: Final = ("lxss-host-exec", "lxsspath")
HOST_PATH_DIR: Final = "/run/lxss/host-path"  # one directory of host-NAME shims per host PATH
SHIM_PREFIX: Final = "host-"
BACKLOG: Final = 16
_UCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid


class InteropServer:
    """One relay's listening socket, owned by the user its program runs as."""

    def __init__(self, path: str, uid: int, gid: int) -> None:
        self.path = path
        self.uid = uid
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a relay of an earlier start with the same pid
            # Made 0600 by the umask, so no one else can connect before the chown below.
            saved = os.umask(0o177)
            try:
                self.sock.bind(path)
            finally:
                os.umask(saved)
            os.chown(path, uid, gid, follow_symlinks=False)
            self.sock.listen(BACKLOG)
            self.sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> socket.socket | None:
        """The next connection from the program's user or root; None for none, or for one
        from anyone else (closed at once: the socket's mode should have kept them out)."""
        try:
            connection, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return None
        raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        _, uid, _ = _UCRED.unpack(raw)
        if uid not in (self.uid, 0):
            connection.close()
            return None
        connection.setblocking(True)
        return connection

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def socket_path(relay_pid: int) -> str:
    return f"{INTEROP_DIR}/{relay_pid}"


def prepare_distribution(enabled: bool, host_mount: str | None) -> list[str]:
    """At init's start: the interop directory (only when *enabled*), the host mount's
    path for lxsspath, and links to the tools in the tree's /usr/bin (as WSL links
    /bin/wslpath to /init). Warnings for the user, if any."""
    warnings: list[str] = []
    if not os.path.isdir(TOOLS_DIR):
        return ["lxss-host-exec and lxsspath are not installed on the host (run setup.sh)"]
    with contextlib.suppress(FileExistsError):
        os.mkdir("/run/lxss", 0o755)
    if enabled:
        with contextlib.suppress(FileExistsError):
            os.mkdir(INTEROP_DIR, 0o711)  # reachable by name, not listed
    with open(HOST_MOUNT_FILE, "w") as f:
        f.write(f"{host_mount}\n" if host_mount else "")
    for name in TOOL_NAMES:
        problem = _link_tool(name)
        if problem:
            warnings.append(problem)
    return warnings


def _link_tool(name: str) -> str | None:
    """/usr/bin/NAME -> /run/lxss/bin/NAME, unless the tree has a NAME of its own."""
    target = f"{TOOLS_DIR}/{name}"
    link = f"/usr/bin/{name}"
    if not os.path.isdir("/usr/bin"):
        return None
    try:
        if os.path.islink(link) and os.readlink(link) == target:
            return None
        if os.path.lexists(link):
            return f"/usr/bin/{name} is the distribution's own: lxss's is at {target}"
        os.symlink(target, link)
    except OSError as e:
        return f"cannot link {link} to {target}: {e.strerror}"
    return None


def host_path_shims(host_path: str | None, host_mount: str | None) -> str | None:
    """The directory of `host-NAME` shims for the host commands on *host_path* (the owner's
    PATH), made on first use, or None when there is nothing to make.

    Each shim is a link to lxss-host-exec, which runs NAME on the host when called so (as
    WSL appends the Windows PATH: [interop] appendWindowsPath). The prefix keeps them from
    shadowing any command of the distribution's, and the directory goes last on PATH. The
    commands are found through the host mount; the directory is made once per PATH and
    distribution start (a command installed on the host later needs a restart, or
    `lxss-host-exec NAME`).
    """
    if not host_path or not host_mount:
        return None
    key = hashlib.sha256(host_path.encode(errors="surrogateescape")).hexdigest()[:16]
    directory = f"{HOST_PATH_DIR}/{key}"
    if os.path.isdir(directory):
        return directory
    with contextlib.suppress(FileExistsError):
        os.mkdir(HOST_PATH_DIR, 0o755)
    building = f"{directory}.{os.getpid()}"
    os.mkdir(building, 0o755)
    try:
        made: set[str] = set()
        for entry in host_path.split(":"):
            if entry.startswith("/"):
                _add_shims(f"{host_mount.rstrip('/')}{entry}", building, made)
        os.rename(building, directory)
    except OSError:
        _remove(building)  # another relay made it meanwhile (or this one failed): use theirs
        if not os.path.isdir(directory):
            return None
    return directory


def _add_shims(host_directory: str, building: str, made: set[str]) -> None:
    """A shim in *building* for each program in *host_directory* not seen already (the
    first on PATH wins, as on the host)."""
    try:
        entries = list(os.scandir(host_directory))
    except OSError:
        return  # not there, not a directory, not readable: as the host's shell would skip it
    for entry in entries:
        if entry.name in made:
            continue
        try:
            if not entry.is_file() or not os.access(entry.path, os.X_OK):
                continue
        except OSError:
            continue
        made.add(entry.name)
        os.symlink(f"{TOOLS_DIR}/lxss-host-exec", f"{building}/{SHIM_PREFIX}{entry.name}")


def _remove(directory: str) -> None:
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            os.unlink(f"{directory}/{name}")
        os.rmdir(directory)
