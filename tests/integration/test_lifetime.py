"""How long distributions and the utility VM live, what stops them, what they leave, and
the limits of the VM spec.

Idle timeouts and limits come from the service's machine configuration, which
is read when a user's utility VM starts: `machine_config` shuts the VM down,
writes the file and restores an empty one afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LXSS, HostState, Service
from run_support import (
    machine_config,
    private_distribution,
    states,
    vm_running,
    wait_until,
    write_wsl_conf,
)

NAMESPACES = ("pid", "mnt", "uts", "ipc", "user", "cgroup")
INSTANCE_IDLE_MS = 2000
SHORT_IDLE = f"[general]\ninstanceIdleTimeout={INSTANCE_IDLE_MS}\n[wsl2]\nvmIdleTimeout=1000\n"


def _namespaces_in_use() -> set[str]:
    """Every namespace some host process is in or holds open ("pid:[4026531836]", ...)."""
    found: set[str] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for kind in NAMESPACES:
            try:
                found.add(os.readlink(f"/proc/{entry}/ns/{kind}"))
            except OSError:
                pass
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if target.split(":", 1)[0] in NAMESPACES and target.endswith("]"):
                found.add(target)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[fields.index("-") + 1] == "nsfs":
                found.add(fields[3].strip("/"))
    return found


def _distribution_namespaces(service: Service, name: str) -> dict[str, str]:
    script = "; ".join(f"readlink /proc/self/ns/{kind}" for kind in NAMESPACES)
    links = service.ok("-d", name, "--", script).out.split()
    return dict(zip(NAMESPACES, links, strict=True))


def _same_for_lxss(before: HostState, after: HostState) -> bool:
    """The host as before, as far as lxss goes (other software may mount meanwhile)."""
    if any("lxss" in mount for mount in before.mounts ^ after.mounts):
        return False
    fields = ("cgroups", "processes", "service_fds", "scratch")
    return all(getattr(before, name) == getattr(after, name) for name in fields)


@pytest.fixture
def short_idle(service: Service, busybox: str) -> Iterator[None]:
    with machine_config(service, SHORT_IDLE):
        yield


# What stopping leaves ------------------------------------------------------------------


def test_terminate_and_shutdown_leave_nothing_behind(service: Service, busybox: str) -> None:
    before = HostState.capture(service)
    host_namespaces = _namespaces_in_use()
    # Something running inside, for the stop to deal with.
    service.ok("-d", busybox, "--", "sleep 1000 </dev/null >/dev/null 2>&1 &")
    namespaces = _distribution_namespaces(service, busybox)
    vm_only = {"user", "cgroup"}  # the VM's own; the distribution's are the other four
    assert not set(namespaces.values()) & host_namespaces
    running = HostState.capture(service)
    assert running.processes > before.processes and running.cgroups > before.cgroups
    names = {name for _, name in running.processes - before.processes}
    assert {"lxss-init", "lxss-relay", "sleep"} <= names
    assert set(namespaces.values()) <= _namespaces_in_use()

    service.ok("--terminate", busybox)
    assert states(service)[busybox] == "Stopped"
    distribution_only = {namespaces[kind] for kind in NAMESPACES if kind not in vm_only}
    wait_until(
        lambda: not distribution_only & _namespaces_in_use(), 10,
        "the distribution's namespaces to go",
    )  # fmt: skip
    left = {name for _, name in HostState.capture(service).processes - before.processes}
    assert left <= {"lxss-vm", "lxss-mini_init"}, left
    assert vm_running(service)

    service.ok("--shutdown")
    assert not vm_running(service)
    wait_until(lambda: _same_for_lxss(before, HostState.capture(service)), 10, "a clean host")
    assert not set(namespaces.values()) & _namespaces_in_use()


def test_running_state_in_list(service: Service, busybox: str) -> None:
    assert states(service)[busybox] == "Stopped"
    assert busybox not in service.lxss("-l", "--running").out.split()
    service.ok("-d", busybox, "-e", "true")
    assert states(service)[busybox] == "Running"
    assert busybox in service.ok("-l", "--running").out.split()
    service.ok("--terminate", busybox)
    assert states(service)[busybox] == "Stopped"
    assert busybox not in service.lxss("-l", "--running").out.split()


def test_a_restarted_vm_still_sees_its_distributions_stop(service: Service, busybox: str) -> None:
    # Regression: a wait on the first VM's notify channel, left registered in the event
    # loop when the channel closed, hid the next VM's channel (same fd number) from epoll:
    # its distributions' exits went unseen, terminate took 10 s and --shutdown hung.
    for _ in range(3):
        service.ok("-d", busybox, "-e", "true")
        started = time.monotonic()
        service.ok("--terminate", busybox, timeout=30)
        assert time.monotonic() - started < 5
        assert states(service)[busybox] == "Stopped"
        service.ok("--shutdown", timeout=30)


def test_shutdown_stops_a_distribution_whose_init_does_not_answer(
    service: Service, busybox: str
) -> None:
    # Init frozen: TerminateInstance gets no answer (5 s), the distribution does not end
    # (10 s more), and the service stops the VM. The idle timer, set to fire in that
    # window, starts a second terminate that is waiting on init's channel when the VM
    # stops: the channel's close must not leave that wait behind for the next VM.
    with machine_config(service, "[general]\ninstanceIdleTimeout=12000\n"):
        service.ok("-d", busybox, "-e", "true")
        inits = [pid for pid, name in HostState.capture(service).processes if name == "lxss-init"]
        assert len(inits) == 1
        os.kill(inits[0], signal.SIGSTOP)
        result = service.lxss("--shutdown", timeout=60)
        assert result.returncode == 0, result
        assert not vm_running(service)
        assert states(service)[busybox] == "Stopped"
        # The next VM and distribution start as usual.
        try:
            again = service.lxss("-d", busybox, "-e", "echo", "again", timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the distribution did not start again after a forced stop")
        assert again.returncode == 0 and again.out == "again\n", again


# Two distributions at once -------------------------------------------------------------


def test_two_distributions_run_side_by_side(service: Service, busybox: str, tmp_path: Path) -> None:
    with private_distribution(service, tmp_path, "side") as side:
        write_wsl_conf(service, side, "[network]\nhostname = side-host\n")
        long_running = subprocess.Popen(
            [*LXSS, "-d", busybox, "-e", "sleep", "31"], env=service.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            wait_until(
                lambda: "sleep 31" in service.ok("-d", busybox, "-e", "ps", "-o", "args").out,
                10, "sleep 31 to run in bb",
            )  # fmt: skip
            side_view = service.ok("-d", side, "--", "hostname; ps -o args").out
            main_host = service.ok("-d", busybox, "-e", "hostname").out.strip()
            assert side_view.splitlines()[0] == "side-host"
            assert main_host != "side-host"
            assert "sleep 31" not in side_view
            running = service.ok("-l", "--running").out.split()
            assert busybox in running and side in running
            pid_ns = {
                name: service.ok("-d", name, "--", "readlink /proc/self/ns/pid").out
                for name in (busybox, side)
            }
            assert pid_ns[busybox] != pid_ns[side]
            # The client forwards SIGTERM to the program, and reports its death by it.
            long_running.send_signal(signal.SIGTERM)
            assert long_running.wait(10) == 128 + signal.SIGTERM
        finally:
            if long_running.poll() is None:
                long_running.kill()
                long_running.wait()
            if long_running.stderr is not None:
                long_running.stderr.close()


# Idle timeouts and what keeps a distribution running -----------------------------------


def test_idle_distribution_stops_then_the_vm(
    service: Service, busybox: str, short_idle: None
) -> None:
    service.ok("-d", busybox, "-e", "true")
    finished = time.monotonic()
    assert states(service)[busybox] == "Running"
    wait_until(lambda: states(service)[busybox] == "Stopped", 15, "the idle distribution to stop")
    stopped = time.monotonic()
    assert stopped - finished >= INSTANCE_IDLE_MS / 1000 - 0.5
    wait_until(lambda: not vm_running(service), 15, "the idle VM to stop")
    assert time.monotonic() - stopped >= 0.5


def test_a_background_process_keeps_the_distribution_running(
    service: Service, busybox: str, short_idle: None
) -> None:
    # busybox has no nohup applet: the same, spelled out.
    service.ok("-d", busybox, "--", "(trap '' HUP; exec sleep 5) </dev/null >/dev/null 2>&1 &")
    started = time.monotonic()
    # Well past the idle timeout, it is still running...
    while time.monotonic() - started < INSTANCE_IDLE_MS / 1000 + 1.5:
        assert states(service)[busybox] == "Running"
        time.sleep(0.25)
    # ...and it stops once the background process has ended (and the idle time passed).
    wait_until(lambda: states(service)[busybox] == "Stopped", 15, "the distribution to stop")
    assert time.monotonic() - started >= 5


def test_killed_client_leaves_a_program_on_pipes_running(
    service: Service, busybox: str, short_idle: None
) -> None:
    proc = subprocess.Popen(
        [*LXSS, "-d", busybox, "--", "echo started; sleep 4; echo finished"], env=service.env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"started\n"
        proc.kill()
        assert proc.wait(10) == -signal.SIGKILL
        killed = time.monotonic()
        # The program writes to our pipe itself: its output still comes, after the client's end.
        time.sleep(INSTANCE_IDLE_MS / 1000 + 0.5)
        assert states(service)[busybox] == "Running"
        assert proc.stdout.read() == b"finished\n"
        assert time.monotonic() - killed >= 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    wait_until(lambda: states(service)[busybox] == "Stopped", 15, "the distribution to stop")


# Limits of the VM spec -----------------------------------------------------------------


def test_memory_limit_kills_the_process_not_the_host(service: Service, busybox: str) -> None:
    with machine_config(service, "[wsl2]\nmemory=256MB\n"):
        # The shell holds 600 MB of "a" in a variable; the VM may use 256 MB.
        hog = 'x=$(head -c 600000000 /dev/zero | tr "\\0" a); echo survived ${#x}'
        result = service.lxss("-d", busybox, "--", hog, timeout=120)
        assert result.returncode == 137, result
        assert "survived" not in result.out
        assert service.process is not None and service.process.poll() is None
        assert service.ok("-d", busybox, "-e", "echo", "still here").out == "still here\n"
        assert vm_running(service)


def test_pids_limit_stops_a_fork_loop(service: Service, busybox: str) -> None:
    with machine_config(service, "[wsl2]\npidsLimit=64\n"):
        loop = (
            "i=0; while [ $i -lt 100 ]; do sleep 30 </dev/null >/dev/null 2>&1 & "
            "i=$((i+1)); echo $i; done"
        )
        result = service.lxss("-d", busybox, "--", loop, timeout=60)
        assert result.returncode != 0, result
        assert "can't fork" in result.err
        started = [int(n) for n in result.out.split()]
        assert 20 < len(started) < 64, result
        # The service is unaffected, and stopping the distribution frees the VM's pids.
        assert service.process is not None and service.process.poll() is None
        service.ok("--terminate", busybox)
        assert service.ok("-d", busybox, "-e", "echo", "room again").out == "room again\n"


def test_a_launch_that_cannot_fork_says_so(service: Service, busybox: str) -> None:
    """With the VM's pids all taken, a launch fails with the reason and the distribution runs
    on. The session leader keeps a relay forked ahead (a spare), so the launch right after
    the fill may still fit; programs are started until one cannot be."""
    running: list[subprocess.Popen[bytes]] = []
    with machine_config(service, "[wsl2]\npidsLimit=64\n"):
        fill = "while :; do sleep 30 </dev/null >/dev/null 2>&1 & done"
        filled = service.lxss("-d", busybox, "--", fill, timeout=60)
        assert "can't fork" in filled.err, filled
        failed = None
        try:
            for _ in range(16):
                launch = subprocess.Popen(
                    [*LXSS, "-d", busybox, "-e", "sleep", "60"], env=service.env,
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                )  # fmt: skip
                try:
                    _, err = launch.communicate(timeout=3)  # a failed launch ends at once
                except subprocess.TimeoutExpired:
                    running.append(launch)  # started: it holds a pid (and its relay one)
                    continue
                failed = (launch.returncode, err.decode(errors="replace"))
                break
            assert failed is not None, "every launch started with the pids limit reached"
            assert states(service)[busybox] == "Running"
        finally:
            service.lxss("--terminate", busybox)
            for launch in running:
                launch.communicate(timeout=30)
        code, err = failed
        assert code == 255, failed
        assert "stopped" not in err, failed
        assert "Resource temporarily unavailable" in err, failed
