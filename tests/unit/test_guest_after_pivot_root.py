"""Guest code never imports after pivot_root (or the worker's chroot).

The guest roles run the host's Python inside a distribution's root, where the host's
library is out of reach: every module they use must be imported before, at module top,
by lxss.vm.nsboot (the guest) or lxss.archive.worker (import and export). A lazy import
anywhere on their paths (the standard library has some: os.get_exec_path imports
warnings, for one) works on the host and fails only in a distribution.

The probe imports those two modules, then installs an import hook that refuses and
records every further import, exercises the guest's code paths that need no root, and
reports what was attempted: nothing may have been.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

_PROBE = r'''
import sys
sys.path.insert(0, sys.argv[1])
WORK = sys.argv[2]
ARCHIVES = sys.argv[3:]

import lxss.vm.nsboot  # everything a guest role runs after pivot_root
import lxss.archive.worker  # everything the archive worker runs after chroot

# What this probe itself uses must already be loaded by the two above: importing it here
# would hide a lazy import the guest relies on.
PROBE_NEEDS = ("errno", "io", "json", "math", "os", "signal", "socket", "tarfile", "traceback")
missing = [name for name in PROBE_NEEDS if name not in sys.modules]
if missing:
    print(json.dumps({"probe needs": missing}) if "json" in sys.modules else missing)
    sys.exit(3)

import errno, io, json, math, os, signal, socket, tarfile, traceback  # noqa: E401

from lxss.archive.pack import Packer
from lxss.archive.unpack import Unpacker, UnpackError, read_os_release
from lxss.config.wslconf import load_wsl_conf, read_wsl_conf
from lxss.guest import relay
from lxss.guest.process import Context, PlanError, Request, plan
from lxss.guest.users import UserDatabase
from lxss.protocol import codec
from lxss.protocol import messages as m
from lxss.protocol.channel import Channel, ChannelClosed, MAX_FDS_PER_MESSAGE
from lxss.protocol.framing import ProtocolError, pack_header


class Guard:
    """A meta path finder that refuses every import and remembers it."""

    def __init__(self):
        self.attempts = []

    def find_spec(self, name, path=None, target=None):
        self.attempts.append(name)
        raise ImportError(f"import of {name} after pivot_root")


guard = Guard()
sys.meta_path.insert(0, guard)
loaded = set(sys.modules)
done = []


def step(name):
    done.append(name)


# -- users and launch plans -----------------------------------------------------------------
root = os.path.join(WORK, "root")
os.makedirs(os.path.join(root, "etc"))
with open(os.path.join(root, "etc/passwd"), "w") as f:
    f.write("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/bash\nbad\n")
os.mkfifo(os.path.join(root, "etc/group"))  # a FIFO must neither hang nor import
users = UserDatabase(root)
assert users.lookup("alice").uid == 1000 and users.groups == []
context = Context(users=users, conf_default_user="alice", hostname="h", host_mount="/mnt/host")


def request(**changes):
    fields = dict(filename=None, command_line=[], cwd=None, host_cwd="/tmp", username=None,
                  login_shell=False, default_uid=0, environment=["TERM=dumb", "HOME=/x", "bad"],
                  distribution_name="d")
    fields.update(changes)
    return Request(**fields)


for shell_type in (
    dict(),  # a login shell, no command
    dict(login_shell=True),
    dict(command_line=["echo hi"]),  # standard: $SHELL -c
    dict(filename="/bin/true", command_line=["true"]),  # none: exec directly
    dict(cwd="~/src", username="root"),
):
    plan(request(**shell_type), context)
for bad in (dict(username="nobody"), dict(filename="/bin/true"), dict(command_line=["a", "b"])):
    try:
        plan(request(**bad), context)
    except PlanError:
        pass
    else:
        raise AssertionError(f"{bad} planned")
step("plan")

# -- wsl.conf -----------------------------------------------------------------------------------
conf, warnings = load_wsl_conf(
    "\ufeff[boot]\r\ncommand = \"unterminated\n[bad\nsystemd=maybe\nx\\q=1\n[user]\n"
    "default=\x1b[31m\n[network]\nhostname=" + "h" * 300 + "\n[automount]\nenabled=2\n"
    "options = \"a \\\"b\\\" \\n\" # c\\\n[wsl2]\nmemory=4gb\n\u202e=1\n",
    "/etc/wsl.conf",
)
assert warnings, "bad input should warn"
load_wsl_conf(None, "/etc/wsl.conf")
for path in (os.path.join(root, "etc/group"), root, os.path.join(root, "absent")):
    read_wsl_conf(path)  # a FIFO, a directory, nothing
step("wsl.conf")

# -- every message, encoded and decoded ------------------------------------------------------
VALUES = {"str": "ünïcode", "strs": ("a", "", "ü"), "bytes": b"\x00\xff", "bool": True}
samples = []
for cls in codec.CATALOGUE.values():
    for pick in (lambda kind: kind.low, lambda kind: kind.high):
        fields = {name: VALUES.get(kind.name, pick(kind)) for name, kind in cls._layout.fields}
        samples.append(cls(**fields))
for message in samples:
    header, decoded = m.decode(m.encode(message, 7, 0), message.fd_count())
    assert decoded == message, (message, decoded)
    repr(decoded), hash(decoded)
try:
    m.decode(b"\x01" * 15)
except ProtocolError:
    pass
step("codec")

# -- a channel over a socketpair, and its failures -----------------------------------------
def pair(timeout=5.0):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return Channel(a, "probe-a", timeout=timeout), Channel(b, "probe-b", timeout=timeout)


def expect(error, call):
    try:
        call()
    except error as e:
        str(e)
        return
    raise AssertionError(f"{call} did not raise {error.__name__}")


left, right = pair()
for message in samples:
    fds = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(message.fd_count())]
    left.send(message, fds)
    for fd in fds:
        os.close(fd)
    received, got = right.receive()
    assert received == message
    for fd in got:
        os.close(fd)
left.send(m.InitTerminateInstance(force=True))
right.receive_with_header(m.InitTerminateInstance)
left.close(), right.close()

left, right = pair()
right.sock.sendall(pack_header(m.InitExitStatus.TYPE, 4))  # malformed: a size below the header
expect(ProtocolError, lambda: left.receive())
expect(ProtocolError, lambda: left.receive(timeout=0))  # the stream has failed
left.close(), right.close()

left, right = pair()
right.sock.sendall(m.encode(m.ResultBool(value=True), 1, 0)[:-1] + b"\x07")  # a bad body
expect(ProtocolError, lambda: left.receive())
expect(TimeoutError, lambda: left.receive(m.ResultBool, timeout=0.01))
right.sock.sendmsg([m.encode(m.InitExitStatus(exit_code=0), 2, 0)],
                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                     bytes(4 * (MAX_FDS_PER_MESSAGE + 4)))])  # fd 0, many times over
expect(ProtocolError, lambda: left.receive())
left.close(), right.close()

left, right = pair()
right.sock.sendall(m.encode(m.InitExitStatus(exit_code=0), 1, 0)[:10])
right.close()
expect(ChannelClosed, lambda: left.receive())  # in the middle of a message
expect(ChannelClosed, lambda: left.send(m.InitExitStatus(exit_code=1)))
left.close()
expect(ChannelClosed, lambda: left.receive())
step("channel")

# -- exit statuses, tracebacks, and a program run the relay's way -----------------------------
pid = os.fork()
if pid == 0:
    os._exit(3)
assert relay.exit_code(os.waitpid(pid, 0)[1]) == 3
pid = os.fork()
if pid == 0:
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(0)
assert relay.exit_code(os.waitpid(pid, 0)[1]) == 128 + signal.SIGTERM
try:
    raise ValueError("probe")
except ValueError:
    assert "ValueError: probe" in traceback.format_exc()
for program in ("true", "/bin/true"):
    pid = os.fork()
    if pid == 0:
        try:
            # A bare name takes the PATH search (os.get_exec_path), as the relay's exec does.
            os.execvpe(program, [program], {"PATH": "/usr/bin:/bin"})
        except BaseException as e:
            os.write(2, f"probe: exec {program}: {type(e).__name__}: {e}\n".encode())
        os._exit(99)
    assert relay.exit_code(os.waitpid(pid, 0)[1]) == 0, program
step("exec")

# -- archives in and out --------------------------------------------------------------------
results = {}
for index, archive in enumerate(ARCHIVES):
    target = os.path.join(WORK, f"unpacked-{index}")
    os.mkdir(target)
    os.chdir(target)
    try:
        with open(archive, "rb") as stream:
            report = Unpacker(stream).run()
        results[os.path.basename(archive)] = ["ok", report.files, report.summary()]
        read_os_release()
        out = io.BytesIO()
        Packer(out).run()
        again = os.path.join(WORK, f"again-{index}")
        os.mkdir(again)
        os.chdir(again)
        Unpacker(io.BytesIO(out.getvalue())).run()
    except UnpackError as e:
        results[os.path.basename(archive)] = ["refused", str(e)]
    finally:
        os.chdir(WORK)
step("archives")

sys.meta_path.remove(guard)
print(json.dumps({
    "attempts": guard.attempts,
    "new_modules": sorted(set(sys.modules) - loaded),
    "done": done,
    "archives": results,
}))
'''


def _archives(directory: Path) -> list[Path]:
    """Small archives of several formats, owned by the caller (so no step needs root)."""
    tree = directory / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/os-release").write_text('ID=probe\nVERSION_ID="1.0"\n')
    (tree / "bin").mkdir()
    (tree / "bin/sh").write_text("#!/bin/true\n")
    (tree / "bin/sh").chmod(0o755)
    (tree / "link").symlink_to("bin/sh")
    os.link(tree / "bin/sh", tree / "hard")
    os.mkfifo(tree / "fifo")
    (tree / ("long-" + "n" * 120)).write_text("a name longer than ustar's 100 bytes\n")
    with open(tree / "sparse", "wb") as f:
        f.truncate(1 << 20)
        f.seek(300_000)
        f.write(b"data in the middle")
    archives = []
    for name, fmt in (("gnu", tarfile.GNU_FORMAT), ("pax", tarfile.PAX_FORMAT)):
        path = directory / f"{name}.tar"
        with tarfile.open(path, "w", format=fmt) as archive:
            archive.add(tree, ".")
        archives.append(path)
    ustar = directory / "ustar.tar"
    with tarfile.open(ustar, "w", format=tarfile.USTAR_FORMAT) as archive:
        for entry in sorted(tree.iterdir()):
            if len(entry.name) < 100:
                archive.add(entry, entry.name)
    archives.append(ustar)
    for fmt in ("gnu", "posix"):  # GNU tar's two ways of writing holes
        path = directory / f"sparse-{fmt}.tar"
        made = subprocess.run(
            ["tar", "-C", str(tree), f"--format={fmt}", "--sparse", "-cf", str(path), "."],
            capture_output=True, check=False,
        )  # fmt: skip
        if made.returncode == 0:
            archives.append(path)
    data = (directory / "gnu.tar").read_bytes()
    truncated = directory / "truncated.tar"
    truncated.write_bytes(data[: len(data) // 2 + 7])
    archives.append(truncated)
    return archives


def test_guest_code_paths_import_nothing_after_pivot_root(tmp_path: Path) -> None:
    archives = _archives(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _PROBE, str(SRC), str(work), *map(str, archives)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["done"] == ["plan", "wsl.conf", "codec", "channel", "exec", "archives"]
    assert report["attempts"] == [], report
    assert report["new_modules"] == [], report
    outcomes = report["archives"]
    assert outcomes["truncated.tar"][0] == "refused", outcomes
    assert all(outcome[0] == "ok" for name, outcome in outcomes.items() if name != "truncated.tar")
    assert {"gnu.tar", "pax.tar", "ustar.tar"} <= set(outcomes)


def test_the_probe_sees_a_lazy_import(tmp_path: Path) -> None:
    """The hook works: a module first imported after it is reported."""
    lazy = 'step("plan")\ntry:\n    import csv\nexcept ImportError:\n    pass'
    probe = _PROBE.replace('step("plan")', lazy)
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(SRC), str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "csv" in json.loads(result.stdout.strip().splitlines()[-1])["attempts"]


def test_relay_imports_what_exec_needs() -> None:
    """os.execvpe imports warnings lazily (os.get_exec_path): the relay imports it itself,
    rather than count on protocol.channel's import of it (the probe above cannot tell)."""
    source = (SRC / "lxss/guest/relay.py").read_text()
    assert "\nimport warnings" in source
