"""The default seccomp filter of a distribution (docs/security.md, promise 1): kernel
interfaces a container's default filter takes away (io_uring, perf_event_open, keyctl,
userfaultfd, nested user namespaces) are refused to distribution root, and `[lxss]
seccomp = false` in /etc/wsl.conf gives them back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Service
from security_support import ATTACKER, UserDistribution, user_distribution

NAME = "sec-seccomp"
FILTERED = ("io_uring_setup", "perf_event_open", "keyctl", "userfaultfd", "userns")


@pytest.fixture(scope="module")
def attacker(service: Service, test_users: tuple[str, str]) -> Iterator[UserDistribution]:
    with user_distribution(service, ATTACKER, NAME) as distribution:
        yield distribution


def test_the_default_filter_refuses_the_kernels_riskier_interfaces(
    service: Service, attacker: UserDistribution
) -> None:
    found = attacker.attack("kernel_surface")
    assert {what: found[what] for what in FILTERED} == {what: ["EPERM"] for what in FILTERED}
    # Everything else works as before: a program, a fork, a pipe.
    assert attacker.ok("echo a | cat").out == "a\n"


def test_the_filter_can_be_switched_off(service: Service, attacker: UserDistribution) -> None:
    attacker.ok("cat > /etc/wsl.conf", input=b"[lxss]\nseccomp = false\n")
    try:
        service.ok("--terminate", NAME, user=ATTACKER)
        found = attacker.attack("kernel_surface")
        assert found["userns"] != ["EPERM"] and found["io_uring_setup"] != ["EPERM"], found
    finally:
        attacker.ok("rm -f /etc/wsl.conf")
        service.ok("--terminate", NAME, user=ATTACKER)
