"""What the service needs of a utility VM, whatever runs it.

Version 1 is a namespace VM (lxss.vm.namespace); a QEMU backend for version 2 will
implement the same two protocols, so the service never asks which one it has.
"""

from __future__ import annotations

from typing import Protocol

from lxss.linux.subids import Mapping
from lxss.protocol.messages import NetworkingMode
from lxss.vm.link import GuestLink
from lxss.vm.spec import VmSpec


class Vm(Protocol):
    """A running utility VM; its owner must `stop` it."""

    spec: VmSpec
    control: GuestLink  # mini_init's channel
    notify: GuestLink  # mini_init's notifications (ChildExit)

    def running(self) -> bool: ...

    async def debug_shell(self, stdio: tuple[int, int, int], term: str | None) -> int:
        """A shell in the VM outside every distribution (--debug-shell); its exit status."""
        ...

    async def stop(self, force: bool) -> None: ...


class VmBackend(Protocol):
    version: int
    networking_modes: frozenset[NetworkingMode]  # what `start` implements (lxss.vm.netmodes)

    async def start(self, spec: VmSpec, mapping: Mapping) -> Vm:
        """Boot a VM for *spec* as the owner *mapping* describes; raises on failure,
        leaving nothing behind."""
        ...
