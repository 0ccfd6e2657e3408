"""Interop: lxss-host-exec runs host programs from inside a distribution (WSL's interop).

The owner's programs run on the host, in the host's namespaces, as the owner, with the
caller's own streams (pipes or the distribution's terminal) and its exit status; signals
are forwarded; lxss-host keeps it working after the `lxss` client is gone; [interop]
enabled = false refuses it. Also lxsspath, LXSSENV and /mnt/wsl. The distributions are
busybox ones of an unprivileged owner (no Python inside).
"""

from __future__ import annotations

import hashlib
import os
import pty
import signal
import subprocess
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LXSS, Result, Service
from mgmt import User, spawn_lxss
from run_support import wait_until

A_NAME, A2_NAME, B_NAME = "iop-a", "iop-a2", "iop-b"
NAMESPACES = ("mnt", "pid", "user", "net", "uts", "ipc", "cgroup")


@pytest.fixture(scope="module")
def owners(service: Service, test_users: tuple[str, str]) -> Iterator[tuple[User, User]]:
    """A (with two busybox distributions) and B (with one)."""
    a, b = (User.named(name) for name in test_users)
    made = []
    try:
        for name, user in ((A_NAME, a), (A2_NAME, a), (B_NAME, b)):
            service.ok("--install", "busybox", "--name", name, "--no-launch", user=user.name,
                       timeout=120)  # fmt: skip
            made.append((name, user))
        yield a, b
    finally:
        for name, user in made:
            service.lxss("--unregister", name, user=user.name, timeout=120)


def run(service: Service, user: User, script: str, name: str = A_NAME, **kwargs: object) -> Result:
    return service.lxss("-d", name, "--", script, user=user.name, **kwargs)  # type: ignore[arg-type]


def ok(service: Service, user: User, script: str, name: str = A_NAME, **kwargs: object) -> Result:
    result = run(service, user, script, name, **kwargs)
    assert result.returncode == 0, f"{script!r}: {result}"
    return result


def test_runs_on_the_host_as_the_owner_in_the_hosts_namespaces(
    service: Service, owners: tuple[User, User]
) -> None:
    a, _ = owners
    links = " ".join(f"/proc/self/ns/{ns}" for ns in NAMESPACES)
    inside = ok(service, a, f"readlink {links}; id -u").out.split()
    on_host = ok(service, a, f"lxss-host-exec sh -c 'readlink {links}; id -u; id -G'").out.split()
    assert on_host[: len(NAMESPACES)] == [os.readlink(f"/proc/self/ns/{ns}") for ns in NAMESPACES]
    assert inside[: len(NAMESPACES)] != on_host[: len(NAMESPACES)]
    assert on_host[len(NAMESPACES)] == str(a.uid)  # the owner, never root
    assert "0" not in on_host[len(NAMESPACES) + 1 :]


@pytest.mark.parametrize(
    ("command", "code"),
    [("sh -c 'exit 7'", 7), ("sh -c 'kill -TERM $$'", 128 + signal.SIGTERM), ("true", 0)],
    ids=["exit-7", "killed-by-SIGTERM", "true"],
)
def test_exit_status_is_carried(
    service: Service, owners: tuple[User, User], command: str, code: int
) -> None:
    a, _ = owners
    assert run(service, a, f"lxss-host-exec {command}").returncode == code


def test_a_command_not_found_on_the_host(service: Service, owners: tuple[User, User]) -> None:
    a, _ = owners
    result = run(service, a, "lxss-host-exec no-such-command-lxtint")
    assert result.returncode == 127
    assert result.err.count("\n") == 1 and "no-such-command-lxtint" in result.err, result


def test_five_megabytes_of_binary_through_pipes(
    service: Service, owners: tuple[User, User]
) -> None:
    a, _ = owners
    data = os.urandom(5 * 1024 * 1024)
    # stdin from lxss's caller, stdout a pipe inside the distribution, stderr the caller's.
    result = run(service, a, "lxss-host-exec cat | cat; lxss-host-exec sh -c 'echo err >&2'",
                 input=data)  # fmt: skip
    assert result.returncode == 0, result.err
    assert hashlib.sha256(result.stdout).hexdigest() == hashlib.sha256(data).hexdigest()
    assert result.err == "err\n"


