"""gns's reading of the service's interface configuration, and the VM's open limits."""

import ipaddress

import pytest

from lxss.guest import gns


def test_a_configuration_reads() -> None:
    text = (
        '{"interface": "eth0", "addresses": ["172.16.5.2/24"], "gateway": "172.16.5.1",'
        ' "mtu": 1500}'
    )
    assert gns.parse_configuration(text) == gns.InterfaceConfiguration(
        "eth0", (ipaddress.ip_interface("172.16.5.2/24"),), ipaddress.ip_address("172.16.5.1"), 1500
    )


@pytest.mark.parametrize(
    "text",
    ["", "[]", '{"interface": "a/b"}', '{"interface": "eth0", "mtu": 10}',
     '{"interface": "eth0", "addresses": ["nowhere"]}', '{"interface": "' + "e" * 16 + '"}'],
)  # fmt: skip
def test_a_bad_configuration_is_einval_and_says_why(text: str) -> None:
    with pytest.raises(gns.GnsError, match="the interface configuration") as caught:
        gns.parse_configuration(text)
    assert caught.value.number == 22


def test_echo_sockets_for_every_mapped_group() -> None:
    limits = dict(gns.open_limits("         0     100000      65536\n"))
    assert limits["net.ipv4.ping_group_range"] == "0 65535"
    assert limits["net.ipv4.ip_unprivileged_port_start"] == "0"
