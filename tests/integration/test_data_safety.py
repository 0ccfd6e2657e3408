"""A user's files are never destroyed by a command that failed or was refused, and a
distribution's files are its owner's alone (issue 21's data-safety class, issue 11's
storage and path attacks), through the real lxss and lxssd.

- a refused or failed import removes only what it made itself: never a tree, a file or
  a link that was in the location before, and never leaves a registration behind;
- unregistering always unregisters, and names what it could not remove and where;
- a tree that disappeared and was recreated by someone else is refused at start and
  export (and unregistering it leaves the stranger's files alone);
- other host users cannot reach a distribution's files whatever the location's modes;
- a location must be named as the host sees it (not through a distribution's mounts).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LXSS, Result, Service, busybox_tarball
from mgmt import User, assert_fails, registered, registry_rows, shared_dir, spawn_lxss, wait_for
from security_support import ATTACKER, OTHER, run_as

from lxss.linux import syscalls


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with shared_dir("lxss-safety-") as work:
        tarball = busybox_tarball(work)
        tarball.chmod(0o644)
        yield tarball


@pytest.fixture
def owner(test_users: tuple[str, str]) -> Iterator[User]:
    """The attacking test user (lxsstest-a), with a fresh scratch directory in their home."""
    user = User.named(ATTACKER)
    work = Path(user.home) / f"safety-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o755)
    os.chown(work, user.uid, user.gid)
    try:
        yield user
    finally:
        shutil.rmtree(work, ignore_errors=True)


def scratch(user: User) -> Path:
    return Path(user.home) / f"safety-{os.getpid()}"


def fresh_dir(user: User, name: str) -> Path:
    """A new directory of *user*'s in their scratch directory."""
    path = scratch(user) / name
    path.mkdir()
    os.chown(path, user.uid, user.gid)
    return path


def own(path: Path, user: User) -> None:
    """chown -R path to *user* (without following links)."""
    for p in [path, *path.rglob("*")]:
        os.chown(p, user.uid, user.gid, follow_symlinks=False)


def snapshot(path: Path) -> dict[str, str | bytes]:
    """What is at and below *path*: each entry's kind and content (links not followed)."""
    found: dict[str, str | bytes] = {}
    for p in [path, *path.rglob("*")]:
        if p.is_symlink():
            found[str(p)] = f"-> {os.readlink(p)}"
        elif p.is_dir():
            found[str(p)] = "dir"
        else:
            found[str(p)] = p.read_bytes()
    return found


def rows_of(service: Service, name: str, user: User) -> list[dict[str, object]]:
    return [r for r in registry_rows(service, name) if r["owner_uid"] == user.uid]


# What was there before an import ----------------------------------------------------

PLANTED = ("rootfs", "distribution")  # lxss's own names in a location


def _plant(where: Path, kind: str, elsewhere: Path) -> None:
    if kind == "tree":
        (where / "etc").mkdir(parents=True)
        (where / "etc/precious").write_text("the user's data\n")
    elif kind == "file":
        where.write_text("a file the user keeps here\n")
    else:
        (elsewhere / "target").mkdir()
        (elsewhere / "target/precious").write_text("behind a link\n")
        where.symlink_to(elsewhere / "target")


@pytest.mark.parametrize("kind", ["tree", "file", "link"])
@pytest.mark.parametrize("name", PLANTED)
def test_an_import_never_touches_what_the_location_held(
    service: Service, tarball: Path, owner: User, name: str, kind: str
) -> None:
    location = scratch(owner) / "loc"
    elsewhere = scratch(owner) / "elsewhere"
    location.mkdir()
    elsewhere.mkdir()
    _plant(location / name, kind, elsewhere)
    (location / "notes.txt").write_text("mine\n")
    own(scratch(owner), owner)
    before = {**snapshot(location), **snapshot(elsewhere)}
    distro = f"safety-{name}-{kind}"
    result = service.lxss("--import", distro, str(location), str(tarball), user=owner.name)
    try:
        if result.returncode != 0:
            assert_fails(result, str(location))
            assert rows_of(service, distro, owner) == [], "a refused import left a row"
        else:
            # Imported beside what was there: it starts, and then unregisters cleanly.
            started = service.lxss("-d", distro, "--", "echo started", user=owner.name)
            assert started.out == "started\n", started
    finally:
        if result.returncode == 0:
            service.ok("--unregister", distro, user=owner.name)
    assert rows_of(service, distro, owner) == []
    assert {**snapshot(location), **snapshot(elsewhere)} == before


