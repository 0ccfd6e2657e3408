"""rtnetlink and sock_diag: the few kernel requests lxss's networking makes, typed.

What `ip link add … type veth peer … netns …`, `ip address add`, `ip route add`, `ip link
del` and `ss -ltn` ask the kernel, without running them: a request is packed here, sent on a
netlink socket of the caller's network namespace (the socket keeps the namespace it was made
in, whatever the thread does later), and the kernel's acknowledgement or error is read back.
Only IPv4 and IPv6 as lxss uses them; nothing is cached. Packing and parsing are pure
functions, so the unit tests read them without a kernel.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

NETLINK_ROUTE: Final = 0
NETLINK_SOCK_DIAG: Final = 4

NLM_F_REQUEST: Final = 0x1
NLM_F_ACK: Final = 0x4
NLM_F_DUMP: Final = 0x300
NLM_F_EXCL: Final = 0x200
NLM_F_CREATE: Final = 0x400
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3

RTM_NEWLINK: Final = 16
RTM_DELLINK: Final = 17
RTM_GETLINK: Final = 18
RTM_NEWADDR: Final = 20
RTM_GETADDR: Final = 22
RTM_NEWROUTE: Final = 24
RTM_GETROUTE: Final = 26
SOCK_DIAG_BY_FAMILY: Final = 20

IFLA_ADDRESS: Final = 1
IFLA_IFNAME: Final = 3
IFLA_MTU: Final = 4
IFLA_LINKINFO: Final = 18
IFLA_NET_NS_FD: Final = 28
IFLA_INFO_KIND: Final = 1
IFLA_INFO_DATA: Final = 2
VETH_INFO_PEER: Final = 1
IFA_ADDRESS: Final = 1
IFA_LOCAL: Final = 2
RTA_DST: Final = 1
RTA_OIF: Final = 4
RTA_GATEWAY: Final = 5
RTA_TABLE: Final = 15
NLA_F_NESTED: Final = 0x8000

IFF_UP: Final = 0x1
RT_TABLE_MAIN: Final = 254
RTPROT_STATIC: Final = 4
RT_SCOPE_UNIVERSE: Final = 0
RTN_UNICAST: Final = 1
TCP_LISTEN: Final = 10

_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_IFINFO = struct.Struct("=BxHiII")  # struct ifinfomsg
_IFADDR = struct.Struct("=BBBBI")  # struct ifaddrmsg
_RTMSG = struct.Struct("=BBBBBBBBI")  # struct rtmsg
_ATTR = struct.Struct("=HH")  # struct nlattr / rtattr
_DIAG_REQUEST = struct.Struct("=BBBxI48s")  # struct inet_diag_req_v2
_DIAG_MESSAGE = struct.Struct("=BBBB2s2s16s16sI8sIIIII")  # struct inet_diag_msg
TIMEOUT: Final = 5.0  # the kernel answers at once; a silent socket is a bug, not a wait

_sequence = itertools.count(1)


class NetlinkError(OSError):
    """The kernel refused a request; says which one (`what`) and why (the errno)."""

    def __init__(self, err: int, what: str) -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.what = what


# Packing ---------------------------------------------------------------------------


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute: header, payload, padding to four bytes."""
    raw = _ATTR.pack(_ATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def message(kind: int, flags: int, body: bytes, sequence: int = 0) -> bytes:
    return _HEADER.pack(_HEADER.size + len(body), kind, flags, sequence, 0) + body


def _name(name: str) -> bytes:
    encoded = name.encode()
    if not encoded or len(encoded) > 15 or b"/" in encoded or b"\0" in encoded:
        raise ValueError(f"not an interface name: {name!r}")
    return encoded + b"\0"


def veth_request(name: str, peer: str, peer_netns_fd: int | None) -> bytes:
    """RTM_NEWLINK body for a veth pair *name* ⇄ *peer*, the peer moved into the network
    namespace *peer_netns_fd* (None: it stays beside *name*)."""
    peer_attrs = [attr(IFLA_IFNAME, _name(peer))]
    if peer_netns_fd is not None:
        peer_attrs.append(attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd)))
    peer_info = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + b"".join(peer_attrs)
    info = nested(
        IFLA_LINKINFO,
        attr(IFLA_INFO_KIND, b"veth\0"),
        nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_info)),
    )
    return _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr(IFLA_IFNAME, _name(name)) + info


