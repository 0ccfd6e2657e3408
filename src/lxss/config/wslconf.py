"""/etc/wsl.conf and /etc/wsl-distribution.conf: a distribution's own settings, in WSL's keys.

WSL counterpart: `src/linux/init/WslDistributionConfig.{h,cpp}` (wsl.conf, read by the
distribution's init) and the OOBE/shortcut readers in `src/linux/init/{init,main}.cpp`
(wsl-distribution.conf). Keys are spelled exactly as WSL documents them, so a distribution image
made for WSL configures lxss unchanged. Where a WSL key names Windows (interop, the Windows path,
the Windows time zone), lxss reads it as "the host".

The distribution's init imports this after pivot_root, where no further import works.
"""

from __future__ import annotations

import enum
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
    get_optional_str,
    get_str,
    parse,
    read_config_text,
)

WSL_CONF_PATH: Final = "/etc/wsl.conf"
WSL_DISTRIBUTION_CONF_PATH: Final = "/etc/wsl-distribution.conf"
DEFAULT_HOSTNAME: Final = "localhost"
HOSTNAME_MAX: Final = 64  # Linux's HOST_NAME_MAX


class CgroupVersion(enum.Enum):
    """`automount.cgroups`: the cgroup hierarchy init mounts."""

    V1 = "v1"
    V2 = "v2"


_BOOL, _INT, _STRING, _ENUM = ValueType.BOOL, ValueType.INT, ValueType.STRING, ValueType.ENUM

# /etc/wsl.conf, in the order of WSL's documentation. None: not set (see the WslConf field).
AUTOMOUNT_ENABLED: Final = Key("automount.enabled", _BOOL, True)
AUTOMOUNT_ROOT: Final = Key("automount.root", _STRING, "/mnt/")
AUTOMOUNT_OPTIONS: Final = Key("automount.options", _STRING)
AUTOMOUNT_MOUNT_FS_TAB: Final = Key("automount.mountFsTab", _BOOL, True)
AUTOMOUNT_LDCONFIG: Final = Key("automount.ldconfig", _BOOL, True)
AUTOMOUNT_CGROUPS: Final = Key("automount.cgroups", _ENUM, "v2", choices=("v1", "v2"))
FILESYSTEM_UMASK: Final = Key("filesystem.umask", _INT, 0o022)
INTEROP_ENABLED: Final = Key("interop.enabled", _BOOL, True)
INTEROP_APPEND_WINDOWS_PATH: Final = Key(
    "interop.appendWindowsPath", _BOOL, True, aliases=("interop.appendHostPath",)
)
NETWORK_GENERATE_HOSTS: Final = Key("network.generateHosts", _BOOL, True)
NETWORK_GENERATE_RESOLV_CONF: Final = Key("network.generateResolvConf", _BOOL, True)
NETWORK_HOSTNAME: Final = Key("network.hostname", _STRING)
TIME_USE_WINDOWS_TIMEZONE: Final = Key("time.useWindowsTimezone", _BOOL, True)
FILE_SERVER_ENABLED: Final = Key("fileServer.enabled", _BOOL, True)
FILE_SERVER_LOG_FILE: Final = Key("fileServer.logFile", _STRING)
FILE_SERVER_LOG_LEVEL: Final = Key("fileServer.logLevel", _INT, 4)  # 4: informational
FILE_SERVER_LOG_TRUNCATE: Final = Key("fileServer.logTruncate", _BOOL, True)
GPU_ENABLED: Final = Key("gpu.enabled", _BOOL, True)
GPU_APPEND_LIB_PATH: Final = Key("gpu.appendLibPath", _BOOL, True)
USER_DEFAULT: Final = Key("user.default", _STRING)
BOOT_COMMAND: Final = Key("boot.command", _STRING)
BOOT_SYSTEMD: Final = Key("boot.systemd", _BOOL, False)
BOOT_INIT_TIMEOUT: Final = Key("boot.initTimeout", _INT, 10000)
BOOT_PROTECT_BINFMT: Final = Key("boot.protectBinfmt", _BOOL, True)
GENERAL_GUI_APPLICATIONS: Final = Key("general.guiApplications", _BOOL, True)
# lxss's own: the distribution's default seccomp filter (lxss.linux.seccomp).
LXSS_SECCOMP: Final = Key("lxss.seccomp", _BOOL, True)

