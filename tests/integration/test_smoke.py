"""The README's main job, end to end: the built-in distribution runs a command."""

from __future__ import annotations

from conftest import Service


def test_first_command_in_builtin_distribution(service: Service, busybox: str) -> None:
    result = service.ok("-d", busybox, "--", "echo hello from $(hostname); cat /etc/os-release")
    assert result.out.startswith("hello from ")
    assert "ID=busybox" in result.out
    assert result.err == ""
