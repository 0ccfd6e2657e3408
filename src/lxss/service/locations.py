"""Where distributions live: making their base directories and checking them before use.

A distribution's base directory holds its tree (`rootfs/`). lxssd always makes
that directory itself, 0700 and owned by the owner, and records its identity
(st_dev, st_ino): in the service's storage (`<state>/<uid>/<guid>`) or, for an
import into a location of the user's, as `<location>/distribution`. So:

- other host users can never reach a distribution's files (its set-uid
  programs among them), whatever the location's own modes;
- a failed import removes only that directory, which it made, and never a tree
  that was there before;
- before every start, export or move, the directory found at the recorded path
  must be the one registered, reached without a symbolic link, owned by the
  owner, below directories nobody else can change: a tree that disappeared and
  was recreated by someone else is refused, not booted as the owner's.

These are root's walks through paths users control: every step opens one
component with O_NOFOLLOW relative to the last, so no link is ever followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from typing import Final

from lxss.service.registry import Distribution, Registry

LEVEL: Final = "distribution"  # the directory lxssd makes inside a user's location
ROOTFS: Final = "rootfs"

_STEP: Final = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC


class LocationError(Exception):
    """A path that cannot safely be used; the message says why, for the user."""


Identity = tuple[int, int]


def identity_of(st: os.stat_result) -> Identity:
    return st.st_dev, st.st_ino


def _others_can_change(st: os.stat_result, owner_uid: int) -> bool:
    """Whether someone but root and *owner_uid* may rename or replace entries of a directory."""
    if st.st_uid not in (0, owner_uid):
        return True
    return bool(st.st_mode & 0o022) and not st.st_mode & stat.S_ISVTX


def open_host_path(path: str, owner_uid: int) -> int:
    """An O_PATH descriptor of the directory *path*, reached from the host's "/" one
    component at a time without following a link, every ancestor owned by root or the
    owner and changeable by nobody else (a sticky /tmp is fine: its entries stay theirs)."""
    if not os.path.isabs(path):
        raise LocationError(f"{path} is not an absolute path")
    fd = os.open("/", _STEP)
    walked = "/"
    try:
        for part in [p for p in path.split("/") if p]:
            st = os.fstat(fd)
            if _others_can_change(st, owner_uid):
                raise LocationError(
                    f"{walked} can be changed by other users (owner uid {st.st_uid}, mode"
                    f" {stat.S_IMODE(st.st_mode):04o}), so what is inside it cannot be trusted"
                )
            if part == "..":
                raise LocationError(f"{path} has a '..' in it")
            try:
                next_fd = os.open(part, _STEP, dir_fd=fd)
            except OSError as e:
                reason = "is a symbolic link" if e.errno in (errno.ENOTDIR, errno.ELOOP) else ""
                if not reason:
                    try:
                        if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                            reason = "is a symbolic link"
                    except OSError:
                        pass
                walked = os.path.join(walked, part)
                raise LocationError(f"{walked} {reason or str(e.strerror).lower()}") from None
            os.close(fd)
            fd = next_fd
            walked = os.path.join(walked, part)
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):
            raise LocationError(f"{path} is a symbolic link")
        return fd
    except BaseException:
        os.close(fd)
        raise


def check_base(path: str, owner_uid: int, expected: Identity | None) -> Identity:
    """Check that *path* is the owner's base directory registered as *expected* (None: not
    recorded yet) and holds a real `rootfs/`; its identity."""
    fd = open_host_path(path, owner_uid)
    try:
        st = os.fstat(fd)
        if st.st_uid != owner_uid:
            raise LocationError(f"{path} belongs to uid {st.st_uid}, not to its owner")
        if expected is not None and identity_of(st) != expected:
            raise LocationError(f"{path} is not the directory registered (removed or replaced)")
        try:
            root = os.stat(ROOTFS, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            raise LocationError(f"{path} holds no {ROOTFS}/ (it was removed)") from None
        if not stat.S_ISDIR(root.st_mode):
            raise LocationError(f"{path}/{ROOTFS} is not a directory")
        return identity_of(st)
    finally:
        os.close(fd)


def host_path_of(fd: int, owner_uid: int) -> str:
    """The host's path to the directory open on *fd*, proved by reaching the same directory
    from the host's "/". A descriptor opened in another mount namespace (a distribution's)
    names a path of that namespace, which on the host may be somebody else's directory."""
    path = os.readlink(f"/proc/self/fd/{fd}")
    wanted = identity_of(os.fstat(fd))
    try:
        found_fd = open_host_path(path, owner_uid)
    except LocationError as e:
        raise LocationError(f"the install location cannot be used: {e}") from None
    try:
        found = identity_of(os.fstat(found_fd))
    finally:
        os.close(found_fd)
    if found != wanted:
        raise LocationError(
            f"the install location is not the directory {path} of the host (was it opened"
            " inside a distribution?); give a path as the host sees it"
        )
    return path


def make_base(parent_fd: int, name: str, uid: int, gid: int) -> Identity:
    """Create *name* in *parent_fd*: 0700, owned by uid:gid; its identity. FileExistsError
    if anything of that name is there (it is never touched)."""
    os.mkdir(name, 0o700, dir_fd=parent_fd)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, dir_fd=parent_fd)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o700)  # whatever the umask
        return identity_of(os.fstat(fd))
    finally:
        os.close(fd)


def remove_base(path: str, owner_uid: int, expected: Identity | None) -> None:
    """Remove the (emptied) base directory *path* that lxssd made, if it is still the one
    registered; OSError (ENOTEMPTY...) if it cannot be."""
    parent, name = os.path.split(path)
    try:
        parent_fd = open_host_path(parent, owner_uid)
    except LocationError as e:
        if not os.path.lexists(parent):
            return  # gone with its parent (a location in /tmp after a reboot)
        raise OSError(errno.EPERM, str(e)) from None
    try:
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if expected is not None and identity_of(st) != expected:
            raise OSError(errno.EPERM, f"{path} is not the directory lxssd made")
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(name, dir_fd=parent_fd)
    finally:
        os.close(parent_fd)


def registered_identity(distribution: Distribution) -> Identity | None:
    """The base directory's identity recorded at registration (None for an older row)."""
    if distribution.base_dev is None or distribution.base_ino is None:
        return None
    return distribution.base_dev, distribution.base_ino


def check_files(
    registry: Registry, distribution: Distribution, failure: Callable[[str], Exception]
) -> None:
    """Refuse (with *failure*) a distribution whose files are not the ones registered.
    A row from before identities were recorded gets its identity now, once the directory
    has passed every other check."""
    expected = registered_identity(distribution)
    try:
        found = check_base(distribution.base_path, distribution.owner_uid, expected)
    except (LocationError, OSError) as e:
        raise failure(
            f"its files cannot be used: {e}; lxss --unregister {distribution.name}"
            " removes the registration"
        ) from None
    if expected is None:
        registry.set_base(distribution.guid, distribution.base_path, found)
