"""The session leader: one per client console (WSL's session leader; doc session-leader.md).

Forked by init for a CreateSession. It leads a session of its own and answers
CreateProcess requests one at a time, each with a relay: the relay decides what
the program will be (user, argv, environment, directory — see
lxss.guest.process), refuses a request that cannot run (an unknown user) before
anything is forked, and otherwise forks the program and stays its parent. When
the service closes the channel, the session leader exits; relays run on.

The relay is forked ahead of its request: a *spare* waits on a channel of its
own, and the next CreateProcess is handed to it. Forking an interpreter and
starting the child costs about 2 ms, which the spare pays after the previous
launch was answered, not on the path of the next one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket

from lxss.guest import relay
from lxss.guest.process import Context, PlanError, Request, plan
from lxss.guest.users import UserDatabase
from lxss.linux.fork import fork_with_socket
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
        interop=context.interop,
        append_host_path=context.append_host_path,
    )


class Spare:
    """A relay forked ahead of its request (the leader's end of it)."""

    def __init__(self, link: Channel, pid: int) -> None:
        self.link = link
        self.pid = pid

    def kill(self) -> None:
        """Stop it, whatever it is doing (the kernel reaps it: SIGCHLD is ignored here)."""
        self.link.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


def fork_spare(channel: Channel, context: Context) -> Spare:
    """Fork a relay that waits for its request. OSError (EAGAIN at the VM's pids limit)
    goes to the caller."""

    def spare(theirs: socket.socket) -> int:
        channel.close()
        return serve_as_relay(Channel(theirs, "spare"), context)

    pid, ours = fork_with_socket(spare)
    return Spare(Channel(ours, "spare"), pid)


def serve_as_relay(link: Channel, context: Context) -> int:
    """In the spare: wait for a CreateProcess, answer it as the session leader would, and
    become the program's relay. A session that ends first just ends the spare."""
    relay.become_relay()
    try:
        message, fds = link.receive(m.InitCreateProcess, timeout=float("inf"))
    except (ChannelClosed, ProtocolError, OSError):
        return 0
    try:
        named = message.name_fds(fds)  # checked by the leader already
        launch = plan(_request(message), _fresh(context))
    except (PlanError, ProtocolError) as e:
        for fd in fds:
            os.close(fd)
        code = e.code if isinstance(e, PlanError) else errno.EPROTO
        link.send(m.InitCreateProcessResponse(result=code, pid=0, message=str(e)))
        return 0

    def answer(error: OSError | None) -> None:
        """The answer waits for the program's fork, so "no more processes" (the VM's pids
        limit) reaches the client as a clear failure instead of a relay that vanishes.
        Exec failures come later, as the program's exit status (127)."""
        if error is None:
            reply = m.InitCreateProcessResponse(result=0, pid=os.getpid(), message=None)
        else:
            text = f"cannot start {launch.executable}: {error.strerror or error}"
            reply = m.InitCreateProcessResponse(
                result=error.errno or errno.EAGAIN, pid=os.getpid(), message=text
            )
        with contextlib.suppress(ChannelClosed, OSError, TimeoutError):
            link.send(reply)
        link.close()

    return relay.main(launch, message, named, answer)


def hand_over(spare: Spare, message: m.InitCreateProcess) -> m.InitCreateProcessResponse:
    """Wait for the answer of *spare*, which has its request (and is then spent).

    A spare that has not answered within RELAY_START_TIMEOUT is killed, so a failed
    launch leaves nothing running.
    """
    what = message.filename or "the command"
    try:
        reply, _ = spare.link.receive(m.InitCreateProcessResponse, timeout=RELAY_START_TIMEOUT)
    except TimeoutError:
        spare.kill()
        return m.InitCreateProcessResponse(
            result=errno.ETIMEDOUT,
            pid=0,
            message=f"cannot start {what}: its relay did not report within "
            f"{RELAY_START_TIMEOUT:g} s",
        )
    except (ChannelClosed, ProtocolError, OSError) as e:
        spare.kill()
        return m.InitCreateProcessResponse(
            result=errno.EIO, pid=0, message=f"cannot start {what}: its relay failed ({e})"
        )
    spare.link.close()
    return reply


def serve_one(channel: Channel, context: Context, spare: Spare | None) -> None:
    """Answer one CreateProcess with *spare*, or with one forked now if there is none (it
    could not be forked before) or it died before it got its request."""
    header, message, fds = channel.receive_with_header(m.InitCreateProcess, timeout=float("inf"))
    reply = None
    try:
        message.name_fds(fds)  # a malformed request ends this session, as any bad frame does
        for _ in range(2):
            if spare is None:
                spare = fork_spare(channel, context)
            try:
                spare.link.send(message, fds)
                break
            except ChannelClosed:
                spare.kill()  # it never saw the request: another one can take it
                spare = None
    except OSError as e:
        reply = m.InitCreateProcessResponse(
            result=e.errno or errno.EAGAIN, pid=0, message=f"cannot start a relay: {e.strerror}"
        )
    finally:
        for fd in fds:
            os.close(fd)
    if reply is None:
        if spare is None:
            reply = m.InitCreateProcessResponse(
                result=errno.EIO, pid=0, message="cannot start a relay: it exits at once"
            )
        else:
            reply = hand_over(spare, message)
    channel.reply(header, reply)


def main(sock: socket.socket, context: Context) -> int:
    os.setsid()
    set_title("lxss-session")
    # Relays are reaped by the kernel: nobody waits for them here.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    channel = Channel(sock, "session")
    spare: Spare | None = None
    try:
        while True:
            with contextlib.suppress(OSError):  # none now (EAGAIN): serve_one tries again
                spare = fork_spare(channel, context)
            serve_one(channel, context, spare)
            spare = None
    except ChannelClosed:
        return 0
    finally:
        if spare is not None:
            spare.link.close()  # it sees the end of its channel and exits
        channel.close()