def link_set_request(index: int, up: bool | None = None, mtu: int | None = None) -> bytes:
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)
    if mtu is not None:
        body += attr(IFLA_MTU, struct.pack("=I", mtu))
    return body


def address_request(
    index: int, interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface
) -> bytes:
    family = socket.AF_INET if interface.version == 4 else socket.AF_INET6
    packed = interface.ip.packed
    body = _IFADDR.pack(family, interface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    return body + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)


def route_request(
    destination: ipaddress.IPv4Network | ipaddress.IPv6Network,
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    index: int,
) -> bytes:
    family = socket.AF_INET if destination.version == 4 else socket.AF_INET6
    body = _RTMSG.pack(
        family, destination.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC,
        RT_SCOPE_UNIVERSE if gateway is not None else 253, RTN_UNICAST, 0,
    )  # fmt: skip
    if destination.prefixlen:
        body += attr(RTA_DST, destination.network_address.packed)
    if gateway is not None:
        body += attr(RTA_GATEWAY, gateway.packed)
    return body + attr(RTA_OIF, struct.pack("=i", index))


def listeners_request(family: int) -> bytes:
    return _DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 1 << TCP_LISTEN, b"\0" * 48)


# Parsing ---------------------------------------------------------------------------


def split_messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sequence, body) of each message in one datagram from the kernel."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, sequence, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size or offset + length > len(data):
            raise ValueError("a truncated netlink message")
        yield kind, sequence, data[offset + _HEADER.size : offset + length]
        offset += _align(length)


def split_attrs(data: bytes) -> dict[int, bytes]:
    """The attributes of a message's tail by type (the last of a repeated type wins)."""
    attrs: dict[int, bytes] = {}
    offset = 0
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            break
        attrs[kind & ~NLA_F_NESTED] = data[offset + _ATTR.size : offset + length]
        offset += _align(length)
    return attrs


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    up: bool
    mtu: int
    kind: str  # "veth", "bridge"… ("" for a physical device or loopback)


@dataclass(frozen=True)
class Address:
    index: int
    interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Route:
    destination: ipaddress.IPv4Network | ipaddress.IPv6Network
    gateway: str  # "" when on-link
    index: int  # the outgoing interface, 0 if none
    table: int


@dataclass(frozen=True)
class Listener:
    family: int
    address: str
    port: int
    uid: int  # as the socket's network namespace's user namespace sees it
    inode: int


def parse_link(body: bytes) -> Link:
    _, _, index, flags, _ = _IFINFO.unpack_from(body)
    attrs = split_attrs(body[_IFINFO.size :])
    info = split_attrs(attrs.get(IFLA_LINKINFO, b""))
    return Link(
        index=index,
        name=attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace"),
        up=bool(flags & IFF_UP),
        mtu=struct.unpack("=I", attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0,
        kind=info.get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode(errors="replace"),
    )


def parse_address(body: bytes) -> Address:
    _, prefix, _, _, index = _IFADDR.unpack_from(body)
    attrs = split_attrs(body[_IFADDR.size :])
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS, b"")
    ip = ipaddress.ip_address(raw)
    return Address(index, ipaddress.ip_interface(f"{ip}/{prefix}"))


def parse_route(body: bytes) -> Route:
    family, dst_len, _, _, table, _, _, _, _ = _RTMSG.unpack_from(body)
    attrs = split_attrs(body[_RTMSG.size :])
    if RTA_TABLE in attrs:
        table = struct.unpack("=I", attrs[RTA_TABLE])[0]
    zero = b"\0" * (4 if family == socket.AF_INET else 16)
    destination = ipaddress.ip_network((ipaddress.ip_address(attrs.get(RTA_DST, zero)), dst_len))
    gateway = str(ipaddress.ip_address(attrs[RTA_GATEWAY])) if RTA_GATEWAY in attrs else ""
    index = struct.unpack("=i", attrs[RTA_OIF])[0] if RTA_OIF in attrs else 0
    return Route(destination, gateway, index, table)


def parse_listener(body: bytes) -> Listener:
    family, _, _, _, sport, _, src, _, _, _, _, _, _, uid, inode = _DIAG_MESSAGE.unpack_from(body)
    raw = src[:4] if family == socket.AF_INET else src
    return Listener(
        family, str(ipaddress.ip_address(raw)), struct.unpack("!H", sport)[0], uid, inode
    )


