"""Mount plans: a distribution's root file system as a list of operations.

Each operation can describe itself, so a plan can be printed (and checked by
tests) without running it. mini_init builds the plan for a distribution and
applies it in the distribution's new mount namespace, before pivot_root.

Everything happens inside the owner's user namespace, which decides what is
possible: no device node can be created (mknod needs the host's
CAP_MKNOD), so /dev is a tmpfs with the host's harmless character devices
bind-mounted in, and a private devpts instance for ptys.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from typing import Final, Protocol

from lxss.linux import syscalls as sc

# The host devices a distribution may reach: all of them are safe for anyone.
DEVICES: Final = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS: Final = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)
NOSUID_NODEV_NOEXEC: Final = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
_NOSUID_NODEV_NOEXEC: Final = NOSUID_NODEV_NOEXEC


class Operation(Protocol):
    def describe(self) -> str: ...

    def apply(self) -> None: ...


def _mkdir(path: str, mode: int = 0o755) -> None:
    with contextlib.suppress(FileExistsError):
        os.makedirs(path, mode)


@dataclass(frozen=True)
class Mount:
    source: str | None
    target: str
    fstype: str | None = None
    flags: int = 0
    data: str | None = None

    def describe(self) -> str:
        return f"mount {self.fstype or 'bind'} {self.source} on {self.target} flags={self.flags:#x}"

    def apply(self) -> None:
        _mkdir(self.target)
        sc.mount(self.source, self.target, self.fstype, self.flags, self.data)


@dataclass(frozen=True)
class BindFile:
    """Bind a host file (a device node) onto an empty file created for it."""

    source: str
    target: str

    def describe(self) -> str:
        return f"bind file {self.source} on {self.target}"

    def apply(self) -> None:
        fd = os.open(self.target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        os.close(fd)
        sc.mount(self.source, self.target, None, sc.MS_BIND)


@dataclass(frozen=True)
class Remount:
    """Change the flags of an existing bind mount (e.g. make it read-only)."""

    target: str
    flags: int

    def describe(self) -> str:
        return f"remount {self.target} flags={self.flags:#x}"

    def apply(self) -> None:
        sc.mount(None, self.target, None, sc.MS_REMOUNT | sc.MS_BIND | self.flags)


@dataclass(frozen=True)
class Detach:
    """Unmount what is mounted at *path*: every mount stacked there, with its submounts."""

    path: str

    def describe(self) -> str:
        return f"detach {self.path}"

    def apply(self) -> None:
        for _ in range(MAX_STACKED):
            try:
                sc.umount2(self.path, sc.MNT_DETACH)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ENOENT):  # nothing (more) mounted there
                    return
                raise


MAX_STACKED: Final = 16  # mounts one Detach takes off a single point


@dataclass(frozen=True)
class Propagation:
    target: str
    flags: int

    def describe(self) -> str:
        return f"propagation {self.target} flags={self.flags:#x}"

    def apply(self) -> None:
        sc.mount(None, self.target, None, self.flags)


@dataclass(frozen=True)
class Symlink:
    target: str
    link: str

    def describe(self) -> str:
        return f"symlink {self.link} -> {self.target}"

    def apply(self) -> None:
        with contextlib.suppress(FileExistsError):
            os.symlink(self.target, self.link)


@dataclass(frozen=True)
class Directory:
    path: str
    mode: int
    keep_existing: bool = False  # a path already there (a directory, a link) is the tree's

    def describe(self) -> str:
        missing = " if missing" if self.keep_existing else ""
        return f"mkdir {self.path} mode={self.mode:o}{missing}"

    def needed(self) -> bool:
        """False for a path to keep that is there already (even a symlink, which the plan's
        guard would refuse to make anything at, and nothing is made)."""
        return not (self.keep_existing and os.path.lexists(self.path))

    def apply(self) -> None:
        _mkdir(self.path, self.mode)
        os.chmod(self.path, self.mode)


@dataclass(frozen=True)
class RootLayout:
    """What a distribution's root gets, decided by the VM and /etc/wsl.conf."""

    root: str
    shared_dir: str  # the VM's /mnt/wsl tmpfs (shared between its distributions)
    own_network: bool  # a network namespace of its own: sysfs can be mounted fresh
    host_mount: str | None  # where the host's root appears ("/mnt/host"), None: nowhere
    # lxss's own mounts in the VM's tree (its scratch directory), kept out of the host
    # mount: it shows the host's mounts, not lxss's runtime ones. (Not the VM's /proc: the
    # host's under it, which a user namespace may not unmount, lists the host's processes.)
    vm_mounts: tuple[str, ...] = ()
    # The sysfs to bind: the host's, or (own_network) the one mini_init mounted for the
    # VM's network namespace. A distribution's user namespace does not own the VM's
    # network namespace, so it may not mount a sysfs itself.
    sys_source: str = "/sys"
    # What /mnt/host binds: "/" itself, or a copy of it prepared by `host_view_plan` (a
    # distribution in a user namespace of its own cannot unmount the copy's submounts:
    # they are locked, so they are taken off before).
    host_source: str = "/"
    # The host directory of lxss's native tools (lxss-host-exec, lxsspath), bound read-only
    # at /run/lxss/bin; None when they were not built.
    tools_dir: str | None = None


