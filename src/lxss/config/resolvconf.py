"""resolv.conf(5): reading the host's resolvers and writing a distribution's /etc/resolv.conf.

WSL counterpart: the resolv.conf that init generates from the DNS settings the host hands
it (`[network] generateResolvConf`). The service reads the host's file and picks resolvers
that work from where the distribution runs; the distribution's init renders the file. Pure:
nothing here opens a file but `read_host_resolvers`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

HOST_RESOLV_CONF: Final = "/etc/resolv.conf"
# systemd-resolved's list of its upstream servers, beside the 127.0.0.53 stub it puts in
# /etc/resolv.conf.
RESOLVED_UPSTREAMS: Final = "/run/systemd/resolve/resolv.conf"
MAX_NAMESERVERS: Final = 3  # MAXNS in glibc's resolv.h: later lines are ignored anyway

HEADER: Final = (
    "# lxss wrote this file when the distribution started, from the host's resolvers.\n"
    "# To keep a file of your own instead, put this in /etc/wsl.conf:\n"
    "# [network]\n"
    "# generateResolvConf = false\n"
)


@dataclass(frozen=True)
class Resolvers:
    nameservers: tuple[str, ...]
    search: tuple[str, ...]
    note: str = ""  # why the list is not the host's own, for the service's log


def parse_resolv_conf(text: str) -> Resolvers:
    """The `nameserver` and (last) `search`/`domain` lines; anything else is ignored."""
    servers: list[str] = []
    search: tuple[str, ...] = ()
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2:
            continue
        if words[0] == "nameserver" and _is_address(words[1]):
            servers.append(words[1])
        elif words[0] in ("search", "domain"):
            search = tuple(words[1:])
    return Resolvers(tuple(servers[:MAX_NAMESERVERS]), search)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])  # fe80::1%eth0 carries a zone
    except ValueError:
        return False
    return True


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback


def choose_resolvers(
    host: Resolvers, upstreams: Resolvers | None, shares_host_network: bool
) -> Resolvers:
    """The resolvers a distribution should use, given the host's.

    A loopback stub (systemd-resolved's 127.0.0.53, a dnsmasq on 127.0.0.1) answers from
    inside only when the distribution shares the host's network namespace, as version 1's
    mirrored networking does. In a namespace of its own, a stub is replaced by the servers it
    forwards to (systemd-resolved's upstream list), or dropped with a note when none is known.
    """
    if shares_host_network or not any(is_loopback(s) for s in host.nameservers):
        return host
    kept = tuple(s for s in host.nameservers if not is_loopback(s))
    extra = tuple(s for s in (upstreams.nameservers if upstreams else ()) if not is_loopback(s))
    servers = tuple(dict.fromkeys(kept + extra))[:MAX_NAMESERVERS]
    note = (
        "the host's loopback resolver is replaced by its upstream servers"
        if extra
        else "the host's only resolvers are on its loopback, which this network cannot reach"
    )
    return Resolvers(servers, host.search, note)


def render_resolv_conf(resolvers: Resolvers) -> str:
    lines = [HEADER]
    lines += [f"nameserver {server}\n" for server in resolvers.nameservers]
    if resolvers.search:
        lines.append(f"search {' '.join(resolvers.search)}\n")
    return "".join(lines)


def read_host_resolvers(path: str = HOST_RESOLV_CONF) -> Resolvers:
    """The host's resolvers from *path*; none when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_resolv_conf(f.read(1 << 16))
    except OSError:
        return Resolvers((), ())
