"""os-release(5): what a distribution says it is (ID, VERSION_ID, ...).

One parser for every reader: the archive worker (after an import) and a distribution's
init (at each start). The same "environment-like shell-compatible variable assignments"
also make up locale.conf(5) and /etc/default/locale, which init reads with it too.

Pure: it parses text. Reading the file is the caller's business (with
lxss.linux.files.read_regular_file: a distribution's files are untrusted). Imported by
the guest after pivot_root, so it imports nothing.
"""

from __future__ import annotations

_DOUBLE_QUOTE_ESCAPES = '"\\`$'  # what a backslash escapes inside double quotes, as in sh


def parse_os_release(text: str) -> dict[str, str]:
    """The assignments in *text*, as os-release(5) (and systemd's reader) define them.

    One ``KEY=value`` per line; blank lines and lines starting with ``#`` (or ``;``) are
    skipped, as are lines without ``=`` or whose key is not a shell variable name. Spaces
    around the key and the ``=`` are tolerated, as systemd does. The value follows shell
    quoting: ``"..."`` (where a backslash escapes only ``"``, ``\\``, `````` and ``$``),
    ``'...'`` (taken literally), and backslash escapes outside quotes; quoted and unquoted
    parts may adjoin. An unterminated quote runs to the end of the line. A key given twice
    keeps its last value. Never raises.
    """
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _is_name(key):
            continue
        values[key] = _unquote(value.strip())
    return values


def _is_name(key: str) -> bool:
    return (
        bool(key)
        and not key[0].isdigit()
        and all(c.isascii() and (c.isalnum() or c == "_") for c in key)
    )


def _unquote(value: str) -> str:
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(value):
        char = value[i]
        i += 1
        if quote == "'":
            if char == "'":
                quote = ""
            else:
                out.append(char)
        elif char == "\\" and i < len(value):
            escaped = value[i]
            i += 1
            if quote == '"' and escaped not in _DOUBLE_QUOTE_ESCAPES:
                out.append(char)  # "\n" inside double quotes stays a backslash and an n
            out.append(escaped)
        elif char == quote:
            quote = ""
        elif not quote and char in "'\"":
            quote = char
        else:
            out.append(char)
    return "".join(out)
