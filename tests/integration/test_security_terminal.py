"""lxssd started by hand from an admin's root terminal: no terminal reaches a distribution.

The harness's own lxssd starts in a new session without a terminal, so it cannot show
what happens when an admin types `lxssd` in a root shell, as the README says one may.
Here the service is started that way: the foreground child of a shell whose controlling
terminal is a pty the test holds (the admin's terminal). Then the attacker, root of a
distribution of an unprivileged user, tries to reach that terminal from a program and
from its `[boot] command`: open /dev/tty, push keystrokes with TIOCSTI, read what the
admin types. Promise 9 of docs/security.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LXSSD, Service, _remove_empty_cgroups, _service_processes
from mgmt import wait_for
from security_support import ATTACK, ATTACKER, UserDistribution, user_distribution

NAME = "sec-tty"


def _take_terminal() -> None:
    """In the shell, after setsid: make stdin (the pty) its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat from field 3 (state) on: [state, ppid, pgrp, session, tty_nr, ...]."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rpartition(") ")[2].split()


def tty_nr(pid: int) -> int:
    return int(_stat_fields(pid)[4])


def session_of(pid: int) -> int:
    return int(_stat_fields(pid)[3])


def descendants(pid: int) -> set[int]:
    """Every live process below *pid* on the host (children of children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                children.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class Screen:
    """Everything written to the admin's terminal, read as it comes (a terminal nobody
    reads fills up and blocks its writers)."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.data = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every slave descriptor is closed
                return
            if not chunk:
                return
            self.data += chunk

    def close(self) -> None:
        os.close(self.master)  # after the shell is gone: the reader ends with EIO first
        self._reader.join(10)


@contextlib.contextmanager
def admin_terminal_service() -> Iterator[tuple[Service, int, Screen]]:
    """A private lxssd typed into a root shell on a pty: (service, daemon pid, screen).

    The shell is a session leader with the pty as its controlling terminal and runs lxssd
    in the foreground, as `sh -c` does; it then stays, so the terminal stays in use."""
    root = Path(tempfile.mkdtemp(prefix="lxss-tty-", dir="/var/tmp"))
    service = Service(root, f"lxss-test-tty-{os.getpid()}")
    service.machine_config.write_text("")
    service.runtime_dir.mkdir(parents=True)
    os.chmod(root, 0o755)
    master, slave = os.openpty()
    script = f"{shlex.join([*LXSSD, '--debug'])}; echo lxssd-returned-$?; exec sleep 3600"
    shell = subprocess.Popen(
        ["/bin/sh", "-c", script], env=service.env, stdin=slave, stdout=slave, stderr=slave,
        start_new_session=True, preexec_fn=_take_terminal,
    )  # fmt: skip
    os.close(slave)
    screen = Screen(master)
    daemon = 0
    try:
        socket_path, lock = service.runtime_dir / "lxssd.sock", service.runtime_dir / "lxssd.lock"

        def started() -> int | None:
            if not socket_path.exists():
                return None
            with contextlib.suppress(OSError, ValueError):
                return int(lock.read_text())
            return None

        daemon = wait_for(started, 30, "lxssd started from a terminal to listen")
        yield service, daemon, screen
    finally:
        for user in (None, ATTACKER):
            with contextlib.suppress(Exception):
                service.lxss(*(["--for-user", user] if user else []), "--shutdown", timeout=60)
        if daemon:
            with contextlib.suppress(ProcessLookupError):
                pidfd = os.pidfd_open(daemon)
                os.kill(daemon, signal.SIGTERM)
                if not select.select([pidfd], [], [], 60)[0]:
                    os.kill(daemon, signal.SIGKILL)
                    select.select([pidfd], [], [], 10)
                os.close(pidfd)
        shell.kill()
        shell.wait(10)
        screen.close()
        shutil.rmtree(root, ignore_errors=True)
        _remove_empty_cgroups(service.cgroup_name)


def attempts(output: str) -> dict[str, str]:
    return dict(line.partition(": ")[::2] for line in output.splitlines() if ": " in line)


@pytest.fixture
def on_admin_terminal(test_users: tuple[str, str]) -> Iterator[tuple[Service, int, Screen]]:
    with admin_terminal_service() as started:
        yield started


def test_lxssd_started_from_a_root_terminal_holds_no_terminal(
    on_admin_terminal: tuple[Service, int, Screen],
) -> None:
    service, daemon, screen = on_admin_terminal
    assert session_of(daemon) == daemon, "lxssd did not start a session of its own"
    assert tty_nr(daemon) == 0, "lxssd kept the admin's terminal as its controlling terminal"
    with user_distribution(service, ATTACKER, NAME) as attacker:
        _attack_the_terminal(service, daemon, screen, attacker)


def _attack_the_terminal(
    service: Service, daemon: int, screen: Screen, attacker: UserDistribution
) -> None:
    conf = f"[boot]\ncommand={ATTACK} ctty > /boot-ctty 2>&1\n"
    attacker.ok("cat > /etc/wsl.conf", input=conf.encode())
    service.ok("--terminate", NAME, user=ATTACKER)
    both = attacker.ok(
        f"{ATTACK} ctty; for i in $(seq 100); do [ -s /boot-ctty ] && break; sleep 0.1; done; "
        "echo ---; cat /boot-ctty"
    ).out
    program, _, boot = both.partition("---\n")
    for who, output in (("a program", program), ("the [boot] command", boot)):
        found = attempts(output)
        assert found.get("ctty_nr") == "0", f"{who} has a controlling terminal:\n{output}"
        assert found.get("open_tty", "").startswith("ENXIO"), f"{who} opened /dev/tty:\n{output}"
        assert "tiocsti" not in found and "read_tty" not in found, output
    # Every process of the service, its VM and the distribution, seen from the host.
    processes = descendants(daemon) | {pid for pid, _ in _service_processes(service)}
    assert len(processes) >= 4, processes  # mini_init, init, session leader, ...
    holding = {}
    for pid in processes:
        with contextlib.suppress(OSError):
            if tty_nr(pid) != 0:
                holding[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
    assert holding == {}, f"processes of lxssd holding a terminal: {holding}"
    assert b"lxss-injected" not in screen.data, screen.data
    # What lxssd logs goes to its log (the runtime directory's, as on demand), not to the
    # admin's terminal.
    assert b"serving on" not in screen.data, screen.data
    log = (service.runtime_dir / "lxssd.log").read_text(errors="replace")
    assert "serving on" in log, "lxssd's log is not in its log file"
