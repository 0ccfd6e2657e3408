r"""WSL's configuration file syntax: the parser behind /etc/wsl.conf, .wslconfig and lxss.conf.

WSL counterpart: `src/shared/configfile/configfile.cpp` ("gitconfig-style"). The grammar:

    # a comment                        whole-line comment
    [section]                          a letter, then letters and digits; a comment may follow
    key = value   # comment            a letter, then letters and digits; looked up as `section.key`
    key = "  quoted # kept  "          quotes keep spaces and `#`; they are not part of the value
    key = a \\ b \" c \n \t \b         escapes; a backslash at the end of a line continues the value

Keys match case-insensitively. Leading and trailing spaces and tabs of a value are dropped unless
quoted. CRLF line ends and a leading UTF-8 byte-order mark are accepted.

Parsing never fails: a line WSL would reject becomes a `ConfigWarning` (file, line, text worded as
WSL words it) and is skipped. WSL's /etc/wsl.conf parser stops at the first bad line; lxss skips it
and carries on, as WSL's .wslconfig parser does, so one typo never resets a whole distribution's
settings.

A file is described by a `Schema`, a table of `Key`s. `parse` returns only the keys the file set
(under their schema names), so layered files merge with a plain dict update; the `get_*`
functions read a value back with its type checked, falling back to the key's default.

This module runs in a distribution's init after pivot_root, where no import can be resolved any
more: everything it needs is imported at the top.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from lxss.linux.files import load_regular_file
from lxss.text import one_line

Value = bool | int | str
"""A parsed value: bool for BOOL, int for INT and MEMORY, str for STRING and ENUM."""

MAX_CONFIG_BYTES: Final = 1 << 20
"""`read_config_text` refuses larger files: a config file is a few hundred bytes, and a
distribution's file is untrusted input."""

_HSPACE: Final = " \t"
_KEY_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9]*\.[A-Za-z][A-Za-z0-9]*")
_INT32_MIN: Final = -(1 << 31)
_INT32_MAX: Final = (1 << 31) - 1
_UINT64_MAX: Final = (1 << 64) - 1
# strtol(..., 0): optional C whitespace, a sign, then 0x-hex, 0-octal or decimal, and nothing after.
_C_INTEGER: Final = re.compile(
    r"[ \t\n\v\f\r]*([+-]?)(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))"
)
_MEMORY: Final = re.compile(r"([0-9]+)([A-Za-z]{0,2})")
_MEMORY_UNITS: Final = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
}


class ValueType(enum.Enum):
    """How a key's text becomes a value."""

    BOOL = "bool"  # true/false/1/0, any case
    INT = "int"  # C strtol(text, 0) that fits in 32 bits: 0x hex, leading-0 octal, sign
    STRING = "string"  # the text as is
    ENUM = "enum"  # one of Key.choices, any case; the value is the choice as the schema spells it
    MEMORY = "memory"  # bytes: digits, then B, K, KB, M, MB, G, GB, T or TB (powers of 1024)


@dataclass(frozen=True)
class ConfigWarning:
    """One problem found in a config file. The file's values are still used, minus that line.

    `str()` reads like WSL's message: `Unknown key 'foo.a' in /etc/wsl.conf:2`. `line` is None for
    warnings about a whole file or a computed setting; `note` is a parenthetical that WSL puts after
    the location (the valid values of an enum, the first of two duplicate keys).
    """

    file: str
    line: int | None
    message: str
    note: str = ""

    def __str__(self) -> str:
        text = self.message if self.line is None else f"{self.message} in {self.file}:{self.line}"
        return f"{text} {self.note}" if self.note else text


@dataclass(frozen=True)
class Key:
    """One key of a schema: its documented `section.key` spelling, type and default.

    `default` is what the `get_*` functions return when a file does not set the key; None means
    "not set" and is for the consumer to interpret (for instance "use half the host's memory").
    `choices` are an ENUM's values as documented. `aliases` are other names for the same key
    (WSL's `experimental.*` spellings); a file setting both is a duplicate.

    Raises ValueError for a key no file could ever set, so a bad table fails at import.
    """

    name: str
    type: ValueType
    default: Value | None = None
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (self.name, *self.aliases):
            if not _KEY_NAME.fullmatch(name):
                raise ValueError(f"config key {name!r} is not `section.key` of letters and digits")
        if (self.type is ValueType.ENUM) != bool(self.choices):
            raise ValueError(f"config key {self.name!r}: choices go with ENUM and ENUM only")
        if self.default is not None and not _same(convert(self, str(self.default)), self.default):
            raise ValueError(f"config key {self.name!r}: default {self.default!r} is not a value")