WSL_CONF_SCHEMA: Final = Schema(
    (
        AUTOMOUNT_ENABLED,
        AUTOMOUNT_ROOT,
        AUTOMOUNT_OPTIONS,
        AUTOMOUNT_MOUNT_FS_TAB,
        AUTOMOUNT_LDCONFIG,
        AUTOMOUNT_CGROUPS,
        FILESYSTEM_UMASK,
        INTEROP_ENABLED,
        INTEROP_APPEND_WINDOWS_PATH,
        NETWORK_GENERATE_HOSTS,
        NETWORK_GENERATE_RESOLV_CONF,
        NETWORK_HOSTNAME,
        TIME_USE_WINDOWS_TIMEZONE,
        FILE_SERVER_ENABLED,
        FILE_SERVER_LOG_FILE,
        FILE_SERVER_LOG_LEVEL,
        FILE_SERVER_LOG_TRUNCATE,
        GPU_ENABLED,
        GPU_APPEND_LIB_PATH,
        USER_DEFAULT,
        BOOT_COMMAND,
        BOOT_SYSTEMD,
        BOOT_INIT_TIMEOUT,
        BOOT_PROTECT_BINFMT,
        GENERAL_GUI_APPLICATIONS,
        LXSS_SECCOMP,
    )
)

# What each key means as lxss reads it, for the generated wsl.conf(5) (lxss.packaging). Where
# WSL's key names Windows, lxss reads "the host". Every key of the schema has one.
WSL_CONF_DOCS: Final = {
    AUTOMOUNT_ENABLED: "Mount the host's file system under automount.root (as /mnt/host).",
    AUTOMOUNT_ROOT: "The host's file system appears at ROOT + `host` (`/mnt/host`).",
    AUTOMOUNT_OPTIONS: "Mount options for the host's file system: ro, noexec, nodev, nosuid "
    "apply; DrvFs's uid, gid, umask, fmask, dmask, metadata do not (a warning).",
    AUTOMOUNT_MOUNT_FS_TAB: "Mount the distribution's /etc/fstab (`mount -a`) when it starts.",
    AUTOMOUNT_LDCONFIG: "Put GPU libraries in ld.so's path.",
    AUTOMOUNT_CGROUPS: "The cgroup hierarchy init mounts: v1 or v2.",
    FILESYSTEM_UMASK: "The umask of the distribution's programs (octal, as 022).",
    INTEROP_ENABLED: "Whether host programs can be run from inside the distribution "
    "(lxss-host-exec).",
    INTEROP_APPEND_WINDOWS_PATH: "Make the host's commands (the owner's PATH) reachable as "
    "host-NAME at the end of PATH (alias: appendHostPath).",
    NETWORK_GENERATE_HOSTS: "Write the distribution's /etc/hosts when it starts.",
    NETWORK_GENERATE_RESOLV_CONF: "Write the distribution's /etc/resolv.conf when it starts.",
    NETWORK_HOSTNAME: "The distribution's host name; unset: the host's.",
    TIME_USE_WINDOWS_TIMEZONE: "Follow the host's time zone.",
    FILE_SERVER_ENABLED: "The file server of version 2 (WSL's 9P server).",
    FILE_SERVER_LOG_FILE: "Where the file server logs.",
    FILE_SERVER_LOG_LEVEL: "How much the file server logs (4: informational).",
    FILE_SERVER_LOG_TRUNCATE: "Empty the file server's log when it starts.",
    GPU_ENABLED: "Give the distribution the host's GPU.",
    GPU_APPEND_LIB_PATH: "Append the GPU libraries' directory to ld.so's path.",
    USER_DEFAULT: "The user programs run as when `lxss` is given no -u.",
    BOOT_COMMAND: "Run once each time the distribution starts, as root, by /bin/sh -c.",
    BOOT_SYSTEMD: "Run systemd as the distribution's pid 1.",
    BOOT_INIT_TIMEOUT: "Milliseconds to wait for systemd to start; 0: do not wait.",
    BOOT_PROTECT_BINFMT: "Keep systemd from taking over binfmt_misc registrations.",
    GENERAL_GUI_APPLICATIONS: "Let graphical programs reach the host's display.",
    LXSS_SECCOMP: "Run the distribution under lxss's default seccomp filter (no io_uring, "
    "perf_event_open, bpf, keyctl, userfaultfd or nested user namespaces; docs/security.md).",
}
# Keys read (a file setting them is valid) but not acted on yet: the manual says so.
WSL_CONF_NOT_ACTED_ON: Final = frozenset(
    {
        AUTOMOUNT_LDCONFIG,
        AUTOMOUNT_CGROUPS,
        FILE_SERVER_ENABLED,
        FILE_SERVER_LOG_FILE,
        FILE_SERVER_LOG_LEVEL,
        FILE_SERVER_LOG_TRUNCATE,
        GPU_ENABLED,
        GPU_APPEND_LIB_PATH,
        BOOT_SYSTEMD,
        BOOT_INIT_TIMEOUT,
        BOOT_PROTECT_BINFMT,
        GENERAL_GUI_APPLICATIONS,
    }
)


