"""The system disk: the host's Python and lxss's own guest code, for version 2's VM.

How Python reaches the guest (docs/version2.md says why this way): a read-only ext4
disk made from the host's own interpreter, as WSL's system distribution is a disk of
its own. It holds the interpreter, the standard library (with its compiled files,
less the parts the guest never imports), the shared libraries they link to (found
with ldd), lxss's source compiled for its place on the disk, a static busybox (the
debug console's shell) and empty mount points.
The guest sees nothing of the host but this: no host file system is served to it for
its userland, so a guest's root learns nothing about the host from it.

The disk is built once per (interpreter, lxss source) and cached; a change to either
makes a new one, and older ones are removed.
"""

from __future__ import annotations

import compileall
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from typing import Final

from lxss.vm import ext4

FORMAT: Final = 1  # bump when the disk's layout changes
LABEL: Final = "lxss-system"
GUEST_SOURCE: Final = "/usr/lib/lxss"  # where lxss's package lies on the disk
MOUNT_POINTS: Final = ("proc", "sys", "dev", "run", "tmp", "mnt", "distro", "modules", "etc")
# Parts of the standard library the guest never imports (tests, GUI, packaging, 2to3).
_STDLIB_LEFT_OUT: Final = frozenset({
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
    "distutils", "site-packages", "dist-packages", "venv", "config-3.11-x86_64-linux-gnu",
    "__phello__", "unittest", "sqlite3",
})  # fmt: skip
BUSYBOX: Final = "/bin/busybox"  # the debug console's shell (Debian's busybox-static)
_SOURCE_DIR: Final = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def interpreter() -> str:
    """The host interpreter's real file (the venv's python3 is a link to Debian's)."""
    return os.path.realpath(sys.executable)


def _stdlib() -> str:
    return sysconfig.get_paths(vars={"base": sys.base_prefix, "installed_base": sys.base_prefix})[
        "stdlib"
    ]


def _source_files() -> list[str]:
    found = []
    for root, dirs, files in os.walk(os.path.join(_SOURCE_DIR, "lxss")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [os.path.join(root, f) for f in sorted(files) if f.endswith((".py", ".varlink"))]
    return found


def key() -> str:
    """What the disk is made of, as a short hash: a new interpreter or any change to
    lxss's source makes a new disk."""
    digest = hashlib.sha256(f"format {FORMAT}\n".encode())
    for path in [interpreter(), BUSYBOX, *_source_files()]:
        status = os.stat(path)
        digest.update(f"{path} {status.st_size} {status.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def shared_libraries(binaries: list[str]) -> list[str]:
    """Every shared library *binaries* load, by the names ld.so resolves (ldd's view)."""
    found: set[str] = set()
    for binary in binaries:
        done = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30,
                              check=False)  # fmt: skip
        for line in done.stdout.splitlines():
            words = line.split()
            if "=>" in words and len(words) > words.index("=>") + 1:
                path = words[words.index("=>") + 1]
            elif words and words[0].startswith("/"):
                path = words[0]  # the dynamic loader itself
            else:
                continue
            if path.startswith("/"):
                found.add(path)
    return sorted(found)


def _place(source: str, staging: str, at: str) -> None:
    """Put *source*'s content at *at* (a path on the disk) in *staging*: a hard link where
    the two share a file system (mke2fs only reads it), else a copy."""
    target = os.path.join(staging, at.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target):
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _copy_tree(source: str, staging: str, at: str, skip: frozenset[str] = frozenset()) -> None:
    for root, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if d not in skip]
        relative = os.path.relpath(root, source)
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(".pyc") and ".opt-" in name:
                continue  # -O compilations: the guest runs without -O
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            _place(path, staging, os.path.normpath(os.path.join(at, relative, name)))


def stage(staging: str) -> None:
    """Lay out the disk's tree in *staging* (an empty directory)."""
    python = interpreter()
    stdlib = _stdlib()
    for link in ("bin", "lib", "lib64", "sbin"):
        os.symlink(f"usr/{link}", os.path.join(staging, link))
    for directory in MOUNT_POINTS:
        os.makedirs(os.path.join(staging, directory), mode=0o755, exist_ok=True)
    _place(python, staging, "/usr/bin/python3")
    _place(BUSYBOX, staging, "/usr/bin/busybox")
    os.symlink("busybox", os.path.join(staging, "usr/bin/sh"))
    _copy_tree(stdlib, staging, stdlib, _STDLIB_LEFT_OUT)
    dynload = os.path.join(stdlib, "lib-dynload")
    extensions = [os.path.join(dynload, f) for f in os.listdir(dynload) if f.endswith(".so")]
    for library in shared_libraries([python, *extensions]):
        # By the directory's real path (/lib is /usr/lib here) and the name ld.so asks for.
        at = os.path.join(os.path.realpath(os.path.dirname(library)), os.path.basename(library))
        _place(os.path.realpath(library), staging, at)
    with contextlib.suppress(FileNotFoundError):
        _place("/etc/ld.so.cache", staging, "/etc/ld.so.cache")
    package = os.path.join(staging, GUEST_SOURCE.lstrip("/"), "lxss")
    shutil.copytree(os.path.join(_SOURCE_DIR, "lxss"), package,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    # Compiled in place, named as the guest will see them: a cold start from the disk
    # then reads no source.
    compileall.compile_dir(package, ddir=os.path.join(GUEST_SOURCE, "lxss"), quiet=2,
                           workers=1)  # fmt: skip


def build(cache_dir: str) -> str:
    """The system disk's path for this interpreter and source, made now if not cached.
    Blocking (seconds): call it off the event loop."""
    name = f"system-{key()}.ext4"
    image = os.path.join(cache_dir, name)
    if os.path.exists(image):
        return image
    os.makedirs(cache_dir, mode=0o755, exist_ok=True)
    staging = os.path.join(cache_dir, f".staging-{os.getpid()}")
    temporary = image + f".{os.getpid()}.tmp"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        os.mkdir(staging, 0o755)
        stage(staging)
        content, entries = ext4.tree_size(staging)
        size = ext4.image_size(content, entries, 8 << 20)
        ext4.make_image(staging, temporary, LABEL, size, journal=False)
        os.chmod(temporary, 0o644)
        os.rename(temporary, image)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    for old in os.listdir(cache_dir):
        if old.startswith("system-") and old != name and old.endswith(".ext4"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(cache_dir, old))
    return image
