"""Helpers shared by the runtime tests (test_run_*.py, test_tty.py, test_lifetime.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from conftest import Service, busybox_tarball

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll *probe* until it returns something true; fail the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def states(service: Service, user: str | None = None) -> dict[str, str]:
    """Every distribution's state, as `lxss -l -v` prints it."""
    listing = service.ok("-l", "-v", user=user).out.splitlines()
    found = {}
    for line in listing[1:]:
        fields = line.lstrip("* ").split()
        found[fields[0]] = fields[1]
    return found


def vm_running(service: Service) -> bool:
    status = service.ok("--status").out
    assert "Utility VM: " in status, status
    return "Utility VM: running" in status


@contextlib.contextmanager
def private_distribution(service: Service, directory: Path, name: str) -> Iterator[str]:
    """A busybox distribution of the test's own, imported now and unregistered at the end."""
    tarball = busybox_tarball(directory)
    service.ok("--import", name, str(directory / f"{name}-install"), str(tarball))
    try:
        yield name
    finally:
        service.lxss("--unregister", name, timeout=60)


def write_wsl_conf(service: Service, name: str, text: str) -> None:
    """Write /etc/wsl.conf in *name* and stop it, so that its next start reads the file."""
    service.ok(
        "-d", name, "-u", "root", "-e", "sh", "-c", "cat > /etc/wsl.conf", input=text.encode()
    )
    service.ok("--terminate", name)


@contextlib.contextmanager
def machine_config(service: Service, text: str) -> Iterator[None]:
    """The service's machine configuration, in force from the next utility VM start
    (the VM is shut down first); the empty configuration is restored afterwards."""
    service.ok("--shutdown")
    service.machine_config.write_text(text)
    try:
        yield
    finally:
        service.machine_config.write_text("")
        service.lxss("--shutdown", timeout=60)
