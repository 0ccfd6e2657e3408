"""Interop: lxss-host-exec runs host programs from inside a distribution (WSL's interop).

The owner's programs run on the host, in the host's namespaces, as the owner, with the
caller's own streams and exit status; lxss-host keeps this working after the client is
gone; [interop] enabled = false refuses it.
"""

from __future__ import annotations

import os

from conftest import Service


def test_host_exec_runs_on_the_host_with_exit_status(service: Service, busybox: str) -> None:
    result = service.lxss("-d", busybox, "--", "lxss-host-exec sh -c 'readlink /proc/self/ns/mnt; exit 7'")
    assert result.returncode == 7, result
    assert result.out.strip() == os.readlink("/proc/self/ns/mnt")
