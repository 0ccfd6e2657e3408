"""Distributions lxss builds itself: Debian and Ubuntu with debootstrap, from the host's mirror.

`lxss --install debian[:SUITE]` (or `ubuntu[:SUITE]`) needs no catalog: the service runs
debootstrap from the mirror the machine's apt already uses, adds the first-run setup
(images/first-run.sh, started by /etc/wsl-distribution.conf's [oobe] command), and keeps the
result as a tar file in a machine-wide cache, keyed by family, suite, mirror and day, so the
next install unpacks it in seconds. The tree is then imported like any archive: through the
archive worker, with the owner's rights.

Where debootstrap runs (docs/security.md): as root, because it must create files of every
owner and run the packages' scripts in a chroot, but in namespaces of its own (mount, pid,
UTS, IPC; `unshare --kill-child`), so the /proc and /sys it mounts into the target vanish
with it and no process it starts outlives it; into a root-only cache directory no user can
reach; with the archive's signature checked against the host's keyring (`--keyring` is always
passed, so a missing keyring fails instead of skipping the check). The host's apt sources
choose the mirror, not the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Final

from lxss.config.aptsources import find_mirror, read_apt_sources

log = logging.getLogger(__name__)

BUILD_TIMEOUT: Final = 1800.0  # a slow mirror; debootstrap minbase takes ~30 s on a good one
LOCK_TIMEOUT: Final = BUILD_TIMEOUT + 300.0  # another install building the same image
FIRST_RUN: Final = "/usr/lib/lxss/first-run"
_SCRIPTS: Final = "/usr/share/debootstrap/scripts/"
_IMAGES: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "images")


@dataclass(frozen=True)
class Family:
    name: str  # "debian"
    pretty: str  # "Debian"
    default_suite: str
    keyring: str
    keyring_package: str
    example_mirror: str
    fallback_suites: tuple[str, ...] = ()


FAMILIES: Final = {
    "debian": Family(
        "debian", "Debian", "bookworm", "/usr/share/keyrings/debian-archive-keyring.gpg",
        "debian-archive-keyring", "http://deb.debian.org/debian",
    ),
    "ubuntu": Family(
        "ubuntu", "Ubuntu", "noble", "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
        "ubuntu-keyring", "http://archive.ubuntu.com/ubuntu", ("jammy",),
    ),
}  # fmt: skip

# What the first run and a usable shell need beyond minbase (which has apt, passwd, bash).
INCLUDE: Final = ("sudo", "ca-certificates")

_STAGE_WORDS: Final = frozenset((
    "Retrieving", "Validating", "Extracting", "Unpacking", "Configuring", "Installing",
    "Resolving", "Checking",
))  # fmt: skip


class BuildError(Exception):
    """The build cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class Build:
    family: Family
    suite: str
    mirror: str

    @property
    def label(self) -> str:
        return f"{self.family.pretty} {self.suite}"

    def cache_prefix(self) -> str:
        mirror = hashlib.sha256(self.mirror.encode()).hexdigest()[:12]
        return f"{self.family.name}-{self.suite}-{mirror}-"

    def cache_name(self, day: str) -> str:
        return f"{self.cache_prefix()}{day}.tar"


def is_buildable(source: str) -> bool:
    return source.split(":", 1)[0] in FAMILIES


def plan(source: str) -> Build:
    """The build for "debian", "debian:trixie", "ubuntu"...; BuildError when the machine
    has no mirror of that family configured, or no keyring to check it with."""
    name, _, suite = source.partition(":")
    family = FAMILIES[name]
    suite = suite or _default_suite(family)
    mirror = find_mirror(read_apt_sources(), family.name)
    if mirror is None:
        raise BuildError(
            f"no {family.pretty} mirror is configured on this machine: add one to apt's sources "
            f"(e.g. /etc/apt/sources.list.d/{family.name}.sources with 'Types: deb', "
            f"'URIs: {family.example_mirror}', 'Suites: {suite}', 'Components: main'), "
            f"then run the install again"
        )
    if not suite.replace("-", "").isalnum() or not os.path.exists(_SCRIPTS + suite):
        raise BuildError(f"debootstrap does not know the {family.pretty} suite '{suite}'")
    if not os.path.exists(family.keyring):
        raise BuildError(
            f"checking the {family.pretty} archive's signature needs {family.keyring}: "
            f"apt-get install {family.keyring_package}"
        )
    if shutil.which("debootstrap") is None:
        raise BuildError("building a distribution needs debootstrap: apt-get install debootstrap")
    return Build(family, suite, mirror)


def _default_suite(family: Family) -> str:
    """The family's default suite, or an older one when this debootstrap predates it
    (Debian 12's knows Ubuntu up to jammy)."""
    for suite in (family.default_suite, *family.fallback_suites):
        if os.path.exists(_SCRIPTS + suite):
            return suite
    return family.default_suite


class Progress:
    """Lines for the installing user (a pipe the client reads), never blocking the service:
    a line that does not fit is dropped."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        if fd is not None:
            os.set_blocking(fd, False)

    def say(self, line: str) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, (line + "\n").encode())
        except (BlockingIOError, BrokenPipeError):
            pass  # a slow or departed reader: the build goes on
        except OSError as e:
            log.debug("progress line dropped: %s", e)


async def cached_build(build: Build, cache_dir: str, progress: Progress) -> str:
    """The path of today's cached tar of *build*, building it first if there is none."""
    os.makedirs(cache_dir, 0o700, exist_ok=True)
    os.chmod(cache_dir, 0o700)  # root's alone: the trees inside hold files of every owner
    day = time.strftime("%Y%m%d", time.gmtime())
    path = os.path.join(cache_dir, build.cache_name(day))
    if os.path.exists(path):
        return path
    lock_fd = os.open(os.path.join(cache_dir, build.cache_prefix() + "lock"),
                      os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)  # fmt: skip
    try:
        await _lock(lock_fd, progress, build)
        if not os.path.exists(path):  # another install may have built it meanwhile
            await _build(build, cache_dir, path, progress)
            _prune(cache_dir, build, keep=path)
    finally:
        os.close(lock_fd)  # releases the lock
    return path


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


