"""The service's settings, /etc/lxss.conf and ~/.lxssconfig (lxss.config.lxssconf)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lxss.config.lxssconf import (
    LXSS_CONF_SCHEMA,
    MIN_MEMORY_BYTES,
    LxssConfig,
    NetworkingMode,
    load_lxss_config,
    read_catalog_urls,
    read_distribution_limit,
    read_lxss_config,
)

GIB = 1 << 30
MACHINE = "/etc/lxss.conf"
USER = "/home/alice/.lxssconfig"
HOST_RAM = 16 * GIB
HOST_CPUS = 8


def load(machine: str | None = None, user: str | None = None) -> tuple[LxssConfig, list[str]]:
    config, warnings = load_lxss_config(machine, MACHINE, user, USER, HOST_RAM, HOST_CPUS)
    return config, [str(warning) for warning in warnings]


def test_keys() -> None:
    assert [key.name for key in LXSS_CONF_SCHEMA] == [
        "general.instanceIdleTimeout",
        "general.distributionInstallPath",
        "wsl2.vmIdleTimeout",
        "wsl2.memory",
        "wsl2.processors",
        "wsl2.networkingMode",
        "wsl2.localhostForwarding",
        "wsl2.kernel",
        "wsl2.kernelCommandLine",
        "wsl2.kernelBootTimeout",
        "wsl2.distributionStartTimeout",
        "wsl2.safeMode",
        "wsl2.pidsLimit",
        "general.distributionListUrl",
        "general.distributionListUrlAppend",
        "security.rootDistributionsMapped",
        "security.maxDistributionsPerUser",
    ]


def test_defaults_without_files() -> None:
    config, warnings = load()
    assert warnings == []
    assert config == LxssConfig(memory_bytes=8 * GIB, processors=8)
    assert config.instance_idle_timeout_ms == 15000
    assert config.distribution_install_path == ""
    assert config.vm_idle_timeout_ms == 60000
    assert config.networking_mode is NetworkingMode.MIRRORED
    assert config.kernel == "" and config.kernel_command_line == ""
    assert config.kernel_boot_timeout_ms == 30000
    assert config.distribution_start_timeout_ms == 60000
    assert config.safe_mode is False
    assert config.pids_limit == 4096


def test_empty_files_are_defaults() -> None:
    assert load("", "# nothing\n") == load()


@pytest.mark.parametrize(
    ("line", "field", "expected"),
    [
        ("[general]\ninstanceIdleTimeout = -1", "instance_idle_timeout_ms", -1),
        ("[general]\ninstanceIdleTimeout = 0", "instance_idle_timeout_ms", 0),
        (
            "[general]\ndistributionInstallPath = /srv/lxss",
            "distribution_install_path",
            "/srv/lxss",
        ),
        ("[wsl2]\nvmIdleTimeout = -1", "vm_idle_timeout_ms", -1),
        ("[wsl2]\nvmIdleTimeout = 0x10", "vm_idle_timeout_ms", 16),
        ("[wsl2]\nmemory = 4GB", "memory_bytes", 4 * GIB),
        ("[wsl2]\nmemory = 512M", "memory_bytes", 512 << 20),
        ("[wsl2]\nprocessors = 2", "processors", 2),
        ("[wsl2]\nnetworkingMode = nat", "networking_mode", NetworkingMode.NAT),
        ("[wsl2]\nnetworkingMode = NONE", "networking_mode", NetworkingMode.NONE),
        ("[wsl2]\nnetworkingMode = bridged", "networking_mode", NetworkingMode.BRIDGED),
        ("[wsl2]\nnetworkingMode = virtioproxy", "networking_mode", NetworkingMode.VIRTIO_PROXY),
        ("[wsl2]\nnetworkingMode = consomme", "networking_mode", NetworkingMode.CONSOMME),
        ("[wsl2]\nlocalhostForwarding = false", "localhost_forwarding", False),
        ("[wsl2]\nkernel = /boot/vmlinuz", "kernel", "/boot/vmlinuz"),
        (
            '[wsl2]\nkernelCommandLine = "quiet loglevel=3"',
            "kernel_command_line",
            "quiet loglevel=3",
        ),
        ("[wsl2]\nkernelBootTimeout = 90000", "kernel_boot_timeout_ms", 90000),
        ("[wsl2]\ndistributionStartTimeout = 5000", "distribution_start_timeout_ms", 5000),
        ("[wsl2]\nsafeMode = true", "safe_mode", True),
        ("[wsl2]\npidsLimit = 100", "pids_limit", 100),
        ("[experimental]\nnetworkingMode = Nat", "networking_mode", NetworkingMode.NAT),
    ],
)
def test_each_key_from_either_file(line: str, field: str, expected: object) -> None:
    for machine, user in ((line, None), (None, line)):
        config, warnings = load(machine, user)
        assert warnings == []
        assert getattr(config, field) == expected


def test_user_overrides_machine_key_by_key() -> None:
    machine = "[wsl2]\nmemory = 2GB\nprocessors = 4\nsafeMode = true\n"
    user = "[wsl2]\nprocessors = 2\n[general]\ninstanceIdleTimeout = 1000\n"
    config, warnings = load(machine, user)
    assert warnings == []
    assert config.memory_bytes == 2 * GIB  # machine
    assert config.processors == 2  # user wins
    assert config.safe_mode is True  # machine
    assert config.instance_idle_timeout_ms == 1000  # user


def test_invalid_user_value_leaves_the_machine_value() -> None:
    config, warnings = load("[wsl2]\nprocessors = 4\n", "[wsl2]\nprocessors = many\n")
    assert config.processors == 4
    assert warnings == [f"Invalid integer value 'many' for key 'wsl2.processors' in {USER}:2"]


def test_alias_across_files_is_an_override() -> None:
    config, warnings = load(
        "[wsl2]\nnetworkingMode = Nat\n", "[experimental]\nnetworkingMode = None\n"
    )
    assert warnings == []
    assert config.networking_mode is NetworkingMode.NONE


def test_alias_in_one_file_is_a_duplicate() -> None:
    user = "[wsl2]\nnetworkingMode = Nat\n[experimental]\nnetworkingMode = None\n"
    config, warnings = load(None, user)
    assert config.networking_mode is NetworkingMode.NAT
    assert warnings == [
        f"Duplicated config key 'experimental.networkingMode' in {USER}:4"
        f" (Conflicting key: 'wsl2.networkingMode' in {USER}:2)"
    ]


def test_invalid_networking_mode_lists_the_modes() -> None:
    config, warnings = load("[wsl2]\nnetworkingMode = Tunnel\n")
    assert config.networking_mode is NetworkingMode.MIRRORED
    assert warnings == [
        f"Invalid value 'Tunnel' for config key 'wsl2.networkingMode' in {MACHINE}:2"
        " (Valid values: None, Nat, Bridged, Mirrored, VirtioProxy, Consomme)"
    ]


# -- memory ------------------------------------------------------------------------------------


def test_memory_zero_means_the_default() -> None:
    assert load("[wsl2]\nmemory = 0\n") == (load()[0], [])


def test_memory_below_the_minimum_is_raised_with_a_warning() -> None:
    config, warnings = load(None, "[wsl2]\nmemory = 100MB\n")
    assert config.memory_bytes == MIN_MEMORY_BYTES
    assert warnings == [f"wsl2.memory cannot be less than 256MB ({100 << 20} < {256 << 20})"]


def test_memory_above_the_host_is_lowered_with_a_warning() -> None:
    config, raw = load_lxss_config("[wsl2]\nmemory = 1TB\n", MACHINE, None, USER, HOST_RAM, 8)
    assert config.memory_bytes == HOST_RAM
    assert [str(w) for w in raw] == [
        f"wsl2.memory cannot exceed the memory of the system ({1 << 40} > {HOST_RAM})"
    ]
    assert raw[0].file == MACHINE and raw[0].line is None


def test_memory_at_the_bounds_is_kept() -> None:
    assert load("[wsl2]\nmemory = 256MB\n") == (
        dataclasses.replace(load()[0], memory_bytes=256 << 20),
        [],
    )
    assert load("[wsl2]\nmemory = 16GB\n")[0].memory_bytes == HOST_RAM


def test_memory_on_a_host_smaller_than_the_minimum() -> None:
    small = 128 << 20
    config, warnings = load_lxss_config("[wsl2]\nmemory=1G\n", MACHINE, None, USER, small, 1)
    assert config.memory_bytes == small
    assert len(warnings) == 1


def test_invalid_memory_string() -> None:
    config, warnings = load("[wsl2]\nmemory = 4 GB\n")
    assert config.memory_bytes == HOST_RAM // 2
    assert warnings == [f"Invalid memory string '4 GB' for key 'wsl2.memory' in {MACHINE}:2"]


# -- processors and pids -------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0", "-1"])
def test_processors_zero_or_less_means_all(text: str) -> None:
    assert load(f"[wsl2]\nprocessors = {text}\n") == (load()[0], [])


def test_processors_above_the_host_are_clamped_with_wsls_warning() -> None:
    config, raw = load_lxss_config(None, MACHINE, "[wsl2]\nprocessors=64\n", USER, HOST_RAM, 8)
    assert config.processors == 8
    assert [str(w) for w in raw] == [
        "wsl2.processors cannot exceed the number of logical processors on the system (64 > 8)"
    ]
    assert raw[0].file == USER


@pytest.mark.parametrize("text", ["0", "-1"])
def test_pids_limit_must_be_positive(text: str) -> None:
    config, warnings = load(f"[wsl2]\npidsLimit = {text}\n")
    assert config.pids_limit == 4096
    assert warnings == [f"wsl2.pidsLimit must be at least 1 ({text} < 1); using 4096"]


# -- warnings and errors ---------------------------------------------------------------------


def test_warnings_come_machine_then_user_then_limits() -> None:
    machine = "[wsl2]\nbogus = 1\nprocessors = 99\n"
    user = "[wsl2]\nswap = 0\n"
    _, warnings = load(machine, user)
    assert warnings == [
        f"Unknown key 'wsl2.bogus' in {MACHINE}:2",
        f"Unknown key 'wsl2.swap' in {USER}:2",
        "wsl2.processors cannot exceed the number of logical processors on the system (99 > 8)",
    ]


def test_safe_mode_alone_changes_nothing_else() -> None:
    config, _ = load("[wsl2]\nsafeMode = 1\n")
    assert config == dataclasses.replace(load()[0], safe_mode=True)


@pytest.mark.parametrize(("ram", "cpus"), [(0, 1), (1, 0), (-1, 4)])
def test_host_resources_must_be_positive(ram: int, cpus: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        load_lxss_config(None, MACHINE, None, USER, ram, cpus)


# -- reading the files ------------------------------------------------------------------------


def test_read_both_files(tmp_path: Path) -> None:
    machine = tmp_path / "lxss.conf"
    user = tmp_path / ".lxssconfig"
    machine.write_text("[wsl2]\nmemory = 2GB\nprocessors = 2\n")
    user.write_text("[wsl2]\r\nprocessors = 1\r\n")
    config, warnings = read_lxss_config(str(user), str(machine), 8 * GIB, 4)
    assert warnings == []
    assert (config.memory_bytes, config.processors) == (2 * GIB, 1)


def test_read_missing_files(tmp_path: Path) -> None:
    config, warnings = read_lxss_config(str(tmp_path / "u"), str(tmp_path / "m"), 8 * GIB, 4)
    assert warnings == []
    assert config == LxssConfig(memory_bytes=4 * GIB, processors=4)


def test_read_without_a_user_file(tmp_path: Path) -> None:
    machine = tmp_path / "lxss.conf"
    machine.write_text("[wsl2]\npidsLimit = 10\n")
    config, warnings = read_lxss_config(None, str(machine), 8 * GIB, 4)
    assert (config.pids_limit, warnings) == (10, [])


def test_read_unreadable_user_file_warns(tmp_path: Path) -> None:
    user = tmp_path / ".lxssconfig"
    user.mkdir()
    config, warnings = read_lxss_config(str(user), str(tmp_path / "m"), 8 * GIB, 4)
    assert config == LxssConfig(memory_bytes=4 * GIB, processors=4)
    assert [str(w) for w in warnings] == [f"Failed to open config file {user}, Is a directory"]


def test_read_uses_this_hosts_resources(tmp_path: Path) -> None:
    config, _ = read_lxss_config(None, str(tmp_path / "m"))
    assert config.memory_bytes > 0
    assert config.processors >= 1


def test_catalog_urls_come_from_the_machines_file(tmp_path: Path) -> None:
    conf = tmp_path / "lxss.conf"
    assert read_catalog_urls(str(conf)) == ("", "", [])
    conf.write_text(
        "[general]\ndistributionListUrl=https://example.test/c.json\n"
        "distributionListUrlAppend = file:///srv/mine.json\n[wsl2]\nmemory=4GB\n"
    )
    assert read_catalog_urls(str(conf)) == (
        "https://example.test/c.json", "file:///srv/mine.json", [],
    )  # fmt: skip
    conf.write_text("[general]\ndistributionListUrl=x\nbogus=1\n")
    main, append, warnings = read_catalog_urls(str(conf))
    assert (main, append) == ("x", "")
    assert [str(w) for w in warnings] == [f"Unknown key 'general.bogus' in {conf}:3"]


def test_root_distributions_are_mapped_unless_the_machine_says_otherwise() -> None:
    config, _ = load_lxss_config(None, "/etc/lxss.conf", None, "", 1 << 34, 4)
    assert config.root_distributions_mapped is True
    machine = "[security]\nrootDistributionsMapped = false\n"
    config, warnings = load_lxss_config(machine, "/etc/lxss.conf", None, "", 1 << 34, 4)
    assert config.root_distributions_mapped is False and warnings == []
    # A user's file cannot change it (only root's distributions are concerned, and it is
    # the machine's choice).
    config, _ = load_lxss_config(None, "/etc/lxss.conf", machine, "/root/.lxssconfig", 1 << 34, 4)
    assert config.root_distributions_mapped is True


@pytest.mark.parametrize(
    ("text", "limit", "warned"),
    [
        (None, 256, False),
        ("[security]\nmaxDistributionsPerUser = 3\n", 3, False),
        ("[security]\nmaxDistributionsPerUser = 100000\n", 100000, False),
        ("[security]\nmaxDistributionsPerUser = 0\n", 256, True),
        ("[security]\nmaxDistributionsPerUser = many\n", 256, True),
    ],
)
def test_distribution_limit_from_the_machines_file(
    tmp_path: Path, text: str | None, limit: int, warned: bool
) -> None:
    path = tmp_path / "lxss.conf"
    if text is not None:
        path.write_text(text)
    found, warnings = read_distribution_limit(str(path))
    assert found == limit
    assert bool(warnings) == warned, warnings
