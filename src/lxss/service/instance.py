"""One running distribution (WSL's WslCoreInstance): its init's channel, the session leader
of each console, and the relays whose lifetimes keep it busy.

`start_instance` starts a distribution in a running utility VM: LaunchInit to mini_init
(with the distribution's channel and tree), the MapIdentity round trip, then Initialize
on the new init's channel. Each relay holds a "lifetime" socket whose other end the
service watches: a distribution is busy while any relay lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import Final

from lxss.api import errors
from lxss.protocol import messages as m
from lxss.protocol.channel import ChannelClosed
from lxss.protocol.framing import ProtocolError
from lxss.service import hostinfo
from lxss.service.lifetime import IdleTimer
from lxss.service.registry import Distribution
from lxss.vm.backend import Link, Vm

log = logging.getLogger(__name__)

USER_NOT_FOUND: Final = 67  # the session leader's result for an unknown user (WSL's EX_NOUSER)
MAX_LEADERS: Final = 64
# What a guest that misbehaves or goes away makes a channel raise.
GUEST_ERRORS: Final = (ChannelClosed, ProtocolError, TimeoutError, OSError)


class Instance:
    """One running distribution."""

    def __init__(self, distribution: Distribution, vm: Vm, link: Link, vm_pid: int) -> None:
        self.distribution = distribution
        self.vm = vm  # pids are per VM: a ChildExit from another VM is not about us
        self.link = link
        self.vm_pid = vm_pid
        self.default_uid = distribution.default_uid
        self.os_release = (distribution.os_id, distribution.os_version_id)
        self.leaders: dict[int, Link] = {}
        self.leader_lock = asyncio.Lock()
        self.relays: set[socket.socket] = set()
        self.idle = IdleTimer()
        self.warnings: list[str] = []
        self.ended = asyncio.Event()
        self.launching = 0  # CreateProcess calls under way: the instance is not idle
        self.stopping = False  # terminate was asked: new launches wait for the end

    @property
    def busy(self) -> bool:
        return bool(self.relays) or self.launching > 0

    def __repr__(self) -> str:
        return f"<Instance {self.distribution.name} pid={self.vm_pid} relays={len(self.relays)}>"

    def take_warnings(self) -> list[str]:
        warnings, self.warnings = self.warnings, []
        return warnings

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        self.idle.cancel()
        for relay in self.relays:
            loop.remove_reader(relay.fileno())
            relay.close()
        self.relays.clear()
        for leader in self.leaders.values():
            leader.close()
        self.leaders.clear()
        self.link.close()
        self.ended.set()

    # Relays --------------------------------------------------------------------

    def track_relay(self, lifetime: socket.socket, ended: Callable[[], None]) -> None:
        """The relay holds the other end of *lifetime*; its closing means the relay ended,
        and *ended* is called then."""
        loop = asyncio.get_running_loop()
        lifetime.setblocking(False)
        self.relays.add(lifetime)
        self.idle.cancel()

        def closed() -> None:
            with contextlib.suppress(BlockingIOError):
                if lifetime.recv(1):
                    return  # a relay never writes; ignore anything it might
            loop.remove_reader(lifetime.fileno())
            self.relays.discard(lifetime)
            lifetime.close()
            ended()

        loop.add_reader(lifetime.fileno(), closed)

    # Session leaders -------------------------------------------------------------

    async def leader(self, console_id: int) -> Link:
        """The session leader of *console_id*, created on first use (one at a time: two
        launches from one console must not make two)."""
        async with self.leader_lock:
            return await self._leader_locked(console_id)

    async def _leader_locked(self, console_id: int) -> Link:
        leader = self.leaders.get(console_id)
        if leader is not None and not leader.peer_gone():
            return leader
        if leader is not None:
            # Its session leader was killed (from inside, say): the console gets a new one.
            self.leaders.pop(console_id).close()
        idle = [key for key, link in self.leaders.items() if not link.busy]
        if len(self.leaders) >= MAX_LEADERS and idle:
            self.leaders.pop(idle[0]).close()  # the leader exits; its relays run on
        reply, fds = await self.link.transaction(
            m.InitCreateSession(console_id=console_id), m.InitCreateSessionResponse
        )
        if reply.result != 0 or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise errors.StartFailed(
                distribution=self.distribution.name,
                reason=f"no session leader: {os.strerror(reply.result or errno.EIO)}",
            )
        leader = self.vm.adopt(fds[0], f"session:{self.distribution.name}")
        self.leaders[console_id] = leader
        return leader

    async def launch(self, message: m.InitCreateProcess, ordered: list[int], console_id: int,
                     username: str | None = None) -> None:  # fmt: skip
        """Send one InitCreateProcess to the console's session leader; an error if no relay
        started."""
        try:
            leader = await self.leader(console_id)
            reply, _ = await leader.transaction(message, m.InitCreateProcessResponse, ordered)
        except GUEST_ERRORS as e:
            reason = str(e)
            if self.stopping or self.ended.is_set():
                reason = "it was stopped (lxss --terminate or --shutdown) as the command started"
            raise errors.StartFailed(distribution=self.distribution.name, reason=reason) from None
        if reply.result == USER_NOT_FOUND:
            raise errors.UserNotFound(user=username or "")
        if reply.result == errno.EINVAL:
            raise errors.InvalidArgument(parameter="commandLine", reason=reply.message or "")
        if reply.result != 0:
            raise errors.LaunchFailed(reason=reply.message or os.strerror(reply.result))


async def start_instance(
    vm: Vm, distribution: Distribution, resolv_conf: str, vm_warnings: list[str]
) -> Instance:
    """Start *distribution* in *vm*, its root as the VM describes it; StartFailed if it
    cannot. *vm_warnings* are said at every start in this VM."""
    name = distribution.name
    try:
        root = vm.open_root(distribution.base_path)
    except OSError as e:
        raise errors.StartFailed(distribution=name, reason=f"its tree: {e.strerror}") from None
    try:
        link, guest_end = vm.open_channel(f"init:{name}")
    except BaseException:
        root.close()
        raise
    try:
        launch = m.MiniInitLaunchInit(
            distribution_name=name,
            guid=distribution.guid,
            root_path=root.root_path,
            hostname=vm.spec.hostname,
            flags=0,
            default_uid=distribution.default_uid,
        )
        try:
            await vm.control.send(launch, [guest_end, *root.fds])
        finally:
            os.close(guest_end)
        timeout = vm.spec.distribution_start_timeout_s
        result = await root.serve_start(link, timeout)
        if result.result != 0:
            step = _failure_step(result.failure_step)
            detail = "; ".join(result.warnings) or os.strerror(result.result)
            raise errors.StartFailed(distribution=name, reason=f"{detail} (step: {step})")
        instance = Instance(distribution, vm, link, result.pid)
        instance.warnings = [*vm_warnings, *result.warnings]
        resolvers = hostinfo.host_resolvers(
            resolv_conf,
            vm.spec.networking_mode.shares_host_network,
            vm.dns_servers,
        )
        initialize = m.InitInitialize(
            hostname=vm.spec.hostname,
            domainname="",
            distribution_name=name,
            default_uid=distribution.default_uid,
            feature_flags=0,
            timezone=hostinfo.host_timezone(),
            dns_servers=resolvers.nameservers,
            dns_search=resolvers.search,
        )
        reply, _ = await link.transaction(initialize, m.InitInitializeResponse)
    except errors.VarlinkError:
        link.close()
        raise
    except GUEST_ERRORS as e:
        link.close()
        raise errors.StartFailed(distribution=name, reason=str(e)) from None
    finally:
        root.close()
    instance.default_uid = reply.default_uid
    instance.warnings += list(reply.warnings)
    instance.os_release = (reply.flavor or "", reply.version or "")
    log.info("uid %d: %s started (init pid %d in the VM)", distribution.owner_uid, name,
             result.pid)  # fmt: skip
    return instance


def _failure_step(number: int) -> str:
    """A start failure's step, for the user ("mount", "launch init"); any number will do."""
    try:
        return m.FailureStep(number).name.lower().replace("_", " ")
    except ValueError:
        return f"step {number}"
