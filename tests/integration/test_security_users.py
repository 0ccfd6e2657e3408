"""Users are isolated from each other: lxsstest-b attacks lxsstest-a's distributions,
sockets, files and VM, through the lxss command, raw Varlink and from inside B's own
distribution (promises 2 and 8 of docs/security.md).

What test_users.py already covers (list, export, set-default, configure, terminate and
unregister by name or GUID; forUid) is not repeated: this suite adds starting and
entering, running distributions, descriptors B opens itself, sockets, files on disk,
the registry's files and id ranges.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Service
from mgmt import User, assert_fails, call, guid_of, registry_rows, shared_dir, spawn_lxss
from security_support import (
    ATTACKER,
    OTHER,
    UserDistribution,
    attacker_and_victim,
    call_with_fds,
    host_uid_of,
    processes_in_cgroup,
    run_as,
)

from lxss.linux.subids import parse_ranges

A_NAME, B_NAME = "sec-users-a", "sec-users-b"


distributions = attacker_and_victim(A_NAME, B_NAME)


@pytest.fixture
def a_running(
    service: Service, distributions: tuple[UserDistribution, UserDistribution]
) -> Iterator[UserDistribution]:
    """A's distribution with a program running in it (a relay, a session leader, init)."""
    a, _ = distributions
    proc = spawn_lxss(service, "-d", A_NAME, "--", "echo up; exec sleep 60", user=ATTACKER,
                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        yield a
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_other_user_cannot_start_or_enter_by_name_or_guid(
    service: Service, a_running: UserDistribution
) -> None:
    a = a_running
    guid = guid_of(service, A_NAME, user=ATTACKER)
    marker = f"/tmp/entered-by-b-{os.getpid()}"
    for key in (A_NAME, A_NAME.upper(), guid, guid.upper(), "{" + guid + "}"):
        result = service.lxss("-d", key, "--", f"touch {marker}", user=OTHER)
        assert_fails(result, f"no distribution named '{key}'")
        for args in (["-t", key], ["--export", key, "-"], ["--unregister", key]):
            assert_fails(service.lxss(*args, user=OTHER), f"no distribution named '{key}'")
        reply = call(service, "CreateLxProcess", user=OTHER, distribution=key, commandLine=["x"],
                     shellType="standard", environment=[], rows=24, columns=80, control=0,
                     consoleId=1)  # fmt: skip
        assert reply.get("error") == "io.lxss.Service.DistroNotFound", reply
        reply = call(service, "CreateLxProcess", user=OTHER, distribution=key, commandLine=["x"],
                     shellType="standard", environment=[], rows=24, columns=80, control=0,
                     consoleId=1, forUid=a.owner.uid)  # fmt: skip
        assert reply.get("error") == "io.lxss.Service.PermissionDenied", reply
    # B's default is B's own distribution, never A's; A's program is still running.
    assert service.ok("--", "echo $LXSS_DISTRO_NAME", user=OTHER).out == f"{B_NAME}\n"
    listing = a.ok(f"ps -o args; ls {marker} 2>&1; true").out
    assert "sleep 60" in listing and "No such file" in listing, listing
    assert A_NAME in service.ok("-l", "--running", user=ATTACKER).out.split()
    # Root acts for A only when it says so, and then with A's powers, not root's.
    assert_fails(service.lxss("-d", A_NAME, "--", "true"), f"no distribution named '{A_NAME}'")
    # (Its default user, root, is A on the host: what it creates is A's.)
    with shared_dir("lxss-for-user-") as drop:
        drop.chmod(0o1777)
        service.ok("--for-user", ATTACKER, "-d", A_NAME, "--", f"touch /mnt/host{drop}/made")
        assert (drop / "made").stat().st_uid == a.owner.uid


def test_a_users_vm_has_no_socket_anyone_else_can_reach(
    service: Service, a_running: UserDistribution
) -> None:
    """Every socket the processes of A's VM hold is unnamed (a socket pair), so there is no
    path or abstract name for B to connect to; the service's socket is the only one on disk.
    The one exception is a relay's interop socket, /run/lxss/interop/PID inside the
    distribution's own mount namespace (mode 0600: test_security_interop.py attacks it)."""
    pids = processes_in_cgroup(service, a_running.owner.uid)
    assert len(pids) >= 5, pids  # nsboot, mini_init, init, session leader, relay, sleep
    inodes = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    assert inodes, "the roles hold their channels as sockets"
    named = {}
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            interop = len(fields) > 7 and fields[7].startswith("/run/lxss/interop/")
            if fields[6] in inodes and len(fields) > 7 and not interop:
                named[fields[6]] = fields[7]
    assert named == {}, f"sockets of A's VM with a name: {named}"
    sockets = [p for p in service.root.rglob("*") if stat.S_ISSOCK(p.lstat().st_mode)]
    assert sockets == [service.runtime_dir / "lxssd.sock"], sockets
    scratch = service.runtime_dir / "vm" / str(a_running.owner.uid)
    st = scratch.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)
    assert run_as(OTHER, "ls", str(scratch)).returncode != 0
    # Nor can A fill it on the host (the service would remove what A put there at A's next
    # start): the VM mounts its own tmpfs there, in its own mount namespace.
    planted = run_as(ATTACKER, "sh", "-c", f"touch {scratch}/planted || mkdir {scratch}/d")
    assert planted.returncode != 0 and not (scratch / "planted").exists(), planted
    # No process of A's may be signalled by B.
    for pid in pids:
        assert run_as(OTHER, "kill", "-0", str(pid)).returncode != 0, pid


