"""The host's side of a NAT utility VM: its link, gateway address, masquerading and forwarding.

What WSL's NAT network (an HNS endpoint behind a Windows NAT) is for a WSL 2 VM, this is on a
Linux host, for either backend:

- a link to the VM: a veth pair whose far end ("eth0") is moved into the namespace VM's
  network namespace (`start_veth`); version 2 makes a tap device of its own and hands its
  name to `start_on_link`, which does everything else the same way;
- the gateway address (the first of the VM's /24, see lxss.vm.subnet) on the host's end;
- masquerading of the VM's network, in an nftables table of the VM's own (iptables-nft's
  one rule where nft is absent);
- IPv4 forwarding for the VM's link only (net.ipv4.conf.LINK.forwarding: it goes with the
  link), plus, while any NAT VM runs, for the host's other interfaces so that replies come
  back, confined by an nftables guard to replies headed to a VM (`uplinks`). The
  machine's own net.ipv4.ip_forward is never written.

Every change is recorded before it is made, in a state file under the service's runtime
directory, so that `recover` undoes what a killed service left (lxssd calls it at start);
`stop` undoes it all when the VM stops.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from lxss.linux import nft, sysctl
from lxss.linux.netlink import Netlink
from lxss.vm import subnet

log = logging.getLogger(__name__)

LINK_PREFIX: Final = "lxss"  # host-side links: lxss + 8 hex digits
GUEST_LINK: Final = "eth0"
TABLE_FAMILY: Final = "ip"
GUARD_TABLE: Final = "lxss-uplinks"
# Machine-wide, not per service: two services (test runs) may share the host's interfaces.
UPLINKS_DIR: Final = "/run/lxss-net"
MTU: Final = 1500


class NatError(OSError):
    pass


@dataclass(frozen=True)
class NatNetwork:
    """One NAT VM's network, as the host sees it."""

    tag: str  # names its link and table
    link: str  # the host's end: a veth (version 1) or a tap (version 2)
    addresses: subnet.NatAddresses
    state_file: str

    @property
    def table(self) -> str:
        return f"lxss-{self.tag}"

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "link": self.link, "network": str(self.addresses.network)}


def tag_for(state_dir: str, owner_uid: int) -> str:
    """Stable per service and user, so that a restarted service finds its own leftovers
    and two services on one host never share a name."""
    return hashlib.sha256(f"{os.path.abspath(state_dir)}:{owner_uid}".encode()).hexdigest()[:8]


def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host reaches: route destinations and address networks."""
    with Netlink() as nl:
        routes = [r.destination for r in nl.routes() if r.destination.version == 4]
        networks = [a.interface.network for a in nl.addresses() if a.interface.version == 4]
    return [n for n in routes + networks if isinstance(n, ipaddress.IPv4Network)]


def plan(state_dir: str, owner_uid: int, link_suffix: str = "") -> NatNetwork:
    """The names and addresses a NAT VM of *owner_uid* gets now (nothing is changed)."""
    tag = tag_for(state_dir, owner_uid)
    return NatNetwork(
        tag=tag,
        link=f"{LINK_PREFIX}{tag}{link_suffix}",
        addresses=subnet.choose(owner_uid, host_networks()),
        state_file=os.path.join(state_dir, f"{tag}.json"),
    )


def masquerade_script(network: NatNetwork) -> str:
    return (
        f"table {TABLE_FAMILY} {network.table} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    ip saddr {network.addresses.network} oifname != "{network.link}" masquerade\n'
        "  }\n"
        "}\n"
    )


def guard_script(uplinks: list[str]) -> str:
    """Forwarding was turned on for *uplinks* so that replies reach the VMs: let nothing
    else through them."""
    names = ", ".join(f'"{name}"' for name in sorted(uplinks))
    return (
        f"table {TABLE_FAMILY} {GUARD_TABLE} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy accept;\n"
        f'    iifname {{ {names} }} oifname != "{LINK_PREFIX}*" drop\n'
        f"    iifname {{ {names} }} ct state != {{ established, related }} drop\n"
        "  }\n"
        "}\n"
    )


def _masquerade_rule(network: NatNetwork) -> nft.IptablesRule:
    spec = ("-s", str(network.addresses.network), "!", "-o", network.link, "-j", "MASQUERADE")
    return nft.IptablesRule("nat", "POSTROUTING", spec, network.table)


def _guard_rules(uplink: str) -> list[nft.IptablesRule]:
    return [
        nft.IptablesRule("filter", "FORWARD", ("-i", uplink, "!", "-o", f"{LINK_PREFIX}+",
                                               "-j", "DROP"), GUARD_TABLE),
        nft.IptablesRule("filter", "FORWARD", ("-i", uplink, "-m", "conntrack", "!",
                                               "--ctstate", "ESTABLISHED,RELATED", "-j", "DROP"),
                         GUARD_TABLE),
    ]  # fmt: skip


# Starting and stopping ---------------------------------------------------------------


def start_veth(state_dir: str, owner_uid: int, vm_netns_fd: int) -> NatNetwork:
    """A veth pair into the VM's network namespace, and everything `start_on_link` does."""
    network = plan(state_dir, owner_uid)
    _record(network)
    try:
        with Netlink() as nl:
            nl.delete_link(network.link)  # one a killed service left, if recover missed it
            nl.add_veth(network.link, GUEST_LINK, vm_netns_fd)
        _configure_host_side(network)
    except BaseException:
        stop(network)
        raise
    return network


