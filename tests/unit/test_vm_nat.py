"""The host-side NAT rules as nft reads them, and names that stay apart."""

import ipaddress

from lxss.vm import nat, subnet


def network() -> nat.NatNetwork:
    addresses = subnet.addresses_in(ipaddress.IPv4Network("172.20.1.0/24"))
    return nat.NatNetwork("0123abcd", "lxss0123abcd", addresses, "/run/x.json")


def test_the_masquerade_covers_the_vms_network_leaving_by_other_links() -> None:
    script = nat.masquerade_script(network())
    assert "table ip lxss-0123abcd {" in script
    assert 'ip saddr 172.20.1.0/24 oifname != "lxss0123abcd" masquerade' in script


def test_the_guard_lets_only_replies_to_vms_through_the_uplinks() -> None:
    script = nat.guard_script(["eth1", "eth0"])
    assert 'iifname { "eth0", "eth1" } oifname != "lxss*" drop' in script
    assert "ct state != { established, related } drop" in script


def test_tags_are_stable_per_service_and_user_and_fit_a_link_name() -> None:
    tag = nat.tag_for("/run/lxss/net", 1000)
    assert tag == nat.tag_for("/run/lxss/net", 1000)
    assert tag != nat.tag_for("/run/lxss/net", 1001)
    assert tag != nat.tag_for("/var/tmp/other/run/net", 1000)
    assert len(nat.LINK_PREFIX + tag) <= 15
