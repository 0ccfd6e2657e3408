"""The session leader (lxss.guest.session_leader): each CreateProcess goes to a relay forked
ahead of it (a spare), and a launch that cannot start is answered with why and leaves nothing
behind.

relay.main is replaced here (the real one is run by the integration tests); everything
before it is real: the spare's fork, its channel, the request and the plan made from it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from lxss.guest import session_leader as session
from lxss.guest.process import Context
from lxss.guest.users import UserDatabase
from lxss.protocol import messages as m
from lxss.protocol.channel import Channel

PROGRAM = "/bin/true"


def _wait_for_exit(pid: int, timeout: float) -> int | None:
    """The raw wait status of our child *pid* once it has exited, or None after *timeout*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return status
        time.sleep(0.02)
    return None


class _Leader:
    """A session leader's channel with the service's end of it, and the launch's streams."""

    def __init__(self) -> None:
        service, leader = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.service = Channel(service, "service", timeout=10.0)
        self.channel = Channel(leader, "session", timeout=10.0)
        self.context = Context(
            users=UserDatabase(), conf_default_user=None, hostname="box", host_mount=None
        )
        self.pipes = [os.pipe() for _ in range(2)]  # control and lifetime stand-ins

    def ask(
        self, spare: session.Spare | None = None, username: str | None = None
    ) -> m.InitCreateProcessResponse:
        """Ask for one launch of PROGRAM (all streams as fds), as the service does, and serve
        it. The service's end runs in a thread: the leader answers only once served."""
        message = m.InitCreateProcess(
            rows=24, columns=80, flags=0, shell_options=0, default_uid=0, filename=PROGRAM,
            cwd="/", username=username, command_line=(PROGRAM,), environment=(),
            distribution_name="test", host_cwd=None,
        )  # fmt: skip
        fds = [self.pipes[0][0], self.pipes[1][0], 0, 1, 2]
        with ThreadPoolExecutor(1) as pool:
            asked = pool.submit(
                self.service.transaction, message, m.InitCreateProcessResponse, fds, 30.0
            )
            session.serve_one(self.channel, self.context, spare)
            reply, _ = asked.result(timeout=30)
        return reply

    def close(self) -> None:
        self.service.close()
        self.channel.close()
        for r, w in self.pipes:
            os.close(r)
            os.close(w)


@pytest.fixture
def leader() -> Iterator[_Leader]:
    made = _Leader()
    yield made
    made.close()


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def test_a_relay_that_does_not_report_in_time_is_killed(
    monkeypatch: pytest.MonkeyPatch, leader: _Leader
) -> None:
    pid_r, pid_w = os.pipe()

    def stuck_relay(*args: Any) -> int:
        """A relay that never forks its program nor answers."""
        os.write(pid_w, str(os.getpid()).encode())
        time.sleep(60)
        return 0

    monkeypatch.setattr(session.relay, "main", stuck_relay)
    monkeypatch.setattr(session, "RELAY_START_TIMEOUT", 0.5)
    relay_pid = 0
    try:
        reply = leader.ask()
        relay_pid = int(os.read(pid_r, 32))
        assert (reply.result, reply.pid) == (errno.ETIMEDOUT, 0)
        assert reply.message is not None and PROGRAM in reply.message
        assert "did not report" in reply.message
        status = _wait_for_exit(relay_pid, 5.0)
        assert status is not None, "the relay was left running"
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        relay_pid = 0
    finally:
        os.close(pid_r)
        os.close(pid_w)
        if relay_pid:
            _kill(relay_pid)


def test_a_relay_that_cannot_fork_its_program_is_answered_with_why(
    monkeypatch: pytest.MonkeyPatch, leader: _Leader
) -> None:
    def failing_relay(plan: Any, message: Any, fds: Any, answer: Any) -> int:
        answer(BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"))
        return 1

    monkeypatch.setattr(session.relay, "main", failing_relay)
    reply = leader.ask()
    assert reply.result == errno.EAGAIN
    assert reply.message == f"cannot start {PROGRAM}: Resource temporarily unavailable"
    assert _wait_for_exit(reply.pid, 5.0) is not None


def test_an_unknown_user_is_refused_and_no_relay_runs_for_it(
    monkeypatch: pytest.MonkeyPatch, leader: _Leader
) -> None:
    def relay_main(*args: Any) -> int:
        raise AssertionError("a relay was started for a user that does not exist")

    monkeypatch.setattr(session.relay, "main", relay_main)
    reply = leader.ask(username="lxss-no-such-user")
    assert reply.result != 0 and reply.pid == 0
    assert reply.message is not None and "lxss-no-such-user" in reply.message


def test_a_spare_that_died_before_its_request_is_replaced(
    monkeypatch: pytest.MonkeyPatch, leader: _Leader
) -> None:
    def started_relay(plan: Any, message: Any, fds: Any, answer: Any) -> int:
        answer(None)
        return 0

    monkeypatch.setattr(session.relay, "main", started_relay)
    dead = session.fork_spare(leader.channel, leader.context)
    _kill(dead.pid)
    reply = leader.ask(dead)
    assert (reply.result, reply.message) == (0, None)
    assert reply.pid not in (0, dead.pid)
    assert _wait_for_exit(reply.pid, 5.0) is not None