def start_on_link(network: NatNetwork) -> None:
    """Version 2's entry: *network* (from `plan(..., link_suffix)`) names a tap device the
    caller has just made; give it the gateway, masquerading and forwarding. `stop` undoes
    it, the tap included."""
    _record(network)
    try:
        _configure_host_side(network)
    except BaseException:
        stop(network)
        raise


def _configure_host_side(network: NatNetwork) -> None:
    with Netlink() as nl:
        nl.set_link(network.link, mtu=MTU)
        nl.add_address(network.link, network.addresses.gateway)
        nl.set_link(network.link, up=True)
    sysctl.write(f"net.ipv4.conf.{network.link}.forwarding", "1")
    # Replies from the VM's gateway must not be answered with redirects to itself.
    sysctl.write(f"net.ipv4.conf.{network.link}.send_redirects", "0")
    if nft.have_nft():
        nft.delete_table(TABLE_FAMILY, network.table)
        nft.load(masquerade_script(network), f"masquerading {network.addresses.network}")
    elif nft.have_iptables_nft():
        _masquerade_rule(network).remove()
        _masquerade_rule(network).add()
    else:
        raise NatError(errno.ENOENT, "neither nft nor iptables-nft is installed: install nftables")
    hold_uplinks(network.state_file)


def stop(network: NatNetwork) -> None:
    """Undo `start_veth` or `start_on_link`; safe to repeat, and each step is tried even
    when one before it failed (the first failure is raised at the end)."""
    failures: list[BaseException] = []
    steps: tuple[Callable[[], None], ...] = (
        lambda: _delete_link(network.link),
        lambda: _remove_masquerade(network),
        lambda: release_uplinks(network.state_file),
        lambda: _forget(network),
    )
    for step in steps:
        try:
            step()
        except (OSError, ValueError) as e:
            log.warning("NAT network %s: cleaning up: %s", network.addresses.network, e)
            failures.append(e)
    if failures:
        raise NatError(errno.EIO, f"cleaning up the NAT network: {failures[0]}")


def _delete_link(name: str) -> None:
    with Netlink() as nl:
        nl.delete_link(name)


def _remove_masquerade(network: NatNetwork) -> None:
    if nft.have_nft():
        nft.delete_table(TABLE_FAMILY, network.table)
    elif nft.have_iptables_nft():
        _masquerade_rule(network).remove()


def recover(state_dir: str) -> int:
    """Undo the NAT networks a killed service left in *state_dir*; how many there were."""
    count = 0
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(state_dir)):
            path = os.path.join(state_dir, name)
            if not name.endswith(".json"):
                os.unlink(path)  # a port relay's status, a half-written record
                continue
            network = _load_record(path)
            if network is None:
                os.unlink(path)
                continue
            log.warning("removing the NAT network %s a stopped service left", network.link)
            with contextlib.suppress(NatError):
                stop(network)
            count += 1
    return count