def test_an_import_refused_for_a_tree_already_there_keeps_it(
    service: Service, tarball: Path, owner: User
) -> None:
    location = fresh_dir(owner, "loc")
    with registered(service, "safety-first", location, tarball, user=owner.name):
        [row] = rows_of(service, "safety-first", owner)
        tree = Path(str(row["base_path"])) / "rootfs"
        assert (tree / "etc/os-release").exists()
        again = service.lxss("--import", "safety-second", str(location), str(tarball),
                             user=owner.name)  # fmt: skip
        assert_fails(again, str(location))
        assert rows_of(service, "safety-second", owner) == []
        assert (tree / "etc/os-release").exists(), "the refused import removed the first tree"
        started = service.lxss("-d", "safety-first", "--", "echo still", user=owner.name)
        assert started.out == "still\n", started


def test_a_failed_import_removes_only_what_it_made(
    service: Service, tarball: Path, owner: User
) -> None:
    location = scratch(owner) / "loc"
    location.mkdir()
    (location / "notes.txt").write_text("mine\n")
    broken = scratch(owner) / "broken.tar.gz"
    broken.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    own(scratch(owner), owner)
    result = service.lxss("--import", "safety-broken", str(location), str(broken),
                          user=owner.name)  # fmt: skip
    assert_fails(result, "import failed")
    assert rows_of(service, "safety-broken", owner) == []
    assert sorted(os.listdir(location)) == ["notes.txt"]
    assert (location / "notes.txt").read_text() == "mine\n"


# Unregistering ----------------------------------------------------------------------


def test_unregister_goes_on_when_files_cannot_be_removed(
    service: Service, tarball: Path, owner: User
) -> None:
    location = fresh_dir(owner, "loc")
    service.ok("--import", "safety-stuck", str(location), str(tarball), user=owner.name)
    [row] = rows_of(service, "safety-stuck", owner)
    tree = Path(str(row["base_path"])) / "rootfs"
    # Host root's own directory inside: the owner (whose namespace does not map host
    # root) cannot delete what it holds, as a file made immutable would be kept.
    (tree / "rootkept").mkdir()
    (tree / "rootkept/file").write_text("root's\n")
    try:
        result = service.lxss("--unregister", "safety-stuck", user=owner.name)
        assert result.returncode == 0, result
        assert result.out == "Unregistered 'safety-stuck'.\n", result
        [warning] = result.err.splitlines()
        assert warning.startswith("lxss: warning: 'safety-stuck' is unregistered, but"), warning
        assert "1 of its files could not be removed" in warning, warning
        assert str(tree) in warning and "rootkept/file" in warning, warning
        assert rows_of(service, "safety-stuck", owner) == []
        assert (tree / "rootkept/file").read_text() == "root's\n"
        assert sorted(os.listdir(tree)) == ["rootkept"], "the rest was not removed"
    finally:
        shutil.rmtree(tree / "rootkept", ignore_errors=True)


# A tree replaced behind the registry's back -----------------------------------------


def test_a_tree_recreated_by_another_user_is_refused(
    service: Service, tarball: Path, owner: User
) -> None:
    """A's location is in /tmp; the tree is deleted (as a reboot clears /tmp) and B
    recreates it with a tree of B's. A's next start must not boot B's tree as A's."""
    other = User.named(OTHER)
    location = Path(f"/tmp/lxss-safety-{os.getpid()}")
    shutil.rmtree(location, ignore_errors=True)
    location.mkdir(mode=0o755)
    os.chown(location, owner.uid, owner.gid)
    fake = Path(f"/tmp/lxss-safety-fake-{os.getpid()}")
    try:
        service.ok("--import", "safety-tmp", str(location), str(tarball), user=owner.name)
        [row] = rows_of(service, "safety-tmp", owner)
        base = Path(str(row["base_path"]))
        shutil.rmtree(location)  # the reboot
        # B rebuilds the very path, with B's own files in it.
        assert run_as(OTHER, "mkdir", "-p", str(base.parent)).returncode == 0
        unpacked = run_as(OTHER, "sh", "-c", f"mkdir -p {fake} && tar -xzf {tarball} -C {fake}"
                          f" && echo 'B was here' > {fake}/etc/marker && mkdir -p {base}"
                          f" && mv {fake} {base}/rootfs")  # fmt: skip
        assert unpacked.returncode == 0, unpacked
        assert (base / "rootfs/etc/marker").stat().st_uid == other.uid
        started = service.lxss("-d", "safety-tmp", "--", "cat /etc/marker", user=owner.name)
        assert "B was here" not in started.out, "A booted B's tree as A's own"
        assert_fails(started, "safety-tmp", str(location))
        exported = service.lxss("--export", "safety-tmp", "-", user=owner.name,
                                stdin=subprocess.DEVNULL)  # fmt: skip
        assert exported.returncode == 255 and b"B was here" not in exported.stdout, exported
        # Unregistering still works, and leaves B's files alone.
        result = service.lxss("--unregister", "safety-tmp", user=owner.name)
        assert result.returncode == 0, result
        assert rows_of(service, "safety-tmp", owner) == []
        assert (base / "rootfs/etc/marker").read_text() == "B was here\n"
    finally:
        service.lxss("--unregister", "safety-tmp", user=owner.name)
        shutil.rmtree(location, ignore_errors=True)
        shutil.rmtree(fake, ignore_errors=True)


