"""The service holds (promise 6 of docs/security.md): malformed Varlink messages from a
user and from inside a distribution, forged guest frames, hostile distribution content
that reaches guest frames, stopped or killed guest roles, silent and flooding clients.
Each gets an error or a closed connection, never a crash of lxssd or a hang of another
user's session: all the while, lxsstest-b's commands keep being answered quickly.

test_varlink.py has the single malformed messages; this suite sends them by the
thousand, concurrently with another user's work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, SRC, Service
from mgmt import call, registry_rows, spawn_lxss
from security_support import (
    ATTACK,
    ATTACKER,
    UserDistribution,
    attacker_and_victim,
    end_helper,
    popen_as,
    run_as,
)

import lxss
from lxss.protocol import messages as m

HERE = Path(__file__).resolve().parent
INTERFACE = Path(lxss.__file__).parent / "api" / "io.lxss.Service.varlink"
A_NAME, B_NAME = "sec-svc-a", "sec-svc-b"
QUICK = 5.0  # seconds: what "answered quickly" means for a launch of B's
MESSAGES = 10_000
SIGNAL_LEADER = (
    'for p in /proc/[0-9]*; do [ "$(cat $p/comm)" = lxss-session ] && kill -{signal} ${{p#/proc/}};'
    " done; true"
)


distributions = attacker_and_victim(A_NAME, B_NAME)


def assert_serving(service: Service, b: UserDistribution) -> float:
    """lxssd is alive, answers root, and runs a program for B quickly; B's launch time."""
    assert service.process is not None and service.process.poll() is None, "lxssd died"
    started = time.monotonic()
    result = b.run("echo served", timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 0 and result.out == "served\n", result
    assert elapsed < QUICK, f"B waited {elapsed:.1f} s"
    assert call(service, "GetVersion")["parameters"]["version"] == lxss.__version__
    return elapsed


class Meanwhile:
    """B's launches in a thread, for as long as an attack runs: each must succeed quickly."""

    def __init__(self, service: Service, b: UserDistribution) -> None:
        self.service, self.b = service, b
        self.times: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.times.append(assert_serving(self.service, self.b))
            except (AssertionError, subprocess.TimeoutExpired) as e:
                self.failures.append(str(e))
            time.sleep(0.05)

    def __enter__(self) -> Meanwhile:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)
        assert not self._thread.is_alive()

    def check(self, at_least: int = 3) -> None:
        assert self.failures == [], self.failures[:3]
        assert len(self.times) >= at_least, f"B was served only {len(self.times)} times"


def service_fds(service: Service) -> int:
    return len(os.listdir(f"/proc/{service.pid}/fd"))


