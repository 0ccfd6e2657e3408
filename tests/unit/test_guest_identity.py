"""Who a distribution's default user is, read from its tree (lxss.guest.identity)."""

from __future__ import annotations

import os
from pathlib import Path

from lxss.guest.identity import choose_default, default_ids
from lxss.guest.users import parse_passwd

PASSWD = (
    "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:50::/:/bin/sh\n"
)


def test_wsl_conf_user_wins_then_the_registry_then_the_uid_itself() -> None:
    users = parse_passwd(PASSWD)
    assert choose_default(users, "bob", 1000) == (1001, 50)
    assert choose_default(users, "1001", 0) == (1001, 50)
    assert choose_default(users, "nobody-here", 1000) == (1000, 1000)
    assert choose_default(users, None, 0) == (0, 0)
    assert choose_default(users, None, 1234) == (1234, 1234), "no entry: its own group"


def test_the_tree_is_read_inside_its_root(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/wsl.conf").write_text("[user]\ndefault = bob\n")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        assert default_ids(fd, 0) == (1001, 50)
        # An absolute symlink resolves in the tree, not on the host.
        (tmp_path / "etc/wsl.conf").unlink()
        (tmp_path / "etc/wsl.conf").symlink_to("/etc/other.conf")
        (tmp_path / "etc/other.conf").write_text("[user]\ndefault = alice\n")
        assert default_ids(fd, 0) == (1000, 1000)
        (tmp_path / "etc/passwd").unlink()
        (tmp_path / "etc/passwd").symlink_to("/../../../../etc/passwd")
        assert default_ids(fd, 0) == (0, 0), "no passwd in the tree: the host's is not read"
    finally:
        os.close(fd)