def _same(a: Value | None, b: Value) -> bool:
    return type(a) is type(b) and a == b


class Schema:
    """The keys one kind of config file knows, looked up case-insensitively by name or alias."""

    def __init__(self, keys: Iterable[Key]) -> None:
        """Raises ValueError if two keys share a name or alias (ignoring case)."""
        self._keys = tuple(keys)
        self._index: dict[str, Key] = {}
        for key in self._keys:
            for name in (key.name, *key.aliases):
                if name.lower() in self._index:
                    raise ValueError(f"config key {name!r} appears twice in the schema")
                self._index[name.lower()] = key

    def lookup(self, name: str) -> Key | None:
        """The key spelled `name` in any case, or None."""
        return self._index.get(name.lower())

    def __iter__(self) -> Iterator[Key]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


# ---------------------------------------------------------------------------------------------
# Value conversions. Each returns None for text WSL would reject.


def parse_bool(text: str) -> bool | None:
    """`true`/`1` or `false`/`0`, case-insensitive; anything else (even with spaces) is None."""
    lowered = text.lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false"):
        return False
    return None


def parse_int(text: str) -> int | None:
    """C `strtol(text, &end, 0)` requiring `*end == 0` and a result that fits a 32-bit int.

    Accepts leading C whitespace, a sign, `0x` hex and leading-zero octal (`0644`, so `08` is
    rejected); rejects empty text and anything after the digits, trailing spaces included.
    """
    match = _C_INTEGER.fullmatch(text)
    if match is None:
        return None
    sign, hex_digits, octal_digits, decimal_digits = match.groups()
    if hex_digits is not None:
        number = int(hex_digits, 16)
    elif octal_digits is not None:
        number = int(octal_digits, 8)
    else:
        number = int(decimal_digits, 10)
    if sign == "-":
        number = -number
    return number if _INT32_MIN <= number <= _INT32_MAX else None


def parse_memory_size(text: str) -> int | None:
    """Bytes from decimal digits plus an optional unit B, K, KB, M, MB, G, GB, T or TB in any case.

    Units are binary (K = 1024). No sign, spaces or fractions; more than 2**64-1 bytes is None.
    WSL matches the unit case-sensitively; lxss also takes `4gb` because nothing else could be
    meant.
    """
    match = _MEMORY.fullmatch(text)
    if match is None:
        return None
    digits, unit = match.groups()
    factor = _MEMORY_UNITS.get(unit.lower())
    if factor is None:
        return None
    size = int(digits) * factor
    return size if size <= _UINT64_MAX else None


def parse_enum(text: str, choices: Iterable[str]) -> str | None:
    """The choice equal to `text` ignoring case, spelled as in `choices`; None if none is."""
    lowered = text.lower()
    return next((choice for choice in choices if choice.lower() == lowered), None)


def convert(key: Key, text: str) -> Value | None:
    """`text` as a value of `key`'s type, or None if WSL would reject it."""
    if key.type is ValueType.BOOL:
        return parse_bool(text)
    if key.type is ValueType.INT:
        return parse_int(text)
    if key.type is ValueType.MEMORY:
        return parse_memory_size(text)
    if key.type is ValueType.ENUM:
        return parse_enum(text, key.choices)
    return text


def _invalid_value_warning(key: Key, spelled: str, text: str) -> tuple[str, str]:
    """The message and note WSL gives for `text` rejected as a value of `key` (spelled so)."""
    shown = one_line(text)
    if key.type is ValueType.BOOL:
        return f"Invalid boolean value '{shown}' for key '{spelled}'", ""
    if key.type is ValueType.INT:
        return f"Invalid integer value '{shown}' for key '{spelled}'", ""
    if key.type is ValueType.MEMORY:
        return f"Invalid memory string '{shown}' for key '{spelled}'", ""
    return (
        f"Invalid value '{shown}' for config key '{spelled}'",
        f"(Valid values: {', '.join(key.choices)})",
    )


