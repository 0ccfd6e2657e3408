"""Subordinate id ranges (/etc/subuid, /etc/subgid) and the id maps built on them.

A distribution's processes run in a user namespace that maps its uid 0 to the
owner and its uids 1..65535 to the owner's subordinate range, so the owner's
distribution can hold files of many users without any of them being a host id
the owner does not already control.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

RANGE_SIZE: Final = 65536
FIRST_ALLOCATED: Final = 100000
SUBUID_FILE: Final = "/etc/subuid"
SUBGID_FILE: Final = "/etc/subgid"
LOCK_TIMEOUT: Final = 5.0


@dataclass(frozen=True)
class SubRange:
    owner: str
    start: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.count


@dataclass(frozen=True)
class IdMap:
    """How a user namespace sees the owner: ns id 0 is `owner_id`, ns ids
    1..count-1 are `sub_start`..; the same shape serves uids and gids."""

    owner_id: int
    sub_start: int
    count: int = RANGE_SIZE

    def proc_text(self) -> str:
        """The text written to /proc/PID/uid_map or gid_map."""
        return f"0 {self.owner_id} 1\n1 {self.sub_start} {self.count - 1}\n"

    def to_host(self, ns_id: int) -> int | None:
        if ns_id == 0:
            return self.owner_id
        if 0 < ns_id < self.count:
            return self.sub_start + ns_id - 1
        return None


@dataclass(frozen=True)
class Mapping:
    uid: IdMap
    gid: IdMap


def parse_ranges(text: str) -> list[SubRange]:
    """Parse subuid/subgid text; malformed lines are skipped, as shadow-utils does."""
    ranges = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3:
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            ranges.append(SubRange(parts[0], start, count))
    return ranges


def find_range(ranges: Iterable[SubRange], names: tuple[str, ...], need: int) -> SubRange | None:
    """The first range owned by any of *names* (user name or decimal uid) that is large enough."""
    for r in ranges:
        if r.owner in names and r.count >= need - 1:
            return r
    return None


def subordinate_owner(uid: int, subuid_file: str = SUBUID_FILE) -> str | None:
    """Whose subordinate range holds *uid* (a user name or uid as written), if anyone's."""
    for r in parse_ranges(_read(subuid_file)):
        if r.start <= uid < r.end:
            return r.owner
    return None


def next_free_start(*range_lists: Iterable[SubRange], size: int = RANGE_SIZE) -> int:
    """Lowest start ≥ FIRST_ALLOCATED, aligned to *size*, clear of every listed range."""
    taken = sorted((r.start, r.end) for ranges in range_lists for r in ranges)
    start = FIRST_ALLOCATED
    for lo, hi in taken:
        if start + size <= lo:
            break
        if hi > start:
            start = -(-hi // size) * size  # round up to the next aligned slot
    return start


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        # Keep the file line-terminated even if someone left it without a final newline.
        size = os.fstat(fd).st_size
        prefix = ""
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    prefix = "\n"
        os.write(fd, (prefix + line + "\n").encode())
    finally:
        os.close(fd)


def _lock(fd: int, timeout: float) -> None:
    """flock(LOCK_EX) with a deadline: another holder must not stall the service forever."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"subordinate id files stayed locked for {timeout:.0f} s"
                ) from None
            time.sleep(0.01)


def ensure_mapping(
    uid: int,
    gid: int,
    user_name: str,
    lock_path: str,
    subuid_file: str = SUBUID_FILE,
    subgid_file: str = SUBGID_FILE,
) -> Mapping:
    """The id mapping for *uid*, allocating subordinate ranges if the user has none.

    Allocation appends `name:start:65536` to both files under *lock_path*, so
    two service threads (or two services) never hand out the same range.
    """
    names = (user_name, str(uid))
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _lock(fd, LOCK_TIMEOUT)
        uids, gids = parse_ranges(_read(subuid_file)), parse_ranges(_read(subgid_file))
        sub_u, sub_g = find_range(uids, names, RANGE_SIZE), find_range(gids, names, RANGE_SIZE)
        if sub_u is None or sub_g is None:
            start = next_free_start(uids, gids)
            if sub_u is None:
                _append(subuid_file, f"{user_name}:{start}:{RANGE_SIZE}")
                sub_u = SubRange(user_name, start, RANGE_SIZE)
            if sub_g is None:
                _append(subgid_file, f"{user_name}:{start}:{RANGE_SIZE}")
                sub_g = SubRange(user_name, start, RANGE_SIZE)
    finally:
        os.close(fd)
    return Mapping(IdMap(uid, sub_u.start), IdMap(gid, sub_g.start))
