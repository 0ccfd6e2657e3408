"""A namespace VM's network in Nat mode, as its backend runs it.

Once the VM's boot process has its network namespace, `attach` builds the host's side
(lxss.vm.nat: a veth into that namespace, gateway, masquerading, forwarding) and returns the
interface configuration gns applies inside; `start_services` then starts the DNS proxy on the
gateway (lxss.vm.dnsproxy) and, with localhostForwarding, the port relay process
(lxss.vm.portrelay). `stop` ends all of it once the VM's processes are gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
from typing import Any

from lxss.aio import wait_exited
from lxss.bootstrap import bootstrap_argv
from lxss.linux.confine import off_loop
from lxss.linux.userns import PARENT_ENV
from lxss.vm import nat
from lxss.vm.dnsproxy import DnsProxy

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0


class VmNetwork:
    def __init__(self, state_dir: str, resolv_conf: str, owner_uid: int) -> None:
        self.state_dir = state_dir
        self.resolv_conf = resolv_conf
        self.owner_uid = owner_uid
        self.network: nat.NatNetwork | None = None
        self.dns: DnsProxy | None = None
        self.relay: subprocess.Popen[bytes] | None = None
        self.status_file = os.path.join(state_dir, f"{nat.tag_for(state_dir, owner_uid)}.ports")

    async def attach(self, vm_pid: int) -> str:
        """The host's side for the VM whose boot process is *vm_pid*; the JSON gns gets."""
        netns = os.open(f"/proc/{vm_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        made: list[nat.NatNetwork] = []
        try:
            await off_loop(
                lambda: made.append(nat.start_veth(self.state_dir, self.owner_uid, netns))
            )
        finally:
            os.close(netns)
        self.network = network = made[0]
        log.info("uid %d: NAT network %s on %s", self.owner_uid,
                 network.addresses.network, network.link)  # fmt: skip
        return json.dumps({
            "interface": nat.GUEST_LINK,
            "addresses": [str(network.addresses.guest)],
            "gateway": str(network.addresses.gateway.ip),
            "mtu": nat.MTU,
        })  # fmt: skip

    async def start_services(self, vm_pid: int, localhost_forwarding: bool) -> None:
        assert self.network is not None
        self.dns = DnsProxy(str(self.network.addresses.gateway.ip), self.resolv_conf)
        await self.dns.start()
        if localhost_forwarding:
            argv = bootstrap_argv(
                "lxss.vm.portrelay", str(vm_pid), str(self.owner_uid), self.status_file
            )
            environment = {**os.environ, PARENT_ENV: str(os.getpid())}
            self.relay = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, env=environment, cwd="/", start_new_session=True
            )

    @property
    def dns_servers(self) -> tuple[str, ...]:
        return (str(self.network.addresses.gateway.ip),) if self.network else ()

    def status(self) -> dict[str, Any]:
        """For `lxss --status`: the network, and the ports forwarded or refused."""
        if self.network is None:
            return {}
        ports: dict[str, Any] = {"forwarded": [], "refused": []}
        with contextlib.suppress(OSError, ValueError), open(self.status_file, "rb") as f:
            ports = json.load(f)
        return {
            "network": str(self.network.addresses.network),
            "gateway": str(self.network.addresses.gateway.ip),
            "address": str(self.network.addresses.guest.ip),
            "forwardedPorts": [int(p) for p in ports.get("forwarded", [])],
            "refusedPorts": [str(item["reason"]) for item in ports.get("refused", [])],
        }

    async def stop(self) -> None:
        relay, self.relay = self.relay, None
        if relay is not None and relay.poll() is None:
            relay.terminate()
            if not await wait_exited(relay.pid, STOP_TIMEOUT):
                relay.kill()
                await wait_exited(relay.pid, STOP_TIMEOUT)
        if relay is not None:
            relay.wait(STOP_TIMEOUT)
        for leftover in (self.status_file, self.status_file + ".new"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        dns, self.dns = self.dns, None
        if dns is not None:
            await dns.close()
        network, self.network = self.network, None
        if network is not None:
            try:
                await off_loop(lambda: nat.stop(network))
            except OSError as e:
                log.warning("uid %d: %s", self.owner_uid, e)
