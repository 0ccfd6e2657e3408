"""Integration fixtures: a real lxssd of the test run's own, the real `lxss` command,
real users, and a check that every test leaves the host as it found it.

The service runs with private state and runtime directories and its own cgroup
name, so it never touches a real installation on the machine. Every test ends
with `lxss --shutdown` for each user it may have used, then the host is
compared with its state before the test: mounts, cgroups, lxss processes,
the service's open file descriptors, VM scratch directories, and the host's network
(links, addresses, routes, nftables tables, forwarding sysctls).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import netstate
import pytest

from lxss.bootstrap import bootstrap_argv

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
# Two users made for the run; LXSS_TEST_USER_PREFIX names them apart when several
# checkouts run their suites on one machine at once (each run deletes and makes its own).
_USER_PREFIX = os.environ.get("LXSS_TEST_USER_PREFIX", "lxsstest")
TEST_USERS = (f"{_USER_PREFIX}-a", f"{_USER_PREFIX}-b")
CACHE = Path("/var/cache/lxss-test")
OTHER_RUNS = "/var/tmp/lxss-"  # where running_service() makes every run's root


# The real commands, started as the lean launchers start them (-I -S, this checkout's src).
LXSS = bootstrap_argv("lxss.cli.main")
LXSSD = bootstrap_argv("lxss.service.main")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.integration)


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")

    def __str__(self) -> str:
        return (
            f"exit {self.returncode}\n--- stdout\n{self.out[-2000:]}"
            f"\n--- stderr\n{self.err[-2000:]}"
        )


@dataclass
class Service:
    """A private lxssd and the way to run `lxss` against it (as root or as a user)."""

    root: Path
    cgroup_name: str
    process: subprocess.Popen[bytes] | None = None
    users_seen: set[str] = field(default_factory=set)
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. shorter timeouts

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def runtime_dir(self) -> Path:
        return self.root / "run"

    @property
    def machine_config(self) -> Path:
        return self.root / "lxss.conf"

    @property
    def log_file(self) -> Path:
        return self.root / "lxssd.log"

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LXSS_STATE_DIR": str(self.state_dir),
            "LXSS_RUNTIME_DIR": str(self.runtime_dir),
            "LXSS_CGROUP_NAME": self.cgroup_name,
            "LXSS_MACHINE_CONFIG": str(self.machine_config),
            # Built distributions (lxss --install debian) are cached for the machine's test
            # runs, apart from the machine's own cache.
            "LXSS_BUILD_CACHE": str(CACHE / "builds"),
            "LANG": "C.UTF-8",
            **self.extra_env,
        }

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 20.0) -> None:
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        socket_path = self.runtime_dir / "lxssd.sock"
        # A service killed with SIGKILL leaves its socket behind: waiting for the file to
        # appear would return before the new service has recovered and listens.
        socket_path.unlink(missing_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.process = subprocess.Popen(
                [*LXSSD, "--debug"], env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not socket_path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lxssd did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.02)

    def stop(self, timeout: float = 60.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(10)
        self.process = None
        return code

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.process = None

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def lxss(
        self,
        *args: str,
        user: str | None = None,
        input: bytes | None = None,
        stdin: int | None = None,
        timeout: float = 120.0,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> Result:
        """Run the real lxss command; stdin is /dev/null unless given."""
        full_env = {**self.env, **(env or {})}
        kwargs: dict[str, object] = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            full_env["HOME"] = entry.pw_dir
            self.users_seen.add(user)
        if input is None and stdin is None:
            stdin = subprocess.DEVNULL
        proc = subprocess.run(
            [*LXSS, *args], input=input, stdin=stdin, capture_output=True, env=full_env,
            timeout=timeout, cwd=cwd or "/", check=False, **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, **kwargs: object) -> Result:
        result = self.lxss(*args, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 0, f"lxss {' '.join(args)}: {result}"
        return result

    def shutdown_everyone(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return  # nothing to shut down; lxss run as root would start a service of its own
        self.lxss("--shutdown", timeout=60)
        for user in sorted(self.users_seen):
            self.lxss("--for-user", user, "--shutdown", timeout=60)


# Host state --------------------------------------------------------------------------


def _cgroup_hierarchies() -> list[str]:
    roots = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            fstype = parts[parts.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                roots.append(parts[4])
    return roots


def _service_processes(service: Service) -> set[tuple[int, str]]:
    """Children of the service and every process in its cgroups (its VMs)."""
    found = set()
    marker = f"/{service.cgroup_name}/"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cgroups = Path(f"/proc/{entry}/cgroup").read_text()
        except OSError:
            continue
        name, _, rest = stat.partition(" (")[2].rpartition(") ")
        parent = int(rest.split()[1])
        if (service.process is not None and parent == service.pid) or marker in cgroups:
            found.add((int(entry), name))
    return found


@dataclass(frozen=True)
class HostState:
    mounts: frozenset[str]
    cgroups: frozenset[str]
    processes: frozenset[tuple[int, str]]
    service_fds: int
    scratch: frozenset[str]
    network: frozenset[str]  # links, addresses, routes, nft tables, forwarding (netstate)

    @classmethod
    def capture(cls, service: Service) -> HostState:
        with open("/proc/self/mountinfo") as f:
            # Ours would name lxss (state, runtime or cgroup paths); other tools on the machine
            # (the benchmarks' podman) mount and unmount at will and are not ours to judge,
            # nor are the services of other test runs (each has a root of its own there).
            mounts = frozenset(
                " ".join(line.split()[3:5])
                for line in f
                if str(service.root) in line or ("lxss" in line and OTHER_RUNS not in line)
            )
        cgroups = set()
        for root in _cgroup_hierarchies():
            base = Path(root) / service.cgroup_name
            if base.is_dir():
                cgroups.update(str(p.relative_to(root)) for p in base.rglob("*") if p.is_dir())
        fds = len(os.listdir(f"/proc/{service.pid}/fd")) if service.process else 0
        scratch_root = service.runtime_dir / "vm"
        scratch = frozenset(os.listdir(scratch_root)) if scratch_root.is_dir() else frozenset()
        uids = {0} | {pwd.getpwnam(u).pw_uid for u in service.users_seen if _known(u)}
        network = netstate.capture(service.runtime_dir, uids)
        return cls(frozenset(mounts), frozenset(cgroups),
                   frozenset(_service_processes(service)), fds, scratch, network)  # fmt: skip

    def difference(self, after: HostState) -> str:
        lines = []
        for name in ("mounts", "cgroups", "processes", "scratch", "network"):
            before_set, after_set = getattr(self, name), getattr(after, name)
            if before_set != after_set:
                lines.append(f"{name}: added {sorted(after_set - before_set)[:10]}, "
                             f"removed {sorted(before_set - after_set)[:10]}")  # fmt: skip
        if self.service_fds != after.service_fds:
            lines.append(f"lxssd open fds: {self.service_fds} before, {after.service_fds} after")
        return "; ".join(lines)


# Fixtures ----------------------------------------------------------------------------


def _known(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests start lxssd, a root service: run them as root (./test.sh)")


def _remove_empty_cgroups(name: str) -> None:
    """The run's own cgroup tree, once the service has stopped (rmdir fails on a cgroup
    that still has processes: those stay, for the host check to name)."""
    for root in _cgroup_hierarchies():
        base = Path(root) / name
        if not base.is_dir():
            continue
        groups = sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for group in [*groups, base]:
            with contextlib.suppress(OSError):
                group.rmdir()


@contextlib.contextmanager
def running_service(name: str, env: dict[str, str] | None = None) -> Iterator[Service]:
    _require_root()
    root = Path(tempfile.mkdtemp(prefix=f"lxss-{name}-", dir="/var/tmp"))
    service = Service(root, f"lxss-test-{name}-{os.getpid()}", extra_env=dict(env or {}))
    service.machine_config.write_text("")
    try:
        service.start()
        yield service
    finally:
        with contextlib.suppress(Exception):
            service.shutdown_everyone()
        service.stop()
        shutil.rmtree(root, ignore_errors=True)
        _remove_empty_cgroups(service.cgroup_name)


@pytest.fixture(scope="session")
def service() -> Iterator[Service]:
    with running_service("main") as running:
        yield running


@pytest.fixture
def fresh_service() -> Iterator[Service]:
    """A service of the test's own, for tests that kill or restart it."""
    with running_service("fresh") as running:
        yield running


