"""Issue 10's builders, first run and DNS: `lxss --install debian` through a real debootstrap
from the machine's mirror, the first-run user, /etc/wsl-distribution.conf, the generated
/etc/resolv.conf (served by a dnsmasq this module starts on a loopback address) and the
host's time zone.

The module runs a service of its own: its host resolv.conf is a file the test writes, and its
build cache is new, so the one debootstrap of the run happens here and is reused after.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dns_support
import pytest
from conftest import Service, busybox_root, host_users, running_service
from dns_support import TEST_ADDRESS, TEST_NAME
from mgmt import assert_fails, names
from run_support import wait_until
from test_tty import lxss_in_tmux

from lxss.api.client import Client

dns = dns_support.dns  # the module resolver fixture


@pytest.fixture(scope="module")
def service(dns: tuple[str, Path]) -> Iterator[Service]:
    """This module's own lxssd (the conftest `service` name, so host_left_clean watches it)."""
    cache = Path(tempfile.mkdtemp(prefix="lxss-builds-", dir="/var/tmp"))
    env = {"LXSS_HOST_RESOLV_CONF": str(dns[1]), "LXSS_BUILD_CACHE": str(cache)}
    try:
        with running_service("builders", env) as running:
            yield running
    finally:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="module")
def test_users() -> Iterator[tuple[str, ...]]:
    """Users of this module's own (conftest's are shared with every test run on the machine,
    and another run's end removes them): the first-run user is named after one."""
    with host_users(("lxssbuild-a", "lxssbuild-b")) as users:
        yield users


@pytest.fixture(scope="module")
def busybox(service: Service) -> str:
    """The built-in busybox in this module's service (conftest's is the session service's)."""
    service.ok("--install", "busybox", "--name", "bb", "--no-launch", timeout=120)
    return "bb"


@pytest.fixture(scope="module")
def debian(service: Service, test_users: tuple[str, ...]) -> tuple[str, str, str]:
    """`lxss --install debian --no-launch` as a test user: (name, user, its stderr+stdout)."""
    user = test_users[0]
    started = time.monotonic()
    result = service.lxss("--install", "debian", "--name", "deb", "--no-launch", user=user,
                          timeout=1500)  # fmt: skip
    assert result.returncode == 0, str(result)
    print(f"first install (debootstrap + import): {time.monotonic() - started:.1f} s")
    return "deb", user, result.err + result.out


def test_install_debian_builds_with_progress(debian: tuple[str, str, str]) -> None:
    _, _, out = debian
    assert "building Debian bookworm from http" in out
    for stage in ("debootstrap: Retrieving", "debootstrap: Extracting", "debootstrap: Configuring"):
        assert stage in out, out
    assert "Installed 'deb'" in out


def test_second_install_reuses_the_build(service: Service, debian: tuple[str, str, str]) -> None:
    started = time.monotonic()
    result = service.ok("--install", "debian:bookworm", "--name", "deb-again", "--no-launch",
                        timeout=600)  # fmt: skip
    print(f"second install (from the cache): {time.monotonic() - started:.1f} s")
    try:
        assert "debootstrap" not in result.err, str(result)
        assert "unpacking Debian bookworm" in result.err, str(result)
        assert service.ok("-d", "deb-again", "--", "cat", "/etc/debian_version").out.startswith(
            "12"
        )
    finally:
        service.ok("--unregister", "deb-again", timeout=300)


def test_first_run_makes_the_host_user(service: Service, debian: tuple[str, str, str]) -> None:
    name, user, _ = debian
    host = pwd.getpwnam(user)
    # Before the first interactive shell, a command runs as root and no user exists yet.
    early = service.lxss("-d", name, "--", "getent", "passwd", user, user=user)
    assert early.returncode == 2, str(early)  # getent's "not found"
    assert service.ok("-d", name, "--", "whoami", user=user).out == "root\n"
    script = b"whoami\nid -u\nid -nG\nsudo -n true && echo sudo-works\n"
    first = service.ok("-d", name, user=user, input=script, timeout=300)
    assert f"Created user '{user}' (uid {host.pw_uid})" in first.out, str(first)
    lines = first.out.splitlines()
    assert user in lines and str(host.pw_uid) in lines, str(first)
    assert any("sudo" in line.split() for line in lines), str(first)
    assert "sudo-works" in lines, str(first)
    # Done once: the next shell is the user's at once, and commands run as them too.
    again = service.ok("-d", name, user=user, input=b"whoami\n")
    assert again.out.splitlines() == [user], str(again)
    assert service.ok("-d", name, "--", "id", "-u", user=user).out.strip() == str(host.pw_uid)
    conf = service.ok("-d", name, "--", "cat", "/etc/wsl-distribution.conf", user=user).out
    assert f"defaultUid = {host.pw_uid}" in conf


