"""The service's runtime driven through the VmBackend/Vm/Link seam by a fake backend, without
root: start, launch, terminate, idle stop, a VM that dies, unsupported networking modes and
a version 1 and a version 2 VM side by side.

The fake's guest answers as mini_init, init and a session leader do, in guest messages;
the descriptors that ride with them are real (pipes), so that a relay's lifetime socket
closing is what ends a launch, as it is for the real service.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lxss.api import errors
from lxss.linux.subids import IdMap, Mapping
from lxss.protocol import messages as m
from lxss.protocol.channel import ChannelClosed
from lxss.protocol.codec import Message
from lxss.protocol.framing import MessageHeader
from lxss.service import locations, registry
from lxss.service.launch import LaunchFds, LaunchRequest
from lxss.service.locks import DistributionLocks
from lxss.service.owner import Owner, OwnerIds
from lxss.service.registry import Distribution, Registry
from lxss.service.runtime import Runtime
from lxss.service.settings import Settings
from lxss.vm.backend import GuestRoot, Link, Vm, VmBackend
from lxss.vm.backends import Backends
from lxss.vm.spec import VmSpec

M = TypeVar("M", bound=Message)
QUICK = "[general]\ninstanceIdleTimeout=100\n[wsl2]\nvmIdleTimeout=100\n"
Answer = Callable[[Message, list[int]], tuple[Message, list[int]]]


class FakeLink:
    """A Link whose peer is a function: transactions are answered by *answer*, and what the
    guest sends on its own (ChildExit, CreateInstanceResult) waits in `inbox`."""

    def __init__(self, name: str, answer: Answer | None = None) -> None:
        self.name = name
        self.answer = answer
        self.inbox: asyncio.Queue[tuple[Message, list[int]] | None] = asyncio.Queue()
        self.sent: list[Message] = []
        self.closed = False

    @property
    def busy(self) -> bool:
        return False

    def peer_gone(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def _check(self) -> None:
        if self.closed:
            raise ChannelClosed(f"channel {self.name} is closed")

    async def send(self, message: Message, fds: Sequence[int] = ()) -> None:
        self._check()
        self.sent.append(message)
        if self.answer is not None:
            self.answer(message, [os.dup(fd) for fd in fds])  # the sender keeps its own

    async def reply(
        self, request: MessageHeader, message: Message, fds: Sequence[int] = ()
    ) -> None:
        await self.send(message, fds)

    async def transaction(
        self,
        request: Message,
        reply_type: type[M],
        fds: Sequence[int] = (),
        timeout: float | None = None,
    ) -> tuple[M, list[int]]:
        self._check()
        assert self.answer is not None
        self.sent.append(request)
        reply, reply_fds = self.answer(request, [os.dup(fd) for fd in fds])
        assert isinstance(reply, reply_type)
        return reply, reply_fds

    async def receive(
        self, expected: tuple[type[Message], ...], timeout: float | None = None
    ) -> tuple[Message, list[int]]:
        self._check()
        item = await asyncio.wait_for(
            self.inbox.get(), None if timeout == float("inf") else timeout
        )
        if item is None:
            self.closed = True
            raise ChannelClosed(f"channel {self.name}: the peer closed it")
        assert isinstance(item[0], expected)
        return item

    async def receive_with_header(
        self, expected: tuple[type[Message], ...], timeout: float | None = None
    ) -> tuple[MessageHeader, Message, list[int]]:
        message, fds = await self.receive(expected, timeout)
        return MessageHeader(message.TYPE, 0, 0, 0), message, fds


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _inode(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


class FakeRoot:
    def __init__(self, base_path: str) -> None:
        self.root_path = os.path.join(base_path, "rootfs")
        self.fds: list[int] = []
        self.closed = False

    async def serve_start(self, link: Link, timeout: float) -> m.MiniInitCreateInstanceResult:
        message, fds = await link.receive((m.MiniInitCreateInstanceResult,), timeout)
        _close(fds)
        assert isinstance(message, m.MiniInitCreateInstanceResult)
        return message

    def close(self) -> None:
        self.closed = True


class FakeVm:
    """mini_init, each distribution's init and their session leaders, as functions."""

    def __init__(self, spec: VmSpec) -> None:
        self.spec = spec
        self.control = FakeLink("mini_init", lambda message, fds: self._mini_init(message, fds))
        self.notify = FakeLink("notify")
        self.dns_servers: tuple[str, ...] | None = None
        self.stopped = False
        self.relays: list[list[int]] = []  # the descriptors each launched "relay" holds
        self._channels: dict[tuple[int, int], tuple[FakeLink, int]] = {}
        self._pids: dict[int, int] = {}  # id(init link) -> its init's pid
        self._next_pid = 100

    def running(self) -> bool:
        return not self.stopped

    def network_status(self) -> dict[str, object]:
        return {}

    def _channel(self, name: str, answer: Callable[[FakeLink], Answer]) -> tuple[FakeLink, int]:
        """A link, and a descriptor standing for its guest end (matched by inode)."""
        read_end, write_end = os.pipe()
        link = FakeLink(name)
        link.answer = answer(link)
        self._channels[_inode(read_end)] = (link, write_end)
        return link, read_end

    def _claim(self, fd: int) -> FakeLink:
        link, write_end = self._channels.pop(_inode(fd))
        os.close(write_end)
        os.close(fd)
        return link

    def open_channel(self, name: str) -> tuple[Link, int]:
        return self._channel(name, lambda link: lambda msg, fds: self._init(link, msg, fds))

    def adopt(self, fd: int, name: str) -> Link:
        return self._claim(fd)

    def open_root(self, base_path: str) -> GuestRoot:
        return FakeRoot(base_path)

    async def debug_shell(self, stdio: tuple[int, int, int], term: str | None) -> int:
        return 0

    async def stop(self, force: bool) -> None:
        self.stopped = True
        self.control.close()
        self.notify.close()
        for held in self.relays:
            _close(held)
        self.relays.clear()

    def die(self) -> None:
        """The VM ends by itself (QEMU killed, mini_init crashed): its notify channel closes."""
        self.stopped = True
        self.notify.inbox.put_nowait(None)

    # The guest ------------------------------------------------------------------------

    def _mini_init(self, message: Message, fds: list[int]) -> tuple[Message, list[int]]:
        assert isinstance(message, m.MiniInitLaunchInit), message
        init = self._claim(fds[0])
        _close(fds[1:])
        self._next_pid += 1
        self._pids[id(init)] = self._next_pid
        result = m.MiniInitCreateInstanceResult(result=0, failure_step=0, pid=self._next_pid,
                                                warnings=("started by the fake",))  # fmt: skip
        init.inbox.put_nowait((result, []))
        return m.ResultBool(value=True), []

    def _init(self, link: FakeLink, message: Message, fds: list[int]) -> tuple[Message, list[int]]:
        _close(fds)
        if isinstance(message, m.InitInitialize):
            return m.InitInitializeResponse(result=0, default_uid=0, systemd_enabled=False,
                                            pid_namespace=0, flavor="fake", version="1",
                                            warnings=()), []  # fmt: skip
        if isinstance(message, m.InitCreateSession):
            _, guest_end = self._channel("session", lambda _: self._session_leader)
            return m.InitCreateSessionResponse(result=0), [guest_end]
        if isinstance(message, m.InitTerminateInstance):
            # The distribution's init ends: mini_init says so on the notify channel.
            ended = m.MiniInitChildExit(child_pid=self._pids[id(link)], status=0)
            self.notify.inbox.put_nowait((ended, []))
            return m.ResultBool(value=True), []
        raise AssertionError(f"init got {message!r}")

    def _session_leader(self, message: Message, fds: list[int]) -> tuple[Message, list[int]]:
        assert isinstance(message, m.InitCreateProcess), message
        self.relays.append(fds)  # the relay holds them (its lifetime socket among them)
        return m.InitCreateProcessResponse(result=0, pid=7, message=""), []

    def end_relays(self) -> None:
        for held in self.relays:
            _close(held)
        self.relays.clear()


