"""Helpers for the management-plane tests: registering with guaranteed cleanup,
reading the registry as the service left it, speaking Varlink directly, and
building trees and archives with every kind of entry."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import socket
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import LXSS, Result, Service

FAILURE = 255


def assert_fails(result: Result, *fragments: str) -> str:
    """lxss's own failure: exit 255, nothing on stdout, exactly one `lxss: ` line on stderr
    (which must contain every fragment, case-insensitively). Returns that line."""
    assert result.returncode == FAILURE, str(result)
    assert result.stdout == b"", str(result)
    lines = result.err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr:\n{result}"
    assert lines[0].startswith("lxss: "), str(result)
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def named(cls, name: str) -> User:
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


ROOT = User("root", 0, 0, "/root")


def as_user(user: str | None) -> str | None:
    """The `user=` argument for Service.lxss: None for root."""
    return None if user in (None, "root") else user


# The registry ----------------------------------------------------------------------


def registry_rows(service: Service, name: str | None = None) -> list[dict[str, Any]]:
    """Rows of the distributions table as committed (read-only, never blocks the service)."""
    path = service.state_dir / "registry.sqlite"
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM distributions")]
    if name is not None:
        rows = [r for r in rows if r["name"].lower() == name.lower()]
    return rows


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def registered(
    service: Service,
    name: str,
    location: str | Path,
    archive: str | Path,
    user: str | None = None,
    input: bytes | None = None,
) -> Iterator[Result]:
    """Import a distribution for the duration of a with block; it is unregistered after."""
    result = service.ok("--import", name, str(location), str(archive), user=as_user(user),
                        input=input)  # fmt: skip
    try:
        yield result
    finally:
        unregister = service.lxss("--unregister", name, user=as_user(user))
        assert unregister.returncode == 0, f"cleanup of {name}: {unregister}"


def names(service: Service, user: str | None = None) -> list[str]:
    result = service.lxss("--list", "--quiet", user=as_user(user))
    assert result.returncode == 0, str(result)
    return result.out.splitlines()


@contextlib.contextmanager
def shared_dir(prefix: str = "lxss-mgmt-") -> Iterator[Path]:
    """A scratch directory every user can traverse (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False, timeout=60)


def spawn_lxss(service: Service, *args: str, user: str | None = None,
               **popen: Any) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start lxss without waiting (the caller owns the process and must wait for it)."""
    env = dict(service.env)
    kwargs: dict[str, Any] = {}
    if user is not None and user != "root":
        entry = pwd.getpwnam(user)
        kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        env["HOME"] = entry.pw_dir
        service.users_seen.add(user)
    return subprocess.Popen([*LXSS, *args], env=env, cwd="/", **kwargs, **popen)


# Varlink, spoken directly -----------------------------------------------------------

_VARLINK_CLIENT = r"""
import json, socket, sys
path, calls = sys.argv[1], json.loads(sys.argv[2])
replies = []
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    s.settimeout(30)
    s.connect(path)
    buffer = b""
    for call in calls:
        s.sendall(json.dumps(call).encode() + b"\0")
        while b"\0" not in buffer:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("the service closed the connection")
            buffer += chunk
        frame, _, buffer = buffer.partition(b"\0")
        replies.append(json.loads(frame))