def test_apt_installs_hello(service: Service, debian: tuple[str, str, str]) -> None:
    name, user, _ = debian
    result = service.ok(
        "-d", name, "-u", "root", "--", "sh", "-c",
        "apt-get update -q && apt-get install -y -q hello >/dev/null && hello",
        user=user, timeout=900,
    )  # fmt: skip
    assert result.out.splitlines()[-1] == "Hello, world!", str(result)


def test_dns_goes_through_the_generated_resolv_conf(
    service: Service, dns: tuple[str, Path], debian: tuple[str, str, str]
) -> None:
    address, _ = dns
    name, user, _ = debian
    text = service.ok("-d", name, "--", "cat", "/etc/resolv.conf", user=user).out
    assert text.startswith("# lxss wrote this file"), text
    assert "generateResolvConf = false" in text
    assert f"nameserver {address}\n" in text and "search example\n" in text
    found = service.ok("-d", name, "--", "getent", "hosts", TEST_NAME, user=user).out
    assert found.split()[0] == TEST_ADDRESS, found


def test_host_time_zone_reaches_the_distribution(
    service: Service, busybox: str, debian: tuple[str, str, str]
) -> None:
    zone = os.readlink("/etc/localtime").split("zoneinfo/", 1)[1]
    name, user, _ = debian
    # Debian has the zone itself: a link to it, as tzdata makes.
    link = service.ok("-d", name, "--", "readlink", "/etc/localtime", user=user).out.strip()
    assert link == f"/usr/share/zoneinfo/{zone}"
    # busybox has no zone files: a copy of the host's.
    copied = service.ok("-d", busybox, "--", "cat", "/etc/localtime").stdout
    assert copied == Path(f"/usr/share/zoneinfo/{zone}").read_bytes()
    assert service.ok("-d", busybox, "--", "cat", "/etc/timezone").out == f"{zone}\n"


def test_generate_resolv_conf_false_leaves_the_file(service: Service, busybox: str) -> None:
    own = "nameserver 192.0.2.53 # kept by the distribution\n"
    service.ok("-d", busybox, "--", "sh", "-c",
               "printf '[network]\\ngenerateResolvConf = false\\n' > /etc/wsl.conf && "
               f"printf '{own}' > /etc/resolv.conf")  # fmt: skip
    try:
        service.ok("--terminate", busybox)
        assert service.ok("-d", busybox, "--", "cat", "/etc/resolv.conf").out == own
    finally:
        service.ok("-d", busybox, "--", "rm", "-f", "/etc/wsl.conf")
        service.ok("--terminate", busybox)
    assert service.ok("-d", busybox, "--", "cat", "/etc/resolv.conf").out.startswith("# lxss")


def test_first_run_asks_for_a_name_on_a_terminal(service: Service) -> None:
    """Root's name is taken in Debian. Without a terminal to ask for another, the setup says
    so and fails: no shell starts, and it is tried again next time. On a terminal it asks
    (as Ubuntu's does), refusing an invalid name, and the shell that follows is the new
    user's, on the same terminal."""
    service.ok("--install", "debian", "--name", "deb-root", "--no-launch", timeout=600)
    try:
        for _ in range(2):
            result = service.lxss("-d", "deb-root", input=b"echo shell-started\n", timeout=300)
            assert result.returncode == 1, str(result)  # WSL's status for a failed setup
            assert "shell-started" not in result.out
            assert "no terminal to ask for another" in result.err
            assert "first-run command of 'deb-root'" in result.err
            assert "exit status 1" in result.err
        # Commands still run (as root): the setup waits for an interactive shell.
        assert service.ok("-d", "deb-root", "--", "whoami").out == "root\n"
        with lxss_in_tmux(service, "-d", "deb-root", columns=120) as screen:
            screen.wait_for("Enter new UNIX username:", timeout=120)
            screen.type("Not Valid")
            screen.wait_for("'Not Valid' is taken or not a valid name")
            screen.type("ttyuser")
            screen.wait_for("Created user 'ttyuser'")
            screen.wait_for("ttyuser@")
            screen.type("sudo -n true && echo sudo-ok-$((40 + 2))")
            screen.wait_for("sudo-ok-42")
            screen.type("exit")
            wait_until(lambda: not screen.alive(), 30, "the shell to end")
        assert service.ok("-d", "deb-root", "--", "whoami").out == "ttyuser\n"
    finally:
        service.ok("--unregister", "deb-root", timeout=300)