class FakeBackend:
    def __init__(self, version: int, modes: set[m.NetworkingMode] | None = None) -> None:
        self.version = version
        self.networking_modes = frozenset(modes or {m.NetworkingMode.MIRRORED})
        self.vms: list[FakeVm] = []

    async def start(self, spec: VmSpec, mapping: Mapping) -> Vm:
        vm = FakeVm(spec)
        self.vms.append(vm)
        return vm

    def recover(self) -> None:
        pass

    def close(self) -> None:
        pass


class FixedIds(OwnerIds):
    """The owner's ids without /etc/subuid (which the real one allocates in)."""

    def mapping(self) -> Mapping:
        return Mapping(IdMap(self.owner.uid, 100000, 65536), IdMap(self.owner.gid, 100000, 65536))

    def run_mapping(self, root_distributions_mapped: bool) -> Mapping:
        return self.mapping()


class World:
    def __init__(self, tmp: Path, *backends: FakeBackend, config: str = QUICK) -> None:
        (tmp / "lxss.conf").write_text(config)
        (tmp / "resolv.conf").write_text("nameserver 192.0.2.53\n")
        self.settings = Settings(state_dir=str(tmp / "state"), runtime_dir=str(tmp / "run"),
                                 machine_config=str(tmp / "lxss.conf"),
                                 host_resolv_conf=str(tmp / "resolv.conf"))  # fmt: skip
        owner = Owner(os.getuid(), os.getgid(), "owner", str(tmp))
        self.registry = Registry(str(tmp / "registry.sqlite"))
        self.backends = {backend.version: backend for backend in backends}
        self.runtime = Runtime(FixedIds(owner, self.settings), self.registry, DistributionLocks(),
                               self.settings, Backends(dict(self.backends)))  # fmt: skip
        self.tmp = tmp

    def distribution(self, name: str, version: int = 1) -> Distribution:
        base = self.tmp / name
        (base / "rootfs").mkdir(parents=True)
        identity = locations.identity_of(os.stat(base))
        row = registry.new_distribution(name, os.getuid(), str(base), True, version,
                                        registry.new_guid(), identity)  # fmt: skip
        self.registry.add_installed(row)
        found = self.registry.get(row.guid)
        assert found is not None
        return found

    async def launch(self, distribution: Distribution, *command: str) -> list[str]:
        request = LaunchRequest(filename=None, command_line=command or ("true",),
                                environment=(), cwd=None, host_cwd=None, username=None,
                                login_shell=False, rows=24, columns=80, console_id=1)  # fmt: skip
        control, peer = socket.socketpair()
        peer.close()
        streams = [os.open(os.devnull, os.O_RDWR) for _ in range(3)]
        fds = LaunchFds(control.detach(), None, *streams)
        return await self.runtime.create_process(distribution, request, fds)


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


