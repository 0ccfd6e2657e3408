"""wsl.exe's command-line forms beyond the options: a leading GUID, a leading `~`, and
--distribution-id, through the real `lxss`."""

from __future__ import annotations

from pathlib import Path

from conftest import Service
from mgmt import guid_of
from run_support import private_distribution


def test_a_leading_tilde_starts_in_the_home_directory(service: Service, busybox: str) -> None:
    assert service.ok("-d", busybox, "-e", "pwd", cwd="/tmp").out != "/root\n"
    assert service.ok("~", "-d", busybox, "-e", "pwd", cwd="/tmp").out == "/root\n"
    assert service.ok("~", "-d", busybox, "--", "pwd; echo $#", cwd="/tmp").out == "/root\n0\n"


def test_a_leading_guid_selects_the_distribution(
    service: Service, busybox: str, tmp_path: Path
) -> None:
    with private_distribution(service, tmp_path, "guidpick") as name:
        service.ok("-d", name, "-u", "root", "--", "echo picked > /etc/marker")
        guid = guid_of(service, name)
        for spelling in (guid, guid.upper(), "{" + guid + "}"):
            assert service.ok(spelling, "--", "read m < /etc/marker; echo $m").out == "picked\n"
        assert service.ok(guid, "~", "--", "pwd", cwd="/tmp").out == "/root\n"
        result = service.lxss(guid, "-d", busybox, "-e", "true")
        assert (result.returncode, result.err) == (
            255, "lxss: the distribution is already set (see: lxss --help)\n"
        ), result  # fmt: skip


def test_distribution_id_takes_only_a_guid(service: Service, busybox: str) -> None:
    guid = guid_of(service, busybox)
    assert service.ok("--distribution-id", "{" + guid.upper() + "}", "-e", "true").err == ""
    result = service.lxss("--distribution-id", busybox, "-e", "true")
    assert result.returncode == 255, result
    assert result.err == (
        f"lxss: --distribution-id needs a GUID, not '{busybox}' (names go to -d) "
        "(see: lxss --help)\n"
    )
