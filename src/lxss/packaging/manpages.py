"""Man pages lxss(1), lxssd(8), lxss.conf(5) and wsl.conf(5), generated at build time.

The options come from the commands' own help text (`lxss --help`, `lxssd --help`), the keys
from the config schemas and their documentation tables: what the manual says is what the
programs say and read. The help text's layout is what this reads: a section title ends in
`:`, an entry starts two blanks in with its term (a long one goes on, further in, on the
next line), and its description starts at the description column (on the term's line, or on
the lines below it when the term is long).
"""

from __future__ import annotations

import datetime
import os
import re

from lxss import __version__
from lxss.config.syntax import Key, ValueType

_DESCRIPTION_COLUMN = 34  # where the help text's descriptions start
_SPACES = re.compile(r"\s{2,}")


def help_sections(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """The help text as (section title, [(term, description)]); lines before the first
    section (the usage line) are left out. Raises ValueError for a line this cannot place,
    so a help text in another layout fails the build instead of making a wrong manual."""
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            if line.endswith(":"):
                sections.append((line[:-1], []))
            continue
        if not sections:
            raise ValueError(f"help text: an entry before any section: {line!r}")
        entries = sections[-1][1]
        indent = len(line) - len(line.lstrip())
        if indent >= _DESCRIPTION_COLUMN - 2 and entries:
            term, description = entries[-1]
            entries[-1] = (term, f"{description} {line.strip()}".strip())
            continue
        if indent > 2 and entries and not entries[-1][1]:  # a long term, wrapped
            entries[-1] = (f"{entries[-1][0]} {line.strip()}", "")
            continue
        if indent != 2:
            raise ValueError(f"help text: cannot place {line!r}")
        parts = _SPACES.split(line.strip(), maxsplit=1)
        entries.append((parts[0], parts[1] if len(parts) > 1 else ""))
    return sections


def escape(text: str) -> str:
    """Text for roff: backslashes doubled, dashes made minus signs (man's options are typed
    with the ASCII hyphen), a leading dot or quote kept from reading as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def _header(name: str, section: int, summary: str) -> list[str]:
    # SOURCE_DATE_EPOCH: a reproducible build dates the page by its source, not the clock.
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
    when = datetime.datetime.fromtimestamp(epoch, datetime.UTC) if epoch else None
    date = (when or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%d")
    return [
        f'.TH {escape(name.upper())} {section} "{date}" "lxss {__version__}" "lxss"',
        ".SH NAME",
        f"{escape(name)} \\- {escape(summary)}",
    ]


def _paragraphs(title: str, text: str) -> list[str]:
    lines = [f".SH {title}"]
    for paragraph in text.strip().split("\n\n"):
        lines += [".PP", escape(" ".join(paragraph.split()))]
    return lines


def _entries(sections: list[tuple[str, list[tuple[str, str]]]]) -> list[str]:
    lines = [".SH OPTIONS"]
    for title, entries in sections:
        lines += [f".SS {escape(title)}"]
        for term, description in entries:
            lines += [".TP", f"\\fB{escape(term)}\\fR", escape(description or "")]
    return lines


def command_page(
    name: str, section: int, summary: str, usage: str, description: str, tail: str
) -> str:
    """A command's page: its synopsis (the help's first line), a description, the help
    text's options, then *tail* (more sections: `TITLE` lines, paragraphs below each)."""
    synopsis = usage.splitlines()[0].removeprefix("Usage: ").removeprefix(f"{name} ")
    lines = _header(name, section, summary)
    lines += [".SH SYNOPSIS", f"\\fB{escape(name)}\\fR {escape(synopsis)}"]
    lines += _paragraphs("DESCRIPTION", description)
    lines += _entries(help_sections(usage))
    for block in tail.strip().split("\n\n\n"):
        title, _, body = block.strip().partition("\n")
        lines += _paragraphs(title.strip(), body)
    return "\n".join(lines) + "\n"


def describe_value(key: Key) -> str:
    """What a key takes and its default, as the page shows them: ``bool, default: true``."""
    kind = {
        ValueType.BOOL: "true or false",
        ValueType.INT: "a number",
        ValueType.STRING: "text",
        ValueType.ENUM: " | ".join(key.choices),
        ValueType.MEMORY: "a size (bytes, or with K, M, G, T)",
    }[key.type]
    if key.default is None or key.default == "":
        return f"{kind}; not set by default"
    default = str(key.default).lower() if key.type is ValueType.BOOL else str(key.default)
    if key.name == "filesystem.umask" and isinstance(key.default, int):
        default = f"{key.default:03o}"
    return f"{kind}; default {default}"


def config_page(
    name: str,
    summary: str,
    description: str,
    keys: list[Key],
    docs: dict[Key, str],
    not_acted_on: frozenset[Key],
    tail: str,
) -> str:
    """A config file's page: its keys by section, each with its value, default and meaning.
    Raises ValueError for a key without documentation (one that a file may set must be in
    its manual)."""
    lines = _header(name, 5, summary)
    lines += _paragraphs("DESCRIPTION", description)
    section = ""
    for key in by_section(keys):
        if key not in docs:
            raise ValueError(f"{key.name} has no documentation in the table beside its schema")
        key_section, _, key_name = key.name.partition(".")
        if key_section != section:
            section = key_section
            lines += [f".SH [{escape(section)}]"]
        lines += [".TP", f"\\fB{escape(key_name)}\\fR = {escape(describe_value(key))}"]
        text = docs[key]
        if key in not_acted_on:
            text += " lxss reads this key but does not act on it yet."
        if key.aliases:
            text += f" Also spelled {', '.join(key.aliases)}."
        lines += [escape(text)]
    for block in tail.strip().split("\n\n\n"):
        title, _, body = block.strip().partition("\n")
        lines += _paragraphs(title.strip(), body)
    return "\n".join(lines) + "\n"


def commented_config(keys: list[Key], docs: dict[Key, str], header: str) -> str:
    """A config file that sets nothing: every key, commented out at its default, with its
    meaning above it (the package's /etc/lxss.conf)."""
    out = [f"# {line}".rstrip() for line in header.strip().splitlines()]
    section = ""
    for key in by_section(keys):
        key_section, _, key_name = key.name.partition(".")
        if key_section != section:
            section = key_section
            out += ["", f"[{section}]"]
        out += [""]
        out += [f"# {line}" for line in _wrap(f"{docs[key]} ({describe_value(key)})", 76)]
        default = "" if key.default is None else key.default
        if isinstance(default, bool):
            default = str(default).lower()
        out += [f"#{key_name} = {default}".rstrip()]
    return "\n".join(out) + "\n"


def by_section(keys: list[Key]) -> list[Key]:
    """The keys grouped by section, sections in the order they first appear (a file has
    each section once), keys in schema order within one."""
    order: dict[str, int] = {}
    for key in keys:
        order.setdefault(key.name.partition(".")[0], len(order))
    return sorted(keys, key=lambda key: order[key.name.partition(".")[0]])


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines
