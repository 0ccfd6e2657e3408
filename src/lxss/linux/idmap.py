"""The default user is the owner: a distribution's own user namespace and its id-mapped tree.

Three mappings are at work (see docs/security.md, "Identity"):

- *stored*: how a distribution's tree sits on the host's disk, whoever its default user
  is (`IdMap.lines`): its id 0 is the owner, its ids 1..65535 the owner's subordinate
  range. Imports, exports and removals (the archive worker) use it, so a change of
  default user, an export and re-import or a restart never touch a file's owner.
- *the VM's*: the utility VM's user namespace (`IdMap.run_lines`), the stored mapping
  with the owner replaced by its face (the owner itself, except for root's distributions
  when they are mapped).
- *the distribution's*: a user namespace of its own, nested in the VM's, where its
  default user D and its root trade places (`swap_lines`): D is the VM's id 0 — the
  owner on the host — and root is the VM's id D, an id of the owner's range.

The distribution's root file system is an id-mapped mount of the stored tree
(mount_setattr(2), MOUNT_ATTR_IDMAP), made by the service, which alone may (the tree's
file system belongs to the host's user namespace), and moved into the distribution's
mount namespace by its init: a file stored for inside id N shows as owned by N and a
file N creates is stored as N's stored id (`mount_lines`).
"""

from __future__ import annotations

import errno
import os
import select
from typing import Final

from lxss.linux import syscalls as sc
from lxss.linux.subids import RANGE_SIZE, IdMap

Lines = tuple[tuple[int, int, int], ...]
"""An id map as (first id, mapped to, count) lines, the shape of /proc/PID/uid_map."""

HANDSHAKE_TIMEOUT: Final = 10.0


def swap_lines(default: int, count: int = RANGE_SIZE) -> Lines:
    """The distribution's map onto the VM's ids: *default* and 0 trade places.

    No line spans the VM's id 0 and its ids 1..: the kernel wants each line's ids inside
    one line of the parent namespace's map (the owner, then the range)."""
    if not 0 <= default < count:
        raise ValueError(
            f"the default user's id {default} is not one of the distribution's ids (0-{count - 1})"
        )
    if default == 0:
        return ((0, 0, 1), (1, 1, count - 1))
    lines = [(0, default, 1), (default, 0, 1)]
    if default > 1:
        lines.append((1, 1, default - 1))
    if default + 1 < count:
        lines.append((default + 1, default + 1, count - default - 1))
    return tuple(sorted(lines))


def invert(lines: Lines) -> Lines:
    return tuple(sorted((to, first, count) for first, to, count in lines))


def compose(first: Lines, then: Lines) -> Lines:
    """x -> z where *first* maps x to y and *then* maps y to z (ids *then* lacks drop out)."""
    out: list[tuple[int, int, int]] = []
    for a, b, n in first:
        for c, d, m in then:
            lo, hi = max(b, c), min(b + n, c + m)
            if lo < hi:
                out.append((a + lo - b, d + lo - c, hi - lo))
    merged: list[tuple[int, int, int]] = []
    for a, b, n in sorted(out):
        if merged and merged[-1][0] + merged[-1][2] == a and merged[-1][1] + merged[-1][2] == b:
            pa, pb, pn = merged.pop()
            merged.append((pa, pb, pn + n))
        else:
            merged.append((a, b, n))
    return tuple(merged)


def mount_lines(ids: IdMap, default: int) -> Lines:
    """The id-mapped tree's map: stored host id -> the host id it shows as at run time."""
    stored_to_inside = invert(ids.lines())
    inside_to_vm = swap_lines(default, ids.count)
    return compose(compose(stored_to_inside, inside_to_vm), ids.run_lines())


def is_identity(lines: Lines) -> bool:
    return all(first == to for first, to, _ in lines)


def map_text(lines: Lines) -> str:
    return "".join(f"{first} {to} {count}\n" for first, to, count in lines)


