"""Users and groups of a distribution, read from its /etc/passwd and /etc/group.

The guest runs the host's Python inside the distribution, so it must not let
libc's NSS load the *distribution's* shared libraries (another glibc, perhaps
another libc altogether): the files are parsed here instead, as init needs
nothing more than the files database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from lxss.linux.files import read_regular_file

# Larger /etc/passwd or /etc/group files are ignored (root's fallback applies): 16 MiB is
# some 200,000 users, far beyond any distribution's own.
MAX_DATABASE_BYTES: Final = 1 << 24

# WSL's fallback when /etc/passwd is missing or has no root.
ROOT_FALLBACK = ("root", 0, 0, "/", "/bin/sh")


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class Group:
    name: str
    gid: int
    members: tuple[str, ...]


def _read(path: str) -> str:
    """The file's text, or "" if it is missing, unreadable, not a regular file (a FIFO
    there must not hang init or a session leader) or over MAX_DATABASE_BYTES."""
    # Names are bytes to Linux: kept as surrogate escapes, as the launch request carries them.
    text = read_regular_file(path, MAX_DATABASE_BYTES, errors="surrogateescape")
    return text if text is not None else ""


def parse_passwd(text: str) -> list[User]:
    users = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 7 or line.startswith("#"):
            continue
        try:
            uid, gid = int(fields[2]), int(fields[3])
        except ValueError:
            continue
        users.append(User(fields[0], uid, gid, fields[5] or "/", fields[6]))
    return users


def parse_group(text: str) -> list[Group]:
    groups = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 4 or line.startswith("#"):
            continue
        try:
            gid = int(fields[2])
        except ValueError:
            continue
        members = tuple(m for m in fields[3].split(",") if m)
        groups.append(Group(fields[0], gid, members))
    return groups


class UserDatabase:
    """The distribution's users and groups as they are now (re-read on each lookup:
    a user added with `useradd` a moment ago must be found)."""

    def __init__(self, root: str = "/") -> None:
        self.users = parse_passwd(_read(os.path.join(root, "etc/passwd")))
        self.groups = parse_group(_read(os.path.join(root, "etc/group")))

    def by_name(self, name: str) -> User | None:
        for user in self.users:
            if user.name == name:
                return user
        if name == "root":
            return User(*ROOT_FALLBACK)
        return None

    def by_uid(self, uid: int) -> User | None:
        for user in self.users:
            if user.uid == uid:
                return user
        if uid == 0:
            return User(*ROOT_FALLBACK)
        return None

    def lookup(self, spec: str) -> User | None:
        """A user by name, or by number when *spec* is all digits and names no user."""
        user = self.by_name(spec)
        if user is None and spec.isdigit():
            user = self.by_uid(int(spec))
        return user

    def group_id(self, name: str) -> int | None:
        for group in self.groups:
            if group.name == name:
                return group.gid
        return None

    def supplementary_groups(self, user: User) -> list[int]:
        gids = [user.gid]
        gids += [g.gid for g in self.groups if user.name in g.members and g.gid != user.gid]
        return gids