# ---------------------------------------------------------------------------------------------
# Typed reads of parsed values. A type mismatch is a programming error (the wrong getter for a
# key, or a values dict not made by `parse` for this schema), so it raises TypeError.


def get_bool(values: Mapping[str, Value], key: Key) -> bool:
    """The BOOL `key`'s value in `values`, else its default; TypeError if that is not a bool."""
    value = values.get(key.name, key.default)
    if not isinstance(value, bool):
        raise TypeError(f"config key {key.name!r} holds {value!r}, not a bool")
    return value


def get_int(values: Mapping[str, Value], key: Key) -> int:
    """The INT or MEMORY `key`'s value, else its default; TypeError if that is not an int."""
    value = get_optional_int(values, key)
    if value is None:
        raise TypeError(f"config key {key.name!r} has no value and no default")
    return value


def get_optional_int(values: Mapping[str, Value], key: Key) -> int | None:
    """The INT or MEMORY `key`'s value, else its default, which may be None (not set)."""
    value = values.get(key.name, key.default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"config key {key.name!r} holds {value!r}, not an int")
    return value


def get_str(values: Mapping[str, Value], key: Key) -> str:
    """The STRING or ENUM `key`'s value, else its default; TypeError if that is not a str."""
    value = get_optional_str(values, key)
    if value is None:
        raise TypeError(f"config key {key.name!r} has no value and no default")
    return value


def get_optional_str(values: Mapping[str, Value], key: Key) -> str | None:
    """The STRING or ENUM `key`'s value, else its default, which may be None (not set)."""
    value = values.get(key.name, key.default)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"config key {key.name!r} holds {value!r}, not a str")
    return value


# ---------------------------------------------------------------------------------------------
# The parser.


def parse(text: str, filename: str, schema: Schema) -> tuple[dict[str, Value], list[ConfigWarning]]:
    """Parse `text`, the contents of `filename`, against `schema`. Never raises.

    Returns the values the file set, keyed by their `Key.name` (aliases included), and the
    warnings in file order. A key set twice keeps its first occurrence, even when that one's value
    was invalid (the second is reported as a duplicate, as in WSL). Warnings about a key carry the
    line the key starts on; syntax warnings the line where the error is.
    """
    parser = _Parser(text, filename, schema)
    parser.run()
    return parser.values, parser.warnings


