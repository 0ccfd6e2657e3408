"""The service's settings: machine-wide /etc/lxss.conf and per-user ~/.lxssconfig.

WSL counterpart: `.wslconfig` as read by `src/windows/common/WslCoreConfig.cpp`; lxss reads the
keys that mean something here, spelled as WSL spells them, in the same syntax (`syntax.py`). The
user's file overrides the machine's key by key, so an administrator sets defaults in
/etc/lxss.conf and each user adjusts their own utility VM. Like .wslconfig, both are read when a
user's utility VM is created: changes apply after `lxss --shutdown`.

lxss differs from WSL in three places, each marked below: networkingMode defaults to Mirrored,
`wsl2.pidsLimit` is lxss's own, and a clamped `wsl2.memory` is reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from lxss.config.syntax import (
    ConfigWarning,
    Key,
    Schema,
    Value,
    ValueType,
    get_bool,
    get_int,
    get_optional_int,
    get_str,
    parse,
    read_config_text,
)
from lxss.protocol.messages import NetworkingMode as NetworkingMode  # defined with the messages

MACHINE_CONFIG_PATH: Final = "/etc/lxss.conf"
USER_CONFIG_NAME: Final = ".lxssconfig"  # in the user's home directory
MIN_MEMORY_BYTES: Final = 256 << 20  # as WSL: a smaller VM does not boot a distribution usefully


_BOOL, _INT, _STRING = ValueType.BOOL, ValueType.INT, ValueType.STRING

INSTANCE_IDLE_TIMEOUT: Final = Key("general.instanceIdleTimeout", _INT, 15000)
DISTRIBUTION_INSTALL_PATH: Final = Key("general.distributionInstallPath", _STRING, "")
VM_IDLE_TIMEOUT: Final = Key("wsl2.vmIdleTimeout", _INT, 60000)
MEMORY: Final = Key("wsl2.memory", ValueType.MEMORY)  # None: half the host's memory
PROCESSORS: Final = Key("wsl2.processors", _INT)  # None: all the host's CPUs
NETWORKING_MODE: Final = Key(
    "wsl2.networkingMode",
    ValueType.ENUM,
    NetworkingMode.MIRRORED.spelling,  # lxss: WSL's default is Nat
    choices=tuple(mode.spelling for mode in NetworkingMode),
    aliases=("experimental.networkingMode",),  # WSL keeps the old spelling working
)
LOCALHOST_FORWARDING: Final = Key("wsl2.localhostForwarding", _BOOL, True)
KERNEL: Final = Key("wsl2.kernel", _STRING, "")
KERNEL_COMMAND_LINE: Final = Key("wsl2.kernelCommandLine", _STRING, "")
KERNEL_BOOT_TIMEOUT: Final = Key("wsl2.kernelBootTimeout", _INT, 30000)
DISTRIBUTION_START_TIMEOUT: Final = Key("wsl2.distributionStartTimeout", _INT, 60000)
SAFE_MODE: Final = Key("wsl2.safeMode", _BOOL, False)
PIDS_LIMIT: Final = Key("wsl2.pidsLimit", _INT, 4096)  # lxss: not a WSL key
# The distribution catalogs (WSL: the DistributionListUrl and DistributionListUrlAppend values
# of its machine registry key). Read by the lxss client, from the machine's file only.
DISTRIBUTION_LIST_URL: Final = Key("general.distributionListUrl", _STRING, "")
DISTRIBUTION_LIST_URL_APPEND: Final = Key("general.distributionListUrlAppend", _STRING, "")
# lxss: root's distributions run mapped to a subordinate range of root's (true), or with
# their root as the host's root (false). The service reads it from the machine's file only.
ROOT_DISTRIBUTIONS_MAPPED: Final = Key("security.rootDistributionsMapped", _BOOL, True)
# lxss: the most distributions one user may register (a registration past it is refused).
# From the machine's file only: a user's own file cannot raise it.
MAX_DISTRIBUTIONS_PER_USER: Final = Key("security.maxDistributionsPerUser", _INT, 256)

LXSS_CONF_SCHEMA: Final = Schema(
    (
        INSTANCE_IDLE_TIMEOUT,
        DISTRIBUTION_INSTALL_PATH,
        VM_IDLE_TIMEOUT,
        MEMORY,
        PROCESSORS,
        NETWORKING_MODE,
        LOCALHOST_FORWARDING,
        KERNEL,
        KERNEL_COMMAND_LINE,
        KERNEL_BOOT_TIMEOUT,
        DISTRIBUTION_START_TIMEOUT,
        SAFE_MODE,
        PIDS_LIMIT,
        DISTRIBUTION_LIST_URL,
        DISTRIBUTION_LIST_URL_APPEND,
        ROOT_DISTRIBUTIONS_MAPPED,
        MAX_DISTRIBUTIONS_PER_USER,
    )
)

# What each key means, for the generated lxss.conf(5) and the commented /etc/lxss.conf
# (lxss.packaging): one sentence or two, as a user reads them. Every key of the schema has one.
LXSS_CONF_DOCS: Final = {
    INSTANCE_IDLE_TIMEOUT: (
        "Milliseconds a distribution keeps running after its last program ends; "
        "a negative value keeps it running until `lxss -t` or `lxss --shutdown`."
    ),
    DISTRIBUTION_INSTALL_PATH: (
        "Where distributions installed without --location go; empty: the service's storage "
        "(/var/lib/lxss/UID)."
    ),
    VM_IDLE_TIMEOUT: (
        "Milliseconds the utility VM keeps running after its last distribution stops; "
        "0 stops it at once, -1 or less never."
    ),
    MEMORY: (
        "Most memory the utility VM may use, as 512MB, 4GB, ...; at least 256MB, at most the "
        "host's; unset: half the host's memory."
    ),
    PROCESSORS: "How many CPUs the utility VM may use; unset: all the host's.",
    NETWORKING_MODE: (
        "How distributions reach the network. Mirrored (lxss's default; WSL's is Nat) keeps "
        "the host's own network; Nat gives the VM a private network behind the host (its own "
        "interfaces, routes, firewall and ports); None gives it loopback only. Bridged, "
        "VirtioProxy and Consomme are WSL's and fall back to Nat here, with a warning."
    ),
    LOCALHOST_FORWARDING: (
        "In Nat mode, a TCP port a distribution listens on at localhost (or on every address) "
        "is listened on at the host's 127.0.0.1 and ::1 too, and relayed."
    ),
    KERNEL: "A kernel image for version 2 distributions; empty: the built-in one.",
    KERNEL_COMMAND_LINE: "Appended to the kernel command line of version 2's utility VM.",
    KERNEL_BOOT_TIMEOUT: "Milliseconds to wait for version 2's utility VM to boot.",
    DISTRIBUTION_START_TIMEOUT: "Milliseconds to wait for a distribution's init to start.",
    SAFE_MODE: "Start with most features off, to repair a distribution that does not start.",
    PIDS_LIMIT: "Most processes in one user's utility VM (lxss's own key, not WSL's).",
    DISTRIBUTION_LIST_URL: (
        "The distribution catalog `lxss --install` and `lxss -l -o` read (WSL's "
        "DistributionInfo.json format): a file://, http:// or https:// URL or a path. "
        "Read from /etc/lxss.conf only."
    ),
    DISTRIBUTION_LIST_URL_APPEND: (
        "A second catalog whose entries win over the first's. Read from /etc/lxss.conf only."
    ),
    ROOT_DISTRIBUTIONS_MAPPED: (
        "Whether root's distributions run mapped to a subordinate range of root's (true: "
        "their root is an unprivileged id on the host) or with the host's root as theirs "
        "(false). Read from /etc/lxss.conf only (lxss's own key)."
    ),
    MAX_DISTRIBUTIONS_PER_USER: (
        "The most distributions one user may register; the next --import, --install or "
        "--import-in-place is refused. At least 1. Read from /etc/lxss.conf only, at each "
        "registration (lxss's own key)."
    ),
}
# Keys read (a file setting them is valid) but not acted on yet: the manual says so.
LXSS_CONF_NOT_ACTED_ON: Final = frozenset(
    {
        DISTRIBUTION_INSTALL_PATH,
        KERNEL,
        KERNEL_COMMAND_LINE,
        SAFE_MODE,
    }
)


@dataclass(frozen=True)
class LxssConfig:
    """The settings of one user's utility VM, after both files and the host's limits.

    Times are milliseconds. Each field is the key in its comment.
    """

    memory_bytes: int  # wsl2.memory: within [256 MiB, host memory]; half the host's by default
    processors: int  # wsl2.processors: within [1, host CPUs]; all of them by default
    instance_idle_timeout_ms: int = 15000  # general.instanceIdleTimeout; negative: never
    distribution_install_path: str = ""  # general.distributionInstallPath; "": service storage
    vm_idle_timeout_ms: int = 60000  # wsl2.vmIdleTimeout; 0: at once; -1 or less: never
    networking_mode: NetworkingMode = NetworkingMode.MIRRORED  # wsl2.networkingMode
    localhost_forwarding: bool = True  # wsl2.localhostForwarding: Nat mode's port relay
    kernel: str = ""  # wsl2.kernel: a kernel image for version 2; "": the built-in one
    kernel_command_line: str = ""  # wsl2.kernelCommandLine: appended to lxss's own
    kernel_boot_timeout_ms: int = 30000  # wsl2.kernelBootTimeout: until mini_init connects
    distribution_start_timeout_ms: int = 60000  # wsl2.distributionStartTimeout: until init does
    safe_mode: bool = False  # wsl2.safeMode: start with most features off, to repair a distro
    pids_limit: int = 4096  # wsl2.pidsLimit: most processes in the utility VM, at least 1
    root_distributions_mapped: bool = True  # security.rootDistributionsMapped (machine only)


def load_lxss_config(
    machine_text: str | None,
    machine_file: str,
    user_text: str | None,
    user_file: str,
    host_ram_bytes: int,
    host_cpus: int,
) -> tuple[LxssConfig, list[ConfigWarning]]:
    """Combine the machine's and the user's file (None: no such file) for a host with
    `host_ram_bytes` of memory and `host_cpus` CPUs. Never raises for the files' sake.

    The user's file wins key by key (`experimental.networkingMode` in one file overrides
    `wsl2.networkingMode` in the other; both in one file is a duplicate). Warnings come in file
    order, machine first, then those about limits: an out-of-range wsl2.memory, wsl2.processors
    or wsl2.pidsLimit is clamped or replaced, and named with the file that set it.

    Raises ValueError if `host_ram_bytes` or `host_cpus` is not positive.
    """
    if host_ram_bytes <= 0 or host_cpus <= 0:
        raise ValueError(
            f"host resources must be positive: {host_ram_bytes} bytes, {host_cpus} CPUs"
        )
    machine_values, warnings = _parse(machine_text, machine_file)
    user_values, user_warnings = _parse(user_text, user_file)
    warnings += user_warnings
    values = machine_values | user_values

    def origin(key: Key) -> str:
        return user_file if key.name in user_values else machine_file

    config = LxssConfig(
        memory_bytes=_memory(values, host_ram_bytes, origin(MEMORY), warnings),
        processors=_processors(values, host_cpus, origin(PROCESSORS), warnings),
        instance_idle_timeout_ms=get_int(values, INSTANCE_IDLE_TIMEOUT),
        distribution_install_path=get_str(values, DISTRIBUTION_INSTALL_PATH),
        vm_idle_timeout_ms=get_int(values, VM_IDLE_TIMEOUT),
        networking_mode=NetworkingMode.from_spelling(get_str(values, NETWORKING_MODE)),
        localhost_forwarding=get_bool(values, LOCALHOST_FORWARDING),
        kernel=get_str(values, KERNEL),
        kernel_command_line=get_str(values, KERNEL_COMMAND_LINE),
        kernel_boot_timeout_ms=get_int(values, KERNEL_BOOT_TIMEOUT),
        distribution_start_timeout_ms=get_int(values, DISTRIBUTION_START_TIMEOUT),
        safe_mode=get_bool(values, SAFE_MODE),
        pids_limit=_pids_limit(values, origin(PIDS_LIMIT), warnings),
        root_distributions_mapped=get_bool(machine_values, ROOT_DISTRIBUTIONS_MAPPED),
    )
    return config, warnings


def read_lxss_config(
    user_path: str | None,
    machine_path: str = MACHINE_CONFIG_PATH,
    host_ram_bytes: int | None = None,
    host_cpus: int | None = None,
) -> tuple[LxssConfig, list[ConfigWarning]]:
    """Read both files and `load_lxss_config` them; missing files are fine, unreadable ones warn.
    Host memory and CPUs default to this machine's.

    `user_path` (None: no user file) is opened with the caller's privileges and follows
    symlinks: a root service must open the user's file as that user, or read it itself and call
    `load_lxss_config`, or a symlink would make it read files the user cannot.
    """
    machine_text, warnings = read_config_text(machine_path)
    user_text: str | None = None
    if user_path is not None:
        user_text, user_warnings = read_config_text(user_path)
        warnings += user_warnings
    config, parse_warnings = load_lxss_config(
        machine_text,
        machine_path,
        user_text,
        user_path or "",
        host_ram_bytes if host_ram_bytes is not None else _host_ram_bytes(),
        host_cpus if host_cpus is not None else (os.cpu_count() or 1),
    )
    return config, warnings + parse_warnings


def read_catalog_urls(
    machine_path: str = MACHINE_CONFIG_PATH,
) -> tuple[str, str, list[ConfigWarning]]:
    """The machine's distributionListUrl and distributionListUrlAppend ("" when not set).

    Machine-wide, as WSL keeps them in its machine registry key: an administrator chooses
    the catalog for everyone (a user's own catalog is `--from-file` or `--import` away).
    """
    text, warnings = read_config_text(machine_path)
    values, parse_warnings = _parse(text, machine_path)
    urls = get_str(values, DISTRIBUTION_LIST_URL), get_str(values, DISTRIBUTION_LIST_URL_APPEND)
    return *urls, warnings + parse_warnings


def read_distribution_limit(
    machine_path: str = MACHINE_CONFIG_PATH,
) -> tuple[int, list[ConfigWarning]]:
    """security.maxDistributionsPerUser from the machine's file (a value below 1 warns and
    is replaced by the default: a limit is what keeps one user's registry bounded)."""
    text, warnings = read_config_text(machine_path)
    values, parse_warnings = _parse(text, machine_path)
    warnings += parse_warnings
    limit = get_int(values, MAX_DISTRIBUTIONS_PER_USER)
    if limit < 1:
        default = get_int({}, MAX_DISTRIBUTIONS_PER_USER)
        message = f"{MAX_DISTRIBUTIONS_PER_USER.name} must be at least 1 ({limit}); using {default}"
        warnings.append(ConfigWarning(machine_path, None, message))
        limit = default
    return limit, warnings


def _parse(text: str | None, filename: str) -> tuple[dict[str, Value], list[ConfigWarning]]:
    return parse(text, filename, LXSS_CONF_SCHEMA) if text else ({}, [])


def _memory(
    values: dict[str, Value], host_ram: int, origin: str, warnings: list[ConfigWarning]
) -> int:
    requested = get_optional_int(values, MEMORY)
    if not requested:  # unset, or 0 (which WSL also reads as "the default")
        return host_ram // 2
    size = min(max(requested, MIN_MEMORY_BYTES), host_ram)
    # lxss: WSL clamps silently; saying so spares a user wondering where their memory went.
    if requested > host_ram:
        message = f"{MEMORY.name} cannot exceed the memory of the system ({requested} > {host_ram})"
        warnings.append(ConfigWarning(origin, None, message))
    elif size != requested:
        message = f"{MEMORY.name} cannot be less than 256MB ({requested} < {MIN_MEMORY_BYTES})"
        warnings.append(ConfigWarning(origin, None, message))
    return size


def _processors(
    values: dict[str, Value], host_cpus: int, origin: str, warnings: list[ConfigWarning]
) -> int:
    requested = get_optional_int(values, PROCESSORS)
    if requested is None or requested <= 0:  # WSL: zero or less means all of them
        return host_cpus
    if requested > host_cpus:
        message = (
            f"{PROCESSORS.name} cannot exceed the number of logical processors on the system"
            f" ({requested} > {host_cpus})"
        )
        warnings.append(ConfigWarning(origin, None, message))
        return host_cpus
    return requested


def _pids_limit(values: dict[str, Value], origin: str, warnings: list[ConfigWarning]) -> int:
    requested = get_int(values, PIDS_LIMIT)
    if requested >= 1:
        return requested
    # Not "unlimited": the limit is what keeps a fork bomb in one VM from the host's pid table.
    default = get_int({}, PIDS_LIMIT)
    message = f"{PIDS_LIMIT.name} must be at least 1 ({requested} < 1); using {default}"
    warnings.append(ConfigWarning(origin, None, message))
    return default


def _host_ram_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
