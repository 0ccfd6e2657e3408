"""WSL's config file syntax (lxss.config.syntax): grammar, warnings, conversions, file reading."""

from __future__ import annotations

import ast
import os
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lxss.config.syntax import (
    MAX_CONFIG_BYTES,
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
    parse_bool,
    parse_enum,
    parse_int,
    parse_memory_size,
    read_config_text,
)
from lxss.text import one_line

FILE = "/etc/wsl.conf"
SYSTEMD = Key("boot.systemd", ValueType.BOOL, False)
COMMAND = Key("boot.command", ValueType.STRING)
TIMEOUT = Key("boot.initTimeout", ValueType.INT, 10000)
MEMORY = Key("wsl2.memory", ValueType.MEMORY)
MODE = Key(
    "wsl2.networkingMode",
    ValueType.ENUM,
    "Nat",
    choices=("None", "Nat", "Mirrored"),
    aliases=("experimental.networkingMode",),
)
SCHEMA = Schema((SYSTEMD, COMMAND, TIMEOUT, MEMORY, MODE))


def run(text: str) -> tuple[dict[str, Value], list[str]]:
    values, warnings = parse(text, FILE, SCHEMA)
    return values, [str(warning) for warning in warnings]


def value_of(text: str) -> str:
    """The value of boot.command in `text`, asserting there were no warnings."""
    values, warnings = run(text)
    assert warnings == []
    result = values["boot.command"]
    assert isinstance(result, str)
    return result


# -- grammar ----------------------------------------------------------------------------------


def test_sections_and_keys() -> None:
    values, warnings = run("[boot]\nsystemd = true\ncommand = echo hi\ninitTimeout = 5\n")
    assert warnings == []
    assert values == {"boot.systemd": True, "boot.command": "echo hi", "boot.initTimeout": 5}


def test_lookup_ignores_case_and_stores_the_schema_spelling() -> None:
    values, warnings = run("[BOOT]\nSystemD = TRUE\n[Wsl2]\nNETWORKINGMODE = mirrored\n")
    assert warnings == []
    assert values == {"boot.systemd": True, "wsl2.networkingMode": "Mirrored"}


def test_empty_text_sets_nothing() -> None:
    assert run("") == ({}, [])
    assert run("\n\n   \n\t\n") == ({}, [])


def test_later_section_replaces_earlier() -> None:
    values, _ = run("[wsl2]\n[boot]\nsystemd=1\n")
    assert values == {"boot.systemd": True}


def test_spaces_around_the_equals_sign_and_indentation() -> None:
    values, warnings = run("  [boot]  \n\tsystemd\t=\ttrue\t\n   command=x\n")
    assert warnings == []
    assert values == {"boot.systemd": True, "boot.command": "x"}


def test_digits_in_names() -> None:
    key = Key("wsl2.x9", ValueType.STRING)
    values, warnings = parse("[wsl2]\nx9 = y\n", FILE, Schema((key,)))
    assert (values, warnings) == ({"wsl2.x9": "y"}, [])


# -- comments, quotes, escapes, continuation ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[boot]\n# a comment\ncommand = a\n", "a"),
        ("[boot]\n   # an indented comment\ncommand = a\n", "a"),
        ("[boot] # after a header\ncommand = a\n", "a"),
        ("[boot]\ncommand = a b # trailing comment\n", "a b"),
        ("[boot]\ncommand = a#b\n", "a"),
        ('[boot]\ncommand = "a # b"\n', "a # b"),
        ('[boot]\ncommand = "a # b" # c\n', "a # b"),
    ],
)
def test_comments(text: str, expected: str) -> None:
    assert value_of(text) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  spaced out  ", "spaced out"),
        ('"  kept  "', "  kept  "),
        ('"a"b"c"', "abc"),
        ('a "b c" d', "a b c d"),
        ('""', ""),
        ("", ""),
        ('"tab\tinside"', "tab\tinside"),
    ],
)
def test_quotes_and_trimming(raw: str, expected: str) -> None:
    assert value_of(f"[boot]\ncommand = {raw}\n") == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"a\\b", "a\\b"),
        (r"say \"hi\"", 'say "hi"'),
        (r"a\bb", "a\bb"),
        (r"a\nb", "a\nb"),
        (r"a\tb", "a\tb"),
        (r"trailing\t", "trailing\t"),  # an escaped tab is not trimmed
        (r'"\""', '"'),
    ],
)
def test_escapes(raw: str, expected: str) -> None:
    assert value_of(f"[boot]\ncommand = {raw}\n") == expected


