"""rtnetlink and sock_diag packing and parsing, read without a kernel."""

import ipaddress
import socket
import struct

import pytest

from lxss.linux import netlink as nl


def test_an_attribute_is_padded_to_four_bytes() -> None:
    raw = nl.attr(nl.IFLA_IFNAME, b"eth0\0")
    assert struct.unpack_from("=HH", raw) == (9, nl.IFLA_IFNAME)
    assert len(raw) == 12 and raw.endswith(b"\0\0\0")


def test_a_veth_request_names_both_ends_and_the_peers_namespace() -> None:
    body = nl.veth_request("lxss12345678", "eth0", 7)
    attrs = nl.split_attrs(body[16:])
    assert attrs[nl.IFLA_IFNAME] == b"lxss12345678\0"
    info = nl.split_attrs(attrs[nl.IFLA_LINKINFO])
    assert info[nl.IFLA_INFO_KIND] == b"veth\0"
    peer = nl.split_attrs(nl.split_attrs(info[nl.IFLA_INFO_DATA])[nl.VETH_INFO_PEER][16:])
    assert peer[nl.IFLA_IFNAME] == b"eth0\0"
    assert struct.unpack("=I", peer[nl.IFLA_NET_NS_FD]) == (7,)


@pytest.mark.parametrize("name", ["", "a" * 16, "a/b", "a\0b"])
def test_a_bad_interface_name_is_refused_before_the_kernel(name: str) -> None:
    with pytest.raises(ValueError, match="not an interface name"):
        nl.veth_request(name, "eth0", None)


def test_a_default_route_has_no_destination_attribute() -> None:
    body = nl.route_request(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("10.0.0.1"), 3)
    attrs = nl.split_attrs(body[12:])
    assert nl.RTA_DST not in attrs
    assert attrs[nl.RTA_GATEWAY] == bytes([10, 0, 0, 1])
    assert struct.unpack("=i", attrs[nl.RTA_OIF]) == (3,)
    parsed = nl.parse_route(body)
    assert (str(parsed.destination), parsed.gateway, parsed.index) == ("0.0.0.0/0", "10.0.0.1", 3)


def test_an_address_request_reads_back() -> None:
    interface = ipaddress.ip_interface("172.16.5.2/24")
    parsed = nl.parse_address(nl.address_request(4, interface))
    assert parsed == nl.Address(4, interface)


def test_messages_split_and_a_truncated_one_is_refused() -> None:
    data = nl.message(nl.NLMSG_DONE, 0, b"\0" * 4, 9) + nl.message(nl.NLMSG_ERROR, 0, b"x" * 5, 10)
    assert [(k, s) for k, s, _ in nl.split_messages(data)] == [(3, 9), (2, 10)]
    with pytest.raises(ValueError, match="truncated"):
        list(nl.split_messages(data[:-4]))


def test_a_listener_reads_its_address_and_port() -> None:
    src = socket.inet_pton(socket.AF_INET, "127.0.0.1") + b"\0" * 12
    body = struct.pack(
        "=BBBB2s2s16s16sI8sIIIII", socket.AF_INET, nl.TCP_LISTEN, 0, 0,
        struct.pack("!H", 8080), b"\0\0", src, b"\0" * 16, 0, b"\0" * 8, 0, 0, 0, 1000, 42,
    )  # fmt: skip
    assert nl.parse_listener(body) == nl.Listener(socket.AF_INET, "127.0.0.1", 8080, 1000, 42)
