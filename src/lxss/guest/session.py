"""The session leader: one per client console (WSL's session leader; doc session-leader.md).

Forked by init for a CreateSession. It leads a session of its own and answers
CreateProcess requests one at a time: it decides what the program will be
(user, argv, environment, directory — see lxss.guest.process), refuses a
request that cannot run (an unknown user) before anything is forked, and
otherwise forks a relay for it and answers with the relay's pid. When the
service closes the channel, the session leader exits; relays run on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket

from lxss.guest import relay
from lxss.guest.process import Context, Plan, PlanError, Request, plan
from lxss.guest.users import UserDatabase
from lxss.linux.proctitle import set_title
from lxss.protocol import messages as m
from lxss.protocol.channel import Channel, ChannelClosed
from lxss.protocol.framing import ProtocolError

RELAY_START_TIMEOUT = 10.0


def _request(message: m.InitCreateProcess) -> Request:
    return Request(
        filename=message.filename,
        command_line=list(message.command_line),
        cwd=message.cwd,
        host_cwd=message.host_cwd,
        username=message.username,
        login_shell=bool(message.shell_options & m.InitCreateProcess.SHELL_LOGIN),
        default_uid=message.default_uid,
        environment=list(message.environment),
        distribution_name=message.distribution_name or "",
    )


def _fresh(context: Context) -> Context:
    """The context with the users as they are now (someone may have run useradd)."""
    return Context(
        users=UserDatabase(),
        conf_default_user=context.conf_default_user,
        hostname=context.hostname,
        host_mount=context.host_mount,
        umask=context.umask,
        lang=context.lang,
    )


def serve_one(channel: Channel, context: Context) -> None:
    header, message, fds = channel.receive_with_header(m.InitCreateProcess, timeout=float("inf"))
    try:
        named = message.name_fds(fds)
        launch = plan(_request(message), _fresh(context))
    except PlanError as e:
        for fd in fds:
            os.close(fd)
        channel.reply(header, m.InitCreateProcessResponse(result=e.code, pid=0, message=str(e)))
        return
    except ProtocolError:
        for fd in fds:
            os.close(fd)
        raise
    result, pid, text = _start_relay(channel, launch, message, named)
    for fd in fds:
        os.close(fd)
    channel.reply(header, m.InitCreateProcessResponse(result=result, pid=pid, message=text))


def _start_relay(
    channel: Channel, launch: Plan, message: m.InitCreateProcess, named: m.CreateProcessFds
) -> tuple[int, int, str | None]:
    """Fork a relay and wait until it has forked the program: (result, relay pid, message).

    The answer to CreateProcess waits for the program's fork, so "no more processes"
    (the VM's pids limit) reaches the client as a clear failure instead of a relay
    that vanishes. Exec failures come later, as the program's exit status (127).
    A relay that has not reported within RELAY_START_TIMEOUT is killed (the kernel reaps
    it: SIGCHLD is ignored here), so a failed launch leaves nothing running.
    """
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError as e:
        os.close(ready_r)
        os.close(ready_w)
        return e.errno or errno.EAGAIN, 0, f"cannot start a relay: {e.strerror}"
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            channel.close()
            code = relay.main(launch, message, named, ready_w)
        finally:
            os._exit(code)
    os.close(ready_w)
    try:
        ready, _, _ = select.select([ready_r], [], [], RELAY_START_TIMEOUT)
        report = os.read(ready_r, 512) if ready else b""
    finally:
        os.close(ready_r)
    if not ready:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return (
            errno.ETIMEDOUT,
            0,
            f"cannot start {launch.executable}: its relay did not report within "
            f"{RELAY_START_TIMEOUT:g} s",
        )
    if report == b"":
        return 0, pid, None
    text = report.decode(errors="replace")
    return errno.EAGAIN, pid, f"cannot start {launch.executable}: {text}"


def main(sock: socket.socket, context: Context) -> int:
    os.setsid()
    set_title("lxss-session")
    # Relays are reaped by the kernel: nobody waits for them here.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    channel = Channel(sock, "session")
    try:
        while True:
            serve_one(channel, context)
    except ChannelClosed:
        return 0
    finally:
        channel.close()