def test_invalid_escape_warns_and_skips_the_line() -> None:
    values, warnings = run("[boot]\ncommand = a\\m\nsystemd = true\n")
    assert warnings == ["Invalid escaped character: 'm' in /etc/wsl.conf:2"]
    assert values == {"boot.systemd": True}


def test_continuation_joins_lines_and_keeps_counting() -> None:
    text = "[boot]\ncommand = one \\\n  two \\\nthree\nbogus = 1\n"
    values, warnings = run(text)
    assert values == {"boot.command": "one   two three"}
    assert warnings == ["Unknown key 'boot.bogus' in /etc/wsl.conf:5"]


def test_continuation_inside_quotes() -> None:
    assert value_of('[boot]\ncommand = "a \\\nb"\n') == "a b"


def test_backslash_at_end_of_file() -> None:
    assert value_of("[boot]\ncommand = abc\\") == "abc"


def test_warning_after_a_continuation_names_the_line_it_is_on() -> None:
    _, warnings = run("[boot]\ncommand = a \\\nb \\q\n")
    assert warnings == ["Invalid escaped character: 'q' in /etc/wsl.conf:3"]


def test_unterminated_quote() -> None:
    values, warnings = run('[boot]\ncommand = "open\nsystemd = 1\n')
    assert warnings == ['Expected " in /etc/wsl.conf:2']
    assert values == {"boot.systemd": True}


# -- line ends -----------------------------------------------------------------------------------


def test_crlf() -> None:
    text = "[boot]\r\nsystemd = true\r\ncommand = a b \r\n[foo]\r\na=b\r\n"
    values, warnings = run(text)
    assert values == {"boot.systemd": True, "boot.command": "a b"}
    assert warnings == ["Unknown key 'foo.a' in /etc/wsl.conf:5"]


def test_crlf_continuation() -> None:
    values, warnings = run("[boot]\r\ncommand = a\\\r\nb\r\nx=1\r\n")
    assert values == {"boot.command": "ab"}
    assert warnings == ["Unknown key 'boot.x' in /etc/wsl.conf:4"]


def test_lone_carriage_return_ends_a_line() -> None:
    values, _ = run("[boot]\rsystemd = 1\r")
    assert values == {"boot.systemd": True}


def test_no_newline_at_end_of_file() -> None:
    assert run("[boot]\nsystemd = 1")[0] == {"boot.systemd": True}


def test_byte_order_mark_is_ignored() -> None:
    assert run("\ufeff[boot]\nsystemd = 1\n") == ({"boot.systemd": True}, [])


# -- syntax warnings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "warning"),
    [
        ("[=b", "Invalid section name"),
        ("[]", "Invalid section name"),
        ("[ boot]", "Invalid section name"),
        ("[1boot]", "Invalid section name"),
        ("[boot", "Expected ']'"),
        ("[boot ]", "Expected ']'"),
        ("[bo.ot]", "Expected ']'"),
        ("[boot] x", "Expected ' ' or '\\n'"),
        ("systemd", "Expected '='"),
        ("systemd true", "Expected '='"),
        ("sys_temd = 1", "Expected '='"),
        ("boot.systemd = 1", "Expected '='"),
        ("=1", "Invalid key name"),
        ("_x = 1", "Invalid key name"),
        ("1x = 1", "Invalid key name"),
        ("é = 1", "Invalid key name"),
    ],
)
def test_syntax_warnings(line: str, warning: str) -> None:
    values, warnings = run(f"[boot]\n{line}\nsystemd = 1\n")
    assert warnings == [f"{warning} in /etc/wsl.conf:2"]
    assert values == {"boot.systemd": True}, "the line is skipped, the rest is read"


def test_invalid_header_keeps_the_previous_section() -> None:
    values, warnings = run("[boot]\n[=b\nsystemd = 1\n")
    assert values == {"boot.systemd": True}
    assert warnings == ["Invalid section name in /etc/wsl.conf:2"]


def test_many_errors_each_warned_once() -> None:
    _, warnings = run("[=b\n[x\nfoo\n[boot]\nsystemd = maybe\n")
    assert warnings == [
        "Invalid section name in /etc/wsl.conf:1",
        "Expected ']' in /etc/wsl.conf:2",
        "Expected '=' in /etc/wsl.conf:3",
        "Invalid boolean value 'maybe' for key 'boot.systemd' in /etc/wsl.conf:5",
    ]


