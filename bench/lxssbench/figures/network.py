"""TCP from the host into a distribution: localhost forwarding (Nat) and Mirrored, against a
direct loopback connection to the same server program on the host.

One busybox httpd serves the same files in three places: in the bench user's `bench-net`
(networkingMode = Nat in their ~/.lxssconfig: the host reaches it through lxss's localhost
forwarding), in root's `bench-busybox` (the machine's default mode, Mirrored: the host's own
loopback), and on the host itself. The client is the bench's Python, the same for every row.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..harness import Figure, Runner
from ..lab import Lab
from ..proc import Unavailable, run
from .common import PLAIN_ENV, guarded
from .registry import Spec, figure, result

NET = "bench-net"
PORT_NAT, PORT_MIRRORED, PORT_DIRECT = 39180, 39181, 39182
MAX_BIG = 1 << 30
READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Servers:
    big: int  # bytes of /big


def _wait_port(port: int, why: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise Unavailable(f"{why}: nothing listens on 127.0.0.1:{port} after {READY_TIMEOUT:.0f} s")


def _mode_of(lab: Lab, *for_user: str) -> str:
    out = lab.lxss.run(*for_user, "--status", timeout=60, capture=True)
    for line in out.stdout.splitlines() if out.ok else []:
        if line.startswith("Networking mode: "):
            return line.split()[2]
    return "?"


def servers(lab: Lab) -> Servers:
    """The three httpds, set up once; torn down (distributions stopped, host server killed,
    the bench user's distribution and config removed) when the lab closes."""

    def make() -> Servers:
        big = min(lab.settings.pipe_bytes, MAX_BIG)
        fill = f"mkdir -p /www && head -c {big} /dev/zero > /www/big && echo hi > /www/small"
        user = lab.bench_user()
        config = Path(user.home) / ".lxssconfig"
        config.write_text("[wsl2]\nnetworkingMode = nat\n")
        os.chown(config, user.uid, user.gid)  # the service reads only the user's own file
        lab.stack.callback(config.unlink, missing_ok=True)
        as_user = ("--for-user", pwd.getpwuid(user.uid).pw_name)
        lab.lxss.run(*as_user, "--unregister", NET, timeout=120)  # a killed run's leftover
        lab.lxss.must(*as_user, "--install", "busybox", "--name", NET, "--no-launch", timeout=300)
        lab.stack.callback(lambda: lab.lxss.run(*as_user, "--unregister", NET, timeout=300))
        lab.stack.callback(lambda: lab.lxss.run(*as_user, "--shutdown", timeout=120))
        for distro, port, who in (
            (NET, PORT_NAT, as_user),
            (lab.busybox_distro(), PORT_MIRRORED, ()),
        ):
            lab.lxss.must(*who, "-d", distro, "-u", "root", "--", "sh", "-c",
                          f"{fill} && busybox httpd -p {port} -h /www", timeout=300)  # fmt: skip
            lab.stack.callback(lambda d=distro, w=who: lab.lxss.run(*w, "--terminate", d,
                                                                     timeout=120))  # fmt: skip
        if _mode_of(lab, *as_user) != "Nat":
            raise Unavailable(f"{NET}'s VM is not in Nat mode: `lxss --status` says otherwise")
        if _mode_of(lab) != "Mirrored":
            raise Unavailable("root's VM is not in Mirrored mode (the machine's config says else)")
        root = Path(tempfile.mkdtemp(prefix="lxssbench-www-", dir=lab.work))
        run(["sh", "-c", fill.replace("/www", str(root))], timeout=300).check(
            "filling the host's www"
        )
        direct = subprocess.Popen(
            ["busybox", "httpd", "-f", "-p", f"127.0.0.1:{PORT_DIRECT}", "-h", str(root)],
            env=PLAIN_ENV, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        lab.stack.callback(lambda: (direct.kill(), direct.wait(10)))
        for port, why in ((PORT_NAT, "localhost forwarding"), (PORT_MIRRORED, "Mirrored"),
                          (PORT_DIRECT, "the host's httpd")):  # fmt: skip
            _wait_port(port, why)
        return Servers(big)

    return lab._once("net-servers", make)


def _get(port: int, path: str) -> int:
    """One HTTP/1.0 GET, read to the end; the bytes received."""
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    total = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        while n := s.recv_into(view):
            total += n
    return total


def _rows(lab: Lab, make: Callable[[Servers, int], Callable[[], float]]) -> list[Runner]:
    where = (
        ("lxss Nat: localhost forwarding", PORT_NAT, True),
        ("lxss Mirrored: the host's loopback", PORT_MIRRORED, False),
        ("direct loopback (httpd on the host)", PORT_DIRECT, False),
    )
    rows = []
    for label, port, subject in where:

        def build(label: str = label, port: int = port, subject: bool = subject) -> Runner:
            return Runner(label, f"GET http://127.0.0.1:{port}/…", make(servers(lab), port),
                          subject=subject)  # fmt: skip

        rows.append(guarded(label, f"127.0.0.1:{port}", build, subject=subject))
    return rows


@figure(
    "net-tcp",
    "TCP throughput, host to distribution",
    unit="MB/s",
    better="higher",
    what="GET of a file of zeros from busybox httpd: through Nat's localhost forwarding, in "
    "Mirrored mode, and from the same httpd on the host's loopback.",
)
def throughput(lab: Lab, spec: Spec) -> Figure:
    def make(found: Servers, port: int) -> Callable[[], float]:
        def measure() -> float:
            start = time.perf_counter_ns()
            got = _get(port, "/big")
            if got < found.big:
                raise Unavailable(f"only {got} of {found.big} bytes arrived")
            return got / ((time.perf_counter_ns() - start) / 1e9) / 1e6

        return measure

    s = lab.settings
    return result(spec, _rows(lab, make), runs=s.pipe_runs, warmup=1,
                  notes=["targets: Nat ≥ 0.8× direct, Mirrored 1.0×"])  # fmt: skip


@figure(
    "net-connect",
    "TCP connection latency, host to distribution",
    unit="ms",
    better="lower",
    what="Connect, GET of a 3-byte file and close, as in net-tcp's three places.",
)
def latency(lab: Lab, spec: Spec) -> Figure:
    def make(found: Servers, port: int) -> Callable[[], float]:
        def measure() -> float:
            start = time.perf_counter_ns()
            _get(port, "/small")
            return (time.perf_counter_ns() - start) / 1e6

        return measure

    s = lab.settings
    return result(spec, _rows(lab, make), runs=s.runs, warmup=s.warmup,
                  notes=["targets: Nat ≤ 1.5× direct, Mirrored 1.0×"])  # fmt: skip