def test_other_user_cannot_read_distribution_files(
    service: Service, distributions: tuple[UserDistribution, UserDistribution]
) -> None:
    a, b = distributions
    secret = f"a's secret {os.getpid()}"
    a.ok(f"echo '{secret}' > /root/secret; echo '{secret}' > /mnt/wsl/secret")
    for command, path in (("cat", a.rootfs / "root/secret"), ("cat", a.rootfs / "etc/passwd"),
                          ("ls", a.location), ("ls", a.rootfs)):  # fmt: skip
        result = run_as(OTHER, command, str(path))
        assert result.returncode != 0 and b"Permission denied" in result.stderr, (path, result)
    # From inside B's distribution, through the host mount, as B's root; and B's /mnt/wsl
    # (shared by the distributions of one VM) is B's VM's, not A's.
    inside = b.run(f"cat /mnt/host{a.rootfs}/root/secret; ls /mnt/host{a.location}; "
                   "cat /mnt/wsl/secret")  # fmt: skip
    assert secret not in inside.out, inside
    assert inside.err.count("Permission denied") == 2 and "No such file" in inside.err, inside
    # Installed in the service's own storage (no location), it is as private.
    service.ok("--install", "busybox", "--name", "sec-users-stored", "--no-launch", user=ATTACKER)
    try:
        [row] = registry_rows(service, "sec-users-stored")
        base = Path(row["base_path"])
        assert base.parent == service.state_dir / str(a.owner.uid)
        modes = {p: (p.stat().st_uid, stat.S_IMODE(p.stat().st_mode)) for p in (base, base.parent)}
        assert modes == {base: (a.owner.uid, 0o700), base.parent: (0, 0o711)}, modes
        for command, path in (("ls", base.parent), ("ls", base),
                              ("cat", base / "rootfs/etc/passwd")):  # fmt: skip
            result = run_as(OTHER, command, str(path))
            assert result.returncode != 0 and b"Permission denied" in result.stderr, result
    finally:
        service.ok("--unregister", "sec-users-stored", user=ATTACKER)


def test_registry_files_reveal_nothing_to_other_users(
    service: Service, distributions: tuple[UserDistribution, UserDistribution]
) -> None:
    """The registry (and its write-ahead log and shared-memory index) names everyone's
    distributions, GUIDs and paths: no other user may read any of it."""
    guid = guid_of(service, A_NAME, user=ATTACKER)
    service.ok("--set-default", A_NAME, user=ATTACKER)  # a fresh write, so the log holds it
    files = sorted(service.state_dir.glob("registry.sqlite*"))
    assert {p.name for p in files} >= {"registry.sqlite", "registry.sqlite-wal"}, files
    problems = []
    for path in files:
        result = run_as(OTHER, "cat", str(path))
        mode = oct(path.stat().st_mode & 0o777)
        if A_NAME.encode() in result.stdout or guid.encode() in result.stdout:
            problems.append(f"{path.name} ({mode}) shows A's distribution to B")
        elif result.returncode == 0:
            problems.append(f"{path.name} ({mode}) is readable by B")
    assert problems == []