# -- key warnings ------------------------------------------------------------------------------


def test_unknown_key_as_in_wsl() -> None:
    assert run("[foo]\na=b\n") == ({}, ["Unknown key 'foo.a' in /etc/wsl.conf:2"])


def test_key_outside_any_section() -> None:
    assert run("a = b\n") == ({}, ["Unknown key 'a' in /etc/wsl.conf:1"])


def test_unknown_key_keeps_its_spelling() -> None:
    assert run("[Boot]\nSysD = 1\n")[1] == ["Unknown key 'Boot.SysD' in /etc/wsl.conf:2"]


@pytest.mark.parametrize(
    ("line", "warning"),
    [
        ("[boot]\nsystemd = x", "Invalid boolean value 'x' for key 'boot.systemd'"),
        ("[boot]\nsystemd =", "Invalid boolean value '' for key 'boot.systemd'"),
        ("[boot]\nsystemd = yes", "Invalid boolean value 'yes' for key 'boot.systemd'"),
        ("[boot]\ninitTimeout = 10s", "Invalid integer value '10s' for key 'boot.initTimeout'"),
        ("[boot]\ninitTimeout = 08", "Invalid integer value '08' for key 'boot.initTimeout'"),
        ("[wsl2]\nmemory = 4Q", "Invalid memory string '4Q' for key 'wsl2.memory'"),
    ],
)
def test_invalid_value_warnings(line: str, warning: str) -> None:
    values, warnings = run(line + "\n")
    assert values == {}
    assert warnings == [f"{warning} in /etc/wsl.conf:2"]


def test_invalid_enum_lists_the_valid_values() -> None:
    values, warnings = run("[wsl2]\nnetworkingMode = Tunnel\n")
    assert values == {}
    assert warnings == [
        "Invalid value 'Tunnel' for config key 'wsl2.networkingMode' in /etc/wsl.conf:2"
        " (Valid values: None, Nat, Mirrored)"
    ]


def test_duplicate_key_keeps_the_first() -> None:
    values, warnings = run("[boot]\ncommand = first\nCOMMAND = second\n")
    assert values == {"boot.command": "first"}
    assert warnings == [
        "Duplicated config key 'boot.COMMAND' in /etc/wsl.conf:3"
        " (Conflicting key: 'boot.command' in /etc/wsl.conf:2)"
    ]


def test_duplicate_after_an_invalid_first_value_is_still_a_duplicate() -> None:
    # As in WSL: the first occurrence claims the key even if its value was rejected.
    values, warnings = run("[boot]\nsystemd = x\nsystemd = true\n")
    assert values == {}
    assert len(warnings) == 2
    assert warnings[1].startswith("Duplicated config key 'boot.systemd' in /etc/wsl.conf:3")


def test_alias_sets_the_key_and_counts_as_a_duplicate() -> None:
    values, warnings = run("[experimental]\nnetworkingMode = none\n[wsl2]\nnetworkingMode = nat\n")
    assert values == {"wsl2.networkingMode": "None"}
    assert warnings == [
        "Duplicated config key 'wsl2.networkingMode' in /etc/wsl.conf:4"
        " (Conflicting key: 'experimental.networkingMode' in /etc/wsl.conf:2)"
    ]


def test_warnings_carry_file_line_and_message() -> None:
    _, warnings = parse("[x]\ny = 1\n", "/etc/lxss.conf", SCHEMA)
    assert warnings == [ConfigWarning("/etc/lxss.conf", 2, "Unknown key 'x.y'")]


def test_control_characters_in_warnings_are_escaped() -> None:
    _, warnings = run("[boot]\nsystemd = \\n\x1b[31mred\u202e\n")
    assert warnings == [
        "Invalid boolean value '\\n\\x1b[31mred\\u202e' for key 'boot.systemd' in /etc/wsl.conf:2"
    ]


def test_warning_str() -> None:
    assert str(ConfigWarning("f", 3, "Oops")) == "Oops in f:3"
    assert str(ConfigWarning("f", 3, "Oops", "(why)")) == "Oops in f:3 (why)"
    assert str(ConfigWarning("f", None, "Whole file")) == "Whole file"


def test_one_line_escapes_what_a_terminal_would_act_on() -> None:
    assert one_line("plain text, ünïcode") == "plain text, ünïcode"
    assert one_line("a\tb\rc\bd\x00\udc80") == "a\\tb\\rc\\x08d\\x00\\udc80"
    assert one_line("\U000e0001\x1b[2J\u202e") == "\\U000e0001\\x1b[2J\\u202e"