async def _lock(fd: int, progress: Progress, build: Build) -> None:
    """The build's lock, waited for without blocking the service (another install may be
    building the same image: it is then used, not built twice)."""
    if _try_lock(fd):
        return
    progress.say(f"waiting for another install building {build.label}...")
    deadline = time.monotonic() + LOCK_TIMEOUT
    while not _try_lock(fd):
        if time.monotonic() > deadline:
            raise BuildError(f"another build of {build.label} did not finish")
        await asyncio.sleep(0.5)


def debootstrap_argv(build: Build, target: str) -> list[str]:
    return [
        # Killed with the service (the parent-death signal follows the forking thread: the
        # event loop's); unshare in turn kills debootstrap and its pid namespace with it.
        "setpriv", "--pdeathsig", "KILL", "--",
        "unshare", "--mount", "--uts", "--ipc", "--pid", "--kill-child", "--propagation",
        "private", "--",
        "debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}",
        "--components=main", f"--keyring={build.family.keyring}", build.suite, target,
        build.mirror,
    ]  # fmt: skip


async def _build(build: Build, cache_dir: str, path: str, progress: Progress) -> None:
    work = tempfile.mkdtemp(prefix=".build-", dir=cache_dir)
    try:
        target = os.path.join(work, "root")
        progress.say(f"building {build.label} from {build.mirror} (debootstrap, once a day)")
        started = time.monotonic()
        await _debootstrap(build, target, progress)
        customize(target, build)
        progress.say("packing the built tree for the cache")
        partial = os.path.join(work, "rootfs.tar")
        await _run_checked(
            ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", target,
             "-cf", partial, "."], "tar",
        )  # fmt: skip
        os.rename(partial, path)
        log.info("built %s in %.0f s: %s", build.label, time.monotonic() - started, path)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, work, True)


async def _debootstrap(build: Build, target: str, progress: Progress) -> None:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
    }
    for name in ("http_proxy", "https_proxy", "no_proxy"):  # the machine's, as apt's are
        if name in os.environ:
            env[name] = os.environ[name]
    proc = subprocess.Popen(
        debootstrap_argv(build, target), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    tail: list[str] = []

    def follow() -> None:
        assert proc.stdout is not None
        stage = ""
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail[:] = [*tail[-19:], line]
            kind, _, text = line.partition(": ")
            word = text.split(" ", 1)[0]
            if kind in ("E", "W"):
                progress.say(f"debootstrap: {line}")
            elif kind == "I" and word != stage:
                stage = word if word in _STAGE_WORDS else ""
                progress.say(f"debootstrap: {text}")
        proc.wait()

    try:
        await asyncio.wait_for(loop.run_in_executor(None, follow), BUILD_TIMEOUT)
    except BaseException:
        proc.kill()
        await loop.run_in_executor(None, proc.wait)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    if proc.returncode != 0:
        log.error("debootstrap of %s failed (%s):\n%s", build.label, proc.returncode,
                  "\n".join(tail))  # fmt: skip
        detail = ([line for line in tail if line.startswith("E:")] or tail or [""])[-1]
        raise BuildError(f"debootstrap of {build.label} failed: {detail or proc.returncode}")


async def _run_checked(argv: list[str], what: str) -> None:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    loop = asyncio.get_running_loop()
    try:
        _, err = await asyncio.wait_for(loop.run_in_executor(None, proc.communicate), 600.0)
    except BaseException:
        proc.kill()
        await loop.run_in_executor(None, proc.wait)
        raise
    if proc.returncode != 0:
        raise BuildError(f"{what} failed: {err.decode(errors='replace').strip()[-300:]}")


def customize(target: str, build: Build) -> None:
    """Make the fresh tree a WSL-style image: the first-run setup and its configuration,
    and none of the host's files debootstrap copies in (resolv.conf, hostname)."""
    for name in ("etc/resolv.conf", "etc/hostname"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(target, name))
    os.makedirs(os.path.join(target, "usr/lib/lxss"), 0o755, exist_ok=True)
    script = os.path.join(target, FIRST_RUN.lstrip("/"))
    shutil.copyfile(os.path.join(_IMAGES, "first-run.sh"), script)
    os.chmod(script, 0o755)
    with open(os.path.join(target, "etc/wsl-distribution.conf"), "w") as f:
        f.write(distribution_conf(build))


def distribution_conf(build: Build) -> str:
    name = build.family.name
    default_name = name if build.suite == build.family.default_suite else f"{name}-{build.suite}"
    return (
        f"# {build.label}, built by lxss with debootstrap from {build.mirror}.\n"
        "[oobe]\n"
        f"command = {FIRST_RUN}\n"
        f"defaultName = {default_name}\n"
        "\n"
        "[shortcut]\n"
        "enabled = true\n"
    )


def _prune(cache_dir: str, build: Build, keep: str) -> None:
    """Older days' builds of the same image: the new one replaces them."""
    for old in glob.glob(os.path.join(cache_dir, build.cache_prefix() + "*.tar")):
        if old != keep:
            with contextlib.suppress(OSError):
                os.unlink(old)
