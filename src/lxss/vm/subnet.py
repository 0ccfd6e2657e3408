"""Choosing a NAT utility VM's private network (pure).

Each user's NAT VM gets a /24 of its own out of 172.16.0.0/12 (WSL picks its NAT network
from the same private block). The first candidate comes from a hash of the owner's uid, so a
user's VM keeps its addresses from one start to the next; a candidate that overlaps any
network the host already reaches (a route, an address: a VPN's, a container bridge's,
another user's VM) is passed over for the next one.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

POOL: Final = ipaddress.IPv4Network("172.16.0.0/12")
PREFIX: Final = 24


class NoFreeSubnet(OSError):
    """Every candidate overlaps a network of the host's (the VM's start fails with this)."""

    def __init__(self, text: str) -> None:
        super().__init__(errno.EADDRNOTAVAIL, text)


@dataclass(frozen=True)
class NatAddresses:
    network: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Interface  # the host's end of the veth (and the DNS proxy)
    guest: ipaddress.IPv4Interface  # the VM's eth0


def addresses_in(network: ipaddress.IPv4Network) -> NatAddresses:
    first = network.network_address
    return NatAddresses(
        network,
        ipaddress.IPv4Interface(f"{first + 1}/{network.prefixlen}"),
        ipaddress.IPv4Interface(f"{first + 2}/{network.prefixlen}"),
    )


def _start(uid: int, count: int) -> int:
    digest = hashlib.sha256(f"lxss-nat:{uid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def choose(uid: int, in_use: Iterable[ipaddress.IPv4Network]) -> NatAddresses:
    """The first /24 of the user's sequence that overlaps nothing in *in_use* (the
    host's route destinations and address networks; default routes do not count)."""
    taken = [n for n in in_use if n.prefixlen > 0]
    candidates = list(POOL.subnets(new_prefix=PREFIX))
    start = _start(uid, len(candidates))
    for step in range(len(candidates)):
        candidate = candidates[(start + step) % len(candidates)]
        if not any(candidate.overlaps(n) for n in taken):
            return addresses_in(candidate)
    raise NoFreeSubnet(f"every /{PREFIX} of {POOL} is in use on this host")
