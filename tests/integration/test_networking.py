"""Issue 14: networking modes for real (Mirrored, Nat, None), DNS through the gateway's proxy,
localhost forwarding, and a host left exactly as it was.

The module runs a service of its own, whose host resolv.conf names a dnsmasq the module
starts on a loopback address. Traffic goes only to loopback and to namespaces made here: the
NAT VM's (the service's) and, for forwarding beyond the host, an "upstream" namespace the
module makes and removes.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns_support
import netstate
import pytest
from conftest import LXSS, Service, running_service
from dns_support import TEST_ADDRESS, TEST_NAME
from run_support import machine_config, wait_until

from lxss.vm import nat

BB = "netbb"
STATUS_LINE = re.compile(
    r"Networking mode: Nat \((?P<network>[\d.]+/24): host (?P<gateway>[\d.]+), VM (?P<vm>[\d.]+)\)"
)

dns = dns_support.dns  # the module resolver fixture


@pytest.fixture(scope="module")
def service(dns: tuple[str, Path]) -> Iterator[Service]:
    """This module's own lxssd (the conftest `service` name, so host_left_clean watches it)."""
    with running_service("net", {"LXSS_HOST_RESOLV_CONF": str(dns[1])}) as running:
        running.ok("--install", "busybox", "--name", BB, "--no-launch", timeout=120)
        yield running


@pytest.fixture(scope="module")
def owner(service: Service, test_users: tuple[str, str]) -> str:
    """A test user with a busybox of their own in this module's service."""
    user = test_users[0]
    service.ok("--install", "busybox", "--name", BB, "--no-launch", user=user,
               timeout=120)  # fmt: skip
    return user


def run(service: Service, command: str, user: str | None = None, timeout: float = 120) -> str:
    result = service.lxss("-d", BB, "--", "sh", "-c", command, user=user, timeout=timeout)
    assert result.returncode == 0, f"{command}: {result}"
    return result.out


def nat_status(service: Service, user: str | None = None) -> re.Match[str]:
    status = service.ok("--status", user=user).out
    found = STATUS_LINE.search(status)
    assert found, status
    return found


NAT = "[wsl2]\nnetworkingMode = nat\n[general]\ninstanceIdleTimeout = -1\n"


def test_nat_gives_the_vm_its_own_interface_and_route(service: Service) -> None:
    with machine_config(service, NAT):
        links = run(service, "ip -o link; ip -o -4 addr; ip route")
        found = nat_status(service)
        assert f"inet {found['vm']}/24" in links, links
        assert f"default via {found['gateway']} dev eth0" in links, links
        assert "lxss" not in links  # the host's own links are not in the VM


def test_nat_reaches_a_server_on_the_host_end(service: Service) -> None:
    with machine_config(service, NAT):
        run(service, "true")
        gateway = nat_status(service)["gateway"]
        with socket.create_server((gateway, 0)) as server:
            port = server.getsockname()[1]
            served = threading.Thread(target=_answer_once, args=(server, b"hello from the host"))
            served.start()
            out = run(service, f"nc {gateway} {port} </dev/null")
            served.join(30)
        assert out == "hello from the host"


def _answer_once(server: socket.socket, payload: bytes) -> None:
    server.settimeout(60)
    connection, _ = server.accept()
    with connection:
        connection.sendall(payload)


def test_dns_goes_through_the_gateway_to_the_hosts_resolver(service: Service) -> None:
    with machine_config(service, NAT):
        resolv = run(service, "cat /etc/resolv.conf")
        gateway = nat_status(service)["gateway"]
        assert f"nameserver {gateway}\n" in resolv and resolv.count("nameserver") == 1, resolv
        answer = run(service, f"nslookup {TEST_NAME}")
        assert TEST_ADDRESS in answer, answer


def test_port_80_and_echo_sockets_are_the_distributions_own(service: Service, owner: str) -> None:
    """Not the host's namespace: a user binds port 80 there, and ICMP echo sockets (what
    iputils' ping uses without privilege) are open to every group the VM maps."""
    with machine_config(service, NAT):
        out = run(service, "nc -l -p 80 -e echo hi & sleep 1; nc 127.0.0.1 80 </dev/null; wait",
                  user=owner)  # fmt: skip
        assert out == "hi\n"
        # (seen from a distribution's own user namespace, the VM's gid 0 is the overflow id)
        low, high = run(service, "cat /proc/sys/net/ipv4/ping_group_range").split()
        assert (low, high) != ("1", "0"), (low, high)  # the default: no group may


def test_none_has_loopback_only(service: Service) -> None:
    with machine_config(service, "[wsl2]\nnetworkingMode = none\n"):
        links = run(service, "ip -o link")
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"], links
        assert "Networking mode: None" in service.ok("--status").out


