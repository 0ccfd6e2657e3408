"""The host's network, as host_left_clean compares it: links, addresses, routes, nftables
tables, forwarding sysctls. What other lxss services on the machine own (links named with
another service's tag, their tables and routes) is left out: concurrent test runs are not
this one's to judge."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lxss.linux import nft, sysctl
from lxss.linux.netlink import Netlink
from lxss.vm import nat


def _uplinks() -> dict[str, Any]:
    try:
        with open(os.path.join(nat.UPLINKS_DIR, "uplinks.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _foreign(name: str, ours: set[str]) -> bool:
    if not name.startswith(nat.LINK_PREFIX) and not name.startswith("lxss-"):
        return False
    return not any(tag in name for tag in ours)


def capture(runtime_dir: Path, uids: set[int]) -> frozenset[str]:
    """One line per fact of the host's network; a NAT network left behind shows."""
    ours = {nat.tag_for(str(runtime_dir / "net"), uid) for uid in uids}
    facts: set[str] = set()
    with Netlink() as nl:
        links = {link.index: link.name for link in nl.links()}
        kept = {i: n for i, n in links.items() if not _foreign(n, ours)}
        facts.update(f"link {name}" for name in kept.values())
        for address in nl.addresses():
            if address.index in kept and address.interface.version == 4:
                facts.add(f"address {address.interface} on {kept[address.index]}")
        for route in nl.routes():
            if route.destination.version == 4 and (route.index in kept or not route.index):
                facts.add(f"route {route.destination} via {route.gateway or '-'} "
                          f"dev {kept.get(route.index, '-')} table {route.table}")  # fmt: skip
    if nft.have_nft():
        facts.update(f"nft table {family} {name}" for family, name in nft.tables()
                     if not _foreign(name, ours) and name != nat.GUARD_TABLE)  # fmt: skip
    facts.add(f"net.ipv4.ip_forward={sysctl.read('net.ipv4.ip_forward')}")
    # Forwarding on the host's interfaces is shared by every service's NAT VMs: each value
    # is taken as it was before lxss (the saved one while some service holds it), and this
    # service's own holds are facts, so a hold it leaves shows and others' do not.
    shared = _uplinks()
    saved: dict[str, str] = shared.get("saved", {})
    for name in kept.values():
        path = f"net.ipv4.conf.{name}.forwarding"
        if os.path.exists(sysctl.path_of(path)):
            facts.add(f"{path}={saved.get(name) or sysctl.read(path)}")
    mine = str(runtime_dir / "net")
    facts.update(f"uplink hold {key}" for key in shared.get("holders", {})
                 if key.startswith(mine + "/"))  # fmt: skip
    state = runtime_dir / "net"
    if state.is_dir():
        facts.update(f"NAT record {entry}" for entry in os.listdir(state))
    return frozenset(facts)