# Who can reach a distribution's files -------------------------------------------------


def test_other_users_cannot_reach_a_tree_in_an_open_location(
    service: Service, tarball: Path, owner: User
) -> None:
    """The location is an existing 0755 directory: B must still not reach A's files
    (set-uid programs among them)."""
    location = scratch(owner) / "open"
    location.mkdir(mode=0o755)
    os.chmod(location, 0o755)
    own(location, owner)
    with registered(service, "safety-open", location, tarball, user=owner.name):
        [row] = rows_of(service, "safety-open", owner)
        tree = Path(str(row["base_path"])) / "rootfs"
        for path in (tree / "bin/busybox", tree / "etc/os-release", tree):
            result = run_as(OTHER, "stat", str(path))
            assert result.returncode != 0 and b"Permission denied" in result.stderr, (
                path,
                result,
            )
        assert stat_mode(location) == 0o755, "the user's own directory was changed"


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


# Where a location is, as the host sees it ---------------------------------------------


def _host_pid_of(marker: str, uid: int, timeout: float = 60.0) -> int:
    def find() -> int | None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                st = os.stat(f"/proc/{entry}")
            except OSError:
                continue
            if st.st_uid == uid and cmdline[:2] == [b"sleep", marker.encode()]:
                return int(entry)
        return None

    return int(wait_for(find, timeout, f"a process running {marker}"))


def open_in_mount_namespace(pid: int, path: str) -> int:
    """A descriptor of *path* opened in the mount namespace of process *pid* (by a forked
    child, which alone may enter it: setns needs a single thread), as a program inside
    that distribution would open it."""
    ours, theirs = socket.socketpair()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            syscalls.setns(os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY), syscalls.CLONE_NEWNS)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            socket.send_fds(theirs, [b"x"], [fd])
            code = 0
        finally:
            os._exit(code)
    try:
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
    finally:
        os.waitpid(child, 0)
        ours.close()
        theirs.close()
    assert len(fds) == 1, "the child could not open the directory in the distribution"
    return fds[0]


