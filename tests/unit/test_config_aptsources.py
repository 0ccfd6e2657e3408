"""The host's apt sources: which mirror `lxss --install debian|ubuntu` builds from."""

from __future__ import annotations

from pathlib import Path

from lxss.config.aptsources import (
    AptSource,
    family_of,
    find_mirror,
    parse_deb822,
    parse_one_line,
    read_apt_sources,
)

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: trixie
"""


def test_deb822_stanzas_give_deb_sources_only() -> None:
    sources = parse_deb822(DEB822, "debian.sources")
    assert sources == [
        AptSource("http://deb.debian.org/debian", ("bookworm", "bookworm-updates"),
                  "debian.sources"),
        AptSource("http://deb.debian.org/debian-security", ("bookworm-security",),
                  "debian.sources"),
    ]  # fmt: skip


def test_continuation_lines_and_several_uris() -> None:
    text = "Types: deb\nURIs: http://a.example/debian\n http://b.example/debian\nSuites: sid\n"
    assert [s.uri for s in parse_deb822(text, "x")] == [
        "http://a.example/debian",
        "http://b.example/debian",
    ]


def test_one_line_format_with_options_and_comments() -> None:
    text = (
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/ubuntu noble main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://archive.ubuntu.com/ubuntu/ noble main # hi\n"
        "deb http://mirror.example/debian bookworm main contrib\n"
    )
    assert parse_one_line(text, "sources.list") == [
        AptSource("http://archive.ubuntu.com/ubuntu", ("noble",), "sources.list"),
        AptSource("http://mirror.example/debian", ("bookworm",), "sources.list"),
    ]


def test_families_by_suite() -> None:
    assert family_of("bookworm") == "debian"
    assert family_of("stable") == "debian"
    assert family_of("noble-updates") == "ubuntu"
    assert family_of("kali-rolling") is None


def test_the_mirror_is_the_one_serving_a_main_release() -> None:
    sources = parse_deb822(DEB822, "debian.sources")
    assert find_mirror(sources, "debian") == "http://deb.debian.org/debian"
    assert find_mirror(sources, "ubuntu") is None
    # A security-only or updates-only entry is no mirror to build from.
    security = [AptSource("http://deb.debian.org/debian-security", ("bookworm-security",), "x")]
    assert find_mirror(security, "debian") is None


def test_read_apt_sources_reads_both_formats(tmp_path: Path) -> None:
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(DEB822)
    (parts / "ubuntu.list").write_text("deb http://archive.ubuntu.com/ubuntu jammy main\n")
    (parts / "ignored.txt").write_text("deb http://nope.example/debian sid main\n")
    sources = read_apt_sources(str(tmp_path / "missing.list"), str(parts))
    assert find_mirror(sources, "ubuntu") == "http://archive.ubuntu.com/ubuntu"
    assert find_mirror(sources, "debian") == "http://deb.debian.org/debian"
    assert all("nope" not in s.uri for s in sources)