# -- conversions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("1", True),
        ("false", False),
        ("FaLsE", False),
        ("0", False),
        ("", None),
        ("yes", None),
        ("t", None),
        ("01", None),
        (" true", None),
        ("2", None),
    ],
)
def test_parse_bool(text: str, expected: bool | None) -> None:
    assert parse_bool(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("-42", -42),
        ("+7", 7),
        ("0x1F", 31),
        ("0X1f", 31),
        ("-0x10", -16),
        ("0022", 18),
        ("0644", 420),
        ("00", 0),
        (" 12", 12),  # strtol skips leading whitespace
        ("\t\n12", 12),
        ("2147483647", 2**31 - 1),
        ("-2147483648", -(2**31)),
        ("2147483648", None),
        ("-2147483649", None),
        ("0x80000000", None),
        ("", None),
        ("-", None),
        ("+", None),
        ("0x", None),
        ("0xg", None),
        ("08", None),
        ("09", None),
        ("12 ", None),
        ("1e3", None),
        ("1.5", None),
        ("--1", None),
        ("٣", None),  # a non-ASCII digit is not a C digit
    ],
)
def test_parse_int_is_strtol_base_0(text: str, expected: int | None) -> None:
    assert parse_int(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1024", 1024),
        ("512B", 512),
        ("4K", 4096),
        ("4KB", 4096),
        ("3M", 3 << 20),
        ("3MB", 3 << 20),
        ("4G", 4 << 30),
        ("4GB", 4 << 30),
        ("2T", 2 << 40),
        ("2TB", 2 << 40),
        ("4gb", 4 << 30),
        ("4Gb", 4 << 30),
        ("8m", 8 << 20),
        ("18446744073709551615", 2**64 - 1),
        ("18446744073709551616", None),
        ("16777216TB", None),
        ("", None),
        ("GB", None),
        ("4 GB", None),
        ("1.5GB", None),
        ("-1GB", None),
        ("4GiB", None),
        ("4PB", None),
        ("4X", None),
        ("0x10", None),
    ],
)
def test_parse_memory_size(text: str, expected: int | None) -> None:
    assert parse_memory_size(text) == expected


def test_parse_enum() -> None:
    choices = ("None", "Nat", "VirtioProxy")
    assert parse_enum("virtioproxy", choices) == "VirtioProxy"
    assert parse_enum("NONE", choices) == "None"
    assert parse_enum("Na", choices) is None
    assert parse_enum("", choices) is None


# -- schema and typed reads ------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: Key("nosection", ValueType.BOOL),
        lambda: Key("a.b.c", ValueType.BOOL),
        lambda: Key("a.b_c", ValueType.BOOL),
        lambda: Key("1a.b", ValueType.BOOL),
        lambda: Key("a.b", ValueType.BOOL, aliases=("x",)),
        lambda: Key("a.b", ValueType.ENUM),
        lambda: Key("a.b", ValueType.STRING, choices=("x",)),
        lambda: Key("a.b", ValueType.ENUM, "z", choices=("x", "y")),
        lambda: Key("a.b", ValueType.BOOL, 1),
        lambda: Key("a.b", ValueType.INT, True),
        lambda: Key("a.b", ValueType.INT, "1"),
        lambda: Key("a.b", ValueType.STRING, 3),
    ],
)
def test_key_rejects_what_no_file_could_set(make: object) -> None:
    assert callable(make)
    with pytest.raises(ValueError, match="config key"):
        make()


def test_schema_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match="twice"):
        Schema((SYSTEMD, Key("Boot.SystemD", ValueType.BOOL)))
    with pytest.raises(ValueError, match="twice"):
        Schema((MODE, Key("experimental.networkingmode", ValueType.STRING)))


def test_schema_lookup() -> None:
    assert SCHEMA.lookup("EXPERIMENTAL.networkingmode") is MODE
    assert SCHEMA.lookup("boot.nothing") is None
    assert list(SCHEMA) == [SYSTEMD, COMMAND, TIMEOUT, MEMORY, MODE]
    assert len(SCHEMA) == 5


def test_typed_reads_fall_back_to_defaults() -> None:
    values, _ = run("[boot]\ninitTimeout = 0x10\n")
    assert get_bool(values, SYSTEMD) is False
    assert get_int(values, TIMEOUT) == 16
    assert get_optional_int(values, MEMORY) is None
    assert get_optional_str(values, COMMAND) is None
    assert get_str(values, MODE) == "Nat"