class _Parser:
    """One pass over a file, character by character, since values may continue over lines."""

    def __init__(self, text: str, filename: str, schema: Schema) -> None:
        # Any line end becomes "\n" first, so a CRLF file counts lines like an LF one.
        self.text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
        self.pos = 0
        self.line = 1
        self.filename = filename
        self.schema = schema
        self.section = ""
        self.values: dict[str, Value] = {}
        self.warnings: list[ConfigWarning] = []
        self.first_seen: dict[str, tuple[str, int]] = {}  # Key.name -> (spelling, line)

    def run(self) -> None:
        while self._skip_hspace():
            char = self.text[self.pos]
            if char == "\n":
                self._next_line()
            elif char == "#":
                self._skip_line()
            elif char == "[":
                self._section()
            elif _is_alpha(char):
                self._key_value()
            else:
                self._reject("Invalid key name")

    def _section(self) -> None:
        self.pos += 1  # "["
        if not _is_alpha(self._peek()):
            self._reject("Invalid section name")
            return
        name = self._name()
        if self._peek() != "]":
            self._reject("Expected ']'")
            return
        self.pos += 1
        self._skip_hspace()
        if self._peek() not in ("", "\n", "#"):
            self._reject("Expected ' ' or '\\n'")
            return
        # An invalid header above leaves the previous section current, as in WSL.
        self.section = name
        self._skip_line()

    def _key_value(self) -> None:
        line = self.line
        name = self._name()
        spelled = f"{self.section}.{name}" if self.section else name
        self._skip_hspace()
        if self._peek() != "=":
            self._reject("Expected '='")
            return
        self.pos += 1
        self._skip_hspace()
        value = self._value()
        if value is not None:
            self._store(spelled, value, line)

    def _value(self) -> str | None:
        """The value up to the end of line or a comment; None (warned, line skipped) if bad."""
        chars: list[str] = []
        kept = 0  # length of `chars` without unquoted trailing spaces
        quoted = False
        while (char := self._peek()) not in ("", "\n"):
            self.pos += 1
            if char == "#" and not quoted:
                break
            if char == '"':
                quoted = not quoted
            elif char == "\\":
                escaped = self._escape()
                if escaped is None:
                    return None
                chars.append(escaped)
            else:
                chars.append(char)
            if char not in _HSPACE:
                kept = len(chars)
        if quoted:
            self._reject('Expected "')
            return None
        self._skip_line()
        return "".join(chars[:kept])

    def _escape(self) -> str | None:
        """The text a backslash stands for ("" for a continuation); None if invalid (warned)."""
        char = self._peek()
        if char == "":
            return ""  # a backslash ending the file: a continuation into nothing
        self.pos += 1
        if char == "\n":
            self.line += 1  # a continuation: the value goes on on the next line
            return ""
        if char in ('"', "\\"):
            return char
        if char in "bnt":
            return {"b": "\b", "n": "\n", "t": "\t"}[char]
        self._reject(f"Invalid escaped character: '{one_line(char)}'")
        return None

    def _store(self, spelled: str, text: str, line: int) -> None:
        key = self.schema.lookup(spelled)
        if key is None:
            self._warn(line, f"Unknown key '{spelled}'")
            return
        first = self.first_seen.get(key.name)
        if first is not None:
            conflict = f"(Conflicting key: '{first[0]}' in {self.filename}:{first[1]})"
            self._warn(line, f"Duplicated config key '{spelled}'", conflict)
            return
        self.first_seen[key.name] = (spelled, line)
        value = convert(key, text)
        if value is None:
            self._warn(line, *_invalid_value_warning(key, spelled, text))
        else:
            self.values[key.name] = value

    # -- cursor helpers --------------------------------------------------------------------

    def _peek(self) -> str:
        """The next character, or "" at the end of the text."""
        return self.text[self.pos : self.pos + 1]

    def _skip_hspace(self) -> bool:
        """Skip spaces and tabs; True if any text is left."""
        while self._peek() in (" ", "\t"):
            self.pos += 1
        return self.pos < len(self.text)

    def _name(self) -> str:
        start = self.pos
        while _is_alnum(self._peek()):
            self.pos += 1
        return self.text[start : self.pos]

    def _next_line(self) -> None:
        self.pos += 1
        self.line += 1

    def _skip_line(self) -> None:
        """Move past the rest of the line and its newline."""
        end = self.text.find("\n", self.pos)
        if end < 0:
            self.pos = len(self.text)
        else:
            self.pos = end
            self._next_line()

    def _reject(self, message: str) -> None:
        """Warn about the current line and skip the rest of it."""
        self._warn(self.line, message)
        self._skip_line()

    def _warn(self, line: int, message: str, note: str = "") -> None:
        self.warnings.append(ConfigWarning(self.filename, line, message, note))


def _is_alpha(char: str) -> bool:
    # ASCII only: the C parser tests with isalpha() in the C locale.
    return char.isascii() and char.isalpha()


def _is_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


# ---------------------------------------------------------------------------------------------
# Reading a file.


def read_config_text(path: str) -> tuple[str | None, list[ConfigWarning]]:
    """The text of the config file at `path`: None and no warning if it does not exist.

    Anything else that stops it being read (permissions, a directory, a FIFO or device, more than
    MAX_CONFIG_BYTES bytes) is None plus one warning naming the file, so the caller falls back to
    defaults. Bytes that are not UTF-8 are kept as surrogate escapes, and line ends as they are.
    The path is opened as given, following symlinks: read a file of a distribution only from
    inside it.
    """
    try:
        text = load_regular_file(path, MAX_CONFIG_BYTES, errors="surrogateescape")
    except FileNotFoundError:
        return None, []
    except OSError as error:
        reason = error.strerror or str(error)
        return None, [ConfigWarning(path, None, f"Failed to open config file {path}, {reason}")]
    return text, []
