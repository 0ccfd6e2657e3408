"""Serving one interop connection on the host: a distribution's program asked, through
lxss-host-exec, to run a host program (WSL: the Windows side of interop.md, CreateNtProcess).

Runs in a process of its own, forked from the `lxss` client or from lxss-host for this one
connection, as the owner and in the host's namespaces, detached from any terminal. It reads
the InteropCreateHostProcess, starts the program in its own process group with the caller's
very streams (pipes, files or the distribution's terminal: nothing is copied), answers, then
forwards the caller's signals to that group until the program ends, and sends its exit
status (128+N for death by signal N).

The program's directory is the host directory the caller's shows (`/mnt/host/X` is `X`),
else the owner's home; its environment is the serving process's (the owner's, as `lxss`
started), plus what LXSSENV sends to the host, paths translated.

Lean on purpose (lxss.protocol.hostexec, no asyncio, no catalogue): it is imported after
the fork, on every call.
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import sys

from lxss.config import lxssenv
from lxss.linux.children import exit_code
from lxss.protocol import hostexec

REQUEST_TIMEOUT = 30.0  # lxss-host-exec sends its request as soon as it connects
FD_SIZE = 4
_ANCILLARY = _socket.CMSG_SPACE(3 * FD_SIZE)
SIGKILL, SIGSTOP, SIGHUP = 9, 19, 1
_RT_MIN = 32  # glibc's real-time signals are left as they are


class _Connection:
    """The connection, blocking, with deadlines on reads."""

    def __init__(self, fd: int) -> None:
        self.sock = _socket.socket(fileno=fd)
        self.sequence = 0
        self.fds: list[int] = []

    def read(self, size: int, deadline: float | None) -> bytes:
        """Up to *size* bytes (b"" at the end), and any descriptors that came with them."""
        if deadline is not None:
            left = deadline - _now()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise TimeoutError("lxss-host-exec sent no request")
        data, ancillary, _, _ = self.sock.recvmsg(size, _ANCILLARY, _socket.MSG_CMSG_CLOEXEC)
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % FD_SIZE
                self.fds += [int.from_bytes(payload[i : i + FD_SIZE], sys.byteorder)
                             for i in range(0, usable, FD_SIZE)]  # fmt: skip
        return bytes(data)

    def read_exactly(self, size: int, deadline: float) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.read(size - len(data), deadline)
            if not chunk:
                raise ConnectionError("lxss-host-exec hung up")
            data += chunk
        return data

    def send(self, frame: bytes) -> None:
        self.sock.sendall(frame)

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


def _now() -> float:
    return float(os.times().elapsed)


def host_directory(cwd: str | None, host_mount: str | None) -> str:
    """Where the program starts: the host directory the caller's directory shows, if it
    is one, else the owner's home."""
    home = os.path.expanduser("~")
    if cwd is None:
        return home
    translated = lxssenv.to_host_path(cwd, host_mount)
    return translated if translated is not None and os.path.isdir(translated) else home


def host_environment(request: hostexec.Request, host_mount: str | None) -> dict[str, str]:
    caller: dict[str, str] = {}
    for entry in request.environment:
        name, sep, value = entry.partition("=")
        if sep and name:
            caller[name] = value
    return {**os.environ, **lxssenv.translate(caller, "to_host", host_mount)}


def _spawn(request: hostexec.Request, streams: list[int | None], cwd: str,
           environment: dict[str, str]) -> int:  # fmt: skip
    """Start the program (OSError if it cannot be: ENOENT for a command not found)."""
    actions: list[tuple[int, ...]] = []
    for target, fd in enumerate(streams):
        if fd is None:
            actions.append((os.POSIX_SPAWN_CLOSE, target))
        else:
            actions.append((os.POSIX_SPAWN_DUP2, fd, target))
    # posix_spawn has no chdir in Python: the serving process (this program's alone) moves.
    os.chdir(cwd)
    argv = request.command_line
    default = [s for s in range(1, _RT_MIN) if s not in (SIGKILL, SIGSTOP)]
    return os.posix_spawnp(argv[0], argv, environment, file_actions=actions, setpgroup=0,
                           setsigmask=(), setsigdef=default)  # fmt: skip


def serve(connection_fd: int, host_mount: str | None) -> int:
    """Serve the connection *connection_fd* (ours now); *host_mount* is where the caller's
    distribution shows the host's root. Returns this process's exit code."""
    connection = _Connection(connection_fd)
    try:
        deadline = _now() + REQUEST_TIMEOUT
        try:
            header = connection.read_exactly(hostexec.HEADER_SIZE, deadline)
            size = hostexec.frame_size(header)
            frame = header + connection.read_exactly(size - len(header), deadline)
            request = hostexec.decode_request(frame)
        except (hostexec.HostExecError, OSError) as e:
            _answer(connection, errno.EPROTO, f"a malformed request ({e})")
            return 1
        if len(connection.fds) != request.fd_count() or not request.command_line:
            _answer(connection, errno.EPROTO, "a malformed request (its descriptors)")
            return 1
        return _run(connection, request, host_mount)
    finally:
        for fd in connection.fds:
            os.close(fd)
        connection.sock.close()


def _run(connection: _Connection, request: hostexec.Request, host_mount: str | None) -> int:
    received = iter(connection.fds)
    closed = hostexec.STREAM_CLOSED_FLAGS
    streams = [None if request.flags & bit else next(received) for bit in closed]
    program = request.command_line[0]
    try:
        pid = _spawn(request, streams, host_directory(request.cwd, host_mount),
                     host_environment(request, host_mount))  # fmt: skip
    except OSError as e:
        _answer(connection, e.errno or errno.EIO, f"{program}: {e.strerror or e} (on the host)")
        return 1
    finally:
        for fd in connection.fds:
            os.close(fd)  # the program has them; ours would keep its pipes open
        connection.fds = []
    _answer(connection, 0, None, pid)
    return _supervise(connection, pid)


def _answer(connection: _Connection, result: int, reason: str | None, pid: int = 0) -> None:
    try:
        connection.send(hostexec.response(connection.next_sequence(), result, pid, reason))
    except OSError:
        pass  # the caller is gone: nothing to tell


def _supervise(connection: _Connection, pid: int) -> int:
    """Forward signals until the program ends, then send its exit status. A caller that
    goes away (killed) hangs the program up (SIGHUP to its group), as a closed terminal
    would; it is still waited for."""
    pidfd = os.pidfd_open(pid)
    caller = True
    pending = bytearray()
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(connection.sock.fileno(), select.POLLIN)
        while True:
            events = dict(poller.poll())
            if pidfd in events:
                break
            if connection.sock.fileno() not in events:
                continue
            try:
                data = connection.read(4096, None)
                pending += data
                numbers = hostexec.signals(pending) if data else []
            except (hostexec.HostExecError, OSError):
                data = b""
            if not data:
                poller.unregister(connection.sock.fileno())
                caller = False
                _signal_group(pid, SIGHUP)
                continue
            for signum in numbers:
                if 0 < signum < 65:
                    _signal_group(pid, signum)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(pidfd)
    if caller:
        try:
            connection.send(hostexec.exit_status(connection.next_sequence(), exit_code(status)))
        except OSError:
            pass  # it went just now
    return 0


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # it has ended (its group with it)