def settled(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# Malformed messages -------------------------------------------------------------------


def test_malformed_varlink_messages_by_the_thousand(
    service: Service, distributions: tuple[UserDistribution, UserDistribution]
) -> None:
    """A's client sends 10,000 malformed messages of every kind (varlink_garbage.py): each
    gets an error or a closed connection, within 10 s, while B is served."""
    _, b = distributions
    assert_serving(service, b)  # B's VM runs (and holds its descriptors of lxssd's) throughout
    fds_before = service_fds(service)
    with Meanwhile(service, b) as meanwhile:
        fuzz = run_as(ATTACKER, sys.executable, "-I", str(HERE / "varlink_garbage.py"),
                      str(service.runtime_dir / "lxssd.sock"), str(MESSAGES), "5736",
                      str(INTERFACE), timeout=300)  # fmt: skip
    assert fuzz.returncode == 0, fuzz.stderr.decode(errors="replace")[-3000:]
    report = json.loads(fuzz.stdout)
    outcomes = report["outcomes"]
    totals: dict[str, int] = {}
    for by_outcome in outcomes.values():
        for outcome, n in by_outcome.items():
            totals[outcome] = totals.get(outcome, 0) + n
    assert sum(totals.values()) == MESSAGES, totals
    assert set(totals) <= {"error", "closed"}, outcomes  # never "ok", never "timeout"
    # Calls that are Varlink get an error and keep the connection; the rest are dropped.
    for kind in ("wrong_types", "unknown_method", "odd_values"):
        assert set(outcomes[kind]) == {"error"}, (kind, outcomes[kind])
    for kind in ("random_bytes", "truncated", "invalid_utf8", "not_an_object", "oversized"):
        assert set(outcomes[kind]) == {"closed"}, (kind, outcomes[kind])
    assert report["slowest"] < QUICK, report["slowest"]
    meanwhile.check()
    assert_serving(service, b)
    settled(lambda: service_fds(service) == fds_before, "lxssd to hold as many fds as before")


def test_malformed_messages_from_inside_a_distribution(
    service: Service, distributions: tuple[UserDistribution, UserDistribution]
) -> None:
    """Root of A's distribution reaches the service's socket through /mnt/host (as A, by
    SO_PEERCRED) and sends 10,000 random messages."""
    a, b = distributions
    socket_path = f"/mnt/host{service.runtime_dir}/lxssd.sock"
    with Meanwhile(service, b) as meanwhile:
        result = a.run(f"{ATTACK} garbage {socket_path} {MESSAGES} 2019", timeout=300)
    assert result.returncode == 0, result
    [line] = result.out.splitlines()
    fields = dict(item.split("=") for item in line.split()[1:])
    assert line.startswith("garbage: sent="), line  # not "no answer in 10 s"
    assert int(fields["sent"]) + int(fields["closed"]) >= MESSAGES, line
    assert int(fields["closed"]) > MESSAGES // 2, line  # random bytes are not Varlink
    meanwhile.check()
    assert_serving(service, b)


def test_malformed_guest_frames_from_a_client(
    service: Service, distributions: tuple[UserDistribution, UserDistribution]
) -> None:
    """The control channel of a launch is a socket the client hands over, decoded by the
    relay inside the distribution: A's client sends 10,000 frames over 50 launches
    (guest_garbage.py), each launch's last one malformed. Odd but well-formed frames
    are taken; a malformed one makes the relay hang up on that client, nothing more."""
    a, b = distributions
    corpus = REPO / "tests" / "fuzz" / "corpus" / "guest_frames"
    assert len(list(corpus.glob("*.bin"))) >= 10
    with Meanwhile(service, b) as meanwhile:
        fuzz = run_as(ATTACKER, sys.executable, "-I", str(HERE / "guest_garbage.py"),
                      str(service.runtime_dir / "lxssd.sock"), A_NAME, "50", "199", "1337",
                      str(SRC), str(corpus), timeout=300)  # fmt: skip
    assert fuzz.returncode == 0, fuzz.stderr.decode(errors="replace")[-3000:]
    report = json.loads(fuzz.stdout)
    assert report["sent"] == MESSAGES, report
    outcomes = {o for by_outcome in report["outcomes"].values() for o in by_outcome}
    assert outcomes <= {"closed", "waiting"}, report  # never an answer, never closed early
    assert "closed" in outcomes, report
    meanwhile.check()
    assert_serving(service, b)
    assert a.ok("echo after").out == "after\n"


def test_forged_guest_frames_on_a_programs_streams_change_nothing(
    service: Service, distributions: tuple[UserDistribution, UserDistribution]
) -> None:
    """A program writes the guest protocol's frames (an exit status of 42, a process
    launched, a distribution started, a malformed header) to every descriptor it holds,
    on pipes and on a terminal: they are its output, nothing more."""
    a, b = distributions
    frames = b"".join(
        m.encode(message, 1, 2)
        for message in (
            m.InitExitStatus(exit_code=42),
            m.InitCreateProcessResponse(result=0, pid=1, message=None),
            m.InitWindowSizeChanged(rows=1, columns=1),
        )
    )
    frames += (7).to_bytes(4, "little") + (0xFFFFFFFF).to_bytes(4, "little") + bytes(8)
    frames += os.urandom(4096)
    (a.rootfs / "frames").write_bytes(frames)
    os.chown(a.rootfs / "frames", a.owner.uid, a.owner.gid)
    script = "cat /frames; cat /frames >&2; { cat /frames > /dev/tty; } 2>/dev/null; exit 3"
    piped = a.run(script)
    assert piped.returncode == 3, piped
    assert piped.stdout == frames and piped.stderr == frames
    parent, child = os.openpty()
    try:
        proc = spawn_lxss(service, "-d", A_NAME, "--", script, user=ATTACKER, stdin=child,
                          stdout=child, stderr=child)  # fmt: skip
        os.close(child)
        child = -1
        received = b""
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                received += os.read(parent, 65536)
            except OSError:
                break
        assert proc.wait(30) == 3
    finally:
        os.close(parent)
        if child >= 0:
            os.close(child)
    assert len(received) > len(frames), "the frames were passed on as output"
    assert_serving(service, b)
    assert a.ok("echo after").out == "after\n"


def test_hostile_distribution_content_reaching_guest_frames_is_bounded(
    service: Service, distributions: tuple[UserDistribution, UserDistribution]
) -> None:
    """/etc/wsl.conf and /etc/os-release are the distribution root's to write, and init
    passes what it reads from them to the service (warnings, ID and VERSION_ID)."""
    a, b = distributions
    conf = "".join(f"[s{i}]\nbad {i}\nk{i}=\x1b]0;title\x07\n" for i in range(20_000))
    release = "ID=" + "x" * 3_000_000 + "\nVERSION_ID=1\x1b[2J\x07\n"
    try:
        for path, text in (("/etc/wsl.conf", conf), ("/etc/os-release", release)):
            a.ok(f"cat > {path}", input=text.encode())
            service.ok("--terminate", A_NAME, user=ATTACKER)
            started = a.run("echo started")
            assert (started.returncode, started.out) == (0, "started\n"), started
            assert len(started.err.splitlines()) < 100, started.err[-500:]
            assert "\x1b" not in started.err and "\x07" not in started.err
            # The owner's listing still fits in a message; nobody else's changed.
            listing = service.lxss("-l", "-v", user=ATTACKER)
            assert listing.returncode == 0 and A_NAME in listing.out, listing
            assert_serving(service, b)
        [row] = registry_rows(service, A_NAME)
        assert len(row["os_id"]) <= 64 and row["os_version_id"].isprintable(), row["os_id"][:80]
    finally:
        a.ok("rm -f /etc/wsl.conf; echo ID=testbox > /etc/os-release")


# Guest roles stopped or killed from inside ------------------------------------------------


def test_a_stopped_or_killed_role_hurts_only_its_owner(
    service: Service, distributions: tuple[UserDistribution, UserDistribution]
) -> None:
    """Distribution root may signal the lxss roles of its own distribution (they run with
    its credentials): A's session leader frozen, A's next launch waits on it; B does not,
    and terminating A's distribution releases A's launch."""
    a, b = distributions
    a.ok(SIGNAL_LEADER.format(signal="STOP"))
    stuck = spawn_lxss(service, "-d", A_NAME, "--", "echo never", user=ATTACKER,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)  # fmt: skip
    try:
        time.sleep(1.0)
        assert stuck.poll() is None, "the launch was expected to wait for the frozen leader"
        for _ in range(3):
            assert_serving(service, b)
        assert A_NAME in service.ok("-l", user=ATTACKER).out  # A's other calls are answered
        started = time.monotonic()
        service.ok("--terminate", A_NAME, user=ATTACKER, timeout=60)
        out, err = stuck.communicate(timeout=30)
        assert time.monotonic() - started < 15
    finally:
        if stuck.poll() is None:
            stuck.kill()
            stuck.communicate()
    assert stuck.returncode == 255 and out == b"", err
    assert err.decode().startswith("lxss: ") and err.count(b"\n") == 1, err
    # Killing them instead: the relay (the program's parent), then the session leader.
    killed = a.run("kill -9 $PPID; sleep 5")
    assert killed.returncode != 0 and killed.returncode != 3, killed
    a.ok(SIGNAL_LEADER.format(signal="KILL"))
    assert a.ok("echo again").out == "again\n"
    assert_serving(service, b)


# Silent and flooding clients ------------------------------------------------------------

_HOLDER = r"""
import json, socket, sys
path, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
held = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    if mode == "partial":
        s.sendall(b'{"method": "io.lxss.Service.GetVers')
    held.append(s)
extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
extra.settimeout(10)
extra.connect(path)
extra.sendall(b'{"method": "io.lxss.Service.GetVersion"}\0')
reply = b""
while not reply.endswith(b"\0"):
    chunk = extra.recv(65536)
    if not chunk:
        break
    reply += chunk
print(json.dumps(reply[:-1].decode() if reply else "closed"), flush=True)
sys.stdin.read()  # hold the connections until the test closes our stdin
"""


@pytest.mark.parametrize("mode", ["silent", "partial"])
def test_silent_clients_are_capped_per_user_and_block_no_one(
    service: Service, distributions: tuple[UserDistribution, UserDistribution], mode: str
) -> None:
    """A holds the 64 connections a user may have, saying nothing (or half a message):
    A's 65th is refused with a clear error at once; B and root are served meanwhile."""
    _, b = distributions
    holder = popen_as(ATTACKER, sys.executable, "-I", "-c", _HOLDER,
                      str(service.runtime_dir / "lxssd.sock"), "64", mode)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdin is not None
        line = holder.stdout.readline()
        assert line, holder.stderr.read() if holder.stderr else ""
        reply = json.loads(json.loads(line))
        assert reply["error"] == "io.lxss.Service.ServiceBusy", reply
        assert "too many connections" in reply["parameters"]["reason"], reply
        refused = service.lxss("-l", user=ATTACKER)
        assert refused.returncode == 255 and "too many connections" in refused.err, refused
        for _ in range(3):
            assert_serving(service, b)
    finally:
        end_helper(holder)
    # Closed connections are forgotten: A is served again.
    settled(lambda: service.lxss("-l", user=ATTACKER).returncode == 0, "A to be served again")


def test_flooding_clients_are_cut_off_or_contained(
    service: Service, distributions: tuple[UserDistribution, UserDistribution]
) -> None:
    """Calls sent and never read, bytes without end, and descriptors by the thousand:
    B is served throughout, and lxssd's memory and descriptors stay bounded."""
    _, b = distributions
    path = str(service.runtime_dir / "lxssd.sock")
    assert_serving(service, b)
    rss_before = rss_kb(service.pid)
    fds_before = service_fds(service)
    flood = r"""
import array, os, socket, sys, time
path = sys.argv[1]
# 1. Calls pipelined and never read: writes stop when the buffers fill.
reader = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
reader.connect(path)
reader.setblocking(False)
call = b'{"method": "io.lxss.Service.GetVersion", "parameters": {}}\0'
sent = 0
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    try:
        sent += reader.send(call * 64)
    except BlockingIOError:
        break
print("pipelined", sent, flush=True)
# 2. Bytes without a NUL: cut off after the 4 MiB a message may have (wire.MAX_MESSAGE).
endless = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
endless.connect(path)
endless.settimeout(10)
streamed = 0
try:
    while streamed < (64 << 20):
        streamed += endless.send(b"x" * 65536)
except (BrokenPipeError, ConnectionResetError):
    pass
print("streamed", streamed, flush=True)
# 3. Descriptors: 2,000 calls with 16 each, then one with 200 (more than a call may carry).
fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(200)]
carrier = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
carrier.connect(path)
carrier.settimeout(10)
answered = 0
for i in range(2000):
    carrier.sendmsg([call], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds[:16]))])
    reply = b""
    while not reply.endswith(b"\0"):
        reply += carrier.recv(65536)
    answered += 1
print("answered", answered, flush=True)
try:
    carrier.sendmsg([call], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    print("many", carrier.recv(65536)[:20], flush=True)
except OSError as e:
    print("many", e.errno, flush=True)
sys.stdin.read()
"""
    with Meanwhile(service, b) as meanwhile:
        proc = popen_as(ATTACKER, sys.executable, "-I", "-c", flood, path)
        try:
            assert proc.stdout is not None and proc.stdin is not None
            lines = [proc.stdout.readline().decode().split() for _ in range(4)]
            assert [line[0] for line in lines if line] == [
                "pipelined",
                "streamed",
                "answered",
                "many",
            ], lines
            rss_during = rss_kb(service.pid)
            for _ in range(3):  # with the flood's connections still open
                assert_serving(service, b)
        finally:
            end_helper(proc)
    assert int(lines[0][1]) > 0
    assert int(lines[1][1]) < (8 << 20), f"lxssd read {lines[1][1]} bytes of one message"
    assert int(lines[2][1]) == 2000
    meanwhile.check(at_least=1)
    assert rss_during - rss_before < 100_000, f"lxssd grew by {rss_during - rss_before} kB"
    settled(lambda: service_fds(service) == fds_before, "lxssd to close the fds it was sent")
    assert_serving(service, b)
