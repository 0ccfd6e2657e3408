"""Your user is you: a distribution's default user acts as its owner on the host
(docs/security.md, "Identity").

The owner is lxsstest-a; their Debian distribution gets a user of the owner's own name
and uid, made its default user, as the first run would. lxsstest-b is another host user
whose private file must stay out of reach. Every check looks at both sides: what the
distribution says (`stat`, `ls -ln`) and what the host's file system holds.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Result, Service
from mgmt import User, rootfs_of, shared_dir, spawn_lxss
from security_support import ATTACKER, OTHER, host_uid_of, processes_in_cgroup

from lxss.linux.subids import parse_ranges

NAME = "identity-deb"
SUDOERS = "/etc/sudoers.d/lxss-test"


@dataclass
class Debian:
    service: Service
    owner: User
    name: str
    location: Path

    def run(self, script: str, user: str | None = None, timeout: float = 120.0) -> Result:
        args = ["-d", self.name] + (["-u", user] if user else []) + ["--", script]
        return self.service.lxss(*args, user=self.owner.name, timeout=timeout)

    def ok(self, script: str, user: str | None = None, timeout: float = 120.0) -> str:
        result = self.run(script, user, timeout)
        assert result.returncode == 0, f"{script!r} as {user or 'the default user'}: {result}"
        return result.out

    def restart(self) -> None:
        self.service.ok("-t", self.name, user=self.owner.name)


def _sub_start(owner: str, kind: str) -> int:
    for r in parse_ranges(Path(f"/etc/sub{kind}").read_text()):
        if r.owner == owner:
            return r.start
    raise AssertionError(f"{owner} has no sub{kind} range")


@pytest.fixture(scope="module")
def debian(service: Service, test_users: tuple[str, str], debian_tarball: Path) -> Iterator[Debian]:
    """lxsstest-a's Debian, with sudo and a user of the owner's name and uid as default."""
    owner = User.named(ATTACKER)
    location = Path(owner.home) / NAME
    with shared_dir("lxss-identity-") as work:
        tarball = work / "debian.tar.gz"
        shutil.copy(debian_tarball, tarball)
        tarball.chmod(0o644)
        service.ok("--import", NAME, str(location), str(tarball), user=owner.name, timeout=600)
    distribution = Debian(service, owner, NAME, location)
    try:
        distribution.ok(
            "export DEBIAN_FRONTEND=noninteractive; "
            "(apt-get update -qq && apt-get install -y -qq --no-install-recommends sudo) "
            ">/tmp/apt.log 2>&1 || { tail -20 /tmp/apt.log; exit 1; }; "
            f"groupadd -g {owner.gid} {owner.name} && "
            f"useradd -m -s /bin/bash -u {owner.uid} -g {owner.gid} {owner.name} && "
            f"echo '{owner.name} ALL=(ALL) NOPASSWD: ALL' > {SUDOERS} && chmod 440 {SUDOERS}",
            user="root",
            timeout=600,
        )
        service.ok("--manage", NAME, "--set-default-user", owner.name, user=owner.name)
        # Each test starts from a stopped VM (the host is compared before and after it).
        service.ok("--shutdown", user=owner.name)
        yield distribution
    finally:
        service.lxss("--unregister", NAME, user=owner.name, timeout=120)
        shutil.rmtree(location, ignore_errors=True)


@pytest.fixture
def project() -> Iterator[Path]:
    """A project directory of the owner's in their home, and a private file of lxsstest-b."""
    owner, other = User.named(ATTACKER), User.named(OTHER)
    directory = Path(owner.home) / "project"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    (directory / "notes.txt").write_text("a line\n")
    for path in (directory, directory / "notes.txt"):
        os.chown(path, owner.uid, owner.gid)
    os.chmod(owner.home, 0o755)  # so the test (and b's attempt) can name paths below it
    secret = Path(other.home) / "secret"
    secret.write_text("b's secret\n")
    os.chown(secret, other.uid, other.gid)
    secret.chmod(0o600)
    os.chmod(other.home, 0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        secret.unlink(missing_ok=True)


def _host_ids(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def test_the_default_user_edits_creates_and_chmods_as_the_owner(
    debian: Debian, project: Path
) -> None:
    owner = debian.owner
    inside = f"/mnt/host{project}"
    out = debian.ok(
        f"id -u; id -g; cd {inside} && echo more >> notes.txt && echo new > new.txt && "
        f"chmod 640 new.txt && mkdir sub && touch sub/deep && chmod 700 sub"
    )
    assert out == f"{owner.uid}\n{owner.gid}\n"
    assert (project / "notes.txt").read_text() == "a line\nmore\n"
    for path in ("notes.txt", "new.txt", "sub", "sub/deep"):
        assert _host_ids(project / path) == (owner.uid, owner.gid), path
    assert stat.S_IMODE(os.stat(project / "new.txt").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(project / "sub").st_mode) == 0o700


def test_ls_ln_agrees_on_both_sides(debian: Debian, project: Path) -> None:
    (project / "host-made").write_text("x")
    os.chown(project / "host-made", debian.owner.uid, debian.owner.gid)
    debian.ok(f"touch /mnt/host{project}/inside-made")

    def columns(text: str) -> list[tuple[str, ...]]:
        rows = [line.split() for line in text.splitlines() if not line.startswith("total")]
        return sorted((r[2], r[3], r[-1]) for r in rows)

    inside = columns(debian.ok(f"ls -ln /mnt/host{project}"))
    host = columns(subprocess.run(["ls", "-ln", str(project)], capture_output=True, text=True,
                                  check=True).stdout)  # fmt: skip
    assert inside == host
    assert {(u, g) for u, g, _ in inside} == {(str(debian.owner.uid), str(debian.owner.gid))}


def test_the_default_user_cannot_read_another_users_private_file(
    debian: Debian, project: Path
) -> None:
    other = User.named(OTHER)
    for user in (None, "root"):
        result = debian.run(f"cat /mnt/host{other.home}/secret", user=user)
        assert result.returncode != 0 and "secret" not in result.out, (user, result)
        assert "Permission denied" in result.err, (user, result)
    result = debian.run(f"echo x > /mnt/host{other.home}/planted", user="root")
    assert result.returncode != 0 and not Path(other.home, "planted").exists()


def test_sudo_edits_an_owners_file_and_the_owner_keeps_it(debian: Debian, project: Path) -> None:
    owner = debian.owner
    inside = f"/mnt/host{project}"
    debian.ok(
        f"sudo sed -i s/line/LINE/ {inside}/notes.txt && "
        f"echo appended | sudo tee -a {inside}/notes.txt >/dev/null && "
        f"sudo chmod 600 {inside}/notes.txt"
    )
    assert (project / "notes.txt").read_text() == "a LINE\nappended\n"
    assert _host_ids(project / "notes.txt") == (owner.uid, owner.gid)
    assert stat.S_IMODE(os.stat(project / "notes.txt").st_mode) == 0o600
    # The documented decision for *new* files root makes there: they are root's, whose host
    # id is in the owner's subordinate range (never the host's root, never anyone else).
    debian.ok(f"sudo touch {inside}/made-by-root")
    uid, gid = _host_ids(project / "made-by-root")
    sub_uid, sub_gid = _sub_start(owner.name, "uid"), _sub_start(owner.name, "gid")
    assert sub_uid <= uid < sub_uid + 65535 and sub_gid <= gid < sub_gid + 65535
    # ... and the default user removes them and takes them back with sudo chown.
    debian.ok(f"sudo chown {owner.name}: {inside}/made-by-root && rm {inside}/made-by-root")


def test_distribution_root_has_no_more_than_the_owner(debian: Debian, project: Path) -> None:
    owner = debian.owner
    with shared_dir("lxss-identity-root-") as drop:
        (drop / "roots").write_text("host root's\n")
        (drop / "roots").chmod(0o644)
        attempts = {
            "write a host root's file": f"echo x >> /mnt/host{drop}/roots",
            "read /etc/shadow": "cat /mnt/host/etc/shadow",
            "list /root": "ls /mnt/host/root",
        }
        for what, script in attempts.items():
            result = debian.run(script, user="root")
            assert result.returncode != 0, f"{what}: {result}"
        assert (drop / "roots").read_text() == "host root's\n"
    # Root may give the owner's file to root, which is an id of the owner's range on the
    # host (the owner's to manage), never the host's root.
    debian.ok(f"chown 0:0 /mnt/host{project}/notes.txt", user="root")
    root_id = _sub_start(owner.name, "uid") + owner.uid - 1
    assert _host_ids(project / "notes.txt")[0] == root_id
    # Root's processes are an id of the owner's range on the host: neither the owner nor root.
    proc = spawn_lxss(debian.service, "-d", NAME, "-u", "root", "--", "echo up; exec sleep 60",
                      user=owner.name, stdin=subprocess.DEVNULL,
                      stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        uids = {host_uid_of(pid) for pid in processes_in_cgroup(debian.service, owner.uid)}
        assert root_id in uids and 0 not in uids
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _tree_owners(debian: Debian) -> str:
    return debian.ok(
        "stat -c '%u:%g %n' / /etc/passwd /usr/bin/sudo /home/* /home/*/* /var/lib/identity/* "
        "2>/dev/null | sort",
        user="root",
    )


def test_the_tree_keeps_its_owners_across_default_user_export_and_restart(
    debian: Debian, test_users: tuple[str, str]
) -> None:
    owner = debian.owner
    debian.ok(
        "mkdir -p /var/lib/identity && touch /var/lib/identity/root-file && "
        "useradd -u 1500 other1500 2>/dev/null; touch /var/lib/identity/u1500 && "
        "chown 1500:1500 /var/lib/identity/u1500",
        user="root",
    )
    debian.ok(f"touch /home/{owner.name}/mine")
    before = _tree_owners(debian)
    assert f"{owner.uid}:{owner.gid} /home/{owner.name}/mine" in before
    assert "1500:1500 /var/lib/identity/u1500" in before and "0:0 /etc/passwd" in before
    # The stored tree does not change with the default user: the owner's files are stored
    # with the id of their inside owner in the owner's range.
    stored = rootfs_of(debian.location) / "home" / owner.name / "mine"
    stored_ids = _host_ids(stored)
    # A change of default user (registry), then [user] default in wsl.conf, then back.
    debian.service.ok("--manage", NAME, "--set-default-user", "root", user=owner.name)
    debian.restart()
    assert debian.ok("id -u") == "0\n"
    assert _tree_owners(debian) == before
    debian.ok("printf '[user]\\ndefault = other1500\\n' > /etc/wsl.conf", user="root")
    debian.restart()
    assert debian.ok("id -u") == "1500\n"
    assert _tree_owners(debian) == before
    debian.ok("rm /etc/wsl.conf", user="root")
    debian.service.ok("--manage", NAME, "--set-default-user", owner.name, user=owner.name)
    debian.restart()
    assert _tree_owners(debian) == before
    assert _host_ids(stored) == stored_ids
    # A restart of everything.
    debian.service.ok("--shutdown", user=owner.name)
    assert _tree_owners(debian) == before
    # An export and a re-import under another name.
    with shared_dir("lxss-identity-export-") as work:
        os.chmod(work, 0o777)
        archive = work / "deb.tar"
        debian.service.ok("--export", NAME, str(archive), user=owner.name, timeout=600)
        copy = Debian(debian.service, owner, "identity-copy", Path(owner.home) / "identity-copy")
        debian.service.ok("--import", copy.name, str(copy.location), str(archive),
                          user=owner.name, timeout=600)  # fmt: skip
    try:
        debian.service.ok("--manage", copy.name, "--set-default-user", owner.name,
                          user=owner.name)  # fmt: skip
        assert _tree_owners(copy) == before
        assert copy.ok("id -u") == f"{owner.uid}\n"
    finally:
        debian.service.lxss("--unregister", copy.name, user=owner.name, timeout=120)
        shutil.rmtree(copy.location, ignore_errors=True)


def _host_ids_of_root_process(service: Service, name: str) -> set[int | None]:
    proc = spawn_lxss(service, "-d", name, "--", "echo up; exec sleep 60",
                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        return {host_uid_of(pid) for pid in processes_in_cgroup(service, 0)}
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_roots_distributions_are_mapped_to_roots_range(service: Service, busybox: str) -> None:
    start = _sub_start("root", "uid")
    uids = _host_ids_of_root_process(service, busybox)
    assert uids == {start + 65535}, f"root's distribution runs as {uids} on the host"
    result = service.lxss("-d", busybox, "--", "cat /mnt/host/etc/shadow; ls /mnt/host/root")
    assert result.returncode != 0 and "Permission denied" in result.err


def test_roots_distributions_as_root_when_the_machine_says_so(fresh_service: Service) -> None:
    fresh_service.machine_config.write_text("[security]\nrootDistributionsMapped = false\n")
    fresh_service.ok("--install", "busybox", "--name", "bbroot", "--no-launch", timeout=120)
    assert _host_ids_of_root_process(fresh_service, "bbroot") == {0}
    assert fresh_service.ok("-d", "bbroot", "--", "head -c 5 /mnt/host/etc/shadow").out
