"""podman exec into a running container of the bench's own rootfs, rootful or rootless.

The rootfs tarball the lxss distribution is made from is imported as an image
(``podman import``), so both sides run the same busybox binaries.

What this machine does to podman, found by trying:

- The bench runs without CAP_SYS_RESOURCE, and conmon runs with
  RLIMIT_NPROC lowered to 32768, so the OCI runtime cannot apply podman's
  default ulimits (nofile 1048576, nproc above conmon's): "setrlimit
  RLIMIT_NOFILE: Operation not permitted". Asking for limits no higher than
  conmon's own (``--ulimit``) avoids raising anything.
- crun refuses cgroup v1 + v2 "hybrid" hosts that leave a controller on the
  v2 hierarchy; runc does not mind. Each runtime is tried in turn and a
  failure is kept as a note for the table.
- /dev/net/tun is root-only, so rootless podman's slirp4netns cannot start:
  containers get ``--network=none`` (the bench needs no network in them).
"""

from __future__ import annotations

import os
import pwd
import resource
import shutil
import signal
from pathlib import Path
from typing import Any, Final

from ..proc import Unavailable, must, process_state, reap_orphans, run

USER: Final = "lxssbench"
GECOS: Final = "lxss bench, rootless podman; removed after each run"
SUBID_COUNT: Final = 65536
CONMON_NPROC: Final = 32768
PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BenchUser:
    """An unprivileged user for rootless podman: subordinate ids, runtime dir.

    Removed with everything it owns on close: podman storage, the pause
    process, the home directory, its /etc/subuid and /etc/subgid lines.
    """

    def __init__(self) -> None:
        if shutil.which("newuidmap") is None:
            raise Unavailable("newuidmap not installed (Debian package uidmap)")
        try:
            old = pwd.getpwnam(USER)
        except KeyError:
            pass
        else:
            if old.pw_gecos != GECOS:
                raise Unavailable(f"a user named {USER} exists and was not made by the bench")
            self._remove(old.pw_uid, old.pw_dir, old.pw_gid)  # left by a run that was killed
        must(
            ["useradd", "--create-home", "--shell", "/bin/sh", "--comment", GECOS, USER], timeout=30
        )
        entry = pwd.getpwnam(USER)
        self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, entry.pw_dir
        self._made_parent = False
        try:
            for path in (Path("/etc/subuid"), Path("/etc/subgid")):
                _ensure_subids(path)
            self.runtime_dir = Path(f"/run/user/{self.uid}")
            self._made_parent = not self.runtime_dir.parent.exists()
            self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chown(self.runtime_dir, self.uid, self.gid)
        except BaseException:
            self._remove(self.uid, self.home, self.gid)
            raise

    def env(self) -> dict[str, str]:
        return {
            "PATH": PATH,
            "HOME": self.home,
            "USER": USER,
            "LOGNAME": USER,
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "LANG": "C.UTF-8",
        }

    def spawn_kw(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "env": self.env(), "cwd": self.home}

    def close(self) -> None:
        self._remove(self.uid, self.home, self.gid)
        if self._made_parent:
            try:
                self.runtime_dir.parent.rmdir()
            except OSError:
                pass  # someone else put something in /run/user meanwhile

    def _remove(self, uid: int, home: str, gid: int) -> None:
        rundir = Path(f"/run/user/{uid}")
        pause = rundir / "libpod/tmp/pause.pid"
        if shutil.which("podman"):
            env = {"PATH": PATH, "HOME": home, "XDG_RUNTIME_DIR": str(rundir)}
            run(
                ["podman", "system", "reset", "--force"],
                timeout=120,
                env=env,
                cwd="/",
                user=uid,
                group=gid,
            )
        _kill_if_owned(pause, uid)
        reap_orphans()
        run(["userdel", "--remove", USER], timeout=60)
        for path in (Path("/etc/subuid"), Path("/etc/subgid")):
            _drop_subids(path)
        shutil.rmtree(rundir, ignore_errors=True)


def _kill_if_owned(pidfile: Path, uid: int) -> None:
    """Kill podman's pause process, by the pid it wrote, if it is still ours."""
    try:
        pid = int(pidfile.read_text().strip())
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return
    uids = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith("Uid:")), [])
    if str(uid) in uids and process_state(pid) not in (None, "Z"):
        os.kill(pid, signal.SIGKILL)