def test_a_location_named_through_a_distributions_mounts_is_refused(
    service: Service, tarball: Path, owner: User
) -> None:
    """A directory of A's distribution whose path inside reads as a directory of B's on
    the host, opened in the distribution's mount namespace and handed to lxss as the
    install location: the registry must never record B's host path as A's."""
    other = User.named(OTHER)
    location = fresh_dir(owner, "ns")
    inside = f"/var/tmp/lxss-safety-victim-{os.getpid()}"
    os.mkdir(inside, 0o700)
    os.chown(inside, other.uid, other.gid)
    with registered(service, "safety-ns", location, tarball, user=owner.name):
        service.ok("-d", "safety-ns", "--", f"mkdir -p {inside}", user=owner.name)
        marker = str(31415 + os.getpid() % 1000)
        sleeper = spawn_lxss(service, "-d", "safety-ns", "--", "sleep", marker, user=owner.name,
                             stdin=subprocess.DEVNULL)  # fmt: skip
        try:
            fd = open_in_mount_namespace(_host_pid_of(marker, owner.uid), inside)
        finally:
            sleeper.kill()
            sleeper.wait()
        try:
            entry = pwd.getpwnam(owner.name)
            proc = subprocess.run(
                [*LXSS, "--import", "safety-ns-evil", f"/proc/self/fd/{fd}", str(tarball)],
                env={**service.env, "HOME": owner.home}, user=entry.pw_uid, group=entry.pw_gid,
                extra_groups=[], pass_fds=(fd,), capture_output=True, timeout=120, cwd="/",
                stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
        finally:
            os.close(fd)
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        rows = rows_of(service, "safety-ns-evil", owner)
        if result.returncode == 0:
            service.ok("--unregister", "safety-ns-evil", user=owner.name)
        assert not any(str(r["base_path"]).startswith(inside) for r in rows), rows
        assert_fails(result, "install location", "host")
        assert rows == []
    os.rmdir(inside)


# Where an export writes ----------------------------------------------------------------


def _is_tar(data: bytes) -> bool:
    return data[257:262] == b"ustar" and len(data) % 512 == 0


def test_export_writes_through_links_and_into_fifos_and_devices(
    service: Service, busybox: str, tmp_path: Path
) -> None:
    """As `lxss --export bb X > ...` would: a link stays a link (its target gets the
    archive), a FIFO and a character device are written into, never replaced."""
    target = tmp_path / "target.tar"
    link = tmp_path / "link.tar"
    link.symlink_to(target)
    dangling = tmp_path / "dangling.tar"
    dangling.symlink_to(tmp_path / "made-through-the-link.tar")
    for path in (link, dangling):
        service.ok("--export", busybox, str(path))
        assert path.is_symlink(), f"{path} was replaced"
    assert _is_tar(target.read_bytes()) and _is_tar(
        (tmp_path / "made-through-the-link.tar").read_bytes()
    )
    # A device: a node of the kernel's null device, made here (never the host's /dev/null).
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    service.ok("--export", busybox, str(null))
    assert stat.S_ISCHR(null.lstat().st_mode), "the device node was replaced by a file"
    # A FIFO, read by another process as the export writes it.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    copy = tmp_path / "read-from-the-fifo.tar"
    with open(copy, "wb") as sink:
        reader = subprocess.Popen(["cat", str(fifo)], stdout=sink)
        try:
            service.ok("--export", busybox, str(fifo))
            reader.wait(timeout=120)
        finally:
            reader.kill()
            reader.wait()
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "the FIFO was replaced by a file"
    assert _is_tar(copy.read_bytes())
    # A regular file keeps its mode when replaced, as `>` keeps it.
    kept = tmp_path / "kept.tar"
    kept.write_bytes(b"old")
    kept.chmod(0o600)
    service.ok("--export", busybox, str(kept))
    assert _is_tar(kept.read_bytes()) and stat.S_IMODE(kept.stat().st_mode) == 0o600
    directory = tmp_path / "adir"
    directory.mkdir()
    assert_fails(service.lxss("--export", busybox, str(directory)), "is a directory")


def _holds_a_deleted_file_in(pid: int, directory: Path) -> bool:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(f"{directory}/") and target.endswith("(deleted)"):
            return True
    return False


def test_root_exporting_for_a_user_does_not_follow_a_parent_swapped_meanwhile(
    service: Service, tarball: Path, owner: User
) -> None:
    """Root exports A's distribution into A's directory; while the export runs, A swaps
    that directory for a link to a directory only root may write. The archive must not
    land there."""
    location = scratch(owner) / "loc"
    out_dir = scratch(owner) / "out"
    for d in (location, out_dir):
        d.mkdir()
    own(scratch(owner), owner)
    victim = Path(f"/root/lxss-safety-victim-{os.getpid()}")
    victim.mkdir(mode=0o700)
    try:
        with registered(service, "safety-swap", location, tarball, user=owner.name):
            # Enough to compress that the export lasts while the directory is swapped.
            service.ok("-d", "safety-swap", "--", "truncate -s 1G /zeros", user=owner.name)
            exporter = spawn_lxss(service, "--for-user", owner.name, "--export", "safety-swap",
                                  str(out_dir / "export.tar.gz"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)  # fmt: skip
            try:
                wait_for(lambda: _holds_a_deleted_file_in(exporter.pid, out_dir), 120,
                         "the export's temporary file")  # fmt: skip
                os.kill(exporter.pid, signal.SIGSTOP)
                assert not (out_dir / "export.tar.gz").exists(), "the export finished too soon"
                # A swaps the directory (as A: it is A's to rename).
                swap = f"mv {out_dir} {out_dir}.old && ln -s {victim} {out_dir}"
                swapped = run_as(owner.name, "sh", "-c", swap)
                assert swapped.returncode == 0, swapped
                os.kill(exporter.pid, signal.SIGCONT)
                _, err = exporter.communicate(timeout=600)
            finally:
                exporter.kill()
                exporter.wait()
            assert os.listdir(victim) == [], "root's export followed the swapped link"
            assert exporter.returncode == 0, err
            assert _is_tar_gz(Path(f"{out_dir}.old") / "export.tar.gz")
    finally:
        shutil.rmtree(victim, ignore_errors=True)


def _is_tar_gz(path: Path) -> bool:
    return path.read_bytes()[:2] == b"\x1f\x8b"


# --manage NAME --move DIR and --import-in-place NAME DIR -------------------------------


def test_move_takes_the_tree_along_and_leaves_nothing_behind(
    service: Service, tarball: Path, owner: User
) -> None:
    first, second = scratch(owner) / "first", scratch(owner) / "second"
    first.mkdir()
    own(first, owner)
    service.ok("--import", "safety-move", str(first), str(tarball), user=owner.name)
    try:
        service.ok("-d", "safety-move", "--", "echo kept > /root/marker", user=owner.name)
        moved = service.ok("--manage", "safety-move", "--move", str(second), user=owner.name)
        assert moved.out == f"Moved 'safety-move' to {second}.\n" and moved.err == "", moved
        [row] = rows_of(service, "safety-move", owner)
        assert row["base_path"] == str(second / "distribution")
        assert os.listdir(first) == [], "the old directory lxssd made is gone"
        assert stat_mode(second / "distribution") == 0o700
        started = service.lxss("-d", "safety-move", "--", "cat /root/marker", user=owner.name)
        assert started.out == "kept\n", started
        # Once more, onto another file system (a copy, then the old tree removed). A
        # utility VM sees the host's mounts as they were when it started: stop it first.
        other_fs = scratch(owner) / "tmpfs"
        other_fs.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"mode=0755,uid={owner.uid}", "lxss-test",
                        str(other_fs)], check=True)  # fmt: skip
        service.ok("--shutdown", user=owner.name)
        try:
            service.ok("--manage", "safety-move", "--move", str(other_fs), user=owner.name)
            assert not (second / "distribution").exists()
            started = service.lxss("-d", "safety-move", "--", "cat /root/marker", user=owner.name)
            assert started.out == "kept\n", started
            # A target already holding lxss's directory is refused; nothing moves.
            refused = service.lxss("--manage", "safety-move", "--move", str(other_fs),
                                   user=owner.name)  # fmt: skip
            assert_fails(refused, str(other_fs))
            started = service.lxss("-d", "safety-move", "--", "cat /root/marker", user=owner.name)
            assert started.out == "kept\n", started
        finally:
            service.ok("--unregister", "safety-move", user=owner.name)
            subprocess.run(["umount", str(other_fs)], check=True)
    finally:
        service.lxss("--unregister", "safety-move", user=owner.name)


