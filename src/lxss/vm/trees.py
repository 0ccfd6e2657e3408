"""The trees a user's distributions start from (see lxss.linux.idmap).

At each start the service opens the distribution's stored tree — with the owner's file
system ids, so that no path the owner could not reach is opened — and hands mini_init a
detached copy of it. The distribution's boot process reads its default user from that
copy and asks (MapIdentity) for the tree id-mapped so that this user is the owner; only
the host's root may id-map a mount of the host's file systems, hence the round trip.

The user namespaces that describe the id-mapped trees are kept per (mapping, uid, gid):
a few descriptors per user, made once per utility VM (closed when it stops).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Iterator
from typing import Final

from lxss.linux import syscalls as sc
from lxss.linux.idmap import (
    is_identity,
    make_user_namespace,
    map_text,
    mount_lines,
    open_idmapped_tree,
)
from lxss.linux.subids import Mapping
from lxss.protocol import messages as m
from lxss.vm.backend import Link

MAX_NAMESPACES: Final = 8


@contextlib.contextmanager
def _as_owner(uid: int, gid: int) -> Iterator[None]:
    """The calling thread's file system ids are the owner's meanwhile (setfsuid(2) is the
    thread's alone: the service's other threads keep root's)."""
    previous_gid = sc.setfsgid(gid)
    previous_uid = sc.setfsuid(uid)
    try:
        yield
    finally:
        sc.setfsuid(previous_uid)
        sc.setfsgid(previous_gid)


class Trees:
    """One user's: opening stored trees and id-mapping them."""

    def __init__(self, owner_uid: int, owner_gid: int) -> None:
        self.owner_uid = owner_uid
        self.owner_gid = owner_gid
        self._namespaces: OrderedDict[tuple[Mapping, int, int], int] = OrderedDict()

    def open_stored(self, path: str, mapping: Mapping) -> int:
        """An O_PATH descriptor of the stored tree at *path*, opened as the owner, refused
        unless it is a directory owned by one of the tree's stored ids."""
        with _as_owner(self.owner_uid, self.owner_gid):
            fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        st = os.fstat(fd)
        ids = mapping.uid
        stored = st.st_uid == ids.owner_id or ids.sub_start <= st.st_uid < ids.sub_start + ids.count
        if not stat.S_ISDIR(st.st_mode) or not stored:
            os.close(fd)
            raise OSError(errno.EPERM, f"{path} is not this owner's distribution tree")
        return fd

    def plain(self, stored_fd: int) -> int:
        """A detached copy of the stored tree, as stored (to read the default user from)."""
        return open_idmapped_tree(stored_fd, None)

    def mapped(self, stored_fd: int, mapping: Mapping, uid: int, gid: int) -> int | None:
        """A detached copy of the stored tree where *uid* and *gid* are the owner's face, or
        None when that is the stored mapping itself (root is the default user, the owner
        plays itself)."""
        uid_lines, gid_lines = mount_lines(mapping.uid, uid), mount_lines(mapping.gid, gid)
        if is_identity(uid_lines) and is_identity(gid_lines):
            return None
        key = (mapping, uid, gid)
        userns = self._namespaces.get(key)
        if userns is None:
            userns = make_user_namespace(map_text(uid_lines), map_text(gid_lines))
            self._namespaces[key] = userns
            while len(self._namespaces) > MAX_NAMESPACES:
                os.close(self._namespaces.popitem(last=False)[1])
        else:
            self._namespaces.move_to_end(key)
        return open_idmapped_tree(stored_fd, userns)

    async def start_result(
        self, link: Link, stored: int, mapping: Mapping, timeout: float
    ) -> m.MiniInitCreateInstanceResult:
        """Answer the starting distribution's MapIdentity (once) with its id-mapped tree,
        then return its CreateInstanceResult."""
        expected: tuple[type[m.Message], ...] = (
            m.MiniInitCreateInstanceResult,
            m.MiniInitMapIdentity,
        )
        while True:
            header, message, fds = await link.receive_with_header(expected, timeout=timeout)
            for fd in fds:
                os.close(fd)
            if isinstance(message, m.MiniInitCreateInstanceResult):
                return message
            assert isinstance(message, m.MiniInitMapIdentity)
            expected = (m.MiniInitCreateInstanceResult,)  # asked once; a second ask is hostile
            try:
                tree = self.mapped(stored, mapping, message.uid, message.gid)
            except (OSError, ValueError) as e:
                number = e.errno if isinstance(e, OSError) and e.errno else errno.EINVAL
                await link.reply(
                    header,
                    m.MiniInitMapIdentityResponse(result=number, mapped=False, reason=str(e)),
                )
                continue
            reply = m.MiniInitMapIdentityResponse(result=0, mapped=tree is not None, reason="")
            try:
                await link.reply(header, reply, [] if tree is None else [tree])
            finally:
                if tree is not None:
                    os.close(tree)

    def close(self) -> None:
        for fd in self._namespaces.values():
            os.close(fd)
        self._namespaces.clear()
