"""Terminals: an interactive session driven in tmux, ptys made here, and hang-ups."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import LXSS, Service
from run_support import wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"
)


@dataclass
class Tmux:
    """A tmux server of the test's own (its own socket), with one session."""

    socket: str
    session: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10,
            check=False,
        )  # fmt: skip

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session).stdout

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", self.session, "-l", text)
        self.run("send-keys", "-t", self.session, "Enter")

    def alive(self) -> bool:
        return self.run("has-session", "-t", self.session).returncode == 0

    def wait_for(self, text: str, timeout: float = 15) -> None:
        """Poll the screen until *text* shows up (failing with the screen as it was)."""
        deadline = time.monotonic() + timeout
        while text not in (screen := self.screen()):
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} did not show up in {timeout:.0f} s; screen:\n{screen}")
            time.sleep(0.05)


@contextlib.contextmanager
def lxss_in_tmux(service: Service, *args: str, columns: int = 100) -> Iterator[Tmux]:
    """`lxss ARGS...` on a terminal of its own: a tmux server of the test's own."""
    name = f"lxss-test-{os.getpid()}-{time.monotonic_ns()}"
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(service.env.items()))
    command = f"env {env} " + " ".join(shlex.quote(a) for a in [*LXSS, *args])
    terminal = Tmux(socket=name, session="s")
    started = terminal.run(
        "-f", "/dev/null", "new-session", "-d", "-s", "s", "-x", str(columns), "-y", "30", command
    )
    assert started.returncode == 0, started.stderr
    try:
        yield terminal
    finally:
        terminal.run("kill-server")


@pytest.fixture
def tmux(service: Service, busybox: str) -> Iterator[Tmux]:
    with lxss_in_tmux(service, "-d", busybox) as terminal:
        yield terminal


def _prompt_shown(screen: str) -> bool:
    lines = [line for line in screen.splitlines() if line.strip()]
    return bool(lines) and lines[-1].startswith("root@") and lines[-1].rstrip().endswith("#")


def test_interactive_session_in_tmux(service: Service, busybox: str, tmux: Tmux) -> None:
    wait_until(lambda: _prompt_shown(tmux.screen()), 20, "the login shell's prompt")

    # A pty of the distribution's own devpts, at the size of the window.
    tmux.type("echo tty=$(tty) size=$(stty size | tr ' ' x) pts=$(ls /dev/pts | tr '\\n' ,)")
    tmux.wait_for("tty=/dev/pts/0 size=30x100 pts=0,ptmx,")

    # A resize reaches the program's terminal.
    tmux.run("resize-window", "-t", "s", "-x", "120", "-y", "40")

    # The resize and the keys typed next travel separately: ask until the new size shows.
    def resized() -> bool:
        tmux.type("clear; echo now=$(stty size | tr ' ' x)")
        time.sleep(0.3)
        return "now=40x120" in tmux.screen()

    wait_until(resized, 20, "stty size to show 40 rows and 120 columns")

    # Ctrl-C interrupts the foreground program, not the session.
    tmux.type("clear; sleep 1000")
    wait_until(
        lambda: "sleep 1000" in service.ok("-d", busybox, "-e", "ps", "-o", "args").out,
        15, "sleep to run",
    )  # fmt: skip
    tmux.run("send-keys", "-t", "s", "C-c")
    wait_until(
        lambda: "sleep 1000" not in service.ok("-d", busybox, "-e", "ps", "-o", "args").out,
        10, "sleep to be interrupted",
    )  # fmt: skip
    tmux.type("echo status=$?")
    tmux.wait_for("status=130")
    assert tmux.alive()

    # `exit` ends the shell, the client and so the tmux session.
    tmux.type("exit")
    wait_until(lambda: not tmux.alive(), 15, "the session to end")


# Ptys made here ------------------------------------------------------------------------


def _drain(master: int, until: bytes, timeout: float) -> bytes:
    """Read the pty master until *until* shows up (the program's output, as sent)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while until not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"timed out waiting for {until!r} on the terminal (got {seen!r})")
        ready, _, _ = select.select([master], [], [], remaining)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
    return seen


def _on_pty(
    service: Service, *args: str, stdout: int | None = None, typed: bytes = b""
) -> tuple[subprocess.Popen[bytes], int]:
    """lxss on a new pty; *typed* is typed on it before lxss starts (typeahead)."""
    master, slave = pty.openpty()
    os.write(master, typed)
    try:
        proc = subprocess.Popen(
            [*LXSS, *args], env=service.env, stdin=slave,
            stdout=slave if stdout is None else stdout, stderr=slave, start_new_session=True,
        )  # fmt: skip
    finally:
        os.close(slave)
    return proc, master


# The second case: keys typed (or pasted) while lxss and the distribution were still
# starting. ssh keeps such keys, and so must the switch of the caller's terminal to raw mode
# (no flush).
@pytest.mark.parametrize(
    ("script", "typed", "expected", "code"),
    [("echo on-the-pty; exit 5", b"", b"on-the-pty", 5),
     ("read -r line; echo got=$line; exit 3", b"typed-ahead\n", b"got=typed-ahead", 3)],
    ids=["output", "typeahead"],
)  # fmt: skip
def test_exit_status_and_output_through_a_pty(
    service: Service, busybox: str, script: str, typed: bytes, expected: bytes, code: int
) -> None:
    proc, master = _on_pty(service, "-d", busybox, "--", script, typed=typed)
    try:
        output = _drain(master, expected, 30)
        assert proc.wait(20) == code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert expected + b"\r\n" in output


def test_a_terminal_stdin_with_a_pipe_stdout(service: Service, busybox: str) -> None:
    read_end, write_end = os.pipe()
    script = "test -t 0 && echo stdin-is-a-tty; test -t 1 || echo stdout-is-not; exit 4"
    proc, master = _on_pty(service, "-d", busybox, "--", script, stdout=write_end)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as r:
            assert r.read() == b"stdin-is-a-tty\nstdout-is-not\n"
        assert proc.wait(20) == 4
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_killed_client_hangs_up_a_program_on_a_pty(service: Service, busybox: str) -> None:
    script = "trap 'echo hup >> /tmp/hangup; exit 0' HUP; echo ready; while :; do sleep 1; done"
    proc, master = _on_pty(service, "-d", busybox, "--", script)
    try:
        _drain(master, b"ready", 20)
        proc.kill()
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)

    def hung_up() -> str | None:
        result = service.lxss("-d", busybox, "-e", "cat", "/tmp/hangup")
        return result.out if result.returncode == 0 else None

    assert wait_until(hung_up, 15, "the program to get SIGHUP") == "hup\n"
    wait_until(
        lambda: "while :" not in service.ok("-d", busybox, "-e", "ps", "-o", "args").out,
        10, "the program to end",
    )  # fmt: skip