@dataclass(frozen=True)
class WslConf:
    """The settings of /etc/wsl.conf; the defaults are what a missing file means.

    Each field is the key in its comment. None means the key was not set: the caller decides
    (the registry's default user, the host's own name, no boot command...).
    """

    automount_enabled: bool = True  # automount.enabled: mount the host's drives under the root
    automount_root: str = "/mnt/"  # automount.root, always ending in "/"
    automount_options: str | None = None  # automount.options: extra options for those mounts
    automount_mount_fs_tab: bool = True  # automount.mountFsTab: `mount -a` at start
    automount_ldconfig: bool = True  # automount.ldconfig: GPU libraries in ld.so's path
    automount_cgroups: CgroupVersion = CgroupVersion.V2  # automount.cgroups
    filesystem_umask: int = 0o022  # filesystem.umask, masked to 0o777 as umask(2) does
    interop_enabled: bool = True  # interop.enabled: host programs can be run from inside
    interop_append_windows_path: bool = True  # interop.appendWindowsPath: the host's PATH too
    network_generate_hosts: bool = True  # network.generateHosts: write /etc/hosts
    network_generate_resolv_conf: bool = True  # network.generateResolvConf
    network_hostname: str | None = None  # network.hostname, as written (see `hostname`)
    time_use_windows_timezone: bool = True  # time.useWindowsTimezone: follow the host's zone
    file_server_enabled: bool = True  # fileServer.enabled
    file_server_log_file: str | None = None  # fileServer.logFile
    file_server_log_level: int = 4  # fileServer.logLevel
    file_server_log_truncate: bool = True  # fileServer.logTruncate
    gpu_enabled: bool = True  # gpu.enabled
    gpu_append_lib_path: bool = True  # gpu.appendLibPath
    user_default: str | None = None  # user.default: the login user's name
    boot_command: str | None = None  # boot.command: run once per start, as root, by /bin/sh -c
    boot_systemd: bool = False  # boot.systemd: run systemd as the distribution's pid 1
    boot_init_timeout: int = 10000  # boot.initTimeout, ms to wait for systemd; 0: don't wait
    boot_protect_binfmt: bool = True  # boot.protectBinfmt
    general_gui_applications: bool = True  # general.guiApplications; the VM's setting gates it
    lxss_seccomp: bool = True  # lxss.seccomp: the default seccomp filter (lxss.linux.seccomp)

    def hostname(self, fallback: str) -> str:
        """The name to give the distribution: network.hostname if set, else `fallback` (the
        host's name), either way through `sanitize_hostname` as WSL does."""
        name = self.network_hostname if self.network_hostname is not None else fallback
        return sanitize_hostname(name)


