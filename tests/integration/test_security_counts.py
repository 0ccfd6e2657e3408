"""How many distributions a user may hold, and listing them at any count (issue 11).

The attacker registered 1,000 distributions in 45 s, and from about 3,700 on `lxss --list`
failed: the one reply was longer than the client takes. /etc/lxss.conf's [security]
maxDistributionsPerUser now refuses the next registration with one line, and the list comes
in pages (Varlink's `more`), so it works whatever the count, including rows registered
before the limit was lowered (made here directly in the registry: registering 20,000 for
real would take a quarter of an hour).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Service, busybox_root, busybox_tarball
from mgmt import User, assert_fails, call, registry_rows, shared_dir

LIMIT_KEY = "maxDistributionsPerUser"
MANY = 20_000  # about 7 MB as one reply: past the client's 4 MiB message limit


@pytest.fixture
def archive(test_users: tuple[str, str]) -> Iterator[Path]:
    with shared_dir() as directory:
        tarball = busybox_tarball(directory)
        tarball.chmod(0o644)
        yield tarball


@pytest.fixture
def home(test_users: tuple[str, str]) -> Iterator[Path]:
    """A directory of the first test user's, removed afterwards."""
    user = User.named(test_users[0])
    path = Path(user.home) / "lxss-counts"
    path.mkdir()
    os.chown(path, user.uid, user.gid)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def set_limit(service: Service, limit: int) -> None:
    service.machine_config.write_text(f"[security]\n{LIMIT_KEY} = {limit}\n")


def test_the_next_registration_past_the_limit_is_refused(
    fresh_service: Service, test_users: tuple[str, str], archive: Path, home: Path
) -> None:
    user = User.named(test_users[0])
    set_limit(fresh_service, 2)
    for name in ("count-1", "count-2"):
        fresh_service.ok("--import", name, str(home / name), str(archive), user=user.name)
    refusals = {
        "import": ("--import", "count-3", str(home / "count-3"), str(archive)),
        "install": ("--install", "busybox", "--name", "count-3", "--no-launch"),
        "in-place": ("--import-in-place", "count-3", str(home / "in-place")),
    }
    in_place = busybox_root(home / "in-place" / "rootfs")
    for path in (in_place.parent, in_place, *in_place.rglob("*")):
        os.lchown(path, user.uid, user.gid)
    (home / "in-place").chmod(0o700)
    for how, args in refusals.items():
        result = fresh_service.lxss(*args, user=user.name)
        line = assert_fails(result, "you have 2 distributions", "allows each user 2", LIMIT_KEY,
                            "/etc/lxss.conf")  # fmt: skip
        assert "unregister one" in line, (how, line)
        assert not (home / "count-3").exists(), how
    rows = [r for r in registry_rows(fresh_service) if r["owner_uid"] == user.uid]
    assert sorted(r["name"] for r in rows) == ["count-1", "count-2"]
    # Another user is not counted with this one; root may act for the user, and is held too.
    other = test_users[1]
    fresh_service.ok("--install", "busybox", "--name", "count-b", "--no-launch", user=other)
    result = fresh_service.lxss("--for-user", user.name, "--install", "busybox", "--name",
                                "count-3", "--no-launch")  # fmt: skip
    assert_fails(result, "you have 2 distributions")
    # Room again: one unregistered, or the limit raised (read at each registration).
    fresh_service.ok("--unregister", "count-1", user=user.name)
    fresh_service.ok("--import", "count-3", str(home / "count-3"), str(archive), user=user.name)
    set_limit(fresh_service, 3)
    fresh_service.ok("--import-in-place", "count-4", str(home / "in-place"), user=user.name)
    for name in ("count-2", "count-3", "count-4"):
        fresh_service.ok("--unregister", name, user=user.name)
    fresh_service.ok("--unregister", "count-b", user=other)


def _add_rows(service: Service, uid: int, count: int) -> list[str]:
    """*count* Installed rows of *uid* written straight into the registry (the service keeps
    its connection open; SQLite's locking lets a second writer in)."""
    names = [f"many-{i:05d}" for i in range(count)]
    now = time.time()
    rows = [
        (str(uuid.uuid4()), name, name, uid, f"/nonexistent/lxss-many/{name}", 0, 1, 0, 7,
         "Installed", "testbox", "1", now + i)
        for i, name in enumerate(names)
    ]  # fmt: skip
    with (
        contextlib.closing(
            sqlite3.connect(service.state_dir / "registry.sqlite", timeout=30)
        ) as db,
        db,
    ):
        db.executemany(
            "INSERT INTO distributions (guid, name, name_key, owner_uid, base_path,"
            " managed_base, version, default_uid, flags, state, os_id, os_version_id,"
            " created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    return names


def test_listing_works_at_any_count(
    fresh_service: Service, test_users: tuple[str, str], archive: Path, home: Path
) -> None:
    user = User.named(test_users[0])
    names = _add_rows(fresh_service, user.uid, MANY)
    started = time.monotonic()
    quiet = fresh_service.ok("--list", "--quiet", user=user.name, timeout=300)
    elapsed = time.monotonic() - started
    assert quiet.out.splitlines() == names
    verbose = fresh_service.ok("--list", "--verbose", user=user.name, timeout=300)
    lines = verbose.out.splitlines()
    assert len(lines) == MANY + 1 and lines[0].split() == ["NAME", "STATE", "VERSION"]
    assert lines[-1].split() == [names[-1], "Stopped", "1"]
    plain = fresh_service.ok("--list", user=user.name, timeout=300)
    assert len(plain.out.splitlines()) == MANY + 1
    print(f"lxss --list --quiet of {MANY} distributions: {elapsed:.2f} s")
    # Any Varlink client: without `more`, a clean ExpectedMore instead of 7 MB in one reply.
    reply = call(fresh_service, "EnumerateDistributions", user=user.name)
    assert reply.get("error") == "org.varlink.service.ExpectedMore", str(reply)[:300]
    # Past the default limit (256): the next registration is refused, unregistering works.
    result = fresh_service.lxss("--import", "one-more", str(home / "one-more"), str(archive),
                                user=user.name)  # fmt: skip
    assert_fails(result, f"you have {MANY} distributions", "allows each user 256", LIMIT_KEY)
    fresh_service.ok("--unregister", names[0], user=user.name)
    # The other user's short list is one plain reply, as before.
    assert call(fresh_service, "EnumerateDistributions", user=test_users[1])["parameters"] == {
        "distributions": [],
        "defaultVersion": 1,
    }
