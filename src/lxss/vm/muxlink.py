"""The host's end of a version 2 VM's channel: the stream multiplexer on QEMU's port.

QEMU gives the guest one virtio-serial port whose host side is a Unix socket; on it,
lxss.protocol.mux carries every channel between service and guest. This end runs the
multiplexer's loop (lxss.protocol.muxpump) in a thread of lxssd's, so that a channel
is an ordinary Unix stream socket here: `open(service)` returns one whose peer is the
guest's listener for that service (mini_init's control and notify channels), and any
descriptor the service sends over such a socket (a client's pipes, terminal socket,
control socket, the session leader's channel) reaches the guest as an ordinary
descriptor too. The service, the client and the guest's roles never learn which
version they talk to.

The thread never blocks on a channel's descriptor, only on poll; the service's event
loop only ever calls `open`, which queues the request and returns at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from typing import Final

from lxss.protocol.mux import Role
from lxss.protocol.muxpump import Pump

log = logging.getLogger(__name__)

VHOST_VSOCK: Final = "/dev/vhost-vsock"
STOP_TIMEOUT: Final = 10.0


def transport() -> str:
    """How the channel travels, for `lxss --status`. AF_VSOCK would need QEMU's
    vhost-vsock-pci, which needs /dev/vhost-vsock; lxss does not use vsock even where
    the device exists (not built), so this says which case the host is."""
    if os.path.exists(VHOST_VSOCK):
        return "virtio-serial, one port multiplexed (vsock is not used by lxss yet)"
    return f"virtio-serial, one port multiplexed (no {VHOST_VSOCK} on this host)"


class MuxLink:
    """The multiplexed stream to one guest: it takes *stream*, a descriptor of QEMU's
    port socket (or, in tests, of anything carrying bytes both ways).

    The owner must `close` it; the guest's ends then see the channel end."""

    def __init__(self, stream: int, name: str) -> None:
        self.name = name
        self.pump = Pump(stream, Role.HOST, name)
        self._thread = threading.Thread(target=self.pump.run, name=f"lxss-mux {name}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def __repr__(self) -> str:
        return f"<MuxLink {self.name} {self.pump!r}>"

    @property
    def failure(self) -> str | None:
        """Why the stream ended (the guest closed it, broke the protocol...), once it has."""
        return self.pump.failure if self.pump.finished.is_set() else None

    def open(self, service: int) -> socket.socket:
        """A channel to the guest's listener for *service*: the caller owns the socket.
        ConnectionError if the stream has ended."""
        return self.pump.open(service)

    async def wait_connected(self, timeout: float) -> None:
        """Until the guest's end has said HELLO. TimeoutError after *timeout* seconds;
        ConnectionError if the stream ended first."""
        if not await asyncio.to_thread(self.pump.connected.wait, timeout):
            raise TimeoutError(f"{self.name}: the guest's end did not answer in {timeout:g} s")
        if self.pump.finished.is_set():
            raise ConnectionError(f"{self.name}: {self.pump.failure}")

    async def close(self) -> None:
        """Stop the loop and close every channel's host end (idempotent)."""
        self.pump.stop()
        await asyncio.to_thread(self._thread.join, STOP_TIMEOUT)
        if self._thread.is_alive():  # the loop never blocks: this is a bug, say so
            log.error("%s: the multiplexer's thread did not stop", self.name)