def host_view_plan(staging: str, vm_mounts: tuple[str, ...]) -> list[Operation]:
    """The host's tree bound at *staging* without lxss's runtime mounts (see RootLayout)."""
    plan: list[Operation] = [Mount("/", staging, None, sc.MS_BIND | sc.MS_REC)]
    return plan + [Detach(f"{staging}{path}") for path in sorted(vm_mounts) if path != "/"]


def distribution_plan(layout: RootLayout) -> list[Operation]:
    """The mounts of a distribution's root, in order, all below *layout.root*.

    /tmp is not mounted: as in WSL it is the distribution's own directory, on its disk,
    unless its /etc/fstab (init runs `mount -a`) or its systemd mounts something there. A
    tree that has none (a bare archive) gets one, since every program expects it."""
    root = layout.root
    dev = f"{root}/dev"
    plan: list[Operation] = [
        # pivot_root needs the new root to be a mount point.
        Mount(root, root, None, sc.MS_BIND | sc.MS_REC),
    ]
    if layout.host_mount is not None:
        # First, so the host's view holds none of the mounts below.
        target = f"{root}{layout.host_mount}"
        plan += [
            Mount(layout.host_source, target, None, sc.MS_BIND | sc.MS_REC),
            # Slave: a distribution unmounting under /mnt/host must not reach the host.
            Propagation(target, sc.MS_REC | sc.MS_SLAVE),
        ]
        # The distribution's own root (bound above) and the VM's runtime mounts.
        hidden = sorted({root, *layout.vm_mounts})
        if layout.host_source == "/":
            plan += [Detach(f"{target}{path}") for path in hidden if path != "/"]
    plan.append(Mount("proc", f"{root}/proc", "proc", _NOSUID_NODEV_NOEXEC))
    # sysfs may only be mounted by the owner of the network namespace: bind one.
    plan += [
        Mount(layout.sys_source, f"{root}/sys", None, sc.MS_BIND | sc.MS_REC),
        Propagation(f"{root}/sys", sc.MS_REC | sc.MS_SLAVE),
        Remount(f"{root}/sys", sc.MS_RDONLY | _NOSUID_NODEV_NOEXEC),
    ]
    plan.append(Mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "mode=755,size=4m"))
    plan += [BindFile(f"/dev/{name}", f"{dev}/{name}") for name in DEVICES]
    plan += [
        Mount("devpts", f"{dev}/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        Mount("tmpfs", f"{dev}/shm", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777"),
        Mount("mqueue", f"{dev}/mqueue", "mqueue", _NOSUID_NODEV_NOEXEC),
    ]  # fmt: skip
    plan += [Symlink(target, f"{dev}/{name}") for name, target in DEV_LINKS]
    plan += [
        Mount("tmpfs", f"{root}/run", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=755"),
        Directory(f"{root}/run/lock", 0o1777),
        Directory(f"{root}/run/user", 0o755),
    ]
    if layout.tools_dir is not None:
        tools = f"{root}/run/lxss/bin"
        plan += [
            Mount(layout.tools_dir, tools, None, sc.MS_BIND),
            Remount(tools, sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV),
        ]
    plan += [
        Mount(layout.shared_dir, f"{root}/mnt/wsl", None, sc.MS_BIND | sc.MS_REC),
        Directory(f"{root}/tmp", 0o1777, keep_existing=True),
    ]
    return plan


def _where(operation: Operation) -> str:
    for name in ("link", "path", "target"):  # a Symlink's target is its content
        value = getattr(operation, name, None)
        if isinstance(value, str):
            return value
    raise TypeError(f"{operation!r} names no path")


def check_inside(root: str, path: str) -> None:
    """Refuse *path* if a component below *root* is a symlink.

    The plan runs before pivot_root, where the distribution's absolute symlinks
    would resolve on the host's tree: `/mnt -> /etc` must not make lxss create
    or mount anything outside the distribution.
    """
    relative = os.path.relpath(path, root)
    if relative == ".":
        return
    if relative.startswith(".."):
        raise OSError(errno.EXDEV, f"{path} is outside the distribution's root")
    current = root
    for part in relative.split("/"):
        current = os.path.join(current, part)
        if os.path.islink(current):
            inside = "/" + os.path.relpath(current, root)
            raise OSError(
                errno.ELOOP, f"the distribution's {inside} is a symlink; lxss mounts there"
            )


def apply_plan(plan: list[Operation], root: str, log: list[str] | None = None) -> None:
    for operation in plan:
        if isinstance(operation, Directory) and not operation.needed():
            continue
        check_inside(root, _where(operation))
        if log is not None:
            log.append(operation.describe())
        operation.apply()


def pivot_into(root: str) -> None:
    """Make *root* the root directory and drop every view of the old one.

    pivot_root(".", ".") stacks the old root under the new one at "/"; the
    lazy unmount then removes it, so no path leads back to the host's tree
    (see pivot_root(2), "NOTES").
    """
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")
