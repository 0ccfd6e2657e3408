"""The guest under pressure: a full pids limit, a pty nobody holds, FIFOs where files belong.

Each is something a distribution's own processes (or its archive) can cause, and none may
cost more than the request it spoils: not the distribution, not the VM, not a CPU.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import LXSS, Result, Service, busybox_root
from run_support import machine_config, private_distribution, states, wait_until

# The pids limit counts every process of the VM; 64 is soon filled from inside.
PIDS_LIMITED = "[wsl2]\npidsLimit=64\n"
# Forks until the VM's pids limit refuses, then holds the last pid itself: busybox sh
# exits on a failed fork, and its EXIT trap execs (no fork needed) into a long sleep.
FILL = "trap 'exec sleep 120' EXIT; while :; do sleep 120 </dev/null >/dev/null 2>&1 & done"


@contextlib.contextmanager
def _filled_vm(service: Service, distribution: str) -> Iterator[None]:
    """The VM's every pid in use, from *distribution*, for the duration of the block."""
    filler = subprocess.Popen(
        [*LXSS, "-d", distribution, "--", FILL], env=service.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert filler.stderr is not None
        seen = b""
        deadline = time.monotonic() + 60
        while b"can't fork" not in seen:
            assert time.monotonic() < deadline, f"the VM did not fill up: {seen!r}"
            ready, _, _ = select.select([filler.stderr], [], [], 1.0)
            if ready:
                chunk = os.read(filler.stderr.fileno(), 4096)
                assert chunk, f"the filler ended: {seen!r} (exit {filler.wait()})"
                seen += chunk
        time.sleep(0.5)  # the shell's exit trap: exec into sleep, keeping its pid
        yield
    finally:
        filler.kill()
        filler.wait()
        if filler.stderr is not None:
            filler.stderr.close()


def _from_another_console(service: Service, *args: str) -> Result:
    """lxss run in a session of its own: its consoleId (os.getsid(0)) is new, so the
    distribution's init must fork a session leader for it."""
    proc = subprocess.run(
        [*LXSS, *args], env=service.env, stdin=subprocess.DEVNULL, capture_output=True,
        timeout=60, start_new_session=True, check=False,
    )  # fmt: skip
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_forks_refused_by_the_pids_limit_cost_one_request_each(
    service: Service, busybox: str, tmp_path: Path
) -> None:
    with (
        private_distribution(service, tmp_path, "second") as second,
        machine_config(service, PIDS_LIMITED),
    ):
        service.ok("-d", busybox, "-e", "true")  # the VM and bb are up
        with _filled_vm(service, busybox):
            # init cannot fork a session leader for a new console.
            session = _from_another_console(service, "-d", busybox, "-e", "true")
            assert session.returncode == 255, session
            assert "Resource temporarily unavailable" in session.err, session
            assert states(service)[busybox] == "Running"
            # mini_init cannot fork a second distribution's init.
            start = service.lxss("-d", second, "-e", "true", timeout=60)
            assert start.returncode == 255, start
            assert "'second' failed to start" in start.err, start
            assert "Resource temporarily unavailable" in start.err, start
            assert states(service)[busybox] == "Running"
        # The sleepers outlive their client (they are on pipes): stopping bb frees the pids,
        # and the VM serves on: mini_init starts the second distribution now.
        service.ok("--terminate", busybox)
        service.ok("-d", second, "--", "true")  # a shell builtin: this root has no true
        service.ok("-d", busybox, "-e", "true")


# The relay and a pty nobody holds ---------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def _relays(service: Service) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            name = Path(f"/proc/{entry}/comm").read_text().strip()
            cgroups = Path(f"/proc/{entry}/cgroup").read_text()
        except OSError:
            continue
        if name == "lxss-relay" and f"/{service.cgroup_name}/" in cgroups:
            found.append(int(entry))
    return found


def test_a_relay_idles_once_the_program_lets_go_of_its_terminal(
    service: Service, busybox: str
) -> None:
    """All holders of the pty's slave closed it: reading the master gives EIO at once,
    forever. The relay must stop polling it, not spin a CPU until the program exits."""
    master, slave = os.openpty()
    command = "exec </dev/null >/dev/null 2>&1; sleep 4"
    client = subprocess.Popen(
        [*LXSS, "-d", busybox, "--", command], env=service.env, stdin=slave, stdout=slave,
        stderr=slave, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    try:
        relays = wait_until(lambda: _relays(service), 30, "the program's relay")
        start = {pid: _cpu_seconds(pid) for pid in relays}
        time.sleep(2.5)
        used = {
            pid: _cpu_seconds(pid) - start[pid] for pid in relays if Path(f"/proc/{pid}").exists()
        }
        assert used and max(used.values()) < 0.5, f"relay CPU seconds in 2.5 s: {used}"
        assert client.wait(timeout=30) == 0
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        os.close(master)


# FIFOs where a distribution's files should be ----------------------------------------------


def _tarball_with_fifos(directory: Path) -> Path:
    """A busybox root whose /etc/os-release, /etc/passwd and /etc/group are FIFOs."""
    root = busybox_root(directory / "fifo-root")
    (root / "bin/true").symlink_to("busybox")
    for name in ("os-release", "passwd", "group"):
        os.mkfifo(root / "etc" / name)
    tarball = directory / "fifos.tar"
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."],
                   check=True)  # fmt: skip
    return tarball


def test_fifos_at_etc_files_hang_neither_import_nor_start(service: Service, tmp_path: Path) -> None:
    tarball = _tarball_with_fifos(tmp_path)
    name = "fifos"
    imported = service.lxss("--import", name, str(tmp_path / "install"), str(tarball), timeout=60)
    try:
        assert imported.returncode == 0, imported
        # init reads os-release and the locale; the session leader reads passwd and group.
        script = 'echo "$USER"; test -p /etc/os-release'
        ran = service.lxss("-d", name, "-e", "sh", "-c", script, timeout=60)
        assert (ran.returncode, ran.out) == (0, "root\n"), ran
    finally:
        service.lxss("--unregister", name, timeout=60)