# The service's side ---------------------------------------------------------------------


def make_user_namespace(uid_text: str, gid_text: str) -> int:
    """A descriptor of a new user namespace with these maps (to id-map mounts with).

    A forked child unshares it and waits; we write its maps and open it, then let the
    child go: the namespace lives on as long as the descriptor does.
    """
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only makes system calls and exits
        code = 1
        try:
            os.close(ready_r)
            os.close(hold_w)
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(ready_w, b"U")
            os.read(hold_r, 1)  # returns at EOF: the parent is done with us
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(hold_r)
    try:
        if _read_token(ready_r, HANDSHAKE_TIMEOUT, "a user namespace to be made") != b"U":
            raise ChildProcessError("the helper making a user namespace exited early")
        write_maps(pid, uid_text, gid_text)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(hold_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def open_idmapped_tree(directory_fd: int, userns_fd: int | None) -> int:
    """A detached copy of the mount at *directory_fd*, id-mapped by *userns_fd* (or not,
    when None), to be moved into a distribution's mount namespace."""
    tree = sc.open_tree(directory_fd, sc.OPEN_TREE_CLONE)
    try:
        if userns_fd is not None:
            sc.mount_setattr_idmap(tree, userns_fd)
    except BaseException:
        os.close(tree)
        raise
    return tree


# The guest's side -----------------------------------------------------------------------


def write_maps(pid: int, uid_text: str, gid_text: str) -> None:
    """Write *pid*'s uid_map and gid_map; each must be written in one write(2)."""
    for name, text in (("uid_map", uid_text), ("gid_map", gid_text)):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        except OSError as e:
            raise OSError(e.errno, f"{name} {text.strip()!r}: {e.strerror}") from None
        finally:
            os.close(fd)


def enter_nested_user_namespace(uid_lines: Lines, gid_lines: Lines) -> None:
    """Move the (single-threaded) caller into a new user namespace nested in its own, with
    these maps (in the current namespace's ids), and become its root.

    Only a process outside the new namespace may write such maps, so a forked mapper
    does, while we wait. Our /proc files must be our own for it to open them: we are
    dumpable for that moment only (the mapper and we are the owner; nothing else of the
    owner's can see us: we are in no distribution's pid namespace).
    """
    me = os.getpid()
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked mapper
        code = 1
        try:
            os.close(ready_w)
            os.close(done_r)
            if _read_token(ready_r, HANDSHAKE_TIMEOUT, "the namespace") == b"U":
                try:
                    write_maps(me, map_text(uid_lines), map_text(gid_lines))
                    os.write(done_w, b"M")
                    code = 0
                except OSError as e:  # said in the error the distribution's start reports
                    os.write(done_w, f"E{e}".encode()[:512])
        finally:
            os._exit(code)
    os.close(ready_r)
    os.close(done_w)
    try:
        sc.set_dumpable(True)
        try:
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(ready_w, b"U")
            token = _read_token(done_r, HANDSHAKE_TIMEOUT, "the distribution's id maps", 513)
        finally:
            sc.set_dumpable(False)
        if token != b"M":
            why = token[1:].decode(errors="replace") or "the mapper exited"
            raise OSError(errno.EPERM, f"the distribution's id maps could not be written: {why}")
    finally:
        os.close(ready_w)
        os.close(done_r)
        os.waitpid(pid, 0)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def _read_token(fd: int, timeout: float, what: str, size: int = 1) -> bytes:
    poller = select.poll()  # not select(): the service's descriptors may be past 1024
    poller.register(fd, select.POLLIN)
    if not poller.poll(timeout * 1000):
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
    return os.read(fd, size)


__all__ = [
    "Lines",
    "compose",
    "enter_nested_user_namespace",
    "invert",
    "is_identity",
    "make_user_namespace",
    "map_text",
    "mount_lines",
    "open_idmapped_tree",
    "swap_lines",
    "write_maps",
]
