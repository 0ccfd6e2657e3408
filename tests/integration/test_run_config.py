"""What a distribution's /etc/wsl.conf and its registered default user change for a launch.

These tests change the configuration of a distribution, so they use one of
their own (imported from a busybox tarball for this module) rather than the
shared `bb`; each test leaves it with an empty /etc/wsl.conf and root as its
registered default user.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import HostState, Service
from run_support import private_distribution, wait_until, write_wsl_conf

NAME = "cfg"
USERS = "alice:x:1000:1000:Alice:/home/alice:/bin/sh\nbob:x:1001:1001:Bob:/home/bob:/bin/sh\n"


@pytest.fixture(scope="module")
def distribution(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with private_distribution(service, tmp_path_factory.mktemp("cfg"), NAME) as name:
        setup = (
            "mkdir -p /sbin /usr/bin /usr/sbin && /bin/busybox --install -s && "
            f"printf '{USERS}' >> /etc/passwd && "
            "mkdir -p /home/alice /home/bob && chown 1000:1000 /home/alice && "
            "chown 1001:1001 /home/bob"
        )
        service.ok("-d", name, "-u", "root", "--", setup)
        # Tests start with the utility VM stopped and gone (their host-state check begins
        # here): a killed VM's mini_init may linger a moment as a zombie for the host's init.
        service.ok("--shutdown")
        wait_until(lambda: not HostState.capture(service).processes, 15, "the VM to be gone")
        yield name


@pytest.fixture
def cfg(service: Service, distribution: str) -> Iterator[str]:
    """The module's distribution, restored to no wsl.conf and root as default user after."""
    try:
        yield distribution
    finally:
        service.lxss("-d", distribution, "-u", "root", "-e", "rm", "-f", "/etc/wsl.conf")
        service.lxss("--manage", distribution, "--set-default-user", "root")
        service.lxss("--terminate", distribution)


def test_network_hostname_sets_the_hostname(service: Service, cfg: str) -> None:
    before = service.ok("-d", cfg, "-e", "hostname").out.strip()
    assert before != "cfg-host-7"
    write_wsl_conf(service, cfg, "[network]\nhostname = cfg-host-7\n")
    assert service.ok("-d", cfg, "-e", "hostname").out == "cfg-host-7\n"
    assert service.ok("-d", cfg, "-e", "cat", "/etc/hostname").out == "cfg-host-7\n"
    hosts = service.ok("-d", cfg, "-e", "cat", "/etc/hosts").out
    assert "cfg-host-7" in hosts


def test_boot_command_runs_once_per_start(service: Service, cfg: str) -> None:
    write_wsl_conf(service, cfg, "[boot]\ncommand = echo booted by $(id -u) >> /run/boot.log\n")

    def boot_log() -> str | None:
        result = service.lxss("-d", cfg, "-e", "cat", "/run/boot.log")
        return result.out if result.returncode == 0 else None

    assert wait_until(boot_log, 10, "the boot command's output") == "booted by 0\n"
    # Later launches into the running distribution do not run it again.
    service.ok("-d", cfg, "-e", "true")
    assert boot_log() == "booted by 0\n"
    # The next start does (/run is a fresh tmpfs).
    service.ok("--terminate", cfg)
    assert wait_until(boot_log, 10, "the boot command after a restart") == "booted by 0\n"


def test_unknown_key_warns_on_the_launch_that_starts_the_distribution(
    service: Service, cfg: str
) -> None:
    write_wsl_conf(service, cfg, "[network]\nhostname = warned\n[bogus]\nsetting = 1\n")
    first = service.ok("-d", cfg, "-e", "hostname")
    assert first.out == "warned\n"  # the rest of the file still applies
    warnings = [line for line in first.err.splitlines() if line.startswith("lxss: warning: ")]
    assert len(warnings) == 1, first
    assert "Unknown key 'bogus.setting'" in warnings[0]
    assert "/etc/wsl.conf:4" in warnings[0]
    second = service.ok("-d", cfg, "-e", "hostname")
    assert second.err == ""


def test_warnings_can_be_silenced(service: Service, cfg: str) -> None:
    write_wsl_conf(service, cfg, "[bogus]\nsetting = 1\n")
    result = service.ok("-d", cfg, "-e", "true", env={"LXSS_DISABLE_WARNINGS": "1"})
    assert result.err == ""


def test_user_choice_order(service: Service, cfg: str) -> None:
    def who(*options: str) -> str:
        return service.ok("-d", cfg, *options, "-e", "id", "-un").out.strip()

    # Nothing configured: root.
    assert who() == "root"
    # The registered default uid.
    service.ok("--manage", cfg, "--set-default-user", "bob")
    assert who() == "bob"
    # /etc/wsl.conf's [user] default wins over it.
    write_wsl_conf(service, cfg, "[user]\ndefault = alice\n")
    assert who() == "alice"
    # -u wins over both.
    assert who("-u", "root") == "root"
    assert who("-u", "bob") == "bob"
    # A [user] default naming nobody falls back to the registered uid.
    write_wsl_conf(service, cfg, "[user]\ndefault = ghost\n")
    assert who() == "bob"


def test_a_users_environment_and_home(service: Service, cfg: str) -> None:
    result = service.ok("-d", cfg, "-u", "alice", "--cd", "~", "--", "pwd; env")
    lines = result.out.splitlines()
    assert lines[0] == "/home/alice"
    env = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    assert env["HOME"] == "/home/alice"
    assert env["USER"] == env["LOGNAME"] == "alice"
    assert env["SHELL"] == "/bin/sh"
    assert env["LXSS_DISTRO_NAME"] == cfg
    created = service.ok("-d", cfg, "-u", "alice", "--", "touch ~/f && stat -c %u:%g ~/f")
    assert created.out == "1000:1000\n"
