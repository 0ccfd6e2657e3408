"""The host's apt sources: which Debian or Ubuntu mirror the machine is configured to use.

`lxss --install debian` builds its root file system from the mirror the machine itself
installs packages from, so it needs no network access the machine does not already have.
Both of apt's formats are read: deb822 `.sources` files (`Types:`, `URIs:`, `Suites:`) and
one-line `sources.list` entries (`deb [options] URI SUITE COMPONENT...`). Pure: the caller
reads the files (`read_apt_sources`) and this module only parses them.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Final

SOURCES_LIST: Final = "/etc/apt/sources.list"
SOURCES_PARTS: Final = "/etc/apt/sources.list.d"

# Release code names, so a mirror is told apart by what it serves rather than by its host name
# (a local mirror can be called anything). Suites such as "stable" count too.
DEBIAN_SUITES: Final = frozenset((
    "buzz", "rex", "bo", "hamm", "slink", "potato", "woody", "sarge", "etch", "lenny", "squeeze",
    "wheezy", "jessie", "stretch", "buster", "bullseye", "bookworm", "trixie", "forky", "duke",
    "sid", "stable", "testing", "unstable", "oldstable", "oldoldstable", "experimental",
))  # fmt: skip
UBUNTU_SUITES: Final = frozenset((
    "trusty", "xenial", "bionic", "focal", "jammy", "kinetic", "lunar", "mantic", "noble",
    "oracular", "plucky", "questing", "resolute",
))  # fmt: skip
FAMILIES: Final = {"debian": DEBIAN_SUITES, "ubuntu": UBUNTU_SUITES}


@dataclass(frozen=True)
class AptSource:
    """One `deb` entry: a mirror URI and the suites it is used for."""

    uri: str
    suites: tuple[str, ...]
    origin: str  # the file it came from, for messages


def parse_deb822(text: str, origin: str) -> list[AptSource]:
    """The `Types: deb` stanzas of a deb822 `.sources` file (`Enabled: no` ones skipped)."""
    sources = []
    for stanza in _stanzas(text):
        types = stanza.get("types", "").split()
        if "deb" not in types or stanza.get("enabled", "yes").lower() == "no":
            continue
        suites = tuple(stanza.get("suites", "").split())
        for uri in stanza.get("uris", "").split():
            sources.append(AptSource(uri.rstrip("/"), suites, origin))
    return sources


def _stanzas(text: str) -> list[dict[str, str]]:
    """deb822 paragraphs as lower-cased field -> value (continuation lines joined)."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    field = ""
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, field = {}, ""
            continue
        if raw[0] in " \t" and field:
            current[field] += " " + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if sep:
            field = name.strip().lower()
            current[field] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def parse_one_line(text: str, origin: str) -> list[AptSource]:
    """The `deb` lines of a legacy sources.list (`deb-src` and comments skipped)."""
    sources = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            sources.append(AptSource(words[0].rstrip("/"), (words[1],), origin))
    return sources


def read_apt_sources(
    sources_list: str = SOURCES_LIST, parts: str = SOURCES_PARTS
) -> list[AptSource]:
    """Every `deb` source the machine's apt is configured with, in apt's reading order."""
    found: list[AptSource] = []
    for path in [sources_list, *sorted(glob.glob(os.path.join(parts, "*.list")))]:
        text = _read(path)
        if text is not None:
            found += parse_one_line(text, path)
    for path in sorted(glob.glob(os.path.join(parts, "*.sources"))):
        text = _read(path)
        if text is not None:
            found += parse_deb822(text, path)
    return found


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def family_of(suite: str) -> str | None:
    """ "debian" or "ubuntu" for a release suite ("bookworm", "noble-updates" -> its base)."""
    base = suite.split("/", 1)[0].split("-", 1)[0]
    for family, names in FAMILIES.items():
        if base in names:
            return family
    return None


def find_mirror(sources: list[AptSource], family: str) -> str | None:
    """The first mirror serving a main release of *family* (not -security, -updates...)."""
    for source in sources:
        for suite in source.suites:
            if "-" not in suite and "/" not in suite and family_of(suite) == family:
                return source.uri
    return None
