"""Which of a NAT VM's listeners localhost forwarding relays, and which it refuses."""

import socket

from lxss.linux.netlink import Listener
from lxss.vm.portrelay import Wanted, refusal, wanted_ports


def listener(address: str, port: int) -> Listener:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return Listener(family, address, port, 0, 1)


def test_loopback_and_wildcard_listeners_are_wanted_others_not() -> None:
    found = wanted_ports([
        listener("127.0.0.1", 1), listener("0.0.0.0", 2), listener("::1", 3),
        listener("::", 4), listener("172.16.5.2", 5), listener("fe80::1", 6),
    ])  # fmt: skip
    assert found == {
        1: Wanted(1, True, False), 2: Wanted(2, True, False), 3: Wanted(3, False, True),
        4: Wanted(4, True, True),
    }  # fmt: skip


def test_two_listeners_on_one_port_are_one_forward() -> None:
    assert wanted_ports([listener("127.0.0.1", 8), listener("::1", 8)]) == {
        8: Wanted(8, True, True)
    }


def test_low_ports_only_for_whom_could_bind_them_on_the_host() -> None:
    assert refusal(80, 0, 1024) is None
    assert refusal(1024, 1000, 1024) is None
    assert "below 1024" in (refusal(80, 1000, 1024) or "")
    assert refusal(80, 1000, 0) is None  # a host that lets everyone bind every port