print(json.dumps(replies))
"""


def read_reply(sock: socket.socket) -> dict[str, Any]:
    """One Varlink reply read off *sock* (asserting the service does not hang up first)."""
    buffer = b""
    while not buffer.endswith(b"\0"):
        chunk = sock.recv(65536)
        assert chunk, "lxssd closed the connection"
        buffer += chunk
    reply: dict[str, Any] = json.loads(buffer[:-1])
    return reply


def varlink(service: Service, *calls: dict[str, Any], user: str | None = None) -> list[Any]:
    """Send Varlink calls on one connection (as *user*, from a process of theirs); the replies."""
    kwargs: dict[str, Any] = {}
    if user is not None and user != "root":
        entry = pwd.getpwnam(user)
        kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _VARLINK_CLIENT, str(service.runtime_dir / "lxssd.sock"),
         json.dumps(list(calls))],
        capture_output=True, timeout=60, check=False, cwd="/", **kwargs,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    replies: list[Any] = json.loads(proc.stdout)
    return replies


def call(service: Service, method: str, user: str | None = None, **parameters: Any) -> Any:
    """One io.lxss.Service call; the whole reply (parameters, or error and parameters)."""
    name = method if "." in method else f"io.lxss.Service.{method}"
    return varlink(service, {"method": name, "parameters": parameters}, user=user)[0]


def guid_of(service: Service, name: str, user: str | None = None) -> str:
    reply = call(service, "EnumerateDistributions", user=user)
    for d in reply["parameters"]["distributions"]:
        if d["name"] == name:
            return str(d["guid"])
    raise AssertionError(f"{name} is not among {user or 'root'}'s distributions: {reply}")


# Trees and archives ------------------------------------------------------------------

MTIME = 1_600_000_000
DEEP = "/".join(f"deep-directory-{i:02d}" for i in range(24))
DEVICE = "dev/null-copy"
NON_ASCII = "étrange ünïcødé 日本.txt"


def build_rich_tree(root: Path) -> None:
    """A root file system holding every kind of entry tar can carry, owned by many ids."""
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)
    for d in ("etc", "bin", "dev", "tmp", "home/alice", "srv/a", "srv/b", "empty", "locked", DEEP):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text("ID=richtree\nVERSION_ID=42\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "bin/su").write_bytes(b"#!/bin/sh\necho pretend su\n")
    (root / "bin/wall").write_bytes(b"pretend setgid\n")
    (root / "srv/a/data").write_bytes(os.urandom(300_000))
    (root / "srv/a/empty-file").write_bytes(b"")
    (root / "srv/a/unreadable").write_bytes(b"mode 000\n")
    (root / "home/alice/notes").write_text("alice's\n")
    (root / "with space").write_text("space\n")
    (root / NON_ASCII).write_text("non-ascii\n")
    (root / DEEP / "leaf").write_text("deep\n")
    (root / "locked/inside").write_text("in a 0555 directory\n")
    # Hard links: a group of three across directories and a group of two.
    (root / "srv/a/hl1").write_text("three names\n")
    os.link(root / "srv/a/hl1", root / "srv/a/hl2")
    os.link(root / "srv/a/hl1", root / "srv/b/hl3")
    (root / "bin/busybox-ish").write_text("two names\n")
    os.link(root / "bin/busybox-ish", root / "bin/sh-ish")
    # Symlinks: absolute, relative, to a directory, dangling; one owned by alice.
    os.symlink("/etc/os-release", root / "os-release-abs")
    os.symlink("../a/data", root / "srv/b/data-rel")
    os.symlink("srv/a", root / "srv-a-dir")
    os.symlink("nowhere/at/all", root / "dangling")
    os.symlink("notes", root / "home/alice/notes-link")
    os.mkfifo(root / "srv/fifo")
    os.mknod(root / DEVICE, 0o644 | 0o020000, os.makedev(1, 3))  # S_IFCHR
    os.setxattr(root / "srv/a/data", "user.lxss.comment", b"hello xattr")
    os.setxattr(root / "srv/a/data", "user.lxss.binary", b"\xff\x00\x01binary")
    os.setxattr(root / "srv", "user.lxss.dir", b"on a directory")
    owners = {
        "bin/su": (0, 0, 0o4755),
        "bin/wall": (0, 5, 0o2755),
        "tmp": (0, 0, 0o1777),
        "home/alice": (1000, 1000, 0o700),
        "home/alice/notes": (1000, 1000, 0o600),
        "home/alice/notes-link": (1000, 1000, None),
        "srv/a": (1001, 50, 0o750),
        "srv/a/data": (4242, 4243, 0o640),
        "srv/a/unreadable": (1001, 50, 0o000),
        "srv/a/hl1": (65534, 65534, 0o444),
        "srv/fifo": (1001, 100, 0o620),
        "srv/b/data-rel": (4242, 100, None),
        "with space": (1000, 100, 0o664),
        NON_ASCII: (65533, 65533, 0o644),
        "locked": (1002, 1002, 0o555),
        DEEP + "/leaf": (12345, 54321, 0o6711),
    }
    for path, (uid, gid, mode) in owners.items():
        os.chown(root / path, uid, gid, follow_symlinks=False)
        if mode is not None:
            os.chmod(root / path, mode)
    # Fixed times, deepest first (changing an entry changes its directory's mtime).
    paths = sorted(
        (str(p) for p in root.rglob("*")), key=lambda p: p.count("/"), reverse=True
    )  # fmt: skip
    for i, path in enumerate([*paths, str(root)]):
        os.utime(path, (MTIME + i, MTIME + i), follow_symlinks=False)


TAR_FORMATS: dict[str, tuple[list[str], bytes]] = {
    # name: (GNU tar compression options, the magic a file of that format starts with)
    "tar": ([], b""),
    "tar.gz": (["--gzip"], b"\x1f\x8b"),
    "tar.xz": (["--xz"], b"\xfd7zXZ\x00"),
    "tar.zst": (["--zstd"], b"\x28\xb5\x2f\xfd"),
    "tar.bz2": (["--bzip2"], b"BZh"),
}


def gnu_tar(source: Path, archive: Path, fmt: str) -> Path:
    """Archive *source* as `tar --xattrs --numeric-owner -c` would for a distribution."""
    options, _ = TAR_FORMATS[fmt]
    subprocess.run(
        ["tar", "--xattrs", "--numeric-owner", *options, "-C", str(source), "-cf",
         str(archive), "."],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return archive


def magic_of(path: Path) -> str:
    head = path.read_bytes()[:512]
    for name, (_, magic) in TAR_FORMATS.items():
        if magic and head.startswith(magic):
            return name
    if head[257:262] == b"ustar":
        return "tar"
    return "unknown"


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """An uncompressed tar made member by member, names and links exactly as given."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(info)
    return out.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "",
           mode: int = 0o644) -> tarfile.TarInfo:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    info.mtime = MTIME
    return info


def minimal_linux() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Just enough for lxss to call it a Linux distribution."""
    return [
        (member("etc", tarfile.DIRTYPE, mode=0o755), None),
        (member("etc/os-release"), b"ID=minimal\n"),
    ]


def rootfs_of(location: Path) -> Path:
    """Where the tree of a distribution imported into *location* is: lxssd makes its own
    0700 directory there (lxss.service.locations), which holds rootfs/."""
    return location / "distribution" / "rootfs"