# Talking to the kernel -------------------------------------------------------------


class Netlink:
    """One netlink socket, of the network namespace the calling thread is in when it is
    made. Requests are answered in order; each waits at most TIMEOUT."""

    def __init__(self, protocol: int = NETLINK_ROUTE) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol
        )
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.sock.bind((0, 0))
            self.sock.settimeout(TIMEOUT)
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _replies(self, sequence: int, what: str) -> Iterator[tuple[int, bytes]]:
        while True:
            data = self.sock.recv(1 << 16)
            for kind, seq, body in split_messages(data):
                if seq != sequence:
                    continue  # a late answer to an earlier request that timed out
                if kind == NLMSG_ERROR:
                    code = struct.unpack_from("=i", body)[0]
                    if code:
                        raise NetlinkError(-code, what)
                    return
                if kind == NLMSG_DONE:
                    code = struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
                    if code:
                        raise NetlinkError(-code, what)
                    return
                yield kind, body

    def request(self, kind: int, flags: int, body: bytes, what: str) -> None:
        """Send one change and wait for the kernel's acknowledgement."""
        sequence = next(_sequence)
        self.sock.send(message(kind, flags | NLM_F_REQUEST | NLM_F_ACK, body, sequence))
        for _ in self._replies(sequence, what):
            pass

    def dump(self, kind: int, body: bytes, what: str) -> list[bytes]:
        sequence = next(_sequence)
        self.sock.send(message(kind, NLM_F_REQUEST | NLM_F_DUMP, body, sequence))
        return [reply for _, reply in self._replies(sequence, what)]

    # rtnetlink ---------------------------------------------------------------------

    def links(self) -> list[Link]:
        empty = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        return [parse_link(b) for b in self.dump(RTM_GETLINK, empty, "listing links")]

    def link(self, name: str) -> Link:
        for link in self.links():
            if link.name == name:
                return link
        raise NetlinkError(errno.ENODEV, f"finding {name}")

    def addresses(self) -> list[Address]:
        empty = _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        return [parse_address(b) for b in self.dump(RTM_GETADDR, empty, "listing addresses")]

    def routes(self) -> list[Route]:
        empty = _RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0)
        return [parse_route(b) for b in self.dump(RTM_GETROUTE, empty, "listing routes")]

    def add_veth(self, name: str, peer: str, peer_netns_fd: int | None) -> None:
        self.request(
            RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, veth_request(name, peer, peer_netns_fd),
            f"creating the veth pair {name}",
        )  # fmt: skip

    def delete_link(self, name: str) -> bool:
        """Remove *name* (a veth takes its peer with it); False if there was none."""
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr(IFLA_IFNAME, _name(name))
        try:
            self.request(RTM_DELLINK, 0, body, f"removing {name}")
        except NetlinkError as e:
            if e.errno == errno.ENODEV:
                return False
            raise
        return True

    def set_link(self, name: str, up: bool | None = None, mtu: int | None = None) -> None:
        index = self.link(name).index
        self.request(RTM_NEWLINK, 0, link_set_request(index, up, mtu), f"setting up {name}")

    def add_address(
        self, name: str, interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    ) -> None:
        index = self.link(name).index
        self.request(
            RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, address_request(index, interface),
            f"adding {interface} to {name}",
        )  # fmt: skip

    def add_route(
        self,
        destination: ipaddress.IPv4Network | ipaddress.IPv6Network,
        gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
        name: str,
    ) -> None:
        index = self.link(name).index
        via = f" via {gateway}" if gateway is not None else ""
        self.request(
            RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, route_request(destination, gateway, index),
            f"adding the route {destination}{via} on {name}",
        )  # fmt: skip

    # sock_diag ---------------------------------------------------------------------

    def tcp_listeners(self) -> list[Listener]:
        """Every listening TCP socket (IPv4 and IPv6) of this socket's namespace; needs a
        socket made with NETLINK_SOCK_DIAG."""
        found: list[Listener] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            bodies = self.dump(SOCK_DIAG_BY_FAMILY, listeners_request(family), "listing listeners")
            found += [parse_listener(b) for b in bodies]
        return found