@pytest.mark.parametrize(
    ("getter", "key", "value"),
    [
        (get_bool, SYSTEMD, 1),
        (get_int, TIMEOUT, True),
        (get_int, TIMEOUT, "1"),
        (get_int, MEMORY, None),
        (get_optional_int, MEMORY, "x"),
        (get_str, MODE, 3),
        (get_str, COMMAND, None),
        (get_optional_str, COMMAND, False),
    ],
)
def test_typed_reads_reject_the_wrong_type(getter: object, key: Key, value: object) -> None:
    assert callable(getter)
    values = {} if value is None else {key.name: value}
    with pytest.raises(TypeError, match=key.name):
        getter(values, key)


# -- reading files -----------------------------------------------------------------------------


def test_read_missing_file_is_silent(tmp_path: Path) -> None:
    assert read_config_text(str(tmp_path / "absent")) == (None, [])


def test_read_regular_file_keeps_bytes_and_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "wsl.conf"
    path.write_bytes(b"[boot]\r\ncommand = caf\xe9\r\n")
    text, warnings = read_config_text(str(path))
    assert warnings == []
    assert text == "[boot]\r\ncommand = caf\udce9\r\n"
    assert text is not None
    values, _ = parse(text, str(path), SCHEMA)
    assert os.fsencode(str(values["boot.command"])) == b"caf\xe9"


def test_read_directory_warns(tmp_path: Path) -> None:
    text, warnings = read_config_text(str(tmp_path))
    assert text is None
    assert [str(w) for w in warnings] == [f"Failed to open config file {tmp_path}, Is a directory"]
    assert warnings[0].file == str(tmp_path)
    assert warnings[0].line is None


def test_read_fifo_warns_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    assert read_config_text(str(path)) == (
        None,
        [ConfigWarning(str(path), None, f"Failed to open config file {path}, Not a regular file")],
    )


def test_read_device_warns() -> None:
    text, warnings = read_config_text("/dev/zero")
    assert text is None
    assert str(warnings[0]) == "Failed to open config file /dev/zero, Not a regular file"


def test_read_huge_file_warns(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_text("#" * (MAX_CONFIG_BYTES + 1))
    text, warnings = read_config_text(str(path))
    assert text is None
    assert "larger than" in str(warnings[0])


def test_read_file_of_exactly_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_text("#" * MAX_CONFIG_BYTES)
    text, warnings = read_config_text(str(path))
    assert warnings == []
    assert text is not None and len(text) == MAX_CONFIG_BYTES


def _as_nobody(path: str) -> tuple[str | None, list[str]]:
    """read_config_text(path) in a child that gave up root: root reads files whatever
    their mode, so the test runs where the permission check can say no."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            text, warnings = read_config_text(path)
            os.write(write_end, repr((text, [str(w) for w in warnings])).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    result: tuple[str | None, list[str]] = ast.literal_eval(data.decode())
    return result


def test_read_unreadable_file_warns(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("[boot]\n")
    path.chmod(0)
    if os.geteuid() == 0:
        text, warnings = _as_nobody(str(path))
    else:
        text, raw = read_config_text(str(path))
        warnings = [str(w) for w in raw]
    assert text is None
    assert warnings == [f"Failed to open config file {path}, Permission denied"]


# -- properties ------------------------------------------------------------------------------

_CONFIG_ALPHABET = string.ascii_letters + string.digits + " \t\r\n[]=#\"\\._-'" + "\x00\x1bé\ufeff"


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet=_CONFIG_ALPHABET)))
def test_parse_never_raises(text: str) -> None:
    values, warnings = parse(text, FILE, SCHEMA)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1
    for warning in warnings:
        assert warning.file == FILE
        assert warning.line is not None and 1 <= warning.line <= lines
        assert str(warning)
    for name, value in values.items():
        key = SCHEMA.lookup(name)
        assert key is not None and key.name == name
        expected = {
            ValueType.BOOL: bool,
            ValueType.INT: int,
            ValueType.MEMORY: int,
            ValueType.STRING: str,
            ValueType.ENUM: str,
        }[key.type]
        assert type(value) is expected


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40))
def test_quoted_string_round_trips(value: str) -> None:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    escaped = escaped.replace("\r", "")
    values, warnings = run(f'[boot]\ncommand = "{escaped}"\n')
    assert warnings == []
    assert values["boot.command"] == value.replace("\r", "")