def _on_pty(service: Service, user: User, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = pty.openpty()
    tty.setraw(slave)
    entry_env = {**service.env, "HOME": user.home}
    try:
        proc = subprocess.Popen(
            [*LXSS, *args], env=entry_env, stdin=slave, stdout=slave, stderr=slave,
            start_new_session=True, user=user.uid, group=user.gid, extra_groups=[], cwd="/",
        )  # fmt: skip
    finally:
        os.close(slave)
    service.users_seen.add(user.name)
    return proc, master


def _read_until(master: int, proc: subprocess.Popen[bytes], until: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while until not in seen:
        if time.monotonic() > deadline:
            pytest.fail(f"{until!r} did not come in {timeout:.0f} s (got {seen[-300:]!r})")
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:
            break
        seen += chunk
    return seen


def test_a_terminal_and_five_megabytes_through_it(
    service: Service, owners: tuple[User, User]
) -> None:
    a, _ = owners
    blob = Path(f"/tmp/lxtint-blob-{os.getpid()}")
    data = os.urandom(5 * 1024 * 1024)
    blob.write_bytes(data)
    blob.chmod(0o644)
    try:
        # The host program's streams are the distribution's terminal itself.
        script = "lxss-host-exec sh -c 'test -t 0 && test -t 1 && echo on-a-tty; exit 3'"
        proc, master = _on_pty(service, a, "-d", A_NAME, "--", script)
        try:
            assert b"on-a-tty" in _read_until(master, proc, b"on-a-tty", 30)
            assert proc.wait(30) == 3
        finally:
            _end(proc, master)
        # 5 MB from the host program onto that terminal (raw: the line discipline adds no
        # \r), and through lxss onto this one.
        proc, master = _on_pty(service, a, "-d", A_NAME, "--",
                               f"stty raw -echo; lxss-host-exec cat {blob}")  # fmt: skip
        try:
            received = _read_bytes(master, len(data), 120)
            assert proc.wait(30) == 0
        finally:
            _end(proc, master)
    finally:
        blob.unlink()
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()


def _read_bytes(master: int, size: int, timeout: float) -> bytes:
    chunks: list[bytes] = []
    have = 0
    deadline = time.monotonic() + timeout
    while have < size:
        if time.monotonic() > deadline:
            pytest.fail(f"{have} of {size} bytes came in {timeout:.0f} s")
        chunk = os.read(master, 1 << 16)
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)[:size]


def _end(proc: subprocess.Popen[bytes], master: int) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    os.close(master)


def test_ctrl_c_reaches_the_host_program(service: Service, owners: tuple[User, User]) -> None:
    a, _ = owners
    script = "trap 'echo got-int; exit 9' INT; echo ready; while :; do sleep 0.1; done"
    proc, master = _on_pty(service, a, "-d", A_NAME, "-e", "lxss-host-exec", "sh", "-c", script)
    try:
        _read_until(master, proc, b"ready", 30)
        os.write(master, b"\x03")
        assert b"got-int" in _read_until(master, proc, b"got-int", 30)
        assert proc.wait(30) == 9
    finally:
        _end(proc, master)


def _lxss_hosts_of(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid and (entry / "cmdline").read_bytes().startswith(
                b"lxss-host"
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_interop_after_the_client_was_killed(service: Service, owners: tuple[User, User]) -> None:
    """Work left running (SIGHUP ignored, as nohup does) that calls the host after its lxss
    client was killed still gets there, through lxss-host, which ends when the last such
    process is gone."""
    a, _ = owners
    marker = Path(f"/tmp/lxtint-background-{os.getpid()}")
    marker.unlink(missing_ok=True)
    script = (f"trap '' HUP; sh -c 'sleep 3; lxss-host-exec sh -c \"id -u > {marker}\"' "
              ">/dev/null 2>&1 & echo started; exec sleep 60")  # fmt: skip
    proc = spawn_lxss(service, "-d", A_NAME, "--", script, user=a.name,
                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
        proc.kill()
        proc.wait(10)
        assert wait_until(lambda: marker.exists() and marker.read_text(), 30,
                          "the background host program") == f"{a.uid}\n"  # fmt: skip
        assert marker.stat().st_uid == a.uid
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        marker.unlink(missing_ok=True)
        service.lxss("--terminate", A_NAME, user=a.name)
    wait_until(lambda: not _lxss_hosts_of(a.uid), 30, "lxss-host to exit")


def test_disabled_interop_is_refused(service: Service, owners: tuple[User, User]) -> None:
    a, _ = owners
    ok(service, a, "printf '[interop]\\nenabled = false\\n' > /etc/wsl.conf", name=A2_NAME)
    try:
        service.ok("--terminate", A2_NAME, user=a.name)
        result = run(service, a, "lxss-host-exec true", name=A2_NAME)
        assert result.returncode == 255
        assert result.err.count("\n") == 1 and "disabled" in result.err, result
        assert ok(service, a, "echo ${LXSS_INTEROP-unset}", name=A2_NAME).out == "unset\n"
    finally:
        ok(service, a, "rm -f /etc/wsl.conf", name=A2_NAME)
        service.ok("--terminate", A2_NAME, user=a.name)


def test_the_host_directory_follows_the_callers(
    service: Service, owners: tuple[User, User]
) -> None:
    a, _ = owners
    assert ok(service, a, "cd /mnt/host/tmp && lxss-host-exec pwd").out == "/tmp\n"
    assert ok(service, a, "cd / && lxss-host-exec pwd").out == f"{a.home}\n"


def test_lxssenv_translates_paths_both_ways(service: Service, owners: tuple[User, User]) -> None:
    a, _ = owners
    env = {"LXSSENV": "HP/p:HL/l:ONLYIN/u", "HP": "/tmp", "HL": "/usr:/var", "ONLYIN": "in"}
    inside = ok(service, a, "echo $HP $HL $ONLYIN $LXSSENV", env=env).out
    assert inside == "/mnt/host/tmp /mnt/host/usr:/mnt/host/var in HP/p:HL/l:ONLYIN/u\n"
    # Into the host: the owner's own environment (lxss's), plus what LXSSENV sends out.
    back = ok(service, a, "export DP=/mnt/host/etc IN2=x OUT=y; LXSSENV=DP/p:IN2/u:OUT/w "
              "lxss-host-exec sh -c 'echo $DP ${IN2-none} $OUT'", env=env).out  # fmt: skip
    assert back == "/etc none y\n"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("lxsspath -u /etc/passwd", "/mnt/host/etc/passwd"),
        ("lxsspath /", "/mnt/host"),
        ("lxsspath -h /mnt/host/etc/passwd", "/etc/passwd"),
        ("lxsspath -m /mnt/host/etc/../usr", "/usr"),
        ("lxsspath -w /mnt/host", "/"),
        ("cd /mnt/host/etc && lxsspath -h passwd", "passwd"),
        ("cd /mnt/host/etc && lxsspath -a -h passwd", "/etc/passwd"),
        ('lxsspath -h "$(lxsspath -u /var/lib)"', "/var/lib"),
    ],
)
def test_lxsspath(service: Service, owners: tuple[User, User], script: str, expected: str) -> None:
    a, _ = owners
    assert ok(service, a, script).out == expected + "\n"


@pytest.mark.parametrize(
    ("script", "error"),
    [("lxsspath -h /etc", "lxsspath: /etc: Invalid argument\n"),
     ("lxsspath", "Usage: lxsspath"), ("lxsspath -u -h /x", "Usage: lxsspath")],
)  # fmt: skip
def test_lxsspath_errors(
    service: Service, owners: tuple[User, User], script: str, error: str
) -> None:
    a, _ = owners
    result = run(service, a, script)
    assert result.returncode == 1 and result.err.startswith(error), result


def test_mnt_wsl_is_shared_by_one_users_distributions_only(
    service: Service, owners: tuple[User, User]
) -> None:
    a, b = owners
    token = f"shared-{os.getpid()}"
    ok(service, a, f"echo {token} > /mnt/wsl/lxtint-token")
    try:
        assert ok(service, a, "cat /mnt/wsl/lxtint-token", name=A2_NAME).out == f"{token}\n"
        assert run(service, b, "cat /mnt/wsl/lxtint-token", name=B_NAME).returncode != 0
        assert ok(service, a, "stat -f -c %T /mnt/wsl").out == "tmpfs\n"
    finally:
        run(service, a, "rm -f /mnt/wsl/lxtint-token")


def test_host_commands_are_reachable_as_host_names(
    service: Service, owners: tuple[User, User]
) -> None:
    """[interop] appendWindowsPath: the owner's commands as host-NAME, last on PATH; the
    alias appendHostPath = false turns them off."""
    a, _ = owners
    found, uid, path = ok(service, a, "command -v host-id; host-id -u; echo $PATH").out.split()
    assert found.startswith("/run/lxss/host-path/") and found.endswith("/host-id")
    assert uid == str(a.uid)  # the host's id, run on the host
    assert path.split(":")[-1] == os.path.dirname(found)
    # A command of the distribution's own comes first, whatever its name.
    mine = "mkdir -p /usr/local/bin && printf '#!/bin/sh\\necho mine\\n' > /usr/local/bin/host-id"
    ok(service, a, f"{mine} && chmod 755 /usr/local/bin/host-id")
    try:
        assert ok(service, a, "host-id").out == "mine\n"
    finally:
        ok(service, a, "rm /usr/local/bin/host-id")
    ok(service, a, "printf '[interop]\\nappendHostPath = false\\n' > /etc/wsl.conf", name=A2_NAME)
    try:
        service.ok("--terminate", A2_NAME, user=a.name)
        result = run(service, a, "command -v host-id || echo none; echo $PATH", name=A2_NAME)
        assert result.out.split("\n")[0] == "none" and "host-path" not in result.out, result
    finally:
        ok(service, a, "rm -f /etc/wsl.conf", name=A2_NAME)
        service.ok("--terminate", A2_NAME, user=a.name)


def test_automount_root_and_options(service: Service, owners: tuple[User, User]) -> None:
    """[automount] root moves the host's files (root + "host"), and everything that finds
    them follows; options that mean something for a bind mount apply, DrvFs's warn."""
    a, _ = owners
    conf = "[automount]\\nroot = /win\\noptions = ro,noexec,uid=1000\\n"
    ok(service, a, f"printf '{conf}' > /etc/wsl.conf", name=A2_NAME)
    try:
        service.ok("--terminate", A2_NAME, user=a.name)
        first = run(service, a, "pwd", name=A2_NAME, cwd="/tmp")
        assert first.out == "/win/host/tmp\n", first  # the start directory, translated
        assert "uid=1000 does not apply to the host mount" in first.err, first
        script = ("test -e /mnt/host/etc || echo no-mnt-host; lxsspath -u /etc; "
                  "cd /win/host/tmp && lxss-host-exec pwd; "
                  "touch /win/host/tmp/lxtint-ro 2>/dev/null || echo read-only; "
                  "/win/host/bin/true 2>/dev/null || echo noexec")  # fmt: skip
        assert ok(service, a, script, name=A2_NAME).out.split() == [
            "no-mnt-host", "/win/host/etc", "/tmp", "read-only", "noexec",
        ]  # fmt: skip
    finally:
        ok(service, a, "rm -f /etc/wsl.conf", name=A2_NAME)
        service.ok("--terminate", A2_NAME, user=a.name)


# Busybox has no inotify tool: a static one, built here (as lxss_attack is).
WATCHER = r"""
#include <stdio.h>
#include <sys/inotify.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char buffer[4096];
    int fd = inotify_init1(0);
    if (fd < 0 || inotify_add_watch(fd, argv[1], IN_CREATE) < 0) { perror("inotify"); return 1; }
    printf("watching\n");
    fflush(stdout);
    ssize_t n = read(fd, buffer, sizeof buffer);
    struct inotify_event *event = (struct inotify_event *)buffer;
    if (n > 0 && event->len) printf("created %s\n", event->name);
    return 0;
}
"""


def _watcher(directory: Path) -> bytes:
    source = directory / "watch.c"
    source.write_text(WATCHER)
    build = subprocess.run(["gcc", "-static", "-O1", "-o", str(directory / "watch"), str(source)],
                           capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    if build.returncode != 0:
        pytest.skip(f"gcc -static failed: {build.stderr[-300:]}")
    return (directory / "watch").read_bytes()


def test_inotify_sees_host_changes(
    service: Service, owners: tuple[User, User], tmp_path: Path
) -> None:
    """Host files are a bind mount in version 1: a file created on the host is an inotify
    event inside."""
    a, _ = owners
    ok(service, a, "cat > /tmp/watch && chmod 755 /tmp/watch", input=_watcher(tmp_path))
    directory = Path(a.home) / f"lxtint-watch-{os.getpid()}"
    directory.mkdir()
    os.chown(directory, a.uid, a.gid)
    script = f"exec /tmp/watch /mnt/host{directory}"
    proc = spawn_lxss(service, "-d", A_NAME, "--", script, user=a.name,
                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"watching\n"
        (directory / "made-on-the-host").write_text("x")
        assert proc.stdout.readline() == b"created made-on-the-host\n"
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        service.lxss("--terminate", A_NAME, user=a.name)
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()
