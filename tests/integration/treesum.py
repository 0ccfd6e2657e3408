"""A checksum of a directory tree that says *what* differs: every entry's type, mode
(set-id bits included), owner, content, link target, device numbers, extended
attributes and mtime, plus which paths share an inode (hard links).

The walk never follows symlinks. Owners can be translated while walking, so a
tree shifted into a user namespace's host ids compares with the tree it came from.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

IdTranslation = Callable[[int], int]

_KINDS = (
    (stat.S_ISREG, "file"),
    (stat.S_ISDIR, "dir"),
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISCHR, "chr"),
    (stat.S_ISBLK, "blk"),
    (stat.S_ISSOCK, "socket"),
)


@dataclass(frozen=True)
class Entry:
    path: str
    kind: str
    mode: int
    uid: int
    gid: int
    mtime: int | None
    size: int | None = None
    sha256: str | None = None
    target: str | None = None
    rdev: tuple[int, int] | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()

    def describe(self) -> str:
        text = f"{self.kind} {self.mode:04o} {self.uid}:{self.gid}"
        if self.size is not None:
            text += f" {self.size} bytes sha256 {self.sha256 and self.sha256[:12]}"
        if self.target is not None:
            text += f" -> {self.target}"
        if self.rdev is not None:
            text += f" dev {self.rdev}"
        if self.xattrs:
            text += f" xattrs {dict(self.xattrs)}"
        if self.mtime is not None:
            text += f" mtime {self.mtime}"
        return text


@dataclass(frozen=True)
class TreeSum:
    entries: tuple[Entry, ...]
    links: frozenset[frozenset[str]]

    @property
    def paths(self) -> set[str]:
        return {e.path for e in self.entries}

    def entry(self, path: str) -> Entry:
        for e in self.entries:
            if e.path == path:
                return e
        raise KeyError(path)

    def digest(self) -> str:
        h = hashlib.sha256()
        for e in self.entries:
            h.update(repr(e).encode())
        for group in sorted(sorted(g) for g in self.links):
            h.update(repr(group).encode())
        return h.hexdigest()

    def without(self, paths: Iterable[str]) -> TreeSum:
        drop = set(paths)
        entries = tuple(e for e in self.entries if e.path not in drop)
        links = frozenset(
            kept for g in self.links if len(kept := frozenset(g - drop)) > 1
        )  # fmt: skip
        return TreeSum(entries, links)

    def without_mtimes(self) -> TreeSum:
        return TreeSum(tuple(replace(e, mtime=None) for e in self.entries), self.links)

    def difference(self, other: TreeSum, limit: int = 20) -> str:
        """A readable account of how *other* differs from self ('' when equal)."""
        mine = {e.path: e for e in self.entries}
        theirs = {e.path: e for e in other.entries}
        lines = []
        for path in sorted(mine.keys() | theirs.keys()):
            a, b = mine.get(path), theirs.get(path)
            if a == b:
                continue
            if a is None:
                lines.append(f"+ {path}: {b.describe()}")  # type: ignore[union-attr]
            elif b is None:
                lines.append(f"- {path}: {a.describe()}")
            else:
                lines.append(f"~ {path}: {a.describe()}  ->  {b.describe()}")
        if self.links != other.links:
            gone = sorted(sorted(g) for g in self.links - other.links)
            new = sorted(sorted(g) for g in other.links - self.links)
            lines.append(f"hard links: lost {gone}, gained {new}")
        shown = lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])
        return "\n".join(shown)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "unknown"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(
        (name, os.getxattr(path, name, follow_symlinks=False)) for name in sorted(names)
    )  # fmt: skip


def _walk(top: str) -> Iterable[str]:
    yield top
    for entry in sorted(os.scandir(top), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path)
        else:
            yield entry.path


def tree_sum(
    root: Path | str,
    uid: IdTranslation | None = None,
    gid: IdTranslation | None = None,
    mtimes: bool = True,
) -> TreeSum:
    """Sum the tree at *root* (its own entry is "."); *uid*/*gid* translate owners."""
    top = os.fspath(root)
    entries: list[Entry] = []
    inodes: dict[tuple[int, int], set[str]] = {}
    for path in _walk(top):
        rel = "." if path == top else os.path.relpath(path, top)
        st = os.lstat(path)
        kind = _kind(st.st_mode)
        entry = Entry(
            path=rel,
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=uid(st.st_uid) if uid else st.st_uid,
            gid=gid(st.st_gid) if gid else st.st_gid,
            mtime=int(st.st_mtime) if mtimes else None,
            xattrs=_xattrs(path),
        )
        if kind == "file":
            entry = replace(entry, size=st.st_size, sha256=_sha256(path))
            if st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), set()).add(rel)
        elif kind == "symlink":
            entry = replace(entry, target=os.readlink(path))
        elif kind in ("chr", "blk"):
            entry = replace(entry, rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)))
        entries.append(entry)
    links = frozenset(frozenset(g) for g in inodes.values() if len(g) > 1)
    return TreeSum(tuple(entries), links)


def archive_sum(archive: Path, scratch: Path, mtimes: bool = True) -> TreeSum:
    """Sum what GNU tar (as root, keeping owners, modes and xattrs) unpacks from *archive*."""
    scratch.mkdir(parents=True, exist_ok=False)
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "--same-owner", "-xpf",
         str(archive), "-C", str(scratch)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return tree_sum(scratch, mtimes=mtimes)


@dataclass(frozen=True)
class IdShift:
    """How a distribution's ids appear on the host: its 0 is the owner, its 1..65535
    are the owner's subordinate range (read from /etc/subuid and /etc/subgid)."""

    owner_uid: int
    owner_gid: int
    sub_uid: int
    sub_gid: int
    count: int = 65536

    @classmethod
    def of(cls, user: str, uid: int, gid: int) -> IdShift:
        return cls(uid, gid, _sub_start("/etc/subuid", user, uid),
                   _sub_start("/etc/subgid", user, uid))  # fmt: skip

    def _to_ns(self, host: int, owner: int, start: int) -> int:
        if host == owner:
            return 0
        if start <= host < start + self.count - 1:
            return host - start + 1
        raise AssertionError(f"host id {host} is outside the distribution's mapping")

    def uid_to_ns(self, host: int) -> int:
        return self._to_ns(host, self.owner_uid, self.sub_uid)

    def gid_to_ns(self, host: int) -> int:
        return self._to_ns(host, self.owner_gid, self.sub_gid)

    def uid_to_host(self, ns: int) -> int:
        return self.owner_uid if ns == 0 else self.sub_uid + ns - 1

    def gid_to_host(self, ns: int) -> int:
        return self.owner_gid if ns == 0 else self.sub_gid + ns - 1


def _sub_start(path: str, user: str, uid: int) -> int:
    for line in Path(path).read_text().splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, str(uid)) and int(parts[2]) >= 65535:
            return int(parts[1])
    raise AssertionError(f"{user} has no subordinate range in {path}")
