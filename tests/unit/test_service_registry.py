"""The registry of distributions (lxss.service.registry) on a temporary database."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lxss.service import registry
from lxss.service.registry import (
    INSTALLED,
    INSTALLING,
    UNINSTALLING,
    NameTaken,
    Registry,
    new_distribution,
    new_guid,
    normalize_guid,
    valid_name,
)

ALICE, BOB = 1000, 1001


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Registry]:
    opened = Registry(str(tmp_path / "registry.sqlite"))
    try:
        yield opened
    finally:
        opened.close()


def install(db: Registry, name: str, uid: int = ALICE, created: float | None = None) -> str:
    """Register and finish installing *name*; its GUID."""
    guid = new_guid()
    d = new_distribution(name, uid, f"/base/{guid}", True, 1, guid)
    if created is not None:
        d = replace(d, created=created)
    db.begin_install(d)
    db.finish_install(guid, "debian", "12")
    return guid


@pytest.mark.parametrize("name", ["a", "Z", "0", "a.b_c-d", "-", ".", "..", "x" * 256])
def test_valid_names(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "x" * 257, "a b", "a/b", "ü", "a\n", "a\0b", "tab\t", "a:b", "a*", "日本"],
)
def test_invalid_names(name: str) -> None:
    assert not valid_name(name)


def test_guids() -> None:
    guid = new_guid()
    assert normalize_guid(guid) == guid
    assert normalize_guid("{" + guid.upper() + "}") == guid
    assert normalize_guid(f"  {guid}  ") == guid
    assert normalize_guid(guid.replace("-", "")) == guid
    for not_a_guid in ("debian", "", "{}", guid[:-1]):
        assert normalize_guid(not_a_guid) is None


def test_installing_then_installed(db: Registry) -> None:
    guid = new_guid()
    d = new_distribution("Debian", ALICE, "/base/x", False, 1, guid)
    assert d.state == INSTALLING
    db.begin_install(d)
    stored = db.get(guid)
    assert stored is not None and stored.state == INSTALLING
    assert db.all_in_state(INSTALLING) == [stored]
    assert db.user(ALICE).default_distribution is None, "not the default until installed"
    db.finish_install(guid, "debian", "12")
    done = db.get(guid)
    assert done is not None
    assert (done.state, done.os_id, done.os_version_id) == (INSTALLED, "debian", "12")
    assert db.user(ALICE).default_distribution == guid, "the user's first becomes the default"
    assert db.all_in_state(INSTALLING) == []


def test_begin_install_stores_every_field(db: Registry) -> None:
    guid = new_guid()
    d = replace(new_distribution("x", ALICE, "/p", False, 2, guid), default_uid=1000, flags=5)
    db.begin_install(d)
    assert db.get(guid) == d


def test_names_are_unique_per_user_case_insensitively(db: Registry) -> None:
    install(db, "Debian")
    for spelling in ("Debian", "debian", "DEBIAN"):
        with pytest.raises(NameTaken):
            db.begin_install(new_distribution(spelling, ALICE, "/b", True, 1, new_guid()))
    install(db, "debian", uid=BOB)  # another user may use it
    assert [d.name for d in db.distributions(ALICE)] == ["Debian"]
    assert [d.name for d in db.distributions(BOB)] == ["debian"]


def test_rename_keeps_names_unique(db: Registry) -> None:
    install(db, "Debian")
    guid = install(db, "placeholder")
    with pytest.raises(NameTaken):
        db.rename(guid, "DEBIAN")
    db.rename(guid, "Ubuntu")
    assert db.find(ALICE, "ubuntu") == db.get(guid)
    assert db.find(ALICE, "placeholder") is None


def test_find_by_name_or_guid_for_its_owner_only(db: Registry) -> None:
    guid = install(db, "Debian")
    for key in ("Debian", "debian", "DEBIAN", guid, guid.upper(), "{" + guid + "}"):
        found = db.find(ALICE, key)
        assert found is not None and found.guid == guid, key
        assert db.find(BOB, key) is None, key
    assert db.find(ALICE, "ubuntu") is None


def test_default_after_removal(db: Registry) -> None:
    first = install(db, "first", created=1.0)
    second = install(db, "second", created=2.0)
    third = install(db, "third", created=3.0)
    other = install(db, "other", uid=BOB, created=0.5)
    assert db.user(ALICE).default_distribution == first
    db.set_default(ALICE, third)
    db.remove(third)
    assert db.user(ALICE).default_distribution == first, "the oldest remaining"
    db.remove(second)
    assert db.user(ALICE).default_distribution == first, "a non-default removal keeps it"
    db.remove(first)
    assert db.user(ALICE).default_distribution is None
    assert db.user(BOB).default_distribution == other, "other users are not touched"
    db.remove(first)  # removing twice is harmless


def test_default_skips_rows_still_installing(db: Registry) -> None:
    first = install(db, "first", created=1.0)
    pending = new_guid()
    db.begin_install(replace(new_distribution("pending", ALICE, "/b", True, 1, pending),
                             created=0.5))  # fmt: skip
    install(db, "later", created=2.0)
    db.remove(first)
    later = db.find(ALICE, "later")
    assert later is not None and db.user(ALICE).default_distribution == later.guid


def test_default_version_and_settings(db: Registry) -> None:
    assert db.user(ALICE).default_version == registry.DEFAULT_VERSION == 1
    db.set_default_version(ALICE, 2)
    assert db.user(ALICE).default_version == 2
    guid = install(db, "x")
    assert db.user(ALICE).default_version == 2, "setting the default keeps the version"
    db.set_default_version(ALICE, 1)
    assert db.user(ALICE).default_distribution == guid


def test_states_configure_and_base_paths(db: Registry) -> None:
    guid = install(db, "x")
    db.set_state(guid, UNINSTALLING)
    assert [d.guid for d in db.all_in_state(UNINSTALLING)] == [guid]
    db.configure(guid, 1000, None)
    db.configure(guid, None, 3)
    d = db.get(guid)
    assert d is not None and (d.default_uid, d.flags) == (1000, 3)
    assert db.base_path_in_use(f"/base/{guid}") == d
    assert db.base_path_in_use("/elsewhere") is None
    db.set_os_release(guid, "alpine", "3.19")
    d = db.get(guid)
    assert d is not None and (d.os_id, d.os_version_id) == ("alpine", "3.19")


def test_listing_order_is_registration_order(db: Registry) -> None:
    for i, name in enumerate(["b", "c", "a"]):
        install(db, name, created=float(i))
    assert [d.name for d in db.distributions(ALICE)] == ["b", "c", "a"]


def test_persistence_and_wal(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sqlite")
    first = Registry(path)
    try:
        guid = install(first, "kept")
    finally:
        first.close()
    second = Registry(path)
    try:
        assert [d.guid for d in second.distributions(ALICE)] == [guid]
        assert second.user(ALICE).default_distribution == guid
    finally:
        second.close()
    with contextlib.closing(sqlite3.connect(path)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# The schema's version and its migrations -------------------------------------------

# The tables as lxssd wrote them before the schema had a version (user_version 0).
_VERSION_0 = """
CREATE TABLE distributions (
    guid TEXT PRIMARY KEY, name TEXT NOT NULL, name_key TEXT NOT NULL,
    owner_uid INTEGER NOT NULL, base_path TEXT NOT NULL, managed_base INTEGER NOT NULL,
    version INTEGER NOT NULL, default_uid INTEGER NOT NULL, flags INTEGER NOT NULL,
    state TEXT NOT NULL, os_id TEXT NOT NULL DEFAULT '', os_version_id TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL, UNIQUE (owner_uid, name_key)
);
CREATE TABLE users (
    uid INTEGER PRIMARY KEY, default_distribution TEXT, default_version INTEGER NOT NULL DEFAULT 1
);
INSERT INTO distributions VALUES
    ('0b6a4cf8-5f57-4a3c-9d59-0d7f3b6f8c11', 'Old', 'old', 1000, '/home/a/old', 0, 1, 0, 7,
     'Installed', 'debian', '12', 1.5);