def _ensure_subids(path: Path) -> None:
    """Give the bench user a subordinate range unless useradd already did."""
    lines = path.read_text().splitlines() if path.exists() else []
    if any(ln.startswith(f"{USER}:") for ln in lines):
        return
    end = 100000
    for ln in lines:
        parts = ln.split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            end = max(end, int(parts[1]) + int(parts[2]))
    with open(path, "a") as f:
        f.write(f"{USER}:{end}:{SUBID_COUNT}\n")


def _drop_subids(path: Path) -> None:
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if not ln.startswith(f"{USER}:")]
    if kept != lines:
        path.write_text("".join(kept))


def _lowered_ulimits() -> list[str]:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = min(nofile if nofile != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
    nproc = min(nproc if nproc != resource.RLIM_INFINITY else CONMON_NPROC, CONMON_NPROC)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


class Podman:
    """A running container of the bench image, for ``podman exec``."""

    def __init__(
        self, *, tarball: Path, data: Path | None, user: BenchUser | None, tag: str
    ) -> None:
        if shutil.which("podman") is None:
            raise Unavailable("podman not installed")
        self.user = user
        self.mode = "rootless" if user else "rootful"
        self.image = f"localhost/lxssbench-busybox:{tag}"
        self.name = f"lxssbench-{self.mode}-{tag}"
        self.notes: list[str] = []
        self.runtime = ""
        self.run_opts: list[str] = []
        self._data = data
        self._imported = False
        try:
            self._setup(tarball)
        except BaseException:
            self.close()
            raise

    @property
    def label(self) -> str:
        return f"podman exec ({self.mode}, {self.runtime})"

    def spawn_kw(self) -> dict[str, Any]:
        if self.user:
            return self.user.spawn_kw()
        return {"env": {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8"}, "cwd": "/"}

    def _podman(self, *args: str, timeout: float = 120) -> str:
        return must(["podman", *args], timeout=timeout, **self.spawn_kw())

    def _setup(self, tarball: Path) -> None:
        self._podman("import", str(tarball), self.image, timeout=300)
        self._imported = True
        runtimes = [r for r in ("crun", "runc") if shutil.which(r)]
        if not runtimes:
            raise Unavailable("no OCI runtime installed (crun or runc)")
        binds = ["-v", f"{self._data}:/mnt:ro"] if self._data else []
        for runtime in runtimes:
            attempts = [[], _lowered_ulimits()] if not self.user else [[]]
            for limits in attempts:
                opts = ["--network=none", "--runtime", runtime, *limits]
                argv = [
                    "podman",
                    "run",
                    "-d",
                    "--name",
                    self.name,
                    *opts,
                    *binds,
                    self.image,
                    "sleep",
                    "2147483647",
                ]
                res = run(argv, timeout=120, capture=True, **self.spawn_kw())
                if res.ok:
                    self.runtime, self.run_opts = runtime, opts
                    if limits:
                        self.notes.append("ran with --ulimit lowered to conmon's own limits")
                    return
                what = "default ulimits" if not limits else "lowered ulimits"
                self.notes.append(f"{runtime} ({what}): {res.why()}")
                run(
                    ["podman", "rm", "--force", "--time", "0", self.name],
                    timeout=60,
                    **self.spawn_kw(),
                )
        raise Unavailable("; ".join(self.notes))

    def exec(self, *cmd: str, stdin: bool = False, tty: bool = False) -> list[str]:
        flags = (["-i"] if stdin else []) + (["-t"] if tty else [])
        return ["podman", "exec", *flags, self.name, *cmd]

    def run_rm(self, *cmd: str) -> list[str]:
        return ["podman", "run", "--rm", *self.run_opts, self.image, *cmd]

    def close(self) -> None:
        if self.runtime or self.notes:
            run(
                ["podman", "rm", "--force", "--time", "0", self.name], timeout=60, **self.spawn_kw()
            )
        if self._imported:
            run(["podman", "rmi", "--force", self.image], timeout=60, **self.spawn_kw())
        reap_orphans()

    def __enter__(self) -> Podman:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
