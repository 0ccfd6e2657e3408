"""The resolv.conf a distribution gets from its host's resolvers."""

from __future__ import annotations

from pathlib import Path

from lxss.config.resolvconf import (
    HEADER,
    Resolvers,
    choose_resolvers,
    parse_resolv_conf,
    read_host_resolvers,
    render_resolv_conf,
)


def test_parse_keeps_nameservers_and_the_last_search() -> None:
    text = (
        "# comment\nnameserver 10.0.0.1\nnameserver not-an-address\nnameserver fe80::1%eth0\n"
        "domain old.example\nsearch a.example b.example ; trailing\noptions edns0\n"
        "nameserver 10.0.0.2\nnameserver 10.0.0.3\n"
    )
    parsed = parse_resolv_conf(text)
    assert parsed.nameservers == ("10.0.0.1", "fe80::1%eth0", "10.0.0.2")  # glibc reads 3
    assert parsed.search == ("a.example", "b.example")


def test_loopback_stub_is_kept_when_the_network_is_shared() -> None:
    host = Resolvers(("127.0.0.53",), ("lan",))
    assert choose_resolvers(host, None, shares_host_network=True) == host


def test_loopback_stub_is_replaced_by_its_upstreams_in_an_own_network() -> None:
    host = Resolvers(("127.0.0.53",), ("lan",))
    upstreams = Resolvers(("192.0.2.1", "127.0.0.1", "192.0.2.2"), ())
    chosen = choose_resolvers(host, upstreams, shares_host_network=False)
    assert chosen.nameservers == ("192.0.2.1", "192.0.2.2")
    assert chosen.search == ("lan",)
    assert "upstream" in chosen.note


def test_loopback_only_without_upstreams_says_so() -> None:
    chosen = choose_resolvers(Resolvers(("127.0.0.1",), ()), None, shares_host_network=False)
    assert chosen.nameservers == ()
    assert "loopback" in chosen.note


def test_render_has_the_header_then_the_servers() -> None:
    text = render_resolv_conf(Resolvers(("192.0.2.1",), ("a.example",)))
    assert text == HEADER + "nameserver 192.0.2.1\nsearch a.example\n"
    assert "generateResolvConf = false" in HEADER


def test_read_host_resolvers_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_host_resolvers(str(tmp_path / "none")) == Resolvers((), ())
