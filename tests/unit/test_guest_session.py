"""The session leader's relay start (lxss.guest.session._start_relay): what a launch that
cannot start leaves behind (nothing)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from typing import Any

import pytest

from lxss.guest import session


class _Channel:
    def close(self) -> None:
        pass


class _Plan:
    executable = "/bin/prog"


def _wait_for_exit(pid: int, timeout: float) -> int | None:
    """The raw wait status of our child *pid* once it has exited, or None after *timeout*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return status
        time.sleep(0.02)
    return None


def test_a_relay_that_does_not_report_in_time_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    pid_r, pid_w = os.pipe()

    def stuck_relay(*args: Any) -> int:
        """A relay that never forks its program nor reports."""
        os.write(pid_w, str(os.getpid()).encode())
        time.sleep(60)
        return 0

    monkeypatch.setattr(session.relay, "main", stuck_relay)
    monkeypatch.setattr(session, "RELAY_START_TIMEOUT", 0.2)
    relay_pid = 0
    try:
        result, pid, text = session._start_relay(
            _Channel(),  # type: ignore[arg-type]
            _Plan(),  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
        )
        relay_pid = int(os.read(pid_r, 32))
        assert (result, pid) == (errno.ETIMEDOUT, 0)
        assert text is not None and "/bin/prog" in text and "did not report" in text
        status = _wait_for_exit(relay_pid, 5.0)
        assert status is not None, "the relay was left running"
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        relay_pid = 0
    finally:
        os.close(pid_r)
        os.close(pid_w)
        if relay_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(relay_pid, signal.SIGKILL)
            os.waitpid(relay_pid, 0)


def test_a_relay_that_reports_a_failure_is_answered_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing_relay(plan: Any, message: Any, fds: Any, ready_fd: int) -> int:
        os.write(ready_fd, b"Resource temporarily unavailable")
        return 1

    monkeypatch.setattr(session.relay, "main", failing_relay)
    result, pid, text = session._start_relay(
        _Channel(),  # type: ignore[arg-type]
        _Plan(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
    )
    assert result == errno.EAGAIN
    assert text == "cannot start /bin/prog: Resource temporarily unavailable"
    assert _wait_for_exit(pid, 5.0) is not None
