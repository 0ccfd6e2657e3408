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
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket

from lxss.config import lxssenv
from lxss.linux.children import exit_code
from lxss.protocol import messages as m
from lxss.protocol.channel import Channel, ChannelClosed
from lxss.protocol.framing import ProtocolError

REQUEST_TIMEOUT = 30.0  # lxss-host-exec sends its request as soon as it connects
REPLY_TIMEOUT = 10.0


def host_directory(cwd: str | None, host_mount: str | None) -> str:
    """Where the program starts: the host directory the caller's directory shows, if it
    is one, else the owner's home."""
    home = os.path.expanduser("~")
    if cwd is None:
        return home
    translated = lxssenv.to_host_path(cwd, host_mount)
    return translated if translated is not None and os.path.isdir(translated) else home


def host_environment(request: m.InteropCreateHostProcess, host_mount: str | None) -> dict[str, str]:
    caller: dict[str, str] = {}
    for entry in request.environment:
        name, sep, value = entry.partition("=")
        if sep and name:
            caller[name] = value
    return {**os.environ, **lxssenv.translate(caller, "to_host", host_mount)}


def _spawn(request: m.InteropCreateHostProcess, streams: list[int | None], cwd: str,
           environment: dict[str, str]) -> int:  # fmt: skip
    """Start the program (OSError if it cannot be: ENOENT for a command not found)."""
    actions: list[tuple[int, ...]] = []
    for target, fd in enumerate(streams):
        if fd is None:
            actions.append((os.POSIX_SPAWN_CLOSE, target))
        else:
            actions.append((os.POSIX_SPAWN_DUP2, fd, target))
    # posix_spawn has no chdir before glibc 2.29's extension, and Python none at all: the
    # serving process moves there itself (it serves this one program only).
    os.chdir(cwd)
    argv = list(request.command_line)
    return os.posix_spawnp(
        argv[0], argv, environment, file_actions=actions, setpgroup=0,
        setsigmask=(), setsigdef=_all_signals(),
    )  # fmt: skip


def _all_signals() -> list[int]:
    return [s for s in range(1, signal.NSIG) if s not in (signal.SIGKILL, signal.SIGSTOP)
            and s < signal.SIGRTMIN]  # fmt: skip


def serve(connection_fd: int, announcement: bytes) -> int:
    """Serve the connection *connection_fd* (ours now) that the relay's *announcement* (an
    InitInteropConnection frame) came with. Returns this process's exit code."""
    channel = Channel(socket.socket(fileno=connection_fd), "interop")
    try:
        _, announced = m.decode(announcement, 1)
        if not isinstance(announced, m.InitInteropConnection):
            return 1
        try:
            request, fds = channel.receive(m.InteropCreateHostProcess, timeout=REQUEST_TIMEOUT)
        except (ChannelClosed, ProtocolError, TimeoutError, OSError):
            return 1
        return _run(channel, request, fds, announced.host_mount)
    finally:
        channel.close()


def _run(channel: Channel, request: m.InteropCreateHostProcess, fds: list[int],
         host_mount: str | None) -> int:  # fmt: skip
    received = iter(fds)
    streams = [None if request.flags & bit else next(received) for bit in request.STREAMS]
    if not request.command_line:
        _answer(channel, errno.EINVAL, "no command to run")
        return 1
    program = request.command_line[0]
    try:
        pid = _spawn(request, streams, host_directory(request.cwd, host_mount),
                     host_environment(request, host_mount))  # fmt: skip
    except OSError as e:
        _answer(channel, e.errno or errno.EIO, f"{program}: {e.strerror or e} (on the host)")
        return 1
    finally:
        for fd in fds:
            os.close(fd)  # the program has them; ours would keep its pipes open
    _answer(channel, 0, None, pid)
    return _supervise(channel, pid)


def _answer(channel: Channel, result: int, reason: str | None, pid: int = 0) -> None:
    with contextlib.suppress(ChannelClosed, TimeoutError, OSError):
        channel.send(m.InitCreateProcessResponse(result=result, pid=pid, message=reason),
                     timeout=REPLY_TIMEOUT)  # fmt: skip


def _supervise(channel: Channel, pid: int) -> int:
    """Forward signals until the program ends, then send its exit status. A caller that
    goes away (killed) hangs the program up (SIGHUP to its group), as a closed terminal
    would; it is still waited for."""
    pidfd = os.pidfd_open(pid)
    caller = True
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(channel.fileno(), select.POLLIN)
        while True:
            events = dict(poller.poll())
            if pidfd in events:
                break
            if channel.fileno() not in events:
                continue
            try:
                message, extra = channel.receive(m.InitSignal, timeout=REPLY_TIMEOUT)
            except (ChannelClosed, ProtocolError, TimeoutError, OSError):
                poller.unregister(channel.fileno())
                caller = False
                _signal_group(pid, signal.SIGHUP)
                continue
            for fd in extra:
                os.close(fd)
            if 0 < message.signal < signal.NSIG:
                _signal_group(pid, message.signal)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(pidfd)
    code = exit_code(status)
    if caller:
        with contextlib.suppress(ChannelClosed, TimeoutError, OSError):
            channel.send(m.InitExitStatus(exit_code=code), timeout=REPLY_TIMEOUT)
    return 0


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
