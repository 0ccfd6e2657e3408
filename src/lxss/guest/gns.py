"""gns: the utility VM's network agent (WSL's gns, doc gns.md).

mini_init runs it in a child for each job, in the VM's network namespace, as the VM's root
(who owns that namespace, so holds CAP_NET_ADMIN over it and nothing on the host):

- at EarlyConfig (`main`): in a network of the VM's own (modes None and Nat), loopback up and
  the namespace's own limits opened to the distributions (ports below 1024 and ICMP echo
  sockets for every user: the namespace is theirs, not the host's);
- at GnsInterfaceConfiguration (`configure`): the interface the service attached (eth0 of a
  NAT VM): MTU, addresses, up, the default route through the gateway. The result names the
  interface and the step that failed.

DNS is not set here: the service hands each distribution its resolvers (the gateway's DNS
proxy in Nat mode) in InitInitialize, and its init writes resolv.conf.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from lxss.linux import sysctl
from lxss.linux.netlink import Netlink
from lxss.linux.proctitle import set_title
from lxss.protocol import messages as m


def open_limits(gid_map: str) -> tuple[tuple[str, str], ...]:
    """The VM's namespace is the distributions' to use: binding port 80 and `ping` need no
    privilege over the host (whose namespace this is not). ICMP echo sockets for every
    group the VM's user namespace maps (the kernel refuses an unmapped bound)."""
    highest = max(
        (int(f[0]) + int(f[2]) - 1 for f in (line.split() for line in gid_map.splitlines())
         if len(f) == 3),
        default=0,
    )  # fmt: skip
    return (
        ("net.ipv4.ip_unprivileged_port_start", "0"),
        ("net.ipv4.ping_group_range", f"0 {highest}"),
    )


class GnsError(Exception):
    def __init__(self, number: int, text: str) -> None:
        super().__init__(text)
        self.number = number


@dataclass(frozen=True)
class InterfaceConfiguration:
    interface: str
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    mtu: int | None


def parse_configuration(text: str) -> InterfaceConfiguration:
    """The service's JSON, checked (it crosses a trust boundary like any message)."""
    try:
        data: Any = json.loads(text)
        interface = data["interface"]
        if not isinstance(interface, str) or not 0 < len(interface) < 16 or "/" in interface:
            raise ValueError(f"not an interface name: {interface!r}")
        addresses = tuple(ipaddress.ip_interface(a) for a in data.get("addresses", []))
        gateway = data.get("gateway")
        mtu = data.get("mtu")
        if mtu is not None and (not isinstance(mtu, int) or not 68 <= mtu <= 65535):
            raise ValueError(f"not an MTU: {mtu!r}")
        return InterfaceConfiguration(
            interface, addresses, ipaddress.ip_address(gateway) if gateway else None, mtu
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise GnsError(errno.EINVAL, f"the interface configuration: {e}") from e


def _step(configuration: InterfaceConfiguration, what: str, action: Any) -> None:
    try:
        action()
    except OSError as e:
        raise GnsError(e.errno or errno.EIO, f"{configuration.interface}: {what}: "
                       f"{e.strerror or e}") from e  # fmt: skip


def apply(configuration: InterfaceConfiguration) -> None:
    name = configuration.interface
    with Netlink() as nl:
        if configuration.mtu is not None:
            mtu = configuration.mtu
            _step(configuration, f"setting the MTU to {mtu}", lambda: nl.set_link(name, mtu=mtu))
        for address in configuration.addresses:
            _step(configuration, f"adding {address}",
                  functools.partial(nl.add_address, name, address))  # fmt: skip
        _step(configuration, "bringing it up", lambda: nl.set_link(name, up=True))
        gateway = configuration.gateway
        if gateway is not None:
            default = ipaddress.ip_network("0.0.0.0/0" if gateway.version == 4 else "::/0")
            _step(configuration, f"adding the default route via {gateway}",
                  lambda: nl.add_route(default, gateway, name))  # fmt: skip


def configure(text: str) -> tuple[int, str]:
    """Apply one GnsInterfaceConfiguration: (0, "") or (errno, what failed)."""
    set_title("lxss-gns")
    try:
        apply(parse_configuration(text))
    except GnsError as e:
        return e.number, str(e)
    return 0, ""


def main(networking_mode: m.NetworkingMode) -> int:
    """Run in a child of mini_init; the exit status is the result (0, or an errno)."""
    set_title("lxss-gns")
    if networking_mode.shares_host_network:
        return 0  # the host's own network: nothing of it is ours to set
    try:
        with Netlink() as nl:
            nl.set_link("lo", up=True)
        with open("/proc/self/gid_map", encoding="ascii") as f:
            limits = open_limits(f.read())
        for name, value in limits:
            sysctl.write(name, value)
    except OSError as e:
        return e.errno or 1
    return 0