@pytest.fixture(autouse=True)
def host_left_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    if "service" not in request.fixturenames:
        yield
        return
    service: Service = request.getfixturevalue("service")
    before = HostState.capture(service)
    yield
    service.shutdown_everyone()
    deadline = time.monotonic() + 15.0
    while True:
        after = HostState.capture(service)
        if after == before or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert after == before, f"the test left the host changed: {before.difference(after)}"


@contextlib.contextmanager
def host_users(users: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Unprivileged host users made for a while (and removed with their subordinate ids)."""
    _require_root()
    for user in users:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            subprocess.run(["userdel", "-r", user], capture_output=True, check=False)
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", user], check=True)
    try:
        yield users
    finally:
        for user in users:
            subprocess.run(["userdel", "-r", "-f", user], capture_output=True, check=False)
        drop_subid_lines(users)


def drop_subid_lines(users: tuple[str, ...]) -> None:
    """Remove *users*' ranges from /etc/subuid and /etc/subgid."""
    for path in ("/etc/subuid", "/etc/subgid"):
        with contextlib.suppress(FileNotFoundError):
            lines = Path(path).read_text().splitlines(keepends=True)
            kept = [line for line in lines if line.split(":", 1)[0] not in users]
            if kept != lines:
                Path(path).write_text("".join(kept))


# Test runs of several checkouts may share this machine. The test users are made by the
# first run that needs them and removed by the last one still using them: every run holds
# a shared flock on USERS_IN_USE while it runs, and users are only made or removed under
# the exclusive USERS_CHANGING (where an exclusive, non-waiting USERS_IN_USE succeeds only
# when no other run holds its share).
USERS_CHANGING = Path("/run/lxss-test-users.changing")
USERS_IN_USE = Path("/run/lxss-test-users.in-use")


def _remove_test_users() -> None:
    for user in TEST_USERS:
        subprocess.run(["userdel", "-r", "-f", user], capture_output=True, check=False)
    drop_subid_lines(TEST_USERS)


@pytest.fixture(scope="session")
def test_users() -> Iterator[tuple[str, str]]:
    """Two unprivileged users made for the run (and removed with their subordinate ids by
    the last run on the machine that uses them)."""
    _require_root()
    import fcntl

    changing = os.open(USERS_CHANGING, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    in_use = os.open(USERS_IN_USE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(changing, fcntl.LOCK_EX)
        try:
            for user in TEST_USERS:
                try:
                    pwd.getpwnam(user)
                except KeyError:
                    subprocess.run(["useradd", "-m", "-s", "/bin/sh", user], check=True)
            fcntl.flock(in_use, fcntl.LOCK_SH)
        finally:
            fcntl.flock(changing, fcntl.LOCK_UN)
        yield TEST_USERS
    finally:
        fcntl.flock(changing, fcntl.LOCK_EX)
        try:
            fcntl.flock(in_use, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another run still uses them: the last one removes them
        else:
            _remove_test_users()
        os.close(in_use)
        os.close(changing)


@pytest.fixture(scope="session")
def busybox(service: Service) -> str:
    """The built-in distribution, installed once for the run as root: `bb`."""
    service.ok("--install", "busybox", "--name", "bb", "--no-launch", timeout=120)
    return "bb"


def busybox_root(root: Path) -> Path:
    """The bare bones of a busybox root file system at *root*: /bin/busybox and /bin/sh,
    and empty /etc, /root and /tmp."""
    for sub in ("bin", "etc", "root", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    (root / "bin/sh").symlink_to("busybox")
    return root


def busybox_tarball(directory: Path) -> Path:
    """A busybox root file system as a tar.gz built with host tools (for import tests)."""
    root = busybox_root(directory / "bbroot")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/os-release").write_text("ID=testbox\nVERSION_ID=1\n")
    tarball = directory / "bb.tar.gz"
    subprocess.run(
        ["tar", "-C", str(root), "--numeric-owner", "-czf", str(tarball), "."], check=True
    )
    return tarball


@pytest.fixture(scope="session")
def debian_tarball() -> Path:
    """A debootstrapped Debian (minbase) as tar.gz, built once per machine and cached."""
    _require_root()
    tarball = CACHE / "debian-bookworm-minbase.tar.gz"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    mirror = "http://deb.debian.org/debian"
    with contextlib.suppress(OSError):
        for line in Path("/etc/apt/sources.list.d/debian.sources").read_text().splitlines():
            if line.startswith("URIs:"):
                mirror = line.split()[1]
                break
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir="/var/tmp"))
    try:
        target = work / "root"
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(target), mirror],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        partial = tarball.with_suffix(".partial")
        subprocess.run(
            ["tar", "-C", str(target), "--numeric-owner", "--xattrs", "-czf", str(partial), "."],
            check=True,
        )  # fmt: skip
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball
