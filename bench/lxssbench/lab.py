"""The bench's resources, set up on first use and all torn down at the end.

A figure asks the lab for what it needs (a running podman container, the
busybox tree, a bench distribution …). The first request sets it up; a
failure is remembered as the reason and re-raised to every later asker, so a
peer that cannot run here is tried once and reported everywhere with the same
words. Everything set up is registered on one ExitStack, unwound in reverse
order by :meth:`Lab.close` however the run ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import rootfs
from .peers.namespaces import Holder
from .peers.nspawn import Nspawn
from .peers.podman import BenchUser, Podman
from .proc import Unavailable, must, run
from .subject import Lxss, locate

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """Counts and sizes; quick mode only checks that everything still runs."""

    name: str
    warmup: int
    runs: int  # latency figures
    cold_runs: int
    batch: int  # commands per throughput sample
    batch_runs: int
    pipe_bytes: int
    pipe_runs: int
    pty_runs: int
    archive_runs: int
    tree_files: int
    walk_repeat: int  # du -s of the tree this many times per sample
    read_bytes: int
    read_repeat: int  # dd of the big file this many times per sample
    hostfs_runs: int
    memory_runs: int
    debian: bool  # full mode imports a debootstrapped Debian; quick uses busybox


QUICK = Settings(
    "quick",
    warmup=1,
    runs=5,
    cold_runs=3,
    batch=4,
    batch_runs=2,
    pipe_bytes=256 << 20,
    pipe_runs=2,
    pty_runs=3,
    archive_runs=2,
    tree_files=2000,
    walk_repeat=1,
    read_bytes=64 << 20,
    read_repeat=2,
    hostfs_runs=3,
    memory_runs=1,
    debian=False,
)
FULL = Settings(
    "full",
    warmup=3,
    runs=30,
    cold_runs=15,
    batch=40,
    batch_runs=5,
    pipe_bytes=2 << 30,
    pipe_runs=5,
    pty_runs=10,
    archive_runs=7,
    tree_files=20000,
    walk_repeat=5,
    read_bytes=512 << 20,
    read_repeat=16,
    hostfs_runs=10,
    memory_runs=3,
    debian=True,
)

BUSYBOX = "bench-busybox"
DEBIAN = "bench-debian"


@dataclass
class PeerStatus:
    label: str
    status: str  # "works" or "not available: …"
    notes: list[str]


@dataclass
class HostData:
    """Files on the host for the /mnt/host figures."""

    top: Path
    tree: Path
    big: Path


class Lab:
    def __init__(self, settings: Settings, work: Path, lxss: str | None) -> None:
        self.settings = settings
        self.work = work
        self.log = work / "bench.log"
        self.stack = contextlib.ExitStack()
        self._cache: dict[str, Any] = {}
        self.peers: dict[str, PeerStatus] = {}
        path, why = locate(lxss)
        self.lxss = Lxss(path, why, work)
        self.stack.callback(self.lxss.close)

    def close(self) -> None:
        self.stack.close()

    def _once(self, key: str, make: Callable[[], T]) -> T:
        if key in self._cache:
            got = self._cache[key]
            if isinstance(got, Unavailable):
                raise got
            return got  # type: ignore[no-any-return]
        try:
            value = make()
        except Unavailable as exc:
            self._cache[key] = exc
            raise
        self._cache[key] = value
        return value

    def _peer(
        self,
        key: str,
        label: str,
        make: Callable[[], T],
        notes: Callable[[T], list[str]] = lambda _: [],
    ) -> T:
        """A peer: set up once, its status kept for the report's peer table."""
        try:
            value = self._once(key, make)
        except Unavailable as exc:
            self.peers.setdefault(key, PeerStatus(label, f"not available: {exc}", []))
            raise
        self.peers.setdefault(key, PeerStatus(label, "works", notes(value)))
        return value

    # Root filesystems ------------------------------------------------------

    def busybox_root(self) -> Path:
        def make() -> Path:
            root = self.work / "busybox-root"
            rootfs.build_busybox(root)
            return root

        return self._once("busybox-root", make)

    def busybox_tarball(self) -> Path:
        def make() -> Path:
            tarball = self.work / "busybox-rootfs.tar"
            rootfs.make_tarball(self.busybox_root(), tarball)
            tarball.chmod(0o644)
            return tarball

        return self._once("busybox-tarball", make)

    def archive(self) -> tuple[Path, Path, str]:
        """The tarball for import/export figures, its unpacked tree, and a description."""

        def make() -> tuple[Path, Path, str]:
            if not self.settings.debian:
                return self.busybox_tarball(), self.busybox_root(), "busybox rootfs (quick mode)"
            tarball = rootfs.debian_tarball(self.log)
            tree = self.work / "debian-tree"
            tree.mkdir()
            must(["tar", "-C", str(tree), "-xf", str(tarball)], timeout=900)
            size = tarball.stat().st_size / 1e6
            return tarball, tree, f"Debian {rootfs.DEBIAN_SUITE} minbase, {size:.0f} MB tar"

        return self._once("archive", make)

    def host_data(self) -> HostData:
        """A tree of small files and one big file, readable by every user."""

        def make() -> HostData:
            top = self.work / "hostfs"
            tree, big = top / "tree", top / "big.bin"
            per_dir = 100
            for i in range(self.settings.tree_files):
                d = tree / f"d{i // per_dir:04d}"
                if i % per_dir == 0:
                    d.mkdir(parents=True)
                (d / f"f{i:06d}").write_bytes(b"x" * (i % 512))
            chunk = os.urandom(1 << 20)
            with open(big, "wb") as f:
                for _ in range(self.settings.read_bytes >> 20):
                    f.write(chunk)
            return HostData(top, tree, big)

        return self._once("host-data", make)

    # Peers ---------------------------------------------------------------

    def holder(self) -> Holder:
        def make() -> Holder:
            return self.stack.enter_context(Holder(self.busybox_root(), self.work / "holder.log"))

        return self._peer("holder", "unshare + chroot, nsenter (bare namespaces)", make)

    def nspawn(self) -> Nspawn:
        def make() -> Nspawn:
            return self.stack.enter_context(Nspawn(self.busybox_root()))

        return self._peer(
            "nspawn", "systemd-nspawn --register=no --keep-unit", make, lambda n: n.notes
        )

    def bwrap(self) -> Path:
        def make() -> Path:
            if shutil.which("bwrap") is None:
                raise Unavailable("bwrap not installed (Debian package bubblewrap)")
            root = self.busybox_root()
            run(["bwrap", "--ro-bind", str(root), "/", "true"], timeout=30).check("bwrap")
            return root

        return self._peer("bwrap", "bwrap (bubblewrap)", make)

    def bench_user(self) -> BenchUser:
        def make() -> BenchUser:
            user = BenchUser()
            self.stack.callback(user.close)
            return user

        return self._once("bench-user", make)

    def podman(self, *, rootless: bool) -> Podman:
        key = "podman-rootless" if rootless else "podman-rootful"

        def make() -> Podman:
            user = self.bench_user() if rootless else None
            data = self.host_data().top
            return self.stack.enter_context(
                Podman(tarball=self.busybox_tarball(), data=data, user=user, tag=str(os.getpid()))
            )

        return self._peer(
            key,
            f"podman ({'rootless' if rootless else 'rootful'})",
            make,
            lambda p: [f"runtime: {p.runtime}", *p.notes],
        )

    # lxss ------------------------------------------------------------------

    def busybox_distro(self) -> str:
        return self.lxss.distro(BUSYBOX, tarball=self.busybox_tarball(), builtin="busybox")

    def archive_distro(self) -> str:
        """The distribution export figures export: Debian in full mode."""
        if not self.settings.debian:
            return self.busybox_distro()
        return self.lxss.distro(DEBIAN, tarball=self.archive()[0])
