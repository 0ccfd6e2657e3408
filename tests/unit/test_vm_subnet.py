"""The NAT VM's network: stable per user, never on top of a network the host reaches."""

import ipaddress

import pytest

from lxss.vm import subnet

N = ipaddress.IPv4Network


def test_a_user_gets_the_same_network_every_time() -> None:
    assert subnet.choose(1000, []) == subnet.choose(1000, [])
    assert subnet.choose(1000, []).network.subnet_of(subnet.POOL)


def test_users_start_at_different_networks() -> None:
    chosen = {subnet.choose(uid, []).network for uid in range(1000, 1050)}
    assert len(chosen) > 45  # a hash: a few may meet, then the probe separates them


def test_the_gateway_and_guest_are_the_first_two_hosts() -> None:
    chosen = subnet.choose(0, [])
    assert chosen.gateway.ip == chosen.network.network_address + 1
    assert chosen.guest.ip == chosen.network.network_address + 2
    assert chosen.gateway.network == chosen.guest.network == chosen.network


def test_a_network_the_host_routes_is_passed_over() -> None:
    first = subnet.choose(1000, []).network
    second = subnet.choose(1000, [first])
    assert second.network != first


def test_overlap_in_either_direction() -> None:
    first = subnet.choose(7, []).network
    inside = N(f"{first.network_address + 128}/25")
    wider = first.supernet(new_prefix=20)
    assert not subnet.choose(7, [inside]).network.overlaps(inside)
    assert not subnet.choose(7, [wider]).network.overlaps(wider)


def test_default_routes_do_not_count() -> None:
    assert subnet.choose(5, [N("0.0.0.0/0")]) == subnet.choose(5, [])


def test_two_users_get_different_networks_when_the_first_is_routed() -> None:
    a = subnet.choose(1000, [])
    b = subnet.choose(1001, [a.network])
    assert a.network != b.network


def test_a_full_pool_is_a_clear_error() -> None:
    with pytest.raises(subnet.NoFreeSubnet, match=r"172\.16\.0\.0/12"):
        subnet.choose(1, [subnet.POOL])
