"""The registry of distributions: SQLite in WAL mode, the HKCU\\...\\Lxss of lxss.

Only Installed, Installing and Uninstalling are stored. Running, Converting and
Exporting are live states the service overlays; they never reach the disk, so
a crash can never leave a distribution "Running".

A distribution is inserted as Installing and becomes Installed (and, if the
user has none, the default) in one transaction at the end of its import;
rows left Installing or Uninstalling by a crash are finished off at start-up.

The schema's version is SQLite's user_version; `_MIGRATIONS` brings an older
database up to date, one step per version, each in its own transaction.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Final

INSTALLED: Final = "Installed"
INSTALLING: Final = "Installing"
UNINSTALLING: Final = "Uninstalling"

DEFAULT_VERSION: Final = 1
FLAG_DEFAULTS: Final = 0x7  # WSL's ENABLE_INTEROP | APPEND_NT_PATH | ENABLE_DRIVE_MOUNTING

_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,256}")

_SCHEMA: Final = """
CREATE TABLE distributions (
    guid          TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    name_key      TEXT NOT NULL,
    owner_uid     INTEGER NOT NULL,
    base_path     TEXT NOT NULL,
    managed_base  INTEGER NOT NULL,   -- 1: the service created base_path and removes it
    base_dev      INTEGER,            -- base_path's st_dev and st_ino when it was registered
    base_ino      INTEGER,            -- (NULL: registered before they were recorded)
    version       INTEGER NOT NULL,
    default_uid   INTEGER NOT NULL,
    flags         INTEGER NOT NULL,
    state         TEXT NOT NULL,
    os_id         TEXT NOT NULL DEFAULT '',
    os_version_id TEXT NOT NULL DEFAULT '',
    created       REAL NOT NULL,
    UNIQUE (owner_uid, name_key)
);
-- Distributions whose first-run setup (/etc/wsl-distribution.conf [oobe]) is still to run
-- (WSL's RunOOBE value).
CREATE TABLE first_run (
    guid TEXT PRIMARY KEY
);
CREATE TABLE users (
    uid                  INTEGER PRIMARY KEY,
    default_distribution TEXT,
    default_version      INTEGER NOT NULL DEFAULT 1
);
"""

# Each step takes a database of version N (its index) to version N + 1.
_MIGRATIONS: Final = (
    # 0 -> 1: the identity of each base directory, checked before every use of the tree.
    "ALTER TABLE distributions ADD COLUMN base_dev INTEGER;"
    " ALTER TABLE distributions ADD COLUMN base_ino INTEGER;",
    # 1 -> 2: distributions whose first-run setup is still to run.
    "CREATE TABLE first_run (guid TEXT PRIMARY KEY);",
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)


class NameTaken(Exception):
    pass


@dataclass(frozen=True)
class Distribution:
    guid: str
    name: str
    owner_uid: int
    base_path: str
    managed_base: bool
    base_dev: int | None
    base_ino: int | None
    version: int
    default_uid: int
    flags: int
    state: str
    os_id: str
    os_version_id: str
    created: float


@dataclass(frozen=True)
class UserSettings:
    uid: int
    default_distribution: str | None
    default_version: int


def valid_name(name: str) -> bool:
    """WSL's rule: letters, digits, '.', '_', '-'; 1 to 256 characters. A name that reads
    as a GUID is refused too: distributions are named by name or GUID, so it would be
    ambiguous."""
    return _NAME.fullmatch(name) is not None and normalize_guid(name) is None


def new_guid() -> str:
    return str(uuid.uuid4())


def normalize_guid(text: str) -> str | None:
    """A GUID in canonical form, from any case and with or without braces; None if not one."""
    try:
        return str(uuid.UUID(text.strip().strip("{}")))
    except ValueError:
        return None


def _row(row: sqlite3.Row) -> Distribution:
    return Distribution(
        guid=row["guid"],
        name=row["name"],
        owner_uid=row["owner_uid"],
        base_path=row["base_path"],
        managed_base=bool(row["managed_base"]),
        base_dev=row["base_dev"],
        base_ino=row["base_ino"],
        version=row["version"],
        default_uid=row["default_uid"],
        flags=row["flags"],
        state=row["state"],
        os_id=row["os_id"],
        os_version_id=row["os_version_id"],
        created=row["created"],
    )


MAX_OS_RELEASE_FIELD: Final = 64


def os_release_field(value: str) -> str:
    """ID or VERSION_ID as stored: printable characters only, at most 64 of them.

    The value comes from the distribution's own /etc/os-release, which its root writes:
    unbounded, it would make every listing of the owner's distributions too large to
    send (and control characters would reach whoever prints it). os-release(5) allows
    far less: lower-case letters, digits, ".", "_" and "-".
    """
    return "".join(c for c in value[: MAX_OS_RELEASE_FIELD * 4] if c.isprintable())[
        :MAX_OS_RELEASE_FIELD
    ]


def _make_private(path: str) -> None:
    """Create the database (if need be) readable by root alone, before SQLite opens it.

    The registry names every user's distributions, GUIDs and paths. SQLite creates the
    write-ahead log and its index beside the database with the database's own mode, so
    they are private only if the database already is when they are made (a chmod after
    opening leaves a world-readable -wal holding the rows). Files an older service left
    with wider modes are narrowed too.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path + suffix, 0o600)


