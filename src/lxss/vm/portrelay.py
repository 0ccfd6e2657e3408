"""Localhost forwarding for a NAT VM (WSL's `localhostForwarding`; its "localhost" agent and
wslrelay, in one host process).

A TCP listener on 127.0.0.1, ::1, 0.0.0.0 or :: inside the VM gets a listener on the host's
127.0.0.1 (and ::1, for an IPv6 one) at the same port; each connection accepted there is
connected to the VM's loopback at that port and relayed both ways with splice(2). Listeners
are read from the VM's namespace with sock_diag every POLL seconds (no /proc parsing); one
that closes takes its host listener with it.

A port is not forwarded, and the status file says why, when the host already has a
listener there (never shadowed) or when it is below the host's first unprivileged port and
the VM's owner is not root (a user could not bind it on the host themselves).

    portrelay VM_PID OWNER_UID STATUS_FILE

This process runs as root on the host, in the host's network namespace; only the sockets it
makes to reach the VM are made in the VM's (setns for a moment around socket(2): a socket
keeps the namespace it was made in).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, TypeVar

from lxss.linux import syscalls as sc
from lxss.linux import sysctl
from lxss.linux.netlink import NETLINK_SOCK_DIAG, Listener, Netlink
from lxss.linux.proctitle import set_title
from lxss.linux.userns import die_with_parent

T = TypeVar("T")
POLL: Final = 0.2  # seconds between looks at the VM's listeners: forwarded within 1 s
CONNECT_TIMEOUT: Final = 5.0
RETRY_BUSY: Final = 2.0  # seconds before a port in use on the host is tried again
MAX_CONNECTIONS: Final = 512
STOCK: Final = 16  # VM sockets made per namespace switch
CHUNK: Final = 1 << 20
LOCAL_V4: Final = ("127.0.0.1", "0.0.0.0")
LOCAL_V6: Final = ("::1", "::")


@dataclass(frozen=True)
class Wanted:
    """What the VM's listeners ask for, by port: a host listener on 127.0.0.1 and/or ::1."""

    port: int
    ipv4: bool
    ipv6: bool


def wanted_ports(listeners: list[Listener]) -> dict[int, Wanted]:
    """Pure: which host listeners the VM's listeners call for. A listener on :: takes IPv4
    connections too (unless IPV6_V6ONLY, which sock_diag's basic answer does not say; an
    IPv4 connection to such a one is refused inside, as it would be on any host)."""
    ports: dict[int, tuple[bool, bool]] = {}
    for listener in listeners:
        v4 = listener.address in LOCAL_V4 or listener.address == "::"
        v6 = listener.address in LOCAL_V6
        if not (v4 or v6):
            continue
        was = ports.get(listener.port, (False, False))
        ports[listener.port] = (was[0] or v4, was[1] or v6)
    return {port: Wanted(port, v4, v6) for port, (v4, v6) in ports.items()}


def refusal(port: int, owner_uid: int, unprivileged_start: int) -> str | None:
    """Pure: why *port* may not be forwarded for *owner_uid*, or None."""
    if owner_uid != 0 and port < unprivileged_start:
        return (f"port {port} is below {unprivileged_start}, which uid {owner_uid} "
                "could not listen on on the host")  # fmt: skip
    return None


