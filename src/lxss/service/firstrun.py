"""The first-run setup of an installed distribution (WSL's OOBE).

WSL runs a distribution's `/etc/wsl-distribution.conf` `[oobe] command` once, as root, in
the console of the first interactive launch (a shell with no command given), before that
shell: exit status 0 ends the setup for good and makes `[oobe] defaultUid`, when set, the
default user; anything else prints that the command failed, ends the launch with status 1
and leaves the setup for the next launch. Other launches meanwhile wait for it.

lxss does the same from the service. The launch's CreateLxProcess is answered as soon as the
command runs, so the client relays its terminal to it (it may ask for a name); the command
has a control channel of the service's own, whose exit status the service reads. Then the
service reads the keys again (a first-run command may set defaultUid itself, as lxss's own
for Debian and Ubuntu does), records the outcome in the registry, and launches the shell on
the client's descriptors, its control channel included: to the client it is one session.

The command gets the installing user's host name and uid in LXSS_HOST_USER and
LXSS_HOST_UID, so it can make them an account of the same name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import socket
from typing import TYPE_CHECKING, Final, Protocol

from lxss.api import errors
from lxss.protocol import control
from lxss.protocol import messages as m
from lxss.text import one_line

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

    from lxss.service.instance import Instance
    from lxss.service.launch import LaunchFds, LaunchRequest
    from lxss.service.registry import Registry

log = logging.getLogger(__name__)


class Runtime(Protocol):
    """What a first-run setup needs of the user's runtime (lxss.service.runtime), which
    calls it: named here so that the two modules do not import each other."""

    uid: int
    registry: Registry
    first_runs: dict[str, asyncio.Event]

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None: ...

    def track_relay(self, instance: Instance, lifetime: socket.socket) -> None: ...

    def arm_idle_if_current(self, instance: Instance) -> None: ...

    async def launch_shell(
        self, instance: Instance, request: LaunchRequest, flags: int, fds: LaunchFds
    ) -> None: ...


# It waits for a person typing a user name: long, but not forever.
FIRST_RUN_TIMEOUT: Final = 6 * 3600.0
QUERY_TIMEOUT: Final = 30.0
FAILED_STATUS: Final = 1  # the launch's exit status when the command fails, as in WSL


async def query(instance: Instance) -> m.InitDistributionConf:
    reply, _ = await instance.link.transaction(
        m.InitQueryDistributionConf(), m.InitDistributionConf, timeout=QUERY_TIMEOUT
    )
    assert isinstance(reply, m.InitDistributionConf)
    return reply


async def start(runtime: Runtime, instance: Instance, request: LaunchRequest, flags: int,
                fds: LaunchFds) -> bool:  # fmt: skip
    """Start the setup if *instance*'s distribution has a command for it; False when it has
    none (the setup is then over, and the caller launches the shell itself).

    On True the setup owns copies of *fds* and finishes in the background: the shell, or
    the failure's message and status, reach the client on them.
    """
    registry = runtime.registry
    before = await query(instance)
    instance.warnings += list(before.warnings)
    if not before.oobe_command:
        registry.set_first_run(instance.distribution.guid, False)
        return False
    command = before.oobe_command
    log.info("uid %d: %s: running the first-run command", runtime.uid,
             instance.distribution.name)  # fmt: skip
    saved = fds.dup()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    lifetime, lifetime_remote = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        message = _command_message(runtime, instance, request, flags, command)
        ordered = message.order_fds(
            m.CreateProcessFds(
                control=theirs.fileno(), lifetime=lifetime_remote.fileno(),
                console=saved.console, stdin=saved.stdin, stdout=saved.stdout,
                stderr=saved.stderr,
            )
        )  # fmt: skip
        await instance.launch(message, ordered, request.console_id)
    except BaseException:
        for sock in (ours, lifetime):
            sock.close()
        saved.close()
        raise
    finally:
        theirs.close()
        lifetime_remote.close()
    runtime.track_relay(instance, lifetime)
    done = asyncio.Event()
    runtime.first_runs[instance.distribution.guid] = done
    instance.launching += 1  # busy until the shell has started (or the setup failed)
    runtime.spawn(_finish(runtime, instance, request, flags, saved, command, ours, done))
    return True


def _command_message(runtime: Runtime, instance: Instance, request: LaunchRequest, flags: int,
                     command: str) -> m.InitCreateProcess:  # fmt: skip
    owner = runtime.uid
    try:
        owner_name = pwd.getpwuid(owner).pw_name
    except KeyError:
        owner_name = ""
    return m.InitCreateProcess(
        rows=request.rows,
        columns=request.columns,
        flags=flags,
        shell_options=m.InitCreateProcess.KEEP_CONSOLE,  # the shell follows on it
        default_uid=0,
        filename="/bin/sh",
        cwd="/root",
        username="root",
        command_line=("sh", "-c", command),
        environment=(
            *request.environment,
            f"LXSS_HOST_USER={owner_name}",
            f"LXSS_HOST_UID={owner}",
            f"WSL_DISTRO_NAME={instance.distribution.name}",
        ),
        distribution_name=instance.distribution.name,
        host_cwd=None,
    )


async def _finish(runtime: Runtime, instance: Instance, request: LaunchRequest, flags: int,
                  saved: LaunchFds, command: str, ours: socket.socket,
                  done: asyncio.Event) -> None:  # fmt: skip
    distribution = instance.distribution
    try:
        code = await asyncio.wait_for(_exit_status(ours), FIRST_RUN_TIMEOUT)
        if code != 0:
            _tell_client(saved, FAILED_STATUS,
                         f"lxss: the first-run command of '{distribution.name}' ({command}) "
                         f"failed with exit status {code}; it runs again at the next launch "
                         "of its shell")  # fmt: skip
            return
        after = await query(instance)
        runtime.registry.set_first_run(distribution.guid, False)
        if after.oobe_default_uid >= 0:
            runtime.registry.configure(distribution.guid, after.oobe_default_uid, None)
            instance.default_uid = after.oobe_default_uid
        await runtime.launch_shell(instance, request, flags, saved)
    except Exception as e:
        reason = e.parameters.get("reason") if isinstance(e, errors.VarlinkError) else None
        log.warning("uid %d: %s: first run: %s", runtime.uid, distribution.name, e)
        _tell_client(saved, 255, f"lxss: '{distribution.name}': {reason or e}")
    finally:
        ours.close()
        saved.close()
        runtime.first_runs.pop(distribution.guid, None)
        done.set()
        instance.launching -= 1
        runtime.arm_idle_if_current(instance)


async def _exit_status(sock: socket.socket) -> int:
    """The exit code the relay reports on the control channel, acknowledged as the client
    does (the relay waits for the echo before it goes)."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    reader, writer = control.Reader(), control.Writer()
    while True:
        data = await loop.sock_recv(sock, 4096)
        if not data:
            raise errors.LaunchFailed(reason="the first-run command ended without a status")
        for code in reader.feed(data):
            await loop.sock_sendall(sock, writer.exit_status(code))
            return code


def _tell_client(saved: LaunchFds, status: int, line: str) -> None:
    """End the client's session: *line* on its terminal (or stderr), then *status* on its
    control channel, then the end of its console."""
    text = one_line(line)
    console, stderr, control_fd = saved.console, saved.stderr, saved.control
    with contextlib.suppress(OSError):
        if console is not None:
            os.write(console, (text + "\r\n").encode(errors="replace"))
        elif stderr is not None:
            os.write(stderr, (text + "\n").encode(errors="replace"))
    with contextlib.suppress(OSError):
        if control_fd is not None:
            os.write(control_fd, control.Writer().exit_status(status))
    if console is not None:
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(console)) as sock:
            sock.shutdown(socket.SHUT_WR)
