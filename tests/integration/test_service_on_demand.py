"""`lxss` run by root starts lxssd when none answers (as wsl.exe starts wslservice), waits
until it says it is ready (sd_notify's READY=1, on a socket of the client's), and says in
one line when it cannot start."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Service, _remove_empty_cgroups
from mgmt import assert_fails


@pytest.fixture
def unstarted() -> Iterator[Service]:
    """A private service's directories and names, with no lxssd running for them."""
    root = Path(tempfile.mkdtemp(prefix="lxss-ondemand-", dir="/var/tmp"))
    service = Service(root, f"lxss-test-ondemand-{os.getpid()}")
    service.machine_config.write_text("")
    try:
        yield service
    finally:
        pid = _service_pid(service)
        if pid is not None:
            _stop(pid)
        shutil.rmtree(root, ignore_errors=True)
        _remove_empty_cgroups(service.cgroup_name)


def _service_pid(service: Service) -> int | None:
    try:
        text = (service.runtime_dir / "lxssd.lock").read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text and Path(f"/proc/{text}").exists() else None


def _stop(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM, then wait until the process is gone (it is not our child: its parent was
    the lxss command that started it)."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"lxssd {pid} did not stop on SIGTERM"
        time.sleep(0.05)


def test_root_starts_the_service_on_demand(unstarted: Service) -> None:
    socket_path = unstarted.runtime_dir / "lxssd.sock"
    assert not socket_path.exists()
    status = unstarted.lxss("--status")
    assert status.returncode == 0, status
    pid = _service_pid(unstarted)
    assert pid is not None, "no lxssd holds the instance lock after lxss started it"
    assert socket_path.is_socket()
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert os.getsid(pid) == pid, "an lxssd started on demand leads a session of its own"
    # The next command finds it running: no second service.
    assert unstarted.lxss("--status").returncode == 0
    assert _service_pid(unstarted) == pid
    _stop(pid)
    assert not socket_path.exists()


def test_a_service_that_cannot_start_is_said_at_once(unstarted: Service) -> None:
    unstarted.state_dir.write_text("a file where the state directory should be\n")
    result = unstarted.lxss("--status", timeout=60)
    log = unstarted.runtime_dir / "lxssd.log"
    assert_fails(result, f"lxssd stopped as it started; see {unstarted.runtime_dir}/lxssd.log")
    assert "lxssd cannot serve" in log.read_text(), log.read_text()
    assert str(unstarted.state_dir) in log.read_text()