class Relay:
    def __init__(self, vm_pid: int, owner_uid: int, status_file: str) -> None:
        self.owner_uid = owner_uid
        self.status_file = status_file
        self.host_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.vm_ns = os.open(f"/proc/{vm_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.unprivileged_start = int(sysctl.read("net.ipv4.ip_unprivileged_port_start"))
        self.lock = threading.Lock()  # the netns switch: one socket(2) in the VM at a time
        self.diag = _in_namespace(self, lambda: Netlink(NETLINK_SOCK_DIAG))
        self.selector = selectors.DefaultSelector()
        self.forwarded: dict[int, list[socket.socket]] = {}
        self.refused: dict[int, str] = {}
        self.busy: dict[int, float] = {}  # in use on the host: when to try again
        self.said: dict[int, str] = {}  # what the log last said of a port, said once
        self.connections = 0
        self.count_lock = threading.Lock()
        self.stock: dict[int, list[socket.socket]] = {}
        self.stock_lock = threading.Lock()
        # Each connection takes two threads (one per direction), kept for the next one.
        self.pool = ThreadPoolExecutor(2 * MAX_CONNECTIONS, thread_name_prefix="relay")
        self._written: object = None

    # Listeners ---------------------------------------------------------------------

    def rescan(self) -> None:
        wanted = wanted_ports(self.diag.tcp_listeners())
        for port in list(self.said):
            if port not in wanted:
                del self.said[port]
        for port in list(self.forwarded):
            if port not in wanted:
                for s in self.forwarded.pop(port):
                    self.selector.unregister(s)
                    s.close()
        now = time.monotonic()
        for port in list(self.refused):
            # Gone inside, or in use on the host a while ago: look again (the host's
            # listener may have closed since).
            if port not in wanted or (port in self.busy and now >= self.busy[port]):
                del self.refused[port]
                self.busy.pop(port, None)
        for port, want in wanted.items():
            if port in self.forwarded or port in self.refused:
                continue
            reason = refusal(port, self.owner_uid, self.unprivileged_start)
            if reason is None:
                reason = self._listen(want)
            if reason is not None:
                if reason != self.said.get(port):
                    print(f"localhost forwarding: {reason}", file=sys.stderr, flush=True)
                self.said[port] = reason
                self.refused[port] = reason
                if "in use" in reason:
                    self.busy[port] = now + RETRY_BUSY
            else:
                self.said.pop(port, None)
        self._write_status()

    def _listen(self, want: Wanted) -> str | None:
        made: list[socket.socket] = []
        hosts = [("127.0.0.1", socket.AF_INET)] if want.ipv4 else []
        hosts += [("::1", socket.AF_INET6)] if want.ipv6 else []
        for host, family in hosts:
            s = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                # Not for sharing (Linux never lets two listeners share a port this way):
                # the port's earlier connections in TIME_WAIT must not keep it from us.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((host, want.port))
                s.listen(128)
                s.setblocking(False)
            except OSError as e:
                s.close()
                for other in made:
                    other.close()
                if e.errno == errno.EADDRINUSE:
                    return f"port {want.port} is in use on the host ({host}): not forwarded"
                return f"port {want.port}: listening on the host's {host}: {e.strerror}"
            made.append(s)
        for s in made:
            self.selector.register(s, selectors.EVENT_READ, want.port)
        self.forwarded[want.port] = made
        return None

    def _write_status(self) -> None:
        status = {
            "forwarded": sorted(self.forwarded),
            "refused": [{"port": p, "reason": r} for p, r in sorted(self.refused.items())],
        }
        if status == self._written:
            return
        temporary = self.status_file + ".new"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(status, f)
        os.replace(temporary, self.status_file)
        self._written = status

    # Connections -------------------------------------------------------------------

    def accept(self, listener: socket.socket, port: int) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        if self.connections >= MAX_CONNECTIONS:
            client.close()
            return
        with self.count_lock:
            self.connections += 1
        self.pool.submit(self._serve, client, listener.family, port)

    def _serve(self, client: socket.socket, family: int, port: int) -> None:
        try:
            with client:
                client.setblocking(True)
                inside = self._connect_inside(family, port)
                if inside is None:
                    return
                with inside:
                    # A relay passes on writes as they come: Nagle would hold a reply's
                    # second small segment back for the first one's (delayed) ACK.
                    for end in (client, inside):
                        end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    other = self.pool.submit(_pump, inside, client)
                    _pump(client, inside)
                    other.result()
        finally:
            with self.count_lock:
                self.connections -= 1

    def _connect_inside(self, family: int, port: int) -> socket.socket | None:
        order = [socket.AF_INET, socket.AF_INET6]
        if family == socket.AF_INET6:
            order.reverse()
        for each in order:
            s = self._vm_socket(each)
            s.settimeout(CONNECT_TIMEOUT)
            try:
                s.connect(("127.0.0.1" if each == socket.AF_INET else "::1", port))
            except OSError:
                s.close()
                continue
            s.settimeout(None)
            return s
        return None

    def _vm_socket(self, family: int) -> socket.socket:
        """A new TCP socket of the VM's namespace, from a stock made a batch at a time (the
        namespace switch is what costs)."""
        with self.stock_lock:
            stock = self.stock.setdefault(family, [])
            if not stock:
                make = functools.partial(socket.socket, family, socket.SOCK_STREAM)
                stock += _in_namespace(self, lambda: [make() for _ in range(STOCK)])
            return stock.pop()

    def serve(self) -> None:
        next_scan = 0.0
        while True:
            for key, _ in self.selector.select(max(0.0, next_scan - time.monotonic())):
                self.accept(key.fileobj, key.data)  # type: ignore[arg-type]
            if time.monotonic() >= next_scan:  # not after every accept: on time only
                self.rescan()
                next_scan = time.monotonic() + POLL


def _in_namespace(relay: Relay, make: Callable[[], T]) -> T:
    """Run *make* (a socket factory) with this thread in the VM's network namespace."""
    with relay.lock:
        sc.setns(relay.vm_ns, sc.CLONE_NEWNET)
        try:
            return make()
        finally:
            sc.setns(relay.host_ns, sc.CLONE_NEWNET)


def _pump(source: socket.socket, destination: socket.socket) -> None:
    """Copy one direction with splice (socket → pipe → socket, no copy through Python)
    until end of file, then pass the end on."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # a larger pipe: 16 times fewer splices per MiB
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, CHUNK)
    try:
        while True:
            n = os.splice(source.fileno(), write_end, CHUNK, flags=os.SPLICE_F_MOVE)
            if n == 0:
                break
            while n:
                n -= os.splice(read_end, destination.fileno(), n, flags=os.SPLICE_F_MOVE)
    except OSError:
        pass
    finally:
        os.close(read_end)
        os.close(write_end)
        with contextlib.suppress(OSError):
            destination.shutdown(socket.SHUT_WR)


def main(argv: list[str]) -> int:
    die_with_parent()
    if len(argv) != 3:
        print("usage: portrelay VM_PID OWNER_UID STATUS_FILE", file=sys.stderr)
        return 2
    set_title("lxss-portrelay")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    relay = Relay(int(argv[0]), int(argv[1]), argv[2])
    relay.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