def load_wsl_conf(
    text: str | None, filename: str = WSL_CONF_PATH
) -> tuple[WslConf, list[ConfigWarning]]:
    """Parse the text of /etc/wsl.conf (None: no file, so all defaults). Never raises."""
    values, warnings = parse(text, filename, WSL_CONF_SCHEMA) if text else ({}, [])
    return _wsl_conf(values), warnings


def read_wsl_conf(path: str = WSL_CONF_PATH) -> tuple[WslConf, list[ConfigWarning]]:
    """Read and parse /etc/wsl.conf: a missing file is the defaults, with no warning; one that
    cannot be read is the defaults plus a warning. Never raises for the file's sake."""
    text, warnings = read_config_text(path)
    conf, parse_warnings = load_wsl_conf(text, path)
    return conf, warnings + parse_warnings


def _wsl_conf(values: dict[str, Value]) -> WslConf:
    return WslConf(
        automount_enabled=get_bool(values, AUTOMOUNT_ENABLED),
        automount_root=_directory_prefix(get_str(values, AUTOMOUNT_ROOT)),
        automount_options=get_optional_str(values, AUTOMOUNT_OPTIONS),
        automount_mount_fs_tab=get_bool(values, AUTOMOUNT_MOUNT_FS_TAB),
        automount_ldconfig=get_bool(values, AUTOMOUNT_LDCONFIG),
        automount_cgroups=CgroupVersion(get_str(values, AUTOMOUNT_CGROUPS)),
        filesystem_umask=get_int(values, FILESYSTEM_UMASK) & 0o777,
        interop_enabled=get_bool(values, INTEROP_ENABLED),
        interop_append_windows_path=get_bool(values, INTEROP_APPEND_WINDOWS_PATH),
        network_generate_hosts=get_bool(values, NETWORK_GENERATE_HOSTS),
        network_generate_resolv_conf=get_bool(values, NETWORK_GENERATE_RESOLV_CONF),
        network_hostname=get_optional_str(values, NETWORK_HOSTNAME),
        time_use_windows_timezone=get_bool(values, TIME_USE_WINDOWS_TIMEZONE),
        file_server_enabled=get_bool(values, FILE_SERVER_ENABLED),
        file_server_log_file=get_optional_str(values, FILE_SERVER_LOG_FILE),
        file_server_log_level=get_int(values, FILE_SERVER_LOG_LEVEL),
        file_server_log_truncate=get_bool(values, FILE_SERVER_LOG_TRUNCATE),
        gpu_enabled=get_bool(values, GPU_ENABLED),
        gpu_append_lib_path=get_bool(values, GPU_APPEND_LIB_PATH),
        user_default=get_optional_str(values, USER_DEFAULT),
        boot_command=get_optional_str(values, BOOT_COMMAND),
        boot_systemd=get_bool(values, BOOT_SYSTEMD),
        boot_init_timeout=get_int(values, BOOT_INIT_TIMEOUT),
        boot_protect_binfmt=get_bool(values, BOOT_PROTECT_BINFMT),
        general_gui_applications=get_bool(values, GENERAL_GUI_APPLICATIONS),
        lxss_seccomp=get_bool(values, LXSS_SECCOMP),
    )


def _directory_prefix(root: str) -> str:
    # Init builds drive mount points as root + letter, so the root must end with a separator;
    # WSL turns an empty root into "/" the same way.
    return root if root.endswith("/") else root + "/"


# ---------------------------------------------------------------------------------------------
# /etc/wsl-distribution.conf: written by the distribution's author, read at install and at the
# first interactive launch (OOBE).

OOBE_COMMAND: Final = Key("oobe.command", _STRING)
OOBE_DEFAULT_UID: Final = Key("oobe.defaultUid", _INT)
OOBE_DEFAULT_NAME: Final = Key("oobe.defaultName", _STRING)
SHORTCUT_ENABLED: Final = Key("shortcut.enabled", _BOOL, True)
SHORTCUT_ICON: Final = Key("shortcut.icon", _STRING)
WINDOWSTERMINAL_ENABLED: Final = Key("windowsterminal.enabled", _BOOL, True)
WINDOWSTERMINAL_PROFILE_TEMPLATE: Final = Key("windowsterminal.profileTemplate", _STRING)

