"""/etc/wsl.conf, /etc/wsl-distribution.conf and the hostname sanitiser (lxss.config.wslconf)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lxss.config.wslconf import (
    WSL_CONF_SCHEMA,
    WSL_DISTRIBUTION_CONF_SCHEMA,
    CgroupVersion,
    WslConf,
    WslDistributionConf,
    load_wsl_conf,
    load_wsl_distribution_conf,
    read_wsl_conf,
    read_wsl_distribution_conf,
    sanitize_hostname,
)


def load(text: str) -> tuple[WslConf, list[str]]:
    conf, warnings = load_wsl_conf(text)
    return conf, [str(warning) for warning in warnings]


# -- the keys, as WSL documents them ----------------------------------------------------------

DOCUMENTED_KEYS = [
    "automount.enabled",
    "automount.root",
    "automount.options",
    "automount.mountFsTab",
    "automount.ldconfig",
    "automount.cgroups",
    "filesystem.umask",
    "interop.enabled",
    "interop.appendWindowsPath",
    "network.generateHosts",
    "network.generateResolvConf",
    "network.hostname",
    "time.useWindowsTimezone",
    "fileServer.enabled",
    "fileServer.logFile",
    "fileServer.logLevel",
    "fileServer.logTruncate",
    "gpu.enabled",
    "gpu.appendLibPath",
    "user.default",
    "boot.command",
    "boot.systemd",
    "boot.initTimeout",
    "boot.protectBinfmt",
    "general.guiApplications",
    "lxss.seccomp",  # lxss's own key
]


def test_schema_has_exactly_the_documented_keys() -> None:
    assert [key.name for key in WSL_CONF_SCHEMA] == DOCUMENTED_KEYS


def test_every_key_has_a_field() -> None:
    fields = [field.name for field in dataclasses.fields(WslConf)]
    assert len(fields) == len(DOCUMENTED_KEYS)


@pytest.mark.parametrize(
    ("key", "text", "field", "expected"),
    [
        ("automount.enabled", "false", "automount_enabled", False),
        ("automount.root", "/windir/", "automount_root", "/windir/"),
        ("automount.options", '"metadata,umask=22"', "automount_options", "metadata,umask=22"),
        ("automount.mountFsTab", "false", "automount_mount_fs_tab", False),
        ("automount.ldconfig", "0", "automount_ldconfig", False),
        ("automount.cgroups", "v1", "automount_cgroups", CgroupVersion.V1),
        ("filesystem.umask", "077", "filesystem_umask", 0o077),
        ("interop.enabled", "false", "interop_enabled", False),
        ("interop.appendWindowsPath", "false", "interop_append_windows_path", False),
        ("network.generateHosts", "false", "network_generate_hosts", False),
        ("network.generateResolvConf", "false", "network_generate_resolv_conf", False),
        ("network.hostname", "box", "network_hostname", "box"),
        ("time.useWindowsTimezone", "false", "time_use_windows_timezone", False),
        ("fileServer.enabled", "false", "file_server_enabled", False),
        ("fileServer.logFile", "/tmp/9p.log", "file_server_log_file", "/tmp/9p.log"),
        ("fileServer.logLevel", "5", "file_server_log_level", 5),
        ("fileServer.logTruncate", "false", "file_server_log_truncate", False),
        ("gpu.enabled", "false", "gpu_enabled", False),
        ("gpu.appendLibPath", "false", "gpu_append_lib_path", False),
        ("user.default", "alice", "user_default", "alice"),
        ("boot.command", "service ssh start", "boot_command", "service ssh start"),
        ("boot.systemd", "true", "boot_systemd", True),
        ("boot.initTimeout", "0", "boot_init_timeout", 0),
        ("boot.protectBinfmt", "false", "boot_protect_binfmt", False),
        ("general.guiApplications", "false", "general_gui_applications", False),
        ("lxss.seccomp", "false", "lxss_seccomp", False),
    ],
)
def test_each_key(key: str, text: str, field: str, expected: object) -> None:
    section, name = key.split(".")
    conf, warnings = load(f"[{section}]\n{name} = {text}\n")
    assert warnings == []
    assert getattr(conf, field) == expected
    others = {f.name: getattr(conf, f.name) for f in dataclasses.fields(conf) if f.name != field}
    defaults = {f.name: getattr(WslConf(), f.name) for f in dataclasses.fields(conf)}
    assert all(value == defaults[name] for name, value in others.items())


def test_defaults() -> None:
    conf = WslConf()
    assert conf.automount_enabled and conf.automount_mount_fs_tab and conf.automount_ldconfig
    assert conf.automount_root == "/mnt/"
    assert conf.automount_options is None
    assert conf.automount_cgroups is CgroupVersion.V2
    assert conf.filesystem_umask == 0o022
    assert conf.interop_enabled and conf.interop_append_windows_path
    assert conf.network_generate_hosts and conf.network_generate_resolv_conf
    assert conf.network_hostname is None
    assert conf.time_use_windows_timezone
    assert conf.file_server_enabled and conf.file_server_log_truncate
    assert conf.file_server_log_file is None and conf.file_server_log_level == 4
    assert conf.gpu_enabled and conf.gpu_append_lib_path
    assert conf.user_default is None and conf.boot_command is None
    assert conf.boot_systemd is False
    assert conf.boot_init_timeout == 10000
    assert conf.boot_protect_binfmt and conf.general_gui_applications


@pytest.mark.parametrize("text", [None, "", "\n", "# only a comment\n", "[boot]\n"])
def test_no_settings_means_defaults(text: str | None) -> None:
    assert load_wsl_conf(text) == (WslConf(), [])


def test_schema_defaults_match_the_dataclass() -> None:
    # A file setting every key to its own default changes nothing.
    lines = []
    for key in WSL_CONF_SCHEMA:
        if key.default is not None:
            section, name = key.name.split(".")
            lines.append(f"[{section}]\n{name} = {str(key.default).lower()}\n")
    conf, warnings = load("".join(lines))
    assert warnings == []
    assert conf == WslConf()


def test_conf_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        WslConf().boot_systemd = True  # type: ignore[misc]


def test_a_typical_file() -> None:
    text = (
        "# wsl.conf written on Windows\r\n"
        "[boot]\r\n"
        "systemd=true\r\n"
        'command = "echo started > /run/started"\r\n'
        "\r\n"
        "[automount]\r\n"
        "root = /\r\n"
        'options = "metadata,uid=1000,gid=1000,umask=22,fmask=11"  # drvfs\r\n'
        "[network]\r\n"
        "hostname = Dev_Box\r\n"
        "generateResolvConf = false\r\n"
        "[user]\r\n"
        "default = alice\r\n"
    )
    conf, warnings = load(text)
    assert warnings == []
    assert conf.boot_systemd is True
    assert conf.boot_command == "echo started > /run/started"
    assert conf.automount_root == "/"
    assert conf.automount_options == "metadata,uid=1000,gid=1000,umask=22,fmask=11"
    assert conf.network_hostname == "Dev_Box"
    assert conf.hostname("ignored") == "DevBox"
    assert conf.network_generate_resolv_conf is False
    assert conf.user_default == "alice"


@pytest.mark.parametrize(
    ("root", "expected"), [("/mnt", "/mnt/"), ("/x/", "/x/"), ("/", "/"), ('""', "/")]
)
def test_automount_root_ends_with_a_slash(root: str, expected: str) -> None:
    assert load(f"[automount]\nroot = {root}\n")[0].automount_root == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("0022", 0o022), ("0x3f", 0o77), ("18", 0o22), ("01777", 0o777)]
)
def test_umask_is_an_integer_in_c_notation(text: str, expected: int) -> None:
    assert load(f"[filesystem]\numask = {text}\n")[0].filesystem_umask == expected


def test_cgroups_enum() -> None:
    assert load("[automount]\ncgroups = V1\n")[0].automount_cgroups is CgroupVersion.V1
    conf, warnings = load("[automount]\ncgroups = v3\n")
    assert conf.automount_cgroups is CgroupVersion.V2
    assert warnings == [
        "Invalid value 'v3' for config key 'automount.cgroups' in /etc/wsl.conf:2"
        " (Valid values: v1, v2)"
    ]


# -- WSL's WslConfWarnings test, line for line ------------------------------------------------


def test_wsl_warnings_unknown_key() -> None:
    assert load("[foo]\na=b\n")[1] == ["Unknown key 'foo.a' in /etc/wsl.conf:2"]


def test_wsl_warnings_invalid_escape() -> None:
    assert load("a=a\\m\n")[1] == ["Invalid escaped character: 'm' in /etc/wsl.conf:1"]


def test_wsl_warnings_invalid_section() -> None:
    assert load("[=b\n")[1] == ["Invalid section name in /etc/wsl.conf:1"]


def test_wsl_warnings_crlf() -> None:
    assert load("[foo]\r\na=b\r\n")[1] == ["Unknown key 'foo.a' in /etc/wsl.conf:2"]


def test_invalid_value_keeps_the_default_and_the_rest() -> None:
    conf, warnings = load("[boot]\nsystemd = yes\ncommand = x\n")
    assert conf.boot_systemd is False
    assert conf.boot_command == "x"
    assert warnings == ["Invalid boolean value 'yes' for key 'boot.systemd' in /etc/wsl.conf:2"]


def test_warnings_name_the_file_given() -> None:
    _, warnings = load_wsl_conf("[foo]\na=b\n", "/distro/etc/wsl.conf")
    assert str(warnings[0]) == "Unknown key 'foo.a' in /distro/etc/wsl.conf:2"


# -- reading the file --------------------------------------------------------------------------


def test_read_missing_file_is_defaults_without_warning(tmp_path: Path) -> None:
    assert read_wsl_conf(str(tmp_path / "wsl.conf")) == (WslConf(), [])


def test_read_file(tmp_path: Path) -> None:
    path = tmp_path / "wsl.conf"
    path.write_text("[boot]\nsystemd = true\n[x]\ny = 1\n")
    conf, warnings = read_wsl_conf(str(path))
    assert conf == WslConf(boot_systemd=True)
    assert [str(w) for w in warnings] == [f"Unknown key 'x.y' in {path}:4"]


def test_read_unreadable_file_is_defaults_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "wsl.conf"
    path.mkdir()
    conf, warnings = read_wsl_conf(str(path))
    assert conf == WslConf()
    assert [str(w) for w in warnings] == [f"Failed to open config file {path}, Is a directory"]


# -- /etc/wsl-distribution.conf ---------------------------------------------------------------


def test_distribution_conf_keys() -> None:
    assert [key.name for key in WSL_DISTRIBUTION_CONF_SCHEMA] == [
        "oobe.command",
        "oobe.defaultUid",
        "oobe.defaultName",
        "shortcut.enabled",
        "shortcut.icon",
        "windowsterminal.enabled",
        "windowsterminal.profileTemplate",
    ]


def test_distribution_conf_defaults() -> None:
    assert load_wsl_distribution_conf(None) == (WslDistributionConf(), [])
    conf = WslDistributionConf()
    assert conf.oobe_command is None and conf.oobe_default_uid is None
    assert conf.shortcut_enabled and conf.windowsterminal_enabled


def test_distribution_conf_values() -> None:
    text = (
        "[oobe]\n"
        "command = /etc/oobe.sh\n"
        "defaultUid = 1000\n"
        'defaultName = "Debian GNU/Linux"\n'
        "[shortcut]\n"
        "enabled = false\n"
        "icon = /usr/share/icons/debian.ico\n"
        "[windowsterminal]\n"
        "enabled = false\n"
        "profileTemplate = /usr/share/wsl/terminal.json\n"
    )
    assert load_wsl_distribution_conf(text) == (
        WslDistributionConf(
            oobe_command="/etc/oobe.sh",
            oobe_default_uid=1000,
            oobe_default_name="Debian GNU/Linux",
            shortcut_enabled=False,
            shortcut_icon="/usr/share/icons/debian.ico",
            windowsterminal_enabled=False,
            windowsterminal_profile_template="/usr/share/wsl/terminal.json",
        ),
        [],
    )


def test_distribution_conf_warnings() -> None:
    conf, warnings = load_wsl_distribution_conf("[oobe]\ndefaultUid = alice\n")
    assert conf.oobe_default_uid is None
    assert [str(w) for w in warnings] == [
        "Invalid integer value 'alice' for key 'oobe.defaultUid' in /etc/wsl-distribution.conf:2"
    ]


def test_read_distribution_conf(tmp_path: Path) -> None:
    assert read_wsl_distribution_conf(str(tmp_path / "absent")) == (WslDistributionConf(), [])
    path = tmp_path / "wsl-distribution.conf"
    path.write_text("[oobe]\ndefaultUid = 0x3e8\n")
    assert read_wsl_distribution_conf(str(path)) == (WslDistributionConf(oobe_default_uid=1000), [])


# -- hostnames -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # WSL's Hostname test table.
        ("Simple_Hostname", "SimpleHostname"),
        ("-hostname", "hostname"),
        ("--hostname", "hostname"),
        (".hostname", "hostname"),
        ("hostname.", "hostname"),
        ("hostname.-", "hostname"),
        ("host..name", "host.name"),
        ("host|name", "hostname"),
        (".a-", "a"),
        (".", "localhost"),
        ("-", "localhost"),
        ("-.-", "localhost"),
        # And around it.
        ("", "localhost"),
        ("plain", "plain"),
        ("my-host", "my-host"),
        ("a--b", "a-b"),
        ("a-.b", "a-b"),
        ("a.-b", "a.b"),
        ("a.b.c", "a.bc"),  # only one dot survives
        ("hôte", "hte"),  # ASCII letters and digits only
        ("DESKTOP-1234", "DESKTOP-1234"),
        ("__", "localhost"),
    ],
)
def test_sanitize_hostname(name: str, expected: str) -> None:
    assert sanitize_hostname(name) == expected


def test_sanitize_hostname_truncates_to_64() -> None:
    assert sanitize_hostname("a" * 100) == "a" * 64
    assert sanitize_hostname("a" * 64 + "b") == "a" * 64


def test_sanitize_hostname_trims_after_truncating() -> None:
    # The cut can leave a trailing hyphen or dot, which is then dropped.
    assert sanitize_hostname("a" * 63 + "-b") == "a" * 63
    assert sanitize_hostname("a" * 63 + ".b") == "a" * 63


def test_hostname_prefers_wsl_conf_and_sanitises_the_fallback() -> None:
    assert WslConf(network_hostname="box_1").hostname("host") == "box1"
    assert WslConf().hostname("My_PC") == "MyPC"
    assert WslConf(network_hostname="").hostname("host") == "localhost"


def test_no_key_the_guest_reads_is_documented_as_not_acted_on() -> None:
    """The manual marks WSL_CONF_NOT_ACTED_ON keys as read but ignored: a key that a guest
    role reads (`conf.<section>_<key>`) must not be among them."""
    import re
    from pathlib import Path

    from lxss.config import wslconf

    def attribute(key: str) -> str:
        section, _, name = key.partition(".")
        snake = re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
        return f"{section}_{snake}"

    guest = Path(wslconf.__file__).parents[1] / "guest"
    read = {m for f in guest.glob("*.py") for m in re.findall(r"conf\.([a-z_]+)", f.read_text())}
    assert {attribute(k.name) for k in wslconf.WSL_CONF_NOT_ACTED_ON} & read == set()
