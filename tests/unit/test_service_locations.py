"""Root's walks through paths users control (lxss.service.locations), on a scratch tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lxss.service import locations
from lxss.service.locations import LocationError, check_base, make_base, open_host_path

ME = os.getuid()


@pytest.fixture
def base(tmp_path: Path) -> Path:
    os.chmod(tmp_path, 0o755)
    (tmp_path / "loc").mkdir(mode=0o755)
    fd = os.open(tmp_path / "loc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        make_base(fd, locations.LEVEL, ME, os.getgid())
    finally:
        os.close(fd)
    made = tmp_path / "loc" / locations.LEVEL
    (made / locations.ROOTFS).mkdir()
    return made


def test_a_base_is_made_private_and_never_over_something_there(base: Path) -> None:
    assert base.stat().st_mode & 0o777 == 0o700
    fd = os.open(base.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError):
            make_base(fd, locations.LEVEL, ME, os.getgid())
    finally:
        os.close(fd)


def test_the_base_registered_passes_and_a_replaced_one_does_not(base: Path) -> None:
    identity = check_base(str(base), ME, None)
    assert check_base(str(base), ME, identity) == identity
    os.rename(base, base.with_name("old"))
    base.mkdir(mode=0o700)
    (base / locations.ROOTFS).mkdir()
    with pytest.raises(LocationError, match="not the directory registered"):
        check_base(str(base), ME, identity)


def test_links_are_never_followed(base: Path, tmp_path: Path) -> None:
    (tmp_path / "via").symlink_to(base.parent)
    with pytest.raises(LocationError, match="symbolic link"):
        open_host_path(str(tmp_path / "via" / locations.LEVEL), ME)
    os.rmdir(base / locations.ROOTFS)
    (base / locations.ROOTFS).symlink_to("/")
    with pytest.raises(LocationError, match="not a directory"):
        check_base(str(base), ME, None)


def test_a_parent_others_may_change_is_refused_unless_sticky(base: Path) -> None:
    os.chmod(base.parent, 0o777)
    with pytest.raises(LocationError, match="can be changed by other users"):
        check_base(str(base), ME, None)
    os.chmod(base.parent, 0o1777)  # as /tmp: others' entries are not theirs to rename
    check_base(str(base), ME, None)


def test_a_base_of_someone_else_is_refused(base: Path) -> None:
    with pytest.raises(LocationError, match="belongs to uid"):
        check_base(str(base), ME + 1, None)


def test_a_missing_tree_says_so(base: Path) -> None:
    os.rmdir(base / locations.ROOTFS)
    with pytest.raises(LocationError, match="holds no rootfs"):
        check_base(str(base), ME, None)
    with pytest.raises(LocationError, match="no such file"):
        check_base(str(base.with_name("gone")), ME, None)
