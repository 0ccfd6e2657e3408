"""Helpers for the attack suites (test_security_*.py).

The attacker is root of a distribution owned by an unprivileged test user: that is
the user the isolation model has to hold against (a distribution owned by root is,
by design, as powerful as root). The distribution is busybox plus `lxss_attack`, a
static C program built here from lxss_attack.c that makes the system calls busybox
has no applet for (ptrace, pidfd_getfd, open_by_handle_at, idmapped mounts, ...).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_USERS, Result, Service, busybox_tarball
from mgmt import User, registry_rows, rootfs_of, shared_dir

from lxss.linux.cgroup import Layout

HERE = Path(__file__).resolve().parent
ATTACKER, OTHER = TEST_USERS
ATTACK_SOURCE = HERE / "lxss_attack.c"
ATTACK = "/bin/lxss_attack"  # where the helper sits in a hostile distribution
REFUSED = ("EPERM", "EACCES")


@functools.lru_cache(maxsize=1)
def _build_attack_helper() -> Path | str:
    """The static helper, built once per run (a path), or why it cannot be (a str)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return "gcc is not installed (apt-get install gcc libc6-dev)"
    directory = tempfile.mkdtemp(prefix="lxss-attack-", dir="/var/tmp")
    atexit.register(shutil.rmtree, directory, True)
    out = Path(directory) / "lxss_attack"
    build = subprocess.run(
        [gcc, "-static", "-O1", "-Wall", "-o", str(out), str(ATTACK_SOURCE)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if build.returncode != 0:
        return f"gcc -static failed (static glibc missing?): {build.stderr.strip()[-300:]}"
    return out


def attack_helper() -> Path:
    """The built helper; skips the test (saying why) where it cannot be built."""
    built = _build_attack_helper()
    if isinstance(built, str):
        pytest.skip(built)
    return built


def parse_attempts(output: str) -> dict[str, list[str]]:
    """`lxss_attack` output lines ("what: result") grouped by what was attempted."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        what, sep, outcome = line.partition(": ")
        if sep:
            found.setdefault(what, []).append(outcome.split(" ")[0])
    return found


def hostile_tarball(directory: Path, extra: dict[str, bytes] | None = None) -> Path:
    """busybox as a tar.gz plus the attack helper (and *extra* files, by path), readable
    by every user."""
    os.chmod(directory, 0o755)
    busybox_tarball(directory)
    root = directory / "bbroot"
    shutil.copy2(attack_helper(), root / ATTACK.lstrip("/"))
    for path, data in (extra or {}).items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    tarball = directory / "hostile.tar.gz"
    subprocess.run(
        ["tar", "-C", str(root), "--numeric-owner", "--owner=0", "--group=0", "-czf",
         str(tarball), "."],
        check=True, timeout=60,
    )  # fmt: skip
    tarball.chmod(0o644)
    return tarball


@dataclass
class UserDistribution:
    """A distribution of an unprivileged user, driven through the real `lxss` as that user."""

    service: Service
    owner: User
    name: str
    location: Path

    @property
    def rootfs(self) -> Path:
        return rootfs_of(self.location)

    def run(self, script: str, *, input: bytes | None = None, timeout: float = 60.0,
            user: str | None = None) -> Result:  # fmt: skip
        """`lxss -d NAME -- SCRIPT` as the owner (the program runs as distribution root)."""
        args = ["-d", self.name] + (["-u", user] if user else []) + ["--", script]
        return self.service.lxss(*args, user=self.owner.name, input=input, timeout=timeout)

    def ok(self, script: str, **kwargs: object) -> Result:
        result = self.run(script, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 0, f"{script!r} in {self.name}: {result}"
        return result

    def attack(self, *commands: str, timeout: float = 60.0) -> dict[str, list[str]]:
        """Run `lxss_attack` once per command line; the outcomes, by attempt."""
        script = "\n".join(f"{ATTACK} {command}" for command in commands)
        result = self.run(script, timeout=timeout)
        assert result.returncode == 0, result
        return parse_attempts(result.out)


@contextlib.contextmanager
def user_distribution(
    service: Service, owner: str, name: str, extra: dict[str, bytes] | None = None
) -> Iterator[UserDistribution]:
    """A hostile busybox distribution imported by *owner* under their home, unregistered
    (as *owner*) at the end, with its install directory."""
    user = User.named(owner)
    location = Path(user.home) / name
    with shared_dir("lxss-hostile-") as work:
        tarball = hostile_tarball(work, extra)
        service.ok("--import", name, str(location), str(tarball), user=owner)
    try:
        yield UserDistribution(service, user, name, location)
    finally:
        result = service.lxss("--unregister", name, user=owner, timeout=120)
        assert result.returncode == 0, f"cleanup of {owner}'s {name}: {result}"
        shutil.rmtree(location, ignore_errors=True)
        assert [r for r in registry_rows(service, name) if r["owner_uid"] == user.uid] == []


def attacker_and_victim(a_name: str, b_name: str) -> Any:
    """A module fixture `distributions`: (the attacker's, the other user's) hostile busybox
    distributions named *a_name* and *b_name*, removed at the end of the module."""

    @pytest.fixture(scope="module")
    def distributions(
        service: Service, test_users: tuple[str, str]
    ) -> Iterator[tuple[UserDistribution, UserDistribution]]:
        with user_distribution(service, ATTACKER, a_name) as a, \
             user_distribution(service, OTHER, b_name) as b:  # fmt: skip
            yield a, b

    return distributions


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(root: Path, pattern: str = "*.py") -> dict[str, str]:
    return {str(p): sha256(p) for p in sorted(root.rglob(pattern))}


def vm_cgroup(service: Service, uid: int, controller: str = "pids") -> Path:
    """The cgroup of *uid*'s utility VM in the hierarchy that enforces *controller*."""
    home = Layout.detect().home_of(controller)
    assert home is not None, f"no {controller} controller on this host"
    return Path(home) / service.cgroup_name / f"user-{uid}"


def processes_in_cgroup(service: Service, uid: int) -> list[int]:
    """Host pids of every process in *uid*'s utility VM (its pids cgroup, nested ones too)."""
    pids: set[int] = set()
    for procs in vm_cgroup(service, uid).rglob("cgroup.procs"):
        with contextlib.suppress(FileNotFoundError):
            pids.update(int(line) for line in procs.read_text().split())
    return sorted(pids)


def host_uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return None


def _user_env(entry: pwd.struct_passwd) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": entry.pw_dir, "LANG": "C.UTF-8"}


def run_as(user: str, *argv: str, timeout: float = 60.0, input: bytes | None = None,
           ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    """A host command as an unprivileged user (no supplementary groups)."""
    entry = pwd.getpwnam(user)
    return subprocess.run(
        list(argv), user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], input=input,
        capture_output=True, timeout=timeout, check=False, cwd="/", env=_user_env(entry),
    )  # fmt: skip


def popen_as(user: str, *argv: str) -> subprocess.Popen[bytes]:
    """Start a host command as an unprivileged user, its stdin, stdout and stderr piped
    (the caller owns the process: it must close stdin and wait)."""
    entry = pwd.getpwnam(user)
    return subprocess.Popen(
        list(argv), user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], cwd="/",
        env=_user_env(entry), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def end_helper(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """End a helper that runs until its stdin closes, and close its pipes."""
    if proc.stdin is not None:
        proc.stdin.close()
    proc.wait(timeout)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


_FD_CLIENT = r"""
import json, os, socket, sys
path, call, opens = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
fds = [os.open(name, flags) for name, flags in opens]
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    s.settimeout(60)
    s.connect(path)
    data = json.dumps(call).encode() + b"\0"
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, b"".join(
        fd.to_bytes(4, sys.byteorder) for fd in fds))] if fds else []
    s.sendmsg([data], ancillary)
    reply = b""
    while not reply.endswith(b"\0"):
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("the service closed the connection")
        reply += chunk
print(reply[:-1].decode())
"""


def call_with_fds(service: Service, user: str, method: str, opens: list[tuple[str, int]],
                  **parameters: object) -> dict[str, object]:  # fmt: skip
    """One io.lxss.Service call from a process of *user*, which opens *opens* (path, flags)
    itself, with its own rights, and sends them as the call's descriptors 0, 1, ..."""
    entry = pwd.getpwnam(user)
    call = {"method": f"io.lxss.Service.{method}", "parameters": parameters}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _FD_CLIENT, str(service.runtime_dir / "lxssd.sock"),
         json.dumps(call), json.dumps(opens)],
        user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], capture_output=True,
        timeout=120, check=False, cwd="/",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    reply: dict[str, object] = json.loads(proc.stdout)
    return reply