class Registry:
    """All reads and writes of the database. Not thread-safe: the service's
    event loop is its only user."""

    def __init__(self, path: str) -> None:
        _make_private(path)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._upgrade()
        except BaseException:
            self._db.close()
            raise

    def _upgrade(self) -> None:
        """Create the tables, or migrate them from the version the database records."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the registry is of schema version {version}, newer than this lxssd's"
                f" {SCHEMA_VERSION}: run the lxssd that wrote it"
            )
        with self._transaction() as db:
            tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            if not tables:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
            else:
                for step in _MIGRATIONS[version:]:
                    for statement in step.split(";"):
                        if statement.strip():
                            db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # Distributions -----------------------------------------------------------

    def distributions(self, uid: int) -> list[Distribution]:
        rows = self._db.execute(
            "SELECT * FROM distributions WHERE owner_uid = ? ORDER BY created, name_key", (uid,)
        )
        return [_row(r) for r in rows]

    def count(self, uid: int) -> int:
        """How many distributions *uid* has, in any state."""
        row = self._db.execute("SELECT count(*) FROM distributions WHERE owner_uid = ?", (uid,))
        return int(row.fetchone()[0])

    def all_in_state(self, state: str) -> list[Distribution]:
        rows = self._db.execute("SELECT * FROM distributions WHERE state = ?", (state,))
        return [_row(r) for r in rows]

    def get(self, guid: str) -> Distribution | None:
        row = self._db.execute("SELECT * FROM distributions WHERE guid = ?", (guid,)).fetchone()
        return None if row is None else _row(row)

    def find(self, uid: int, name_or_guid: str) -> Distribution | None:
        """A distribution of *uid* by name (any case) or GUID (any spelling)."""
        guid = normalize_guid(name_or_guid)
        row = self._db.execute(
            "SELECT * FROM distributions WHERE owner_uid = ? AND (name_key = ? OR guid = ?)",
            (uid, name_or_guid.lower(), guid or ""),
        ).fetchone()
        return None if row is None else _row(row)

    def base_path_in_use(self, path: str) -> Distribution | None:
        row = self._db.execute(
            "SELECT * FROM distributions WHERE base_path = ?", (path,)
        ).fetchone()
        return None if row is None else _row(row)

    def begin_install(self, distribution: Distribution) -> None:
        """Insert *distribution* as Installing; NameTaken if its owner already uses the name."""
        self._insert(self._db, replace(distribution, state=INSTALLING))

    def add_installed(self, distribution: Distribution) -> None:
        """Insert *distribution* as Installed at once (and the owner's default if they have
        none), in one transaction: for files that were there before (--import-in-place),
        which an Installing row would have the next start remove. NameTaken as above."""
        os_id = os_release_field(distribution.os_id)
        os_version_id = os_release_field(distribution.os_version_id)
        d = replace(distribution, state=INSTALLED, os_id=os_id, os_version_id=os_version_id)
        with self._transaction() as db:
            self._insert(db, d)
            if self._default_of(db, d.owner_uid) is None:
                self._set_default(db, d.owner_uid, d.guid)

    @staticmethod
    def _insert(db: sqlite3.Connection, d: Distribution) -> None:
        try:
            db.execute(
                "INSERT INTO distributions (guid, name, name_key, owner_uid, base_path,"
                " managed_base, base_dev, base_ino, version, default_uid, flags, state, os_id,"
                " os_version_id, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (d.guid, d.name, d.name.lower(), d.owner_uid, d.base_path, int(d.managed_base),
                 d.base_dev, d.base_ino, d.version, d.default_uid, d.flags, d.state, d.os_id,
                 d.os_version_id, d.created),
            )  # fmt: skip
        except sqlite3.IntegrityError:
            raise NameTaken(d.name) from None

    def finish_install(self, guid: str, os_id: str, os_version_id: str) -> None:
        """Installing → Installed; the user's default if they had none. One transaction."""
        os_id, os_version_id = os_release_field(os_id), os_release_field(os_version_id)
        with self._transaction() as db:
            row = db.execute("SELECT owner_uid FROM distributions WHERE guid = ?", (guid,))
            owner = row.fetchone()["owner_uid"]
            db.execute(
                "UPDATE distributions SET state = ?, os_id = ?, os_version_id = ? WHERE guid = ?",
                (INSTALLED, os_id, os_version_id, guid),
            )
            if self._default_of(db, owner) is None:
                self._set_default(db, owner, guid)

    def set_state(self, guid: str, state: str) -> None:
        self._db.execute("UPDATE distributions SET state = ? WHERE guid = ?", (state, guid))

    def set_base(
        self, guid: str, base_path: str, identity: tuple[int, int], managed: bool | None = None
    ) -> None:
        """Where a distribution's files are, the identity (st_dev, st_ino) of that directory
        and (if given) whether lxssd made it."""
        self._db.execute(
            "UPDATE distributions SET base_path = ?, base_dev = ?, base_ino = ?,"
            " managed_base = coalesce(?, managed_base) WHERE guid = ?",
            (base_path, identity[0], identity[1], None if managed is None else int(managed), guid),
        )

    def set_os_release(self, guid: str, os_id: str, os_version_id: str) -> None:
        os_id, os_version_id = os_release_field(os_id), os_release_field(os_version_id)
        self._db.execute(
            "UPDATE distributions SET os_id = ?, os_version_id = ? WHERE guid = ?",
            (os_id, os_version_id, guid),
        )

    def configure(self, guid: str, default_uid: int | None, flags: int | None) -> None:
        if default_uid is not None:
            self._db.execute(
                "UPDATE distributions SET default_uid = ? WHERE guid = ?", (default_uid, guid)
            )
        if flags is not None:
            self._db.execute("UPDATE distributions SET flags = ? WHERE guid = ?", (flags, guid))

    def rename(self, guid: str, name: str) -> None:
        """Give a distribution another name; NameTaken if its owner already uses it."""
        try:
            self._db.execute(
                "UPDATE distributions SET name = ?, name_key = ? WHERE guid = ?",
                (name, name.lower(), guid),
            )
        except sqlite3.IntegrityError:
            raise NameTaken(name) from None

    def set_first_run(self, guid: str, pending: bool) -> None:
        if pending:
            self._db.execute("INSERT OR IGNORE INTO first_run (guid) VALUES (?)", (guid,))
        else:
            self._db.execute("DELETE FROM first_run WHERE guid = ?", (guid,))

    def first_run_pending(self, guid: str) -> bool:
        row = self._db.execute("SELECT 1 FROM first_run WHERE guid = ?", (guid,)).fetchone()
        return row is not None

    def remove(self, guid: str) -> None:
        """Delete a distribution; if it was its owner's default, the oldest remaining
        installed one becomes the default (WSL picks a new default too)."""
        with self._transaction() as db:
            row = db.execute("SELECT owner_uid FROM distributions WHERE guid = ?", (guid,))
            found = row.fetchone()
            if found is None:
                return
            owner = found["owner_uid"]
            db.execute("DELETE FROM distributions WHERE guid = ?", (guid,))
            db.execute("DELETE FROM first_run WHERE guid = ?", (guid,))
            if self._default_of(db, owner) in (guid, None):
                successor = db.execute(
                    "SELECT guid FROM distributions WHERE owner_uid = ? AND state = ?"
                    " ORDER BY created, name_key LIMIT 1",
                    (owner, INSTALLED),
                ).fetchone()
                self._set_default(db, owner, None if successor is None else successor["guid"])

    # Users -------------------------------------------------------------------

    def user(self, uid: int) -> UserSettings:
        row = self._db.execute("SELECT * FROM users WHERE uid = ?", (uid,)).fetchone()
        if row is None:
            return UserSettings(uid, None, DEFAULT_VERSION)
        return UserSettings(uid, row["default_distribution"], row["default_version"])

    def set_default(self, uid: int, guid: str | None) -> None:
        with self._transaction() as db:
            self._set_default(db, uid, guid)

    def set_default_version(self, uid: int, version: int) -> None:
        self._db.execute(
            "INSERT INTO users (uid, default_version) VALUES (?, ?)"
            " ON CONFLICT(uid) DO UPDATE SET default_version = excluded.default_version",
            (uid, version),
        )

    @staticmethod
    def _default_of(db: sqlite3.Connection, uid: int) -> str | None:
        row = db.execute("SELECT default_distribution FROM users WHERE uid = ?", (uid,)).fetchone()
        return None if row is None else row["default_distribution"]

    @staticmethod
    def _set_default(db: sqlite3.Connection, uid: int, guid: str | None) -> None:
        db.execute(
            "INSERT INTO users (uid, default_distribution) VALUES (?, ?)"
            " ON CONFLICT(uid) DO UPDATE SET default_distribution = excluded.default_distribution",
            (uid, guid),
        )


def new_distribution(
    name: str,
    owner_uid: int,
    base_path: str,
    managed_base: bool,
    version: int,
    guid: str,
    identity: tuple[int, int] | None = None,
) -> Distribution:
    return Distribution(
        guid=guid,
        name=name,
        owner_uid=owner_uid,
        base_path=base_path,
        managed_base=managed_base,
        base_dev=None if identity is None else identity[0],
        base_ino=None if identity is None else identity[1],
        version=version,
        default_uid=0,
        flags=FLAG_DEFAULTS,
        state=INSTALLING,
        os_id="",
        os_version_id="",
        created=time.time(),
    )