WSL_DISTRIBUTION_CONF_SCHEMA: Final = Schema(
    (
        OOBE_COMMAND,
        OOBE_DEFAULT_UID,
        OOBE_DEFAULT_NAME,
        SHORTCUT_ENABLED,
        SHORTCUT_ICON,
        WINDOWSTERMINAL_ENABLED,
        WINDOWSTERMINAL_PROFILE_TEMPLATE,
    )
)


@dataclass(frozen=True)
class WslDistributionConf:
    """The settings of /etc/wsl-distribution.conf. None: not set."""

    oobe_command: str | None = None  # oobe.command: run once at the first interactive launch
    oobe_default_uid: int | None = None  # oobe.defaultUid: becomes the default uid after it
    oobe_default_name: str | None = None  # oobe.defaultName: the suggested distribution name
    shortcut_enabled: bool = True  # shortcut.enabled: make a start-menu entry
    shortcut_icon: str | None = None  # shortcut.icon: path of its icon inside the distribution
    windowsterminal_enabled: bool = True  # windowsterminal.enabled: make a terminal profile
    windowsterminal_profile_template: str | None = None  # windowsterminal.profileTemplate


def load_wsl_distribution_conf(
    text: str | None, filename: str = WSL_DISTRIBUTION_CONF_PATH
) -> tuple[WslDistributionConf, list[ConfigWarning]]:
    """Parse the text of /etc/wsl-distribution.conf (None: no file). Never raises."""
    values, warnings = parse(text, filename, WSL_DISTRIBUTION_CONF_SCHEMA) if text else ({}, [])
    conf = WslDistributionConf(
        oobe_command=get_optional_str(values, OOBE_COMMAND),
        oobe_default_uid=get_optional_int(values, OOBE_DEFAULT_UID),
        oobe_default_name=get_optional_str(values, OOBE_DEFAULT_NAME),
        shortcut_enabled=get_bool(values, SHORTCUT_ENABLED),
        shortcut_icon=get_optional_str(values, SHORTCUT_ICON),
        windowsterminal_enabled=get_bool(values, WINDOWSTERMINAL_ENABLED),
        windowsterminal_profile_template=get_optional_str(values, WINDOWSTERMINAL_PROFILE_TEMPLATE),
    )
    return conf, warnings


def read_wsl_distribution_conf(
    path: str = WSL_DISTRIBUTION_CONF_PATH,
) -> tuple[WslDistributionConf, list[ConfigWarning]]:
    """Read and parse /etc/wsl-distribution.conf, tolerating its absence like `read_wsl_conf`."""
    text, warnings = read_config_text(path)
    conf, parse_warnings = load_wsl_distribution_conf(text, path)
    return conf, warnings + parse_warnings


# ---------------------------------------------------------------------------------------------
# Hostnames.


def sanitize_hostname(name: str) -> str:
    """`name` made a valid Linux hostname the way WSL makes one (`CleanHostname`).

    Keeps ASCII letters and digits, at most one dot, and hyphens; drops a dot or hyphen that would
    start the name or follow a hyphen or dot (a second dot is dropped wherever it is); cuts the
    result to 64 characters, then drops trailing dots and hyphens. Nothing left: "localhost".
    `Simple_Hostname` -> `SimpleHostname`, `-.host..name.-` -> `host.name`, `-.-` -> `localhost`.
    """
    kept: list[str] = []
    seen_dot = False
    for char in name:
        previous = kept[-1] if kept else ""
        if char == ".":
            if seen_dot or previous in ("", "-"):
                continue
            seen_dot = True
        elif char == "-":
            if previous in ("", "-", "."):
                continue
        elif not (char.isascii() and char.isalnum()):
            continue
        kept.append(char)
    result = "".join(kept[:HOSTNAME_MAX]).rstrip(".-")
    return result or DEFAULT_HOSTNAME
