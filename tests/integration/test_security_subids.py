"""Subordinate id ranges never cover a host account and never overlap (docs/security.md,
promise 1): a range that covered host user V would make a distribution's process V.

The attack places a host account exactly where the next range would go if only
/etc/subuid and /etc/subgid were looked at, then has a user with no range start a
distribution: lxssd must allocate around the account.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Service, drop_subid_lines
from mgmt import shared_dir
from security_support import user_distribution

from lxss.linux.subids import RANGE_SIZE, SubRange, parse_ranges

VICTIM, NEWCOMER, SECOND = "lxsstest-v", "lxsstest-n", "lxsstest-m"


def _ranges(path: str) -> list[SubRange]:
    return parse_ranges(Path(path).read_text()) if os.path.exists(path) else []


def _naive_next_start() -> int:
    """Where a range would go looking only at the subordinate id files: the lowest
    aligned slot after every range of both files."""
    low = 100000
    for line in Path("/etc/login.defs").read_text().splitlines():
        if line.split()[:1] in (["SUB_UID_MIN"], ["SUB_GID_MIN"]):
            low = max(low, int(line.split()[1]))
    ends = [r.end for r in (*_ranges("/etc/subuid"), *_ranges("/etc/subgid")) if r.end > low]
    top = max([low, *ends])
    return top if top == low else -(-top // RANGE_SIZE) * RANGE_SIZE


@pytest.fixture
def placed_users(service: Service) -> Iterator[tuple[int, int]]:
    """A victim account inside the next naive range, and two users with no range yet."""
    users = (VICTIM, NEWCOMER, SECOND)
    for user in users:
        subprocess.run(["userdel", "-r", "-f", user], capture_output=True, check=False)
    drop_subid_lines(users)
    victim_id = _naive_next_start() + 100
    try:
        subprocess.run(["groupadd", "-g", str(victim_id), VICTIM], check=True)
        subprocess.run(
            ["useradd", "-m", "-s", "/bin/sh", "-u", str(victim_id), "-g", str(victim_id),
             "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", VICTIM],
            check=True,
        )  # fmt: skip
        for user in (NEWCOMER, SECOND):
            subprocess.run(
                ["useradd", "-m", "-s", "/bin/sh", "-K", "SUB_UID_COUNT=0",
                 "-K", "SUB_GID_COUNT=0", user],
                check=True,
            )  # fmt: skip
        yield victim_id, victim_id
    finally:
        for user in (NEWCOMER, SECOND):  # their VMs end before their accounts do
            service.lxss("--for-user", user, "--shutdown", timeout=60)
            service.users_seen.discard(user)
        for user in users:
            subprocess.run(["userdel", "-r", "-f", user], capture_output=True, check=False)
        subprocess.run(["groupdel", VICTIM], capture_output=True, check=False)
        drop_subid_lines(users)


def test_a_new_range_never_covers_a_host_account(
    service: Service, placed_users: tuple[int, int]
) -> None:
    victim_uid, victim_gid = placed_users
    with shared_dir("lxss-subids-") as drop:
        os.chmod(drop, 0o1777)
        with user_distribution(service, NEWCOMER, "subids-n") as newcomer, \
             user_distribution(service, SECOND, "subids-m") as second:  # fmt: skip
            # Every inside id the newcomer's distribution has, writing a file each on the host.
            script = (
                f"for i in 0 99 100 101 102 1000 65534; do "
                f"touch /mnt/host{drop}/n-$i && chown $i:$i /mnt/host{drop}/n-$i || exit 1; done"
            )
            newcomer.ok(script)
            owners = {os.stat(p).st_uid for p in drop.iterdir()} | {
                os.stat(p).st_gid for p in drop.iterdir()
            }
            assert victim_uid not in owners and victim_gid not in owners
            second.ok("true")
        ranges = {
            name: [r for r in _ranges(f"/etc/sub{name}") if r.owner in (NEWCOMER, SECOND)]
            for name in ("uid", "gid")
        }
    for name, victim in (("uid", victim_uid), ("gid", victim_gid)):
        found = ranges[name]
        assert len(found) == 2, f"one sub{name} range per user: {found}"
        for r in found:
            assert not r.start <= victim < r.end, f"{r} covers host account {victim}"
            taken = [a for a in _account_ids(name) if r.start <= a < r.end]
            assert taken == [], f"{r} covers host accounts {taken}"
        a, b = sorted(found, key=lambda r: r.start)
        assert a.end <= b.start, f"{a} and {b} overlap"
        others = [r for r in _ranges(f"/etc/sub{name}") if r not in found]
        for r in found:
            assert all(r.end <= o.start or o.end <= r.start for o in others), (r, others)


def _account_ids(name: str) -> list[int]:
    if name == "uid":
        return [p.pw_uid for p in pwd.getpwall()]
    return [g.gr_gid for g in grp.getgrall()]
