"""--debug-shell (WSL's): root's shell in the utility VM, outside every distribution."""

from __future__ import annotations

import pytest
from conftest import Service
from mgmt import call

SCRIPT = b"""cat /proc/1/comm
test -e /mnt/host && echo in-a-distribution || echo outside-every-distribution
id -u
exit 7
"""


def test_root_gets_a_shell_in_the_utility_vm(service: Service, busybox: str) -> None:
    result = service.lxss("--debug-shell", input=SCRIPT)
    assert result.returncode == 7, result
    # pid 1 is the VM's mini_init, the host is not mounted at /mnt/host as in a distribution,
    # and the shell is the VM's root.
    assert result.out == "lxss-mini_init\noutside-every-distribution\n0\n", result
    status = service.ok("--status").out
    assert "Utility VM: running" in status  # started for the shell, stopped when idle


def test_debug_shell_is_for_root_only(service: Service, test_users: tuple[str, str]) -> None:
    user = test_users[0]
    result = service.lxss("--debug-shell", user=user, input=b"echo reached\n")
    assert result.returncode == 255, result
    assert result.out == ""
    assert result.err.startswith("lxss: --debug-shell is for root only"), result
    # The service says no as well, to any Varlink client.
    reply = call(service, "DebugShell", user=user, stdin=0, stdout=1, stderr=2)
    assert reply["error"] == "io.lxss.Service.PermissionDenied", reply


@pytest.mark.parametrize("extra", [["--for-user", "root"], []])
def test_debug_shell_takes_no_arguments(service: Service, extra: list[str]) -> None:
    result = service.lxss(*extra, "--debug-shell", "now")
    assert result.returncode == 255, result
    assert result.err == "lxss: --debug-shell takes 0 argument(s), got 1 (see: lxss --help)\n"