@pytest.mark.parametrize("mode", ["bridged", "virtioproxy", "consomme"])
def test_wsls_other_modes_say_they_fall_back(service: Service, mode: str) -> None:
    with machine_config(service, f"[wsl2]\nnetworkingMode = {mode}\n"):
        result = service.lxss("-d", BB, "--", "true")
        assert result.returncode == 0, result
        assert "is not supported here, using Nat" in result.err, result
        assert "Networking mode: Nat" in service.ok("--status").out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return True
    except OSError:
        return False


def _forwarded(service: Service, port: int, user: str | None = None) -> bool:
    return f"Forwarded ports: {port}" in service.ok("--status", user=user).out or (
        f", {port}" in service.ok("--status", user=user).out
    )


def test_localhost_forwarding_carries_100_mb_and_ends_with_the_listener(service: Service) -> None:
    port = _free_port()
    with machine_config(service, NAT):
        run(service, "true")
        inside = subprocess.Popen(
            [*LXSS, "-d", BB, "--", "sh", "-c",
             f"nc -l -p {port} | sha256sum"],
            env=service.env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            started = time.monotonic()
            wait_until(lambda: _forwarded(service, port), 30, "the port forwarded")
            print(f"forwarded {time.monotonic() - started:.2f} s after the listener started")
            data = os.urandom(1 << 20)
            digest = hashlib.sha256()
            with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
                for _ in range(100):
                    connection.sendall(data)
                    digest.update(data)
            out, _ = inside.communicate(timeout=120)
        finally:
            if inside.poll() is None:
                inside.kill()
                inside.wait(10)
        assert out.decode().split()[0] == digest.hexdigest()
        wait_until(lambda: not _connects(port), 30, "the host's listener gone")


def test_a_port_the_host_uses_is_reported_not_shadowed(service: Service) -> None:
    with machine_config(service, NAT), socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        run(service, f"(nc -l -p {port} >/dev/null 2>&1 &) ; true")
        wanted = f"port {port} is in use on the host"
        status = wait_until(
            lambda: (lambda out: out if wanted in out else None)(service.ok("--status").out),
            30, "the collision reported",
        )  # fmt: skip
        assert f"Not forwarded: {wanted}" in status
        assert wanted in service.log_text()
        taken.close()  # the host lets go of it: forwarded at the next look
        wait_until(lambda: _forwarded(service, port), 30, "the port forwarded once free")


def test_a_users_low_port_is_not_forwarded(service: Service, owner: str) -> None:
    with machine_config(service, NAT):
        run(service, "(nc -l -p 81 >/dev/null 2>&1 &) ; true", user=owner)
        wanted = "port 81 is below 1024"
        wait_until(lambda: wanted in service.ok("--status", user=owner).out, 30, "the refusal")
        service.ok("--shutdown", user=owner)


def test_two_users_nat_vms_get_different_networks(service: Service, owner: str) -> None:
    with machine_config(service, NAT):
        run(service, "true")
        run(service, "true", user=owner)
        mine, theirs = nat_status(service), nat_status(service, user=owner)
        assert mine["network"] != theirs["network"]
        # and each reaches only its own gateway's proxy answer
        assert TEST_ADDRESS in run(service, f"nslookup {TEST_NAME}", user=owner)
        service.ok("--shutdown", user=owner)


def test_a_killed_service_leaves_nothing_after_its_restart(dns: tuple[str, Path]) -> None:
    """kill -9 with a NAT VM running; the next lxssd removes its veth, table and
    sysctl changes before serving."""
    env = {"LXSS_HOST_RESOLV_CONF": str(dns[1])}
    with running_service("netkill", env) as fresh:
        before = netstate_now(fresh)
        fresh.ok("--install", "busybox", "--name", BB, "--no-launch", timeout=120)
        fresh.machine_config.write_text(NAT)
        fresh.ok("-d", BB, "--", "true")
        assert netstate_now(fresh) != before  # a veth, a table, routes
        fresh.kill9()
        fresh.start()
        assert netstate_now(fresh) == before
        fresh.machine_config.write_text("")


def netstate_now(service: Service) -> frozenset[str]:
    return netstate.capture(service.runtime_dir, {0})


# A namespace of the test run's own, standing for the world beyond the host (named and
# addressed by the run's pid: other checkouts' runs may make theirs at the same time).
_RUN = os.getpid() % 10000
UPSTREAM = UPLINK = f"lxtup{_RUN}"
UPSTREAM_HOST, UPSTREAM_FAR = f"10.213.{_RUN % 250}.1", f"10.213.{_RUN % 250}.2"
PEER_SERVER = (
    "import socket\n"
    "s = socket.create_server(('0.0.0.0', 8080)); s.settimeout(120)\n"
    "c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()\n"
)


@pytest.fixture
def upstream() -> Iterator[str]:
    """A namespace behind a veth of the host's (made before the VM starts, so the VM's
    forwarding covers it): a server there answers with the address it saw."""
    subprocess.run(["ip", "netns", "add", UPSTREAM], check=True)
    try:
        for argv in (
            ["ip", "link", "add", UPLINK, "type", "veth", "peer", "eth0", "netns", UPSTREAM],
            ["ip", "addr", "add", f"{UPSTREAM_HOST}/24", "dev", UPLINK],
            ["ip", "link", "set", UPLINK, "up"],
            ["ip", "-n", UPSTREAM, "addr", "add", f"{UPSTREAM_FAR}/24", "dev", "eth0"],
            ["ip", "-n", UPSTREAM, "link", "set", "eth0", "up"],
        ):  # fmt: skip
            subprocess.run(argv, check=True)
        yield UPSTREAM_FAR
    finally:
        subprocess.run(["ip", "link", "del", UPLINK], check=False)
        subprocess.run(["ip", "netns", "del", UPSTREAM], check=False)


def test_nat_masquerades_beyond_the_host_and_restores_forwarding(
    service: Service, upstream: str
) -> None:
    forwarding = Path(f"/proc/sys/net/ipv4/conf/{UPLINK}/forwarding")
    before = forwarding.read_text()
    ip_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    server = subprocess.Popen(
        ["ip", "netns", "exec", UPSTREAM, "/usr/bin/python3", "-c", PEER_SERVER],
        stdout=subprocess.PIPE,
    )
    try:
        with machine_config(service, NAT):
            wait_until(lambda: _listening_upstream(), 30, "the upstream server")
            seen = run(service, f"nc {upstream} 8080 </dev/null")
            assert seen == UPSTREAM_HOST  # the host's address: masqueraded
            assert forwarding.read_text() == "1\n"
            assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == ip_forward
        assert forwarding.read_text() == before  # the last NAT VM stopped
    finally:
        server.kill()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()


def _listening_upstream() -> bool:
    done = subprocess.run(["ip", "netns", "exec", UPSTREAM, "ss", "-ltnH", "sport", "= :8080"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return "8080" in done.stdout


def test_without_nft_iptables_nft_masquerades(dns: tuple[str, Path], tmp_path: Path) -> None:
    """A host without nft(8): the masquerade and the uplinks' guard are iptables-nft rules,
    tagged, and gone when the VM stops (iptables keeps the empty tables it made, as it always
    does: the test removes those it made itself)."""
    bin_dir = tmp_path / "sbin"
    bin_dir.mkdir()
    for directory in ("/usr/sbin", "/sbin"):
        for entry in os.scandir(directory):
            if entry.name != "nft" and not (bin_dir / entry.name).exists():
                (bin_dir / entry.name).symlink_to(entry.path)
    tables_before = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                                   check=True).stdout.splitlines()  # fmt: skip
    env = {"LXSS_HOST_RESOLV_CONF": str(dns[1]), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    try:
        with running_service("netipt", env) as fresh:
            fresh.ok("--install", "busybox", "--name", BB, "--no-launch", timeout=120)
            fresh.machine_config.write_text(NAT)
            fresh.ok("-d", BB, "--", "true")
            network = nat_status(fresh)["network"]
            rules = _iptables("nat", "POSTROUTING")
            assert f"-s {network} ! -o lxss" in rules and "MASQUERADE" in rules, rules
            assert "lxss-uplinks" in _iptables("filter", "FORWARD")
            tables = subprocess.run(
                ["nft", "list", "tables"], capture_output=True, text=True, check=True
            ).stdout
            own = f"lxss-{nat.tag_for(str(fresh.runtime_dir / 'net'), 0)}"
            assert own not in tables, tables  # no nft: no table of lxss's own
            fresh.ok("--shutdown")
            assert "lxss" not in _iptables("nat", "POSTROUTING")
            assert "lxss" not in _iptables("filter", "FORWARD")
            fresh.machine_config.write_text("")
    finally:
        now = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                             check=True).stdout.splitlines()  # fmt: skip
        for line in set(now) - set(tables_before):
            subprocess.run(["nft", "delete", *line.split()], check=False)


def _iptables(table: str, chain: str) -> str:
    done = subprocess.run(["iptables-nft", "-w", "-t", table, "-S", chain], capture_output=True,
                          text=True, check=False)  # fmt: skip
    return done.stdout
