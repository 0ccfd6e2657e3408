"""Subordinate id ranges (/etc/subuid, /etc/subgid) and the id maps built on them.

A distribution's tree is stored with its uid 0 as the owner and its uids 1..65535 in
the owner's subordinate range, so the owner's distribution can hold files of many users
without any of them being a host id the owner does not already control. (At run time
the distribution's default user takes the owner's place: see lxss.linux.idmap.)

A range is allocated only where no other range and no account (user or group, as NSS
lists them) lies, inside login.defs(5)'s SUB_UID_MIN..SUB_UID_MAX and
SUB_GID_MIN..SUB_GID_MAX: a range covering a host account would make a distribution's
process that account on the host.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

RANGE_SIZE: Final = 65536
FIRST_ALLOCATED: Final = 100000
SUBUID_FILE: Final = "/etc/subuid"
SUBGID_FILE: Final = "/etc/subgid"
LOGIN_DEFS: Final = "/etc/login.defs"
LOCK_TIMEOUT: Final = 5.0
# shadow-utils' defaults for login.defs' SUB_UID_MIN/MAX (and SUB_GID_MIN/MAX).
DEFAULT_SUB_MIN: Final = 100000
DEFAULT_SUB_MAX: Final = 600100000


class NoFreeRange(OSError):
    """No range of RANGE_SIZE ids is free inside login.defs' bounds."""


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
    """How a distribution's tree is stored: its id 0 is `owner_id`, its ids 1..count-1 are
    `sub_start`..; the same shape serves uids and gids.

    `face` is the host id that plays the owner at run time when that is not the owner
    itself: root's distributions are mapped to the last id of root's own range (see
    Mapping.with_root_faces), so that their root is nobody on the host.
    """

    owner_id: int
    sub_start: int
    count: int = RANGE_SIZE
    face: int | None = None

    @property
    def host_face(self) -> int:
        return self.owner_id if self.face is None else self.face

    def lines(self) -> tuple[tuple[int, int, int], ...]:
        """The stored mapping as (inside, host, count) lines."""
        return ((0, self.owner_id, 1), (1, self.sub_start, self.count - 1))

    def run_lines(self) -> tuple[tuple[int, int, int], ...]:
        """The utility VM's mapping: the stored one with the owner replaced by its face."""
        return ((0, self.host_face, 1), (1, self.sub_start, self.count - 1))

    def proc_text(self) -> str:
        """The stored mapping as the text written to /proc/PID/uid_map or gid_map."""
        return "".join(f"{a} {b} {n}\n" for a, b, n in self.lines())

    def run_text(self) -> str:
        return "".join(f"{a} {b} {n}\n" for a, b, n in self.run_lines())

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

    def for_vm(self) -> Mapping:
        """The utility VM's mapping: the stored one with each owner replaced by its face."""
        return Mapping(
            IdMap(self.uid.host_face, self.uid.sub_start, self.uid.count),
            IdMap(self.gid.host_face, self.gid.sub_start, self.gid.count),
        )

    def with_root_faces(self, uid_range: SubRange, gid_range: SubRange) -> Mapping:
        """Root's distributions, mapped: their owner plays as the last id of root's range
        (the stored tree, and so exports, stay as they are: only the run time changes)."""
        for name, r, ids in (("subuid", uid_range, self.uid), ("subgid", gid_range, self.gid)):
            if r.start != ids.sub_start or r.count < RANGE_SIZE:
                raise NoFreeRange(
                    f"root's {name} range holds {r.count} ids; mapping root's distributions "
                    f"needs {RANGE_SIZE} (or set rootDistributionsMapped = false)"
                )
        last = RANGE_SIZE - 1
        return Mapping(
            IdMap(self.uid.owner_id, self.uid.sub_start, self.uid.count, uid_range.start + last),
            IdMap(self.gid.owner_id, self.gid.sub_start, self.gid.count, gid_range.start + last),
        )


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


