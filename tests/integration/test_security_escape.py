"""Distribution root is not host root: attacks from inside a distribution owned by an
unprivileged user, each tried for real and each expected to fail.

The attacker is root of `sec-escape`, owned by lxsstest-a, with a static helper
(`lxss_attack`, see lxss_attack.c) for the system calls busybox has no applet for.
Promise 1 and 5 of docs/security.md: whatever it does, it can do no more than its
owner could on the host, and nothing of the service reaches it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SRC, Service
from mgmt import User, shared_dir, spawn_lxss
from security_support import (
    ATTACK,
    ATTACKER,
    OTHER,
    REFUSED,
    UserDistribution,
    attack_helper,
    parse_attempts,
    sha256,
    tree_digest,
    user_distribution,
)

from lxss.linux import userns
from lxss.linux.subids import parse_ranges

NAME = "sec-escape"


@pytest.fixture(scope="module")
def attacker(service: Service, test_users: tuple[str, str]) -> Iterator[UserDistribution]:
    with user_distribution(service, ATTACKER, NAME) as distribution:
        yield distribution


def against_roles(*templates: str) -> str:
    """A script running `lxss_attack TEMPLATE` against each lxss role the distribution's
    /proc shows (init, session leader and this launch's relay; {pid} is the role's pid),
    printing "role: NAME PID" for each role found."""
    attempts = "\n".join(f"    {ATTACK} {t.format(pid='$pid')}" for t in templates)
    return (
        "for p in /proc/[0-9]*; do\n"
        "  pid=${p#/proc/}; name=$(cat $p/comm 2>/dev/null)\n"
        '  case "$name" in lxss-*)\n'
        f"    echo role: $name $pid\n{attempts};;\n"
        "  esac\n"
        "done"
    )


def roles_found(attempts: dict[str, list[str]]) -> int:
    """How many roles a script of :func:`against_roles` attacked (each of the three kinds)."""
    roles = attempts.pop("role")
    assert {"lxss-init", "lxss-session", "lxss-relay"} <= set(roles), roles
    return len(roles)


def assert_refused(
    attempts: dict[str, list[str]], expected: int, allowed: tuple[str, ...] = REFUSED
) -> None:
    """Exactly *expected* attempts were made, and the kernel refused every one."""
    outcomes = [outcome for results in attempts.values() for outcome in results]
    assert len(outcomes) == expected, attempts
    assert all(outcome in allowed for outcome in outcomes), attempts


# Reading the host's secrets -------------------------------------------------------------


def test_host_shadow_is_unreadable_by_every_path(attacker: UserDistribution) -> None:
    shadow = Path("/etc/shadow").read_text()
    with shared_dir("lxss-suid-") as directory:
        # A set-user-ID-root program on the host: the distribution may run it, but the kernel
        # must not make it root for a namespace where the host's root is not mapped.
        suid = directory / "lxss_attack"
        shutil.copy2(attack_helper(), suid)
        os.chown(suid, 0, 0)
        suid.chmod(0o4755)
        paths = [
            "/mnt/host/etc/shadow",
            "/proc/self/root/mnt/host/etc/shadow",
            "/proc/1/root/etc/shadow",
        ]
        commands = [f"read {path}" for path in paths]
        commands += ["open_by_handle /mnt/host/etc/shadow", "chroot_escape /mnt/host/etc/shadow"]
        script = against_roles("read /proc/{pid}/root/mnt/host/etc/shadow") + "\n"
        script += "\n".join(f"{ATTACK} {c}" for c in commands) + (
            f"\n/mnt/host{suid} read /mnt/host/etc/shadow"
            # A descriptor of the host's /etc, then a path through /proc/self/fd.
            "\nexec 3</mnt/host/etc; cat /proc/self/fd/3/shadow; exec 3<&-"
            "\ncat /mnt/host/etc/shadow; cat /proc/1/root/mnt/host/etc/shadow"
            # A hard link where the owner may write (fs.protected_hardlinks refuses it; were
            # it made, the link would be as unreadable as the file).
            "\nln /mnt/host/etc/shadow /mnt/host/tmp/lxss-shadow-link-$$ 2>/dev/null"
            "\ncat /mnt/host/tmp/lxss-shadow-link-$$; rm -f /mnt/host/tmp/lxss-shadow-link-$$"
        )
        result = attacker.run(script)
    attempts = parse_attempts(result.out)
    roles = roles_found(attempts)
    assert_refused(attempts, roles + len(commands) + 1)
    assert shadow not in result.out and shadow not in result.err
    assert result.err.count("Permission denied") >= 3, result.err


def test_lxss_roles_are_out_of_reach(attacker: UserDistribution) -> None:
    """init, the session leader and the relay run the host's interpreter with the service's
    channels: no ptrace, memory, descriptor, executable, root or namespace of theirs."""
    templates = ["ptrace {pid}", "vm_read {pid}", "getfd {pid} 3", "read /proc/{pid}/exe",
                 "write /proc/{pid}/exe", "read /proc/{pid}/environ", "read /proc/{pid}/mem",
                 "read /proc/{pid}/root", "setns /proc/{pid}/ns/mnt"]  # fmt: skip
    attempts = parse_attempts(attacker.ok(against_roles(*templates)).out)
    roles = roles_found(attempts)
    assert_refused(attempts, roles * len(templates))
    # mini_init, pid 1 of the VM, shows through the host mount's /proc (the VM's).
    listing = attacker.ok("grep -l lxss-mini_init /mnt/host/proc/[0-9]*/comm").out.split()
    assert len(listing) == 1, listing
    mini_init = listing[0].split("/")[-2]
    commands = [f"read /mnt/host/proc/{mini_init}/{what}" for what in ("exe", "environ", "root")]
    commands += [f"setns /mnt/host/proc/{mini_init}/ns/pid", f"ptrace {mini_init}"]
    attempts = attacker.attack(*commands)
    assert_refused(attempts, len(commands), (*REFUSED, "ESRCH"))
    listed = attacker.run("ls -l /proc/1/fd /mnt/host/proc/*/fd")
    assert "socket:" not in listed.out and "Permission denied" in listed.err, listed


def test_host_processes_are_out_of_reach(service: Service, attacker: UserDistribution) -> None:
    """lxssd and another user's process, even where the host's /proc shows through (the
    distribution may unmount the VM's /proc over /mnt/host/proc and see the host's)."""
    other = User.named(OTHER)
    victim = subprocess.Popen(["sleep", "120"], user=other.uid, group=other.gid, extra_groups=[])
    try:
        own = attacker.ok("ls /proc").out.split()
        assert str(service.pid) not in own and str(victim.pid) not in own
        commands = []
        for pid in (service.pid, victim.pid, 1):
            proc = f"/mnt/host/proc/{pid}"
            commands += [f"ptrace {pid}", f"vm_read {pid}", f"getfd {pid} 0",
                         f"read {proc}/environ", f"read {proc}/exe", f"setns {proc}/ns/mnt",
                         f"setns {proc}/ns/user", f"write {proc}/mem"]  # fmt: skip
        script = "umount /mnt/host/proc 2>/dev/null\n" + "\n".join(
            f"{ATTACK} {command}" for command in commands
        )
        result = attacker.run(script)
        assert_refused(parse_attempts(result.out), len(commands), (*REFUSED, "ESRCH", "ENOENT"))
        assert victim.poll() is None, "the other user's process was killed"
    finally:
        victim.kill()
        victim.wait()
    assert service.process is not None and service.process.poll() is None


# Writing ---------------------------------------------------------------------------------


def test_writes_reach_only_the_owners_files(service: Service, attacker: UserDistribution) -> None:
    a, b = User.named(ATTACKER), User.named(OTHER)
    python = os.path.realpath(sys.executable)
    before = {path: sha256(path) for path in (python, "/etc/passwd", "/etc/hosts")}
    targets = [f"/mnt/host{path}" for path in before]
    targets += [f"/mnt/host{service.state_dir}/registry.sqlite", f"/mnt/host{SRC}/lxss/__init__.py"]
    tag = f"lxss-write-{os.getpid()}"
    creations = [f"/mnt/host/etc/{tag}", f"/mnt/host{service.state_dir}/{tag}",
                 f"/mnt/host{SRC}/{tag}", f"/mnt/host{b.home}/{tag}", f"/mnt/host/root/{tag}",
                 f"/mnt/host{service.runtime_dir}/{tag}"]  # fmt: skip
    script = "\n".join(f"{ATTACK} write {path}" for path in targets)
    script += "".join(
        f"\necho x > {path} 2>/dev/null && echo created: {path}" for path in creations
    )
    # The owner's own home: allowed, as the owner (and ids only from the owner's range).
    script += f"\necho mine > /mnt/host{a.home}/{tag} && echo own: ok"
    script += f"\nchown 1:1 /mnt/host{a.home}/{tag} && echo chown-range: ok"
    script += f"\nchown 65536 /mnt/host{a.home}/{tag} 2>/dev/null || echo chown-outside: refused"
    result = attacker.run(script)
    attempts = parse_attempts(result.out)
    assert attempts.pop("own") == ["ok"], result
    assert attempts.pop("chown-range") == ["ok"], result
    assert attempts.pop("chown-outside") == ["refused"], result
    assert "created" not in attempts, result
    assert_refused(attempts, len(targets))
    mine = Path(a.home) / tag
    try:
        st = mine.stat()
        # Inside id 1 is the first id of the owner's range on the host.
        ranges = parse_ranges(Path("/etc/subuid").read_text())
        first_subuid = next(r.start for r in ranges if r.owner in (a.name, str(a.uid)))
        assert (st.st_uid, mine.read_text()) == (first_subuid, "mine\n")
    finally:
        mine.unlink()
    for path in creations:
        assert not os.path.exists(path.removeprefix("/mnt/host")), path
    assert {path: sha256(path) for path in before} == before


def test_host_interpreter_and_lxss_code_cannot_be_overwritten(
    service: Service, attacker: UserDistribution
) -> None:
    """The runc CVE-2019-5736 family: the lxss roles run the host's Python inside the
    distribution. A watcher opens every /proc/PID/exe, for writing and for reading, while
    programs are being launched (a relay's child is the host's interpreter until it execs
    the program); it must never reach the interpreter's file."""
    python = os.path.realpath(sys.executable)
    st = os.stat(python)
    digests = {python: sha256(python), **tree_digest(SRC / "lxss")}
    watcher = spawn_lxss(
        service, "-d", NAME, "--", f"{ATTACK} exe_watch {st.st_dev} {st.st_ino} 4",
        user=ATTACKER, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        started = time.monotonic()
        launches = 0
        while time.monotonic() - started < 3:
            attacker.ok("true")
            launches += 1
        out, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, err
    assert launches >= 5
    line = out.decode().strip()
    assert line.startswith("exe_watch: scans="), line
    fields = dict(item.split("=") for item in line.split()[1:])
    assert int(fields["scans"]) > 10, line
    assert fields["writable"] == "0" and fields["host"] == "0", line
    attempts = attacker.attack(
        "write /proc/1/exe", "write /proc/self/exe", f"write /mnt/host{python}",
        f"write /mnt/host{userns.__file__}",
    )  # fmt: skip
    assert attempts["write"][0] in REFUSED and attempts["write"][2:] == ["EACCES", "EACCES"]
    assert attempts["write"][1] == "ETXTBSY", attempts  # its own program: busy, not ours
    assert {python: sha256(python), **tree_digest(SRC / "lxss")} == digests


def test_shadowing_python_modules_are_never_imported(
    service: Service, attacker: UserDistribution
) -> None:
    """The roles run after pivot_root, where the interpreter's library paths name the
    distribution's files: a module imported late would be the distribution's code running
    with the service's channels. Every standard and lxss module name is planted; none may
    run, whatever the roles are asked to do."""
    marker = "/lxss-planted-module-ran"
    payload = f"open({marker!r}, 'a').write(__name__ + '\\n')\n".encode()
    planted = attacker.rootfs
    library = f"usr/lib/python{sys.version_info.major}.{sys.version_info.minor}"
    names = [f"{library}/{name}.py" for name in sys.stdlib_module_names]
    names += [f"{library}/encodings/{p.stem}.py" for p in Path(os.__file__).parent.glob(
        "encodings/*.py")]  # fmt: skip
    names += [str(p.relative_to("/")) for p in (SRC / "lxss").rglob("*.py")]
    owner = attacker.rootfs.stat()
    for name in names:
        path = planted / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    subprocess.run(["chown", "-R", f"{owner.st_uid}:{owner.st_gid}", str(planted / "usr"),
                    str(planted / str(SRC).lstrip("/").split("/")[0])], check=True)  # fmt: skip
    try:
        conf = "[boot]\ncommand=true\n[network]\nhostname=planted\n[user]\ndefault=root\n"
        attacker.ok("cat > /etc/wsl.conf", input=conf.encode())
        service.ok("--terminate", NAME, user=ATTACKER)
        attacker.ok("echo started")
        assert attacker.run("true", user="nobody-here").returncode != 0
        assert attacker.service.lxss("-d", NAME, "--cd", "/missing", "-e", "/missing",
                                     user=ATTACKER).returncode != 0  # fmt: skip
        # A launch on a terminal: the relay allocates a pty and copies for it.
        parent, child = os.openpty()
        try:
            with_tty = service.lxss("-d", NAME, "--", "tty; stty size", user=ATTACKER,
                                    stdin=child)  # fmt: skip
        finally:
            os.close(parent)
            os.close(child)
        assert with_tty.returncode == 0, with_tty
        service.ok("--terminate", NAME, user=ATTACKER)
        assert not (planted / marker.lstrip("/")).exists(), planted / marker.lstrip("/")
    finally:
        shutil.rmtree(planted / "usr/lib", ignore_errors=True)
        shutil.rmtree(planted / str(SRC).lstrip("/").split("/")[0], ignore_errors=True)
        (planted / "etc/wsl.conf").unlink(missing_ok=True)
        (planted / marker.lstrip("/")).unlink(missing_ok=True)


# Devices, mounts, modules ----------------------------------------------------------------


def _root_device() -> tuple[str, int, int]:
    st = os.stat("/")
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    name = os.path.basename(os.path.realpath(f"/sys/dev/block/{major}:{minor}"))
    return name, major, minor


def test_host_block_devices_and_device_nodes_are_out_of_reach(attacker: UserDistribution) -> None:
    disk, major, minor = _root_device()
    commands = [
        f"mknod /tmp/disk b {major} {minor}",
        "mknod /tmp/mem c 1 1",
        "mknod /tmp/kmsg c 1 11",
        f"read /mnt/host/dev/{disk}",
        f"write /mnt/host/dev/{disk}",
        f"mount /mnt/host/dev/{disk} /mnt ext4",
        "mount none /mnt devtmpfs",
        "idmap /mnt/host/etc",
        "idmap /mnt/host/etc /mnt",
    ]
    commands += [f"read /mnt/host/dev/{name}" for name in ("mem", "kmem", "port", "loop-control",
                                                          "sda", "nvme0n1", "kvm", "vhost-net")
                 if os.path.exists(f"/dev/{name}")]  # fmt: skip
    attempts = attacker.attack(*commands)
    assert_refused(attempts, len(commands))
    shell = attacker.run(
        f"mknod /tmp/d b {major} {minor}; mount /mnt/host/dev/{disk} /mnt;"
        " mount -o remount,rw /sys && echo sys-rw: ok; ls -l /dev"
    )
    assert "sys-rw: ok" not in shell.out, shell
    assert "Operation not permitted" in shell.err and "permission denied" in shell.err, shell
    listing = shell.out.splitlines()
    assert not [line for line in listing if line.startswith("b")], shell.out


def test_no_kernel_module_can_be_loaded(attacker: UserDistribution) -> None:
    attempts = attacker.attack("finit_module /bin/busybox", "init_module")
    # ENOSYS: a kernel built without module support refuses as surely.
    assert_refused(attempts, 2, ("EPERM", "ENOSYS"))
    result = attacker.run("insmod /bin/busybox")
    assert result.returncode != 0 and "can't insert" in result.err, result


def test_hostname_clock_and_kernel_settings_stay_the_hosts(attacker: UserDistribution) -> None:
    host_name = socket.gethostname()
    before = time.time()
    result = attacker.run("hostname lxss-attacker && hostname && date -s 2001-01-01 2>&1; true")
    assert result.out.splitlines()[0] == "lxss-attacker", result  # its own UTS namespace
    assert "can't set date" in result.out, result
    # Opening for writing is the whole attempt: nothing is ever written. The classic escapes
    # (core_pattern, modprobe, uevent_helper, cgroup v1 release_agent) run programs as root.
    settings = [
        "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/proc/sys/kernel/hostname",
        "/proc/sys/kernel/panic", "/proc/sys/vm/drop_caches", "/proc/sys/net/ipv4/ip_forward",
        "/proc/sysrq-trigger", "/sys/kernel/uevent_helper", "/sys/kernel/mm/ksm/run",
        *(str(p) for p in Path("/sys/fs/cgroup").glob("*/release_agent")),
    ]  # fmt: skip
    settings = [path for path in settings if os.path.exists(path)]  # what this kernel has
    settings += ["/mnt/host/proc/sys/kernel/core_pattern", "/mnt/host/proc/sys/kernel/hostname"]
    attempts = attacker.attack(*(f"write {path}" for path in settings), "settime", "settimeofday",
                               "nice", "rlimit", "raw_socket")  # fmt: skip
    assert_refused(attempts, len(settings) + 5, (*REFUSED, "EROFS"))
    assert socket.gethostname() == host_name
    assert abs(time.time() - before) < 120
    assert attacker.ok("hostname").out.strip() == "lxss-attacker"


# Descriptors -----------------------------------------------------------------------------


def test_no_descriptor_of_the_service_reaches_a_program(
    service: Service, attacker: UserDistribution, tmp_path: Path
) -> None:
    """Only the three streams the caller passed, whatever they are, in a program, a
    background process and the [boot] command."""

    def descriptors(output: str) -> dict[int, str]:
        found = {}
        for line in output.splitlines():
            if line.startswith("fd "):
                number, _, target = line[3:].partition(" -> ")
                found[int(number)] = target
        return found

    piped = descriptors(attacker.ok(f"{ATTACK} fds").out)
    assert set(piped) == {0, 1, 2} and piped[0] == "/dev/null", piped
    parent, child = os.openpty()
    try:
        on_tty = service.lxss("-d", NAME, "--", f"{ATTACK} fds", user=ATTACKER, stdin=child)
    finally:
        os.close(parent)
        os.close(child)
    tty = descriptors(on_tty.out)
    assert set(tty) == {0, 1, 2} and tty[0].startswith("/dev/pts/"), on_tty
    conf = f"[boot]\ncommand={ATTACK} fds > /boot-fds 2>&1\n"
    attacker.ok("cat > /etc/wsl.conf", input=conf.encode())
    try:
        service.ok("--terminate", NAME, user=ATTACKER)
        background = (
            f"({ATTACK} fds > /tmp/bg; sleep 0.2) </dev/null >/dev/null 2>&1 & "
            "for i in $(seq 50); do [ -s /tmp/bg ] && [ -s /boot-fds ] && break; sleep 0.1; done; "
            "cat /tmp/bg; echo ---; cat /boot-fds"
        )
        daemon, _, boot = attacker.ok(background).out.partition("---\n")
    finally:
        attacker.ok("rm -f /etc/wsl.conf /boot-fds")
    assert set(descriptors(daemon)) == {0, 1, 2}, daemon
    assert descriptors(boot) == {0: "/dev/null", 1: "/boot-fds", 2: "/boot-fds"}, boot
    for output in (piped, tty):
        assert not any("socket:" in target for target in output.values()), output