def _record(network: NatNetwork) -> None:
    os.makedirs(os.path.dirname(network.state_file), 0o700, exist_ok=True)
    temporary = network.state_file + ".new"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(network.to_json(), f)
    os.replace(temporary, network.state_file)


def _forget(network: NatNetwork) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(network.state_file)


def _load_record(path: str) -> NatNetwork | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        tag, link = str(data["tag"]), str(data["link"])
        addresses = subnet.addresses_in(ipaddress.IPv4Network(data["network"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not link.startswith(LINK_PREFIX + tag):
        return None  # not a file of ours: touch no link it names
    return NatNetwork(tag, link, addresses, path)


# Uplinks: forwarding on the host's other interfaces while any NAT VM runs ---------------


@contextlib.contextmanager
def _uplinks_state() -> Iterator[dict[str, Any]]:
    """The machine-wide record of which interfaces lxss turned forwarding on for (and
    their values before) and which NAT networks need it, under an exclusive lock."""
    while True:  # the directory is the lock, and is removed by the last user
        os.makedirs(UPLINKS_DIR, 0o700, exist_ok=True)
        lock = os.open(UPLINKS_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.stat(UPLINKS_DIR).st_ino == os.fstat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(lock)  # removed while we waited: take the new one
    try:
        path = os.path.join(UPLINKS_DIR, "uplinks.json")
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = {}
        state.setdefault("saved", {})
        state.setdefault("holders", {})
        yield state
        if state["holders"] or state["saved"]:
            with open(path + ".new", "w", encoding="utf-8") as f:
                json.dump(state, f)
            os.replace(path + ".new", path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            with contextlib.suppress(OSError):
                os.rmdir(UPLINKS_DIR)
    finally:
        os.close(lock)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _apply_guard(saved: dict[str, str]) -> None:
    if nft.have_nft():
        nft.delete_table(TABLE_FAMILY, GUARD_TABLE)
        if saved:
            nft.load(guard_script(list(saved)), "confining forwarding to NAT replies")
        return
    if nft.have_iptables_nft():
        with Netlink() as nl:
            names = {link.name for link in nl.links()}
        for uplink in names | set(saved):
            for rule in _guard_rules(uplink):
                rule.remove()
        for uplink in saved:
            for rule in _guard_rules(uplink):
                rule.add()


def hold_uplinks(holder: str) -> None:
    """Forwarding on for every host interface that is not lxss's, for replies to come back
    to the NAT VMs; recorded so that the last `release_uplinks` restores each."""
    with _uplinks_state() as state:
        holders: dict[str, int] = state["holders"]
        for key, pid in list(holders.items()):
            if not _alive(int(pid)):
                del holders[key]
        holders[holder] = os.getpid()
        saved: dict[str, str] = state["saved"]
        with Netlink() as nl:
            uplinks = [
                link.name for link in nl.links()
                if link.name != "lo" and not link.name.startswith(LINK_PREFIX)
            ]  # fmt: skip
        for name in uplinks:
            key = f"net.ipv4.conf.{name}.forwarding"
            try:
                if name not in saved and sysctl.read(key) == "0":
                    saved[name] = "0"
                    sysctl.write(key, "1")
            except OSError as e:  # it went away meanwhile
                log.info("forwarding on %s: %s", name, e)
        _apply_guard(saved)


def release_uplinks(holder: str) -> None:
    with _uplinks_state() as state:
        holders: dict[str, int] = state["holders"]
        holders.pop(holder, None)
        for key, pid in list(holders.items()):
            if not _alive(int(pid)):
                del holders[key]
        if holders:
            return
        saved: dict[str, str] = state["saved"]
        for name, value in list(saved.items()):
            with contextlib.suppress(FileNotFoundError):  # the interface is gone
                sysctl.write(f"net.ipv4.conf.{name}.forwarding", value)
            del saved[name]
        _apply_guard({})
