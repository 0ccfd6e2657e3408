"""A DNS proxy on a NAT VM's gateway address (WSL's dnsTunneling, on the host's side).

Distributions in a NAT VM get the gateway as their only nameserver. The proxy, in the
service, listens there on port 53 (UDP and TCP) and passes each query, unchanged, to the
host's own resolvers as the host's resolv.conf names them now (re-read when it changes), so
a host that resolves through a loopback stub (systemd-resolved's 127.0.0.53, a dnsmasq)
serves its VMs too. Answers go back unchanged; a query no resolver answers in time gets none
(the client's resolver retries, as with any lost datagram).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Final, cast

from lxss.config.resolvconf import read_host_resolvers

log = logging.getLogger(__name__)

PORT: Final = 53
QUERY_TIMEOUT: Final = 5.0  # per upstream; glibc's own default is 5 s per server
MAX_QUERY: Final = 65535
MAX_PENDING: Final = 256  # queries in flight at once; more are dropped (a flood, not a user)
MAX_TCP_CLIENTS: Final = 64


class Upstreams:
    """The host's resolvers, from its resolv.conf, read again whenever the file changes."""

    def __init__(self, resolv_conf: str) -> None:
        self.path = resolv_conf
        self._stamp: tuple[int, int] | None = None
        self._servers: tuple[str, ...] = ()

    def servers(self) -> tuple[str, ...]:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_ino)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            self._servers = read_host_resolvers(self.path).nameservers
        return self._servers


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


async def _ask_udp(server: str, query: bytes) -> bytes | None:
    loop = asyncio.get_running_loop()
    with socket.socket(_family(server), socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.setblocking(False)
        await loop.sock_connect(s, (server.split("%", 1)[0], PORT))
        await loop.sock_sendall(s, query)
        try:
            async with asyncio.timeout(QUERY_TIMEOUT):
                while True:
                    answer = await loop.sock_recv(s, MAX_QUERY)
                    if answer[:2] == query[:2]:  # the transaction id: not a stray datagram
                        return answer
        except (TimeoutError, OSError):
            return None


async def _ask_tcp(server: str, query: bytes) -> bytes | None:
    try:
        async with asyncio.timeout(QUERY_TIMEOUT):
            reader, writer = await asyncio.open_connection(server.split("%", 1)[0], PORT)
            try:
                writer.write(struct.pack("!H", len(query)) + query)
                await writer.drain()
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                return await reader.readexactly(length)
            finally:
                writer.close()
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return None


Asker = Callable[[str, bytes], Awaitable[bytes | None]]


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, proxy: DnsProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(self.proxy.pending) >= MAX_PENDING or len(data) < 12:
            return
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self.proxy.pending.add(task)
        task.add_done_callback(self.proxy.pending.discard)

    async def _answer(self, query: bytes, addr: tuple[str, int]) -> None:
        answer = await self.proxy.resolve(query, _ask_udp)
        if answer is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(answer, addr)


class DnsProxy:
    """One NAT VM's proxy, listening on *address*:53 until `close`."""

    def __init__(self, address: str, resolv_conf: str) -> None:
        self.address = address
        self.upstreams = Upstreams(resolv_conf)
        self.pending: set[asyncio.Task[None]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_clients = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=(self.address, PORT)
        )
        self._udp = transport
        try:
            self._tcp = await asyncio.start_server(self._serve_tcp, self.address, PORT)
        except BaseException:
            transport.close()
            raise

    async def resolve(self, query: bytes, ask: Asker) -> bytes | None:
        for server in self.upstreams.servers():
            answer = await ask(server, query)
            if answer is not None:
                return answer
        return None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_clients >= MAX_TCP_CLIENTS:
            writer.close()
            return
        self._tcp_clients += 1
        try:
            async with asyncio.timeout(QUERY_TIMEOUT * 4):
                while True:
                    try:
                        (length,) = struct.unpack("!H", await reader.readexactly(2))
                    except asyncio.IncompleteReadError:
                        return
                    query = await reader.readexactly(length)
                    answer = await self.resolve(query, _ask_tcp)
                    if answer is None:
                        return
                    writer.write(struct.pack("!H", len(answer)) + answer)
                    await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tcp_clients -= 1
            writer.close()

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 5.0)
        for task in list(self.pending):
            task.cancel()
