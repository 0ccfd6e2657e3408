"""A fork that fails in the guest (EAGAIN at the VM's pids limit) costs one request, never a
distribution or the VM: init (lxss.guest.init) and mini_init (lxss.guest.mini_init) answer
and serve on. The fork is made to fail here; tests/integration/test_guest_resilience.py
fills a real VM's pids limit."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest

from lxss.config.wslconf import load_wsl_conf
from lxss.guest import init, mini_init
from lxss.protocol import messages as m
from lxss.protocol.channel import Channel


def _no_fork() -> int:
    raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


class _Replies:
    """A stand-in for init's channel that keeps what init answers."""

    def __init__(self) -> None:
        self.replies: list[tuple[m.Message, list[int]]] = []

    def reply(self, header: object, message: m.Message, fds: list[int] | None = None) -> None:
        self.replies.append((message, list(fds or [])))


def _init(channel: object, boot_command: str | None = None) -> init.Init:
    """An Init as init.main makes one, without the process-wide SIGCHLD set-up."""
    text = f"[boot]\ncommand = {boot_command}\n" if boot_command else None
    distribution = object.__new__(init.Init)
    distribution.channel = channel  # type: ignore[assignment]
    distribution.conf = load_wsl_conf(text, "/etc/wsl.conf")[0]
    distribution.hostname = "test"
    distribution.host_mount = None
    distribution.boot_command_started = False
    return distribution


def test_init_answers_a_session_it_cannot_fork_with_the_errno(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replies = _Replies()
    distribution = _init(replies)
    header = m.MessageHeader(m.InitCreateSession.TYPE, 24, 0, 1)
    before = _open_fds()
    monkeypatch.setattr(os, "fork", _no_fork)
    distribution.create_session(header, m.InitCreateSession(console_id=7))
    monkeypatch.undo()
    assert replies.replies == [(m.InitCreateSessionResponse(result=errno.EAGAIN), [])]
    assert _open_fds() == before, "the session's socketpair was left open"


def test_init_gives_up_a_boot_command_it_cannot_fork(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    distribution = _init(_Replies(), boot_command="touch /run/booted")
    monkeypatch.setattr(os, "fork", _no_fork)
    distribution.start_boot_command()
    monkeypatch.undo()
    assert distribution.boot_command_started  # not tried again this start
    err = capfd.readouterr().err
    assert "[boot] command not started: Resource temporarily unavailable" in err


LAUNCH = m.MiniInitLaunchInit("second", "{guid}", "/rootfs", "host", 0, 0)


def test_mini_init_reports_a_launch_it_cannot_fork_and_serves_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    vm = object.__new__(mini_init.MiniInit)
    vm.distributions = {}
    vm.mount_points = {}
    vm.scratch = str(tmp_path)
    (tmp_path / "roots").mkdir()
    monkeypatch.setattr(os, "fork", _no_fork)
    before = _open_fds()
    service_end, guest_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    tree = os.open(str(tmp_path), os.O_PATH)  # stands for the detached tree
    with Channel(service_end, "service") as service:
        vm.launch_init(LAUNCH, [guest_end.detach(), tree])  # mini_init owns the fds it is given
        monkeypatch.undo()
        result, fds = service.receive(m.MiniInitCreateInstanceResult, timeout=5)
    assert _open_fds() == before, "a descriptor was left open"
    assert fds == []
    assert (result.result, result.failure_step, result.pid) == (
        errno.EAGAIN, m.FailureStep.LAUNCH_INIT, 0
    )  # fmt: skip
    assert result.warnings[0].startswith("cannot start the distribution's init: ")
    assert vm.distributions == {} and vm.mount_points == {}
    assert list((tmp_path / "roots").iterdir()) == [], "its mount point was removed"