def test_ids_of_a_users_vm_are_the_users_own(service: Service, a_running: UserDistribution) -> None:
    """Every process of A's VM runs as A or one of A's subordinate ids; A's range meets no
    other user's range and no uid of the machine's users."""
    a, b = User.named(ATTACKER), User.named(OTHER)
    ranges = {r.owner: r for r in parse_ranges(Path("/etc/subuid").read_text())}
    mine, theirs = ranges[ATTACKER], ranges[OTHER]
    a_ids = {a.uid, *range(mine.start, mine.end)}
    assert not a_ids & {b.uid, *range(theirs.start, theirs.end)}
    machine = {int(line.split(":")[2]) for line in Path("/etc/passwd").read_text().splitlines()}
    assert not (a_ids - {a.uid}) & machine
    uids = {host_uid_of(pid) for pid in processes_in_cgroup(service, a.uid)} - {None}
    assert uids and uids <= a_ids, uids
    # Any uid of the distribution is, on the host, one of A's subordinate ids.
    a_running.ok("touch /root/ids; chown 4242:4242 /root/ids")
    try:
        st = (a_running.rootfs / "root/ids").stat()
        assert st.st_uid == mine.start + 4242 - 1, (st.st_uid, mine)
    finally:
        (a_running.rootfs / "root/ids").unlink()
    for pid in processes_in_cgroup(service, a.uid):  # nor may B signal any of them
        assert run_as(OTHER, "kill", "-0", str(pid)).returncode != 0, pid


def test_descriptors_another_user_opens_give_no_more_than_their_rights(
    service: Service, distributions: tuple[UserDistribution, UserDistribution]
) -> None:
    """Raw RegisterDistribution calls from B with descriptors B opened itself: A's home
    (B may read it), a path-only descriptor of /root, /etc/shadow opened O_PATH as the
    archive. The service must lend none of them root's rights: a path-only archive is
    refused as such before anything reads it."""
    a, b = distributions
    target = Path(b.owner.home) / "sec-target"
    assert run_as(OTHER, "mkdir", str(target)).returncode == 0
    null = ("/dev/null", os.O_RDONLY)
    shadow = ("/etc/shadow", os.O_PATH)
    cases = {
        # name: (what B opens, which descriptor is which, the error)
        "location-of-a": ([(a.owner.home, os.O_RDONLY | os.O_DIRECTORY), null],
                          {"location": 0, "archive": 1}, "PermissionDenied"),
        "location-root-opath": ([("/root", os.O_PATH | os.O_DIRECTORY), null],
                                {"location": 0, "archive": 1}, "PermissionDenied"),
        "location-a-file": ([("/etc/passwd", os.O_PATH), null],
                            {"location": 0, "archive": 1}, "InvalidArgument"),
        "shadow-opath": ([shadow, (str(target), os.O_RDONLY | os.O_DIRECTORY)],
                         {"archive": 0, "location": 1}, "InvalidArgument"),
        "shadow-opath-stored": ([shadow], {"archive": 0}, "InvalidArgument"),
    }  # fmt: skip
    before = set(os.listdir(a.owner.home)), set(os.listdir("/root"))
    try:
        for name, (opens, fds, error) in cases.items():
            reply = call_with_fds(service, OTHER, "RegisterDistribution", opens,
                                  name=f"sec-{name}", **fds)  # fmt: skip
            assert reply.get("error") == f"io.lxss.Service.{error}", (name, reply)
            assert registry_rows(service, f"sec-{name}") == []
        assert (set(os.listdir(a.owner.home)), set(os.listdir("/root"))) == before
        assert os.listdir(target) == []
        stored = service.state_dir / str(b.owner.uid)
        assert not stored.exists() or os.listdir(stored) == []
    finally:
        target.rmdir()
