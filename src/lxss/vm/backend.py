"""What the service needs of a utility VM, whatever runs it: the VmBackend, Vm and Link
protocols (WSL's HCS and hvsocket, as seen from the service).

Version 1 is a namespace VM (lxss.vm.namespace); version 2 a QEMU VM. The service never
asks which one it has: it opens every guest channel through the VM (`Vm.open_channel`,
`Vm.adopt`), hands the guest a distribution's root as the VM describes it
(`Vm.open_root`), and catches only the errors named here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from lxss.errors import LxssError
from lxss.linux.subids import Mapping
from lxss.protocol.codec import Message
from lxss.protocol.framing import MessageHeader
from lxss.protocol.messages import MiniInitCreateInstanceResult, NetworkingMode
from lxss.vm.spec import VmSpec

M = TypeVar("M", bound=Message)


class VmStartError(LxssError):
    """A utility VM could not start; the message says why, for the user."""


class Link(Protocol):
    """The service's end of one guest channel (mini_init's, an init's, a session leader's),
    in the guest protocol's framing. Descriptors passed to `send` are lent (the caller
    keeps and closes them); descriptors received are the caller's to close. A guest that
    goes away or misbehaves raises ChannelClosed, ProtocolError or TimeoutError."""

    @property
    def name(self) -> str:
        """For messages and logs ("init:debian")."""
        ...

    @property
    def busy(self) -> bool:
        """A transaction is under way."""
        ...

    def peer_gone(self) -> bool:
        """The guest has closed its end (checked without waiting)."""
        ...

    def close(self) -> None:
        """Idempotent."""
        ...

    async def send(self, message: Message, fds: Sequence[int] = ()) -> None: ...

    async def reply(
        self, request: MessageHeader, message: Message, fds: Sequence[int] = ()
    ) -> None:
        """Answer a transaction the guest began (see `receive_with_header`)."""
        ...

    async def transaction(
        self,
        request: Message,
        reply_type: type[M],
        fds: Sequence[int] = (),
        timeout: float | None = None,
    ) -> tuple[M, list[int]]: ...

    async def receive(
        self, expected: tuple[type[Message], ...], timeout: float | None = None
    ) -> tuple[Message, list[int]]: ...

    async def receive_with_header(
        self, expected: tuple[type[Message], ...], timeout: float | None = None
    ) -> tuple[MessageHeader, Message, list[int]]: ...


class GuestRoot(Protocol):
    """A distribution's root file system as its VM hands it to the guest: the owner of
    whatever that takes (descriptors, a disk), until `close`."""

    @property
    def root_path(self) -> str:
        """MiniInitLaunchInit.root_path: a host path (version 1), a disk's identifier (2)."""
        ...

    @property
    def fds(self) -> list[int]:
        """Sent with LaunchInit after the channel's end; they stay the root's own."""
        ...

    async def serve_start(self, link: Link, timeout: float) -> MiniInitCreateInstanceResult:
        """Answer what the starting distribution asks about its root on *link* (version 1:
        MapIdentity, once) until its CreateInstanceResult, which is returned."""
        ...

    def close(self) -> None: ...


class Vm(Protocol):
    """A running utility VM; its owner must `stop` it."""

    @property
    def spec(self) -> VmSpec: ...

    @property
    def control(self) -> Link:
        """mini_init's channel."""
        ...

    @property
    def notify(self) -> Link:
        """mini_init's notifications (ChildExit); it closes when the VM ends."""
        ...

    def running(self) -> bool: ...

    @property
    def dns_servers(self) -> tuple[str, ...] | None:
        """The resolvers its distributions are given when the VM has its own (a NAT VM's
        DNS proxy on its gateway); None: the host's."""
        ...

    def network_status(self) -> dict[str, object]:
        """Its network and forwarded ports, for `lxss --status` ({} if nothing to say)."""
        ...

    def open_channel(self, name: str) -> tuple[Link, int]:
        """A new channel into the guest: our end, and a descriptor for the guest's end,
        to send with one message on `control` (or another link of this VM) and then
        close (the caller owns it)."""
        ...

    def adopt(self, fd: int, name: str) -> Link:
        """The service's end of a channel the guest opened (its descriptor came with a
        reply on a link of this VM); takes *fd*."""
        ...

    def open_root(self, base_path: str) -> GuestRoot:
        """The root of the distribution stored at *base_path*, as this VM gives it to
        the guest; OSError if it cannot be used."""
        ...

    async def debug_shell(self, stdio: tuple[int, int, int], term: str | None) -> int:
        """A shell in the VM outside every distribution (--debug-shell); its exit status."""
        ...

    async def stop(self, force: bool) -> None:
        """End the VM and everything in it; afterwards nothing of it remains on the host."""
        ...


class VmBackend(Protocol):
    """What runs the utility VMs of one version (lxss.vm.backends lists them)."""

    @property
    def version(self) -> int: ...

    @property
    def networking_modes(self) -> frozenset[NetworkingMode]:
        """What `start` implements; nothing else (lxss.vm.netmodes falls back)."""
        ...

    async def start(self, spec: VmSpec, mapping: Mapping) -> Vm:
        """Boot a VM for *spec* as the owner *mapping* describes; VmStartError, OSError or
        TimeoutError on failure, leaving nothing behind."""
        ...

    def recover(self) -> None:
        """At service start: remove what a previous service (killed, crashed) left."""
        ...

    def close(self) -> None:
        """At service stop, after every VM has stopped: remove what is left."""
        ...