def next_free_start(
    *range_lists: Iterable[SubRange],
    size: int = RANGE_SIZE,
    taken_ids: Iterable[int] = (),
    low: int = FIRST_ALLOCATED,
    high: int = DEFAULT_SUB_MAX,
) -> int:
    """Lowest start ≥ *low*, aligned to *size* (or *low* itself), whose *size* ids end at or
    below *high* + 1 and are clear of every listed range and every id in *taken_ids*
    (the host's accounts). Raises NoFreeRange when there is none."""
    taken = sorted(
        [(r.start, r.end) for ranges in range_lists for r in ranges]
        + [(i, i + 1) for i in taken_ids]
    )
    start = low
    for lo, hi in taken:
        if start + size <= lo:
            break
        if hi > start:
            start = -(-hi // size) * size  # round up to the next aligned slot
    if start + size - 1 > high:
        raise NoFreeRange(
            f"no {size} subordinate ids are free between {low} and {high} "
            f"(login.defs' SUB_UID_MIN/MAX): free some in /etc/subuid and /etc/subgid"
        )
    return start


def account_ids() -> tuple[list[int], list[int]]:
    """Every uid and gid of the host's accounts, as NSS enumerates them."""
    return [p.pw_uid for p in pwd.getpwall()], [g.gr_gid for g in grp.getgrall()]


def login_defs_bounds(text: str) -> tuple[int, int]:
    """(low, high) that fits both SUB_UID_MIN..MAX and SUB_GID_MIN..MAX of login.defs text."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("SUB_"):
            try:
                values[parts[0]] = int(parts[1], 0)
            except ValueError:
                continue
    low = max(
        values.get("SUB_UID_MIN", DEFAULT_SUB_MIN), values.get("SUB_GID_MIN", DEFAULT_SUB_MIN)
    )
    high = min(
        values.get("SUB_UID_MAX", DEFAULT_SUB_MAX), values.get("SUB_GID_MAX", DEFAULT_SUB_MAX)
    )
    return low, high


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


def user_ranges(
    uid: int, user_name: str, subuid_file: str = SUBUID_FILE, subgid_file: str = SUBGID_FILE
) -> tuple[SubRange | None, SubRange | None]:
    """The subuid and subgid ranges *uid* has now (None where it has none)."""
    names = (user_name, str(uid))
    return (
        find_range(parse_ranges(_read(subuid_file)), names, RANGE_SIZE),
        find_range(parse_ranges(_read(subgid_file)), names, RANGE_SIZE),
    )


def ensure_mapping(
    uid: int,
    gid: int,
    user_name: str,
    lock_path: str,
    subuid_file: str = SUBUID_FILE,
    subgid_file: str = SUBGID_FILE,
    login_defs: str = LOGIN_DEFS,
    accounts: Callable[[], tuple[list[int], list[int]]] = account_ids,
) -> Mapping:
    """The id mapping for *uid*, allocating subordinate ranges if the user has none.

    Allocation appends `name:start:65536` to both files under *lock_path* (one lock for
    the machine: every lxssd uses the same files), so two service threads or two services
    never hand out the same range; the range is clear of every account *accounts* lists.
    """
    names = (user_name, str(uid))
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _lock(fd, LOCK_TIMEOUT)
        uids, gids = parse_ranges(_read(subuid_file)), parse_ranges(_read(subgid_file))
        sub_u, sub_g = find_range(uids, names, RANGE_SIZE), find_range(gids, names, RANGE_SIZE)
        if sub_u is None or sub_g is None:
            low, high = login_defs_bounds(_read(login_defs))
            user_ids, group_ids = accounts()
            start = next_free_start(
                uids, gids, taken_ids=[*user_ids, *group_ids], low=low, high=high
            )
            if sub_u is None:
                _append(subuid_file, f"{user_name}:{start}:{RANGE_SIZE}")
                sub_u = SubRange(user_name, start, RANGE_SIZE)
            if sub_g is None:
                _append(subgid_file, f"{user_name}:{start}:{RANGE_SIZE}")
                sub_g = SubRange(user_name, start, RANGE_SIZE)
    finally:
        os.close(fd)
    return Mapping(IdMap(uid, sub_u.start), IdMap(gid, sub_g.start))