def test_import_in_place_registers_a_tree_where_it_is(
    service: Service, tarball: Path, owner: User
) -> None:
    directory = scratch(owner) / "inplace"
    (directory / "rootfs").mkdir(parents=True)
    own(directory, owner)
    unpacked = run_as(owner.name, "tar", "-xzf", str(tarball), "-C", str(directory / "rootfs"))
    assert unpacked.returncode == 0, unpacked
    before = snapshot(directory)
    # Refused while other users can reach it (and its set-uid programs); nothing changes.
    directory.chmod(0o755)
    assert_fails(service.lxss("--import-in-place", "safety-inplace", str(directory),
                              user=owner.name), "chmod 700")  # fmt: skip
    assert rows_of(service, "safety-inplace", owner) == [] and snapshot(directory) == before
    directory.chmod(0o700)
    empty = scratch(owner) / "empty"
    empty.mkdir(mode=0o700)
    own(empty, owner)
    assert_fails(service.lxss("--import-in-place", "safety-inplace", str(empty),
                              user=owner.name), "rootfs")  # fmt: skip
    result = service.ok("--import-in-place", "safety-inplace", str(directory), user=owner.name)
    assert result.out == f"Registered 'safety-inplace' in place at {directory}.\n"
    started = service.lxss("-d", "safety-inplace", "--", ". /etc/os-release; echo $ID",
                           user=owner.name)  # fmt: skip
    assert started.out == "testbox\n", started
    [row] = rows_of(service, "safety-inplace", owner)
    assert row["base_path"] == str(directory)
    service.ok("--unregister", "safety-inplace", user=owner.name)
    assert os.listdir(directory) == [], "unregistering removes the tree, as WSL removes the disk"