def _install_image(service: Service, name: str, conf: str, directory: Path) -> dict[str, object]:
    """RegisterDistribution of a busybox tree holding *conf* as /etc/wsl-distribution.conf,
    as an install (firstRun), spoken over Varlink as any client may."""
    root = busybox_root(directory / "root")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/wsl-distribution.conf").write_text(conf)
    tarball = directory / "image.tar"
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."],
                   check=True)  # fmt: skip
    with open(tarball, "rb") as archive, Client(str(service.runtime_dir / "lxssd.sock")) as c:
        return c.call("RegisterDistribution",
                      {"name": name, "archive": 0, "firstRun": True}, (archive.fileno(),),
                      timeout=300)  # fmt: skip


def test_wsl_distribution_conf_oobe_runs_once_and_sets_the_uid(
    service: Service, tmp_path: Path
) -> None:
    conf = (
        "[oobe]\n"
        "command = echo 'oobe:x:1234:1234::/tmp:/bin/sh' >> /etc/passwd; "
        'echo ran >> /oobe-runs; echo "oobe as $(id -u) for $LXSS_HOST_USER"\n'
        "defaultUid = 1234\n"
        "[shortcut]\n"
        "enabled = false\n"
    )
    reply = _install_image(service, "oobe-img", conf, tmp_path)
    try:
        assert reply["shortcut"] is False
        first = service.ok("-d", "oobe-img", input=b"id -u\n")
        assert first.out.splitlines() == ["oobe as 0 for root", "1234"], str(first)
        second = service.ok("-d", "oobe-img", input=b"id -u\n")
        assert second.out.splitlines() == ["1234"], str(second)
        runs = service.ok("-d", "oobe-img", "-u", "root", "--", "cat", "/oobe-runs").out
        assert runs == "ran\n"
    finally:
        service.ok("--unregister", "oobe-img")


def test_failing_oobe_command_starts_no_shell(service: Service, tmp_path: Path) -> None:
    _install_image(service, "oobe-fail", "[oobe]\ncommand = exit 3\n", tmp_path)
    try:
        for _ in range(2):  # still pending after a failure
            result = service.lxss("-d", "oobe-fail", input=b"echo shell-started\n")
            assert result.returncode == 1, str(result)
            assert result.out == "", str(result)
            assert result.err == (
                "lxss: the first-run command of 'oobe-fail' (exit 3) failed with exit status 3;"
                " it runs again at the next launch of its shell\n"
            ), str(result)
        # An import does not run the setup at all (as WSL's import does not).
        imported = tmp_path / "image.tar"
        service.ok("--import", "oobe-imported", str(tmp_path / "imported"), str(imported))
        try:
            assert service.ok("-d", "oobe-imported", input=b"echo shell\n").out == "shell\n"
        finally:
            service.ok("--unregister", "oobe-imported")
    finally:
        service.ok("--unregister", "oobe-fail")


def test_ubuntu_without_a_mirror_says_what_to_configure(service: Service) -> None:
    result = service.lxss("--install", "ubuntu", "--no-launch")
    line = assert_fails(result, "cannot build ubuntu", "no Ubuntu mirror is configured")
    assert "URIs: http://archive.ubuntu.com/ubuntu" in line and "'Suites: " in line
    assert "ubuntu" not in names(service)


def test_unknown_suite_is_refused(service: Service) -> None:
    result = service.lxss("--install", "debian:no-such-suite", "--no-launch")
    assert_fails(result, "debootstrap does not know the Debian suite 'no-such-suite'")


def test_desktop_shortcut_made_and_removed(service: Service, test_users: tuple[str, ...]) -> None:
    user = test_users[1]
    home = Path(pwd.getpwnam(user).pw_dir)
    entry = home / ".local/share/applications/lxss-bb-desk.desktop"
    with contextlib.suppress(FileNotFoundError):
        entry.unlink()
    plain = service.ok("--install", "busybox", "--name", "bb-plain", "--no-launch", user=user)
    assert "shortcut" not in plain.out  # no desktop, no entry
    service.ok("--unregister", "bb-plain", user=user)
    desktop = {"XDG_CURRENT_DESKTOP": "test"}
    service.ok("--install", "busybox", "--name", "bb-desk", "--no-launch", user=user, env=desktop)
    text = entry.read_text()
    assert "Terminal=true\n" in text and text.split("Exec=", 1)[1].split("\n")[0].endswith(
        "-d bb-desk"
    )
    assert entry.stat().st_uid == pwd.getpwnam(user).pw_uid
    service.ok("--unregister", "BB-DESK", user=user)
    assert not entry.exists()