INSERT INTO users VALUES (1000, '0b6a4cf8-5f57-4a3c-9d59-0d7f3b6f8c11', 2);
"""


def _user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as raw:
        return int(raw.execute("PRAGMA user_version").fetchone()[0])


def test_a_new_database_has_the_current_schema_version(tmp_path: Path) -> None:
    Registry(str(tmp_path / "new.sqlite")).close()
    assert _user_version(tmp_path / "new.sqlite") == registry.SCHEMA_VERSION >= 1


def test_a_version_0_database_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.executescript(_VERSION_0)
    assert _user_version(path) == 0
    db = Registry(str(path))
    try:
        old = db.find(ALICE, "old")
        assert old is not None
        assert (old.base_path, old.managed_base, old.state, old.os_id) == (
            "/home/a/old", False, INSTALLED, "debian",
        )  # fmt: skip
        assert (old.base_dev, old.base_ino) == (None, None)  # not known before version 1
        assert db.user(ALICE).default_distribution == old.guid
        assert db.user(ALICE).default_version == 2
        db.set_base(old.guid, "/home/a/old", (8, 1234))
        assert (db.get(old.guid) or old).base_ino == 1234
        install(db, "new")  # a row of the new shape beside the migrated one
    finally:
        db.close()
    assert _user_version(path) == registry.SCHEMA_VERSION
    Registry(str(path)).close()  # opening a migrated database again changes nothing


def test_a_database_from_a_newer_lxssd_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    Registry(str(path)).close()
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute(f"PRAGMA user_version = {registry.SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer than this lxssd"):
        Registry(str(path))


def test_base_identity_is_stored(db: Registry) -> None:
    guid = new_guid()
    db.begin_install(new_distribution("ident", ALICE, "/x", True, 1, guid, (5, 77)))
    found = db.get(guid)
    assert found is not None and (found.base_dev, found.base_ino) == (5, 77)


def test_a_tree_registered_in_place_is_never_a_row_left_installing(db: Registry) -> None:
    """--import-in-place's row is Installed from the start: a crash can never leave it for
    the next start to clean up (with the files, which were the user's before)."""
    guid = new_guid()
    d = replace(new_distribution("inplace", ALICE, "/home/a/tree", False, 1, guid, (3, 9)),
                os_id="debian", os_version_id="12")  # fmt: skip
    db.add_installed(d)
    found = db.get(guid)
    assert found is not None and (found.state, found.os_id, found.base_ino) == (
        INSTALLED,
        "debian",
        9,
    )
    assert db.all_in_state(INSTALLING) == []
    assert db.user(ALICE).default_distribution == guid
    with pytest.raises(NameTaken):
        db.add_installed(replace(d, guid=new_guid(), name="INPLACE"))
