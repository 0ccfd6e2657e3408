"""Interop gives the owner's rights on the host and no one else's (promise 13 of
docs/security.md): another host user, another user of the same distribution and another
user's distribution cannot reach the owner's interop socket, and a forged LXSS_INTEROP
gets nowhere.

A's busybox distribution runs a program (`sleep`) whose relay serves an interop socket;
B attacks it from the host and from inside B's own distribution, and a second user of A's
distribution attacks it from inside.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HostState, Result, Service
from mgmt import User, spawn_lxss
from run_support import wait_until
from security_support import run_as

A_NAME, B_NAME = "sec-iop-a", "sec-iop-b"
GUEST_USER = "guest:x:1001:1001:guest:/tmp:/bin/sh\n"
PROBE = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(type(e).__name__)
else:
    print("connected")
"""


@pytest.fixture(scope="module")
def owners(service: Service, test_users: tuple[str, str]) -> Iterator[tuple[User, User]]:
    a, b = (User.named(name) for name in test_users)
    made = []
    try:
        for name, user in ((A_NAME, a), (B_NAME, b)):
            service.ok("--install", "busybox", "--name", name, "--no-launch", user=user.name,
                       timeout=120)  # fmt: skip
            made.append((name, user))
        service.ok("-d", A_NAME, "--", f"printf '{GUEST_USER}' >> /etc/passwd", user=a.name)
        # Tests start with A's utility VM gone (their host-state check begins there).
        service.ok("--shutdown", user=a.name)
        wait_until(lambda: not HostState.capture(service).processes, 15, "the VM to be gone")
        yield a, b
    finally:
        for name, user in made:
            service.lxss("--unregister", name, user=user.name, timeout=120)


@pytest.fixture
def victim(service: Service, owners: tuple[User, User]) -> Iterator[tuple[str, list[int]]]:
    """A's program with an interop socket: its path inside, and the host pids of relays
    whose pid inside matches (one of them is its relay)."""
    a, _ = owners
    proc = spawn_lxss(service, "-d", A_NAME, "--", "echo $LXSS_INTEROP; exec sleep 120",
                      user=a.name, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().decode().strip()
        assert path.startswith("/run/lxss/interop/"), path
        inner = int(path.rsplit("/", 1)[1])
        yield path, _host_pids_of(inner)
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        _shut_down(service, *owners)


def _shut_down(service: Service, *users: User) -> None:
    for user in users:
        service.lxss("--shutdown", user=user.name)
    wait_until(lambda: not HostState.capture(service).processes, 15, "the VMs to be gone")


def _host_pids_of(inner: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)  # fmt: skip
        except OSError:
            continue
        pids = fields.get("NSpid", "").split()
        if len(pids) > 1 and int(pids[-1]) == inner:
            found.append(int(status.parent.name))
    assert found, f"no process with pid {inner} in a namespace"
    return found


def test_another_host_user_cannot_open_the_socket(
    service: Service, owners: tuple[User, User], victim: tuple[str, list[int]]
) -> None:
    _, b = owners
    path, pids = victim
    for pid in pids:
        probe = run_as(b.name, "/usr/bin/python3", "-c", PROBE, f"/proc/{pid}/root{path}")
        assert probe.stdout.decode().strip() in ("PermissionError", "FileNotFoundError"), probe


def test_another_user_of_the_distribution_cannot_use_the_owners_socket(
    service: Service, owners: tuple[User, User], victim: tuple[str, list[int]]
) -> None:
    a, _ = owners
    path, _ = victim

    def as_guest() -> Result:
        return service.lxss("-d", A_NAME, "-u", "guest", "--",
                            f"LXSS_INTEROP={path} lxss-host-exec id -u", user=a.name)  # fmt: skip

    result = as_guest()
    assert result.returncode == 255, result
    assert "Permission denied" in result.err and result.err.count("\n") == 1, result
    # Opened to all by the distribution's root, the socket still takes only its user's
    # connections (and root's): the relay checks who connected.
    service.ok("-d", A_NAME, "-u", "root", "--", f"chmod 666 {path}", user=a.name)
    result = as_guest()
    assert result.returncode == 255 and result.out == "", result


def test_a_forged_lxss_interop_from_another_users_distribution(
    service: Service, owners: tuple[User, User], victim: tuple[str, list[int]]
) -> None:
    _, b = owners
    path, pids = victim
    for pid in pids:
        # The host's /proc shows through /mnt/host; A's relay is out of B's reach there too.
        result = service.lxss("-d", B_NAME, "--", f"LXSS_INTEROP=/mnt/host/proc/{pid}/root{path}"
                              " lxss-host-exec id -u", user=b.name)  # fmt: skip
        assert result.returncode == 255 and result.out == "", result
        assert result.err.startswith("lxss-host-exec: cannot reach"), result


def test_lxss_interop_aimed_at_the_service_socket(
    service: Service, owners: tuple[User, User]
) -> None:
    """The service's socket through /mnt/host speaks Varlink, not interop: the request is
    refused, the program says so, and the service keeps serving."""
    _, b = owners
    target = f"/mnt/host{service.runtime_dir}/lxssd.sock"
    result = service.lxss("-d", B_NAME, "--", f"test -S {target} && LXSS_INTEROP={target} "
                          "lxss-host-exec id -u", user=b.name)  # fmt: skip
    assert result.returncode == 255 and result.out == "", result
    assert service.ok("-d", B_NAME, "--", "echo still-served", user=b.name).out == "still-served\n"
    _shut_down(service, b)


def test_the_socket_is_private_inside(service: Service, owners: tuple[User, User],
                                      victim: tuple[str, list[int]]) -> None:  # fmt: skip
    a, _ = owners
    path, _ = victim
    listing = service.ok("-d", A_NAME, "-u", "root", "--",
                         f"stat -c '%a %U' /run/lxss/interop {path}", user=a.name).out  # fmt: skip
    assert listing.split("\n")[:2] == ["711 root", "600 root"]
    denied = service.lxss("-d", A_NAME, "-u", "guest", "--", "ls /run/lxss/interop", user=a.name)
    assert denied.returncode != 0, denied
