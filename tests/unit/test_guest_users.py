"""A distribution's users and groups, parsed from its own files (lxss.guest.users)."""

from __future__ import annotations

from pathlib import Path

from lxss.guest.users import Group, User, UserDatabase, parse_group, parse_passwd

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
# a comment:x:1:1::/:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken:x:notanumber:1::/:/bin/sh
short:x:2:2
alice:x:1000:1000:Alice,,,:/home/alice:/bin/sh
nohome:x:1001:1001:::/bin/sh
1002:x:1003:1003:named by digits:/home/digits:/bin/sh

"""

GROUP = """\
root:x:0:
tty:x:5:alice
# staff:x:50:alice
wheel:x:10:bob,alice,
alice:x:1000:
bad:x:nan:alice
short:x:3
"""


def _database(tmp_path: Path, passwd: str | None = PASSWD, group: str | None = GROUP) -> Path:
    (tmp_path / "etc").mkdir()
    if passwd is not None:
        (tmp_path / "etc/passwd").write_text(passwd)
    if group is not None:
        (tmp_path / "etc/group").write_text(group)
    return tmp_path


def test_parse_passwd_keeps_well_formed_entries_in_order() -> None:
    users = parse_passwd(PASSWD)
    assert [u.name for u in users] == ["root", "daemon", "alice", "nohome", "1002"]
    assert users[0] == User("root", 0, 0, "/root", "/bin/bash")
    assert users[2] == User("alice", 1000, 1000, "/home/alice", "/bin/sh")


def test_parse_passwd_gives_an_empty_home_as_root_directory() -> None:
    (nohome,) = [u for u in parse_passwd(PASSWD) if u.name == "nohome"]
    assert nohome.home == "/"
    assert nohome.uid == 1001


def test_parse_passwd_of_nothing_is_empty() -> None:
    assert parse_passwd("") == []
    assert parse_passwd("\n\n# only:x:0:0::/:/bin/sh\n") == []


def test_parse_group_members_and_bad_lines() -> None:
    groups = parse_group(GROUP)
    assert [g.name for g in groups] == ["root", "tty", "wheel", "alice"]
    assert groups[1] == Group("tty", 5, ("alice",))
    # A trailing comma names no extra member.
    assert groups[2] == Group("wheel", 10, ("bob", "alice"))
    assert groups[0].members == ()


def test_lookup_by_name_and_by_number(tmp_path: Path) -> None:
    db = UserDatabase(str(_database(tmp_path)))
    alice = db.lookup("alice")
    assert alice is not None and alice.uid == 1000
    by_number = db.lookup("1000")
    assert by_number == alice
    assert db.lookup("nobody-here") is None
    assert db.lookup("4242") is None


def test_a_name_made_of_digits_wins_over_the_uid_it_spells(tmp_path: Path) -> None:
    db = UserDatabase(str(_database(tmp_path)))
    user = db.lookup("1002")
    assert user is not None
    assert (user.name, user.uid) == ("1002", 1003)


def test_root_exists_even_without_a_passwd_file(tmp_path: Path) -> None:
    db = UserDatabase(str(_database(tmp_path, passwd=None, group=None)))
    assert db.users == [] and db.groups == []
    root = db.lookup("root")
    assert root is not None and (root.uid, root.gid, root.shell) == (0, 0, "/bin/sh")
    assert db.by_uid(0) == root
    assert db.by_uid(1000) is None
    assert db.lookup("alice") is None


def test_root_from_the_file_is_preferred_to_the_fallback(tmp_path: Path) -> None:
    db = UserDatabase(str(_database(tmp_path)))
    root = db.by_uid(0)
    assert root is not None and root.shell == "/bin/bash"


def test_supplementary_groups_start_with_the_primary_group(tmp_path: Path) -> None:
    db = UserDatabase(str(_database(tmp_path)))
    alice = db.lookup("alice")
    assert alice is not None
    # Primary first; "alice" (gid 1000) is not repeated; the commented staff group is ignored.
    assert db.supplementary_groups(alice) == [1000, 5, 10]
    root = db.lookup("root")
    assert root is not None
    assert db.supplementary_groups(root) == [0]


def test_group_id(tmp_path: Path) -> None:
    db = UserDatabase(str(_database(tmp_path)))
    assert db.group_id("wheel") == 10
    assert db.group_id("staff") is None


def test_a_passwd_file_with_unreadable_bytes_still_parses(tmp_path: Path) -> None:
    root = _database(tmp_path, passwd=None)
    (root / "etc/passwd").write_bytes(b"caf\xe9:x:7:7::/home/cafe:/bin/sh\n")
    db = UserDatabase(str(root))
    assert [u.uid for u in db.users] == [7]
