"""A test resolver: a dnsmasq on a free loopback address that knows lxss-test.example (and
forwards the rest to the machine's own resolvers), and a host resolv.conf naming only it."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxss.config.resolvconf import read_host_resolvers

TEST_NAME = "lxss-test.example"
TEST_ADDRESS = "192.0.2.7"


def _free_loopback() -> str:
    """A 127.x.y.z whose port 53 nobody uses (127.0.0.53 may be systemd-resolved's)."""
    for _ in range(50):
        address = f"127.{random.randint(60, 250)}.{random.randint(0, 250)}.{random.randint(2, 250)}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((address, 53))
            except OSError:
                continue
        return address
    raise RuntimeError("no free loopback address for dnsmasq")


@contextlib.contextmanager
def local_resolver() -> Iterator[tuple[str, Path]]:
    """(the resolver's address, a resolv.conf naming only it), for as long as it runs."""
    if shutil.which("dnsmasq") is None:
        pytest.fail("dnsmasq is missing: ./setup.sh deps installs dnsmasq-base")
    address = _free_loopback()
    upstreams = [s for s in read_host_resolvers().nameservers if not s.startswith("127.")]
    directory = Path(tempfile.mkdtemp(prefix="lxss-dns-", dir="/var/tmp"))
    argv = [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        f"--listen-address={address}", "--bind-interfaces", "--port=53", "--pid-file=",
        "--user=root", f"--address=/{TEST_NAME}/{TEST_ADDRESS}",
        *(f"--server={server}" for server in upstreams),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind((address, 53))
                except OSError:
                    break  # dnsmasq has bound it: it listens
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        resolv = directory / "host-resolv.conf"
        resolv.write_text(f"# the test's host resolvers\nnameserver {address}\nsearch example\n")
        yield address, resolv
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def dns() -> Iterator[tuple[str, Path]]:
    """The module's resolver (import it into a test module to use it)."""
    with local_resolver() as resolver:
        yield resolver
