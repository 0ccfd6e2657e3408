"""[automount] options: what applies to the host's bind mount, and what is warned about."""

from __future__ import annotations

from lxss.guest import automount
from lxss.linux import syscalls as sc


def test_options_that_apply_become_mount_attributes() -> None:
    flags, warnings = automount.parse_options("ro, noexec,nodev,nosuid,rw,exec")
    assert flags == sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOEXEC | sc.MOUNT_ATTR_NODEV | (
        sc.MOUNT_ATTR_NOSUID
    )
    assert warnings == []


def test_drvfs_options_and_unknown_ones_warn() -> None:
    flags, warnings = automount.parse_options("metadata,uid=1000,gid=1000,umask=22,fmask=11,bogus")
    assert flags == 0
    assert len(warnings) == 6
    assert "uid=1000 does not apply" in warnings[1]
    assert "unknown option 'bogus'" in warnings[5]


def test_no_options() -> None:
    assert automount.parse_options(None) == (0, [])
    assert automount.parse_options("") == (0, [])


def test_the_host_appears_at_root_plus_host() -> None:
    assert automount.mount_point("/mnt/") == "/mnt/host"
    assert automount.mount_point("/") == "/host"