async def _until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll *condition* on the loop (the timers under test run meanwhile)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_launch_starts_the_vm_and_the_distribution_then_idle_stops_both(tmp: Path) -> None:
    async def scenario() -> None:
        backend = FakeBackend(1)
        world = World(tmp, backend)
        debian = world.distribution("debian")
        warnings = await world.launch(debian, "make")
        assert warnings == ["started by the fake"]
        vm = backend.vms[0]
        assert world.runtime.is_running(debian.guid) and world.runtime.vm_running()
        assert len(vm.relays) == 1  # the relay holds the launch's descriptors
        # A second launch reuses the instance and its session leader.
        await world.launch(debian, "ls")
        assert len(backend.vms) == 1 and len(vm.relays) == 2
        # Busy while a relay lives: the idle timer (100 ms) must not stop it.
        await asyncio.sleep(0.3)
        assert world.runtime.is_running(debian.guid)
        vm.end_relays()  # every relay's lifetime socket closes
        await _until(lambda: not world.runtime.is_running(debian.guid), "the idle stop")
        launches = [x for x in vm.control.sent if isinstance(x, m.MiniInitLaunchInit)]
        assert len(launches) == 1
        await _until(lambda: vm.stopped, "the VM's idle stop")
        assert not world.runtime.vm_running()

    run(scenario())


def test_terminate_ends_the_distribution_through_childexit(tmp: Path) -> None:
    async def scenario() -> None:
        backend = FakeBackend(1)
        world = World(tmp, backend, config="")
        debian = world.distribution("debian")
        await world.launch(debian)
        await world.runtime.terminate(debian.guid, force=True)
        assert not world.runtime.is_running(debian.guid)
        assert backend.vms[0].running()  # the VM stays for its idle timeout (60 s here)
        await world.runtime.shutdown(force=False)
        assert backend.vms[0].stopped

    run(scenario())


def test_a_vm_that_dies_is_forgotten_and_the_next_launch_starts_another(tmp: Path) -> None:
    async def scenario() -> None:
        backend = FakeBackend(1)
        world = World(tmp, backend, config="")
        debian = world.distribution("debian")
        await world.launch(debian)
        backend.vms[0].die()
        await _until(lambda: not world.runtime.is_running(debian.guid), "the VM's end")
        await world.launch(debian)
        assert len(backend.vms) == 2 and backend.vms[1].running()
        await world.runtime.shutdown(force=True)

    run(scenario())


def test_an_unsupported_networking_mode_is_said_at_each_start(tmp: Path) -> None:
    async def scenario() -> None:
        backend = FakeBackend(1, {m.NetworkingMode.MIRRORED, m.NetworkingMode.NONE})
        world = World(tmp, backend, config="[wsl2]\nnetworkingMode=Bridged\n")
        debian = world.distribution("debian")
        warnings = await world.launch(debian)
        assert warnings[0] == "wsl2.networkingMode Bridged is not supported here, using None"
        assert backend.vms[0].spec.networking_mode is m.NetworkingMode.NONE
        assert await world.launch(debian) == []  # the running instance has said it
        await world.runtime.shutdown(force=True)

    run(scenario())


def test_a_version_without_a_backend_is_refused_and_two_versions_run_side_by_side(
    tmp: Path,
) -> None:
    async def scenario() -> None:
        one = FakeBackend(1)
        world = World(tmp, one, config="")
        two_row = world.distribution("two", version=2)
        with pytest.raises(errors.VersionNotSupported):
            await world.launch(two_row)
        assert one.vms == []  # nothing started for nothing

        tmp2 = tmp / "both"
        tmp2.mkdir()
        v1, v2 = FakeBackend(1), FakeBackend(2)
        both = World(tmp2, v1, v2, config="")
        await both.launch(both.distribution("first", 1))
        await both.launch(both.distribution("second", 2))
        assert len(v1.vms) == 1 and len(v2.vms) == 1
        assert both.runtime.backends() == ("1", "2")
        await both.runtime.shutdown(force=False)
        assert v1.vms[0].stopped and v2.vms[0].stopped

    run(scenario())


def test_the_fakes_keep_the_protocols() -> None:
    """mypy checks these assignments: the fakes are the seam's second implementation."""
    backend: VmBackend = FakeBackend(1)
    assert backend.version == 1
