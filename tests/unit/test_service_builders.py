"""The debootstrap builder's plan: mirror and suite checks, its command line, its image files."""

from __future__ import annotations

import pytest

from lxss.config.aptsources import AptSource
from lxss.config.wslconf import load_wsl_distribution_conf
from lxss.service import builders

DEBIAN = [AptSource("http://mirror.example/debian", ("bookworm",), "x.sources")]


def test_no_mirror_of_the_family_says_what_to_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builders, "read_apt_sources", lambda: DEBIAN)
    with pytest.raises(builders.BuildError) as caught:
        builders.plan("ubuntu")
    message = str(caught.value)
    assert "no Ubuntu mirror is configured" in message
    assert "URIs: http://archive.ubuntu.com/ubuntu" in message


def test_debian_uses_the_hosts_mirror_and_default_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builders, "read_apt_sources", lambda: DEBIAN)
    build = builders.plan("debian")
    assert (build.suite, build.mirror) == ("bookworm", "http://mirror.example/debian")
    assert builders.plan("debian:trixie").suite == "trixie"
    for bad in ("debian:../../etc", "debian:no-such-suite"):
        with pytest.raises(builders.BuildError, match="debootstrap does not know"):
            builders.plan(bad)


def test_debootstrap_runs_confined_and_checks_signatures() -> None:
    build = builders.Build(builders.FAMILIES["debian"], "bookworm", "http://m.example/debian")
    argv = builders.debootstrap_argv(build, "/cache/.build-x/root")
    assert argv[:4] == ["setpriv", "--pdeathsig", "KILL", "--"]
    unshare = argv[argv.index("unshare") : argv.index("debootstrap")]
    for option in ("--mount", "--pid", "--kill-child", "--uts", "--ipc"):
        assert option in unshare
    tail = argv[argv.index("debootstrap") :]
    assert "--variant=minbase" in tail and "--include=sudo,ca-certificates" in tail
    assert "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg" in tail
    assert tail[-3:] == ["bookworm", "/cache/.build-x/root", "http://m.example/debian"]


def test_cache_names_keep_family_suite_mirror_and_day_apart() -> None:
    one = builders.Build(builders.FAMILIES["debian"], "bookworm", "http://a.example/debian")
    other = builders.Build(builders.FAMILIES["debian"], "bookworm", "http://b.example/debian")
    assert one.cache_name("20261202") != other.cache_name("20261202")
    assert one.cache_name("20261202").startswith(one.cache_prefix())
    assert one.cache_name("20261202").endswith("-20261202.tar")


def test_the_image_asks_for_the_first_run_setup() -> None:
    build = builders.Build(builders.FAMILIES["debian"], "trixie", "http://m.example/debian")
    conf, warnings = load_wsl_distribution_conf(builders.distribution_conf(build))
    assert warnings == []
    assert conf.oobe_command == builders.FIRST_RUN
    assert conf.oobe_default_name == "debian-trixie"
    assert conf.oobe_default_uid is None  # the setup writes it once it knows the uid
    assert conf.shortcut_enabled
