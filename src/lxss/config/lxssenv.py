"""LXSSENV: which variables cross between the host and a distribution, and how (WSLENV's
role; WSL: UtilParseWslEnv in src/linux/init/util.cpp, documentation: filesystems.md).

LXSSENV is a colon-separated list of NAME or NAME/FLAGS. Flags:

- ``p``: the value is a path, translated (a host path gets the host mount's prefix in the
  distribution, and loses it on the way back);
- ``l``: the value is a colon-separated list of paths, each translated;
- ``u``: only from the host into the distribution (`lxss`);
- ``w``: only from the distribution to the host (`lxss-host-exec`).

An entry with an unknown flag is skipped, as WSL skips it. LXSSENV itself always crosses.
Pure: the client, the guest and lxss-host all read it the same way.
"""

from __future__ import annotations

import posixpath

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    Direction = Literal["to_distribution", "to_host"]

NAME = "LXSSENV"


class Entry:
    """One entry of LXSSENV. A plain class: lxss-host's serving process imports this on
    every call, and dataclasses would cost it more than the rest of its imports."""

    __slots__ = ("name", "path", "path_list", "to_distribution", "to_host")

    def __init__(self, name: str, path: bool = False, path_list: bool = False,
                 to_distribution: bool = True, to_host: bool = True) -> None:  # fmt: skip
        self.name = name
        self.path = path
        self.path_list = path_list
        self.to_distribution = to_distribution
        self.to_host = to_host

    def crosses(self, direction: Direction) -> bool:
        return self.to_distribution if direction == "to_distribution" else self.to_host


def parse(value: str) -> list[Entry]:
    entries = []
    for item in value.split(":"):
        name, _, flags = item.partition("/")
        if not name or "=" in name or any(f not in "plwu" for f in flags):
            continue
        only_host = "w" in flags and "u" not in flags
        only_distribution = "u" in flags and "w" not in flags
        entries.append(
            Entry(
                name=name,
                path="p" in flags,
                path_list="l" in flags,
                to_distribution=not only_host,
                to_host=not only_distribution,
            )
        )
    return entries


def to_distribution_path(path: str, host_mount: str | None) -> str:
    """A host path as the distribution sees it (unchanged when there is no host mount, or it
    is relative)."""
    if host_mount is None or not path.startswith("/"):
        return path
    normal = posixpath.normpath(path).lstrip("/")
    return posixpath.join(host_mount.rstrip("/") or "/", normal) if normal else host_mount


def to_host_path(path: str, host_mount: str | None) -> str | None:
    """A distribution path as the host sees it; None when it is not under the host mount
    (it has no host path)."""
    if host_mount is None or not path.startswith("/"):
        return None
    mount = host_mount.rstrip("/")
    normal = posixpath.normpath(path)
    if normal == mount:
        return "/"
    if normal.startswith(mount + "/"):
        return normal[len(mount) :]
    return None


def _translate_one(value: str, direction: Direction, host_mount: str | None) -> str:
    if direction == "to_distribution":
        return to_distribution_path(value, host_mount)
    translated = to_host_path(value, host_mount)
    return value if translated is None else translated


def translate(
    environ: dict[str, str], direction: Direction, host_mount: str | None
) -> dict[str, str]:
    """The variables of *environ* that LXSSENV sends in *direction*, translated, with LXSSENV
    itself."""
    value = environ.get(NAME)
    if value is None:
        return {}
    result = {NAME: value}
    for entry in parse(value):
        if entry.name not in environ or not entry.crosses(direction):
            continue
        text = environ[entry.name]
        if entry.path_list:
            text = ":".join(_translate_one(v, direction, host_mount) if v else v
                            for v in text.split(":"))  # fmt: skip
        elif entry.path and text:
            text = _translate_one(text, direction, host_mount)
        result[entry.name] = text
    return result
