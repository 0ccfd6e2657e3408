"""Fuzz target: typed Varlink parameters get a clean, typed answer, never InternalError.

    python tests/fuzz/fuzz_varlink_params.py --budget SECONDS [--socket PATH | --in-process]

An input is one io.lxss.Service call, as JSON: {"method": ..., "parameters": {...}, "fds":
[kind, ...]}, where each kind is a descriptor sent with the call (an index parameter such as
`archive` names one): a directory, a regular file, an empty file, /dev/null for reading or for
writing, an O_PATH descriptor, a pipe's read end (its writer gone) or write end (its reader
gone), a socket. Parameters are generated from the interface file, type by type: values that
fit, values at and past the edges of Varlink's int64 (flags, consoleId, rows ... at 2^63 and
beyond), values of the wrong type, nulls, absent and unknown parameters.

What must hold, for every input: the reply is one reply, naming no error but the interface's
own or org.varlink.service's, and never io.lxss.Service.InternalError (a handler met a value it
could not take); afterwards the service still answers GetVersion.

Against a real lxssd (`--socket`, by default $LXSS_RUNTIME_DIR/lxssd.sock): run it as a user of
its own. The calls act on that user only and name no distribution but `fuzz*` ones (which it
may register from the built-in busybox, run programs in, export, configure, terminate and
unregister) and random GUIDs, but they do stop that user's utility VM; run as root, it would
act for other users (`forUid`). `--in-process` serves the interface in this process instead,
with a handler that checks every value it receives against its declared type on its own:
what lxssd's typed checks promise to every handler, without root (the unit tests run this).

hypothesis generates the calls (atheris, byte-oriented, is no help with typed JSON). `--budget
0` runs the seed corpus (corpus/varlink_params/, regenerated with `--write-seeds DIR`) and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent
SEED_CORPUS = HERE / "corpus" / "varlink_params"
sys.path.insert(0, str(HERE.parents[1] / "src"))  # runnable from a checkout without installing

from lxss.api import server as varlink_server  # noqa: E402
from lxss.api.interface import INTERFACE_FILE, Interface, TypeRef, parse_interface  # noqa: E402

INTERFACE = parse_interface(Path(INTERFACE_FILE).read_text(encoding="utf-8"))
SERVICE = INTERFACE.name
REPLY_TIMEOUT = 120.0  # a call may start the user's utility VM
FD_KINDS = ("directory", "file", "empty", "null", "null-w", "path", "pipe-r", "pipe-w", "socket")
# Parameters of type int that are indexes into the call's descriptors (the interface's "fd").
FD_PARAMETERS = frozenset(
    {"archive", "location", "progress", "file", "stdin", "stdout", "stderr", "console", "control"}
)
INT_EDGES = (
    -(2**63) - 1, -(2**63), -(2**31) - 1, -1, 2**16, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63,
    2**64, 10**30,
)  # fmt: skip
WRONG_TYPES: tuple[Any, ...] = (True, 1.5, "1", [], {}, [None], {"a": 1}, -(2**70))
FUZZ_GUID = "a0f1c2d3-0000-4000-8000-00000000f022"
# Strings worth trying by parameter name; everything else also gets random text. No built-in
# that is built (debian, ubuntu): a debootstrap per call would be a benchmark, not a fuzz.
STRINGS: dict[str, tuple[str, ...]] = {
    "distribution": ("fuzz", "FUZZ", FUZZ_GUID, "{" + FUZZ_GUID + "}", "", "fuzz\x00x"),
    "name": ("fuzz", "fuzz-2", "", "a" * 300, "../fuzz", FUZZ_GUID, "fuzz\udcff"),
    "builtin": ("busybox", "debian:no-such-suite", "nothing", ""),
    "filename": ("/bin/true", "true", "", "/", "/bin/true\x00x", "/no/such"),
    "shellType": ("standard", "login", "none", "", "bogus"),
    "format": ("tar", "tar.gz", "tar.xz", "tar.zst", "zip", ""),
    "cwd": ("/", "/no/such", "", "\udcff", "/\x00"),
    "hostCwd": ("/", "/root", "", "/no/such"),
    "username": ("root", "nobody", "", "no-such-user", "\x00"),
    "term": ("xterm", "", "\x1b[31m"),
    "interface": (SERVICE, "org.varlink.service", ""),
    "digest": ("sha256:" + "0" * 64, "sha512:" + "f" * 128, "sha256:", "md5:00", ""),
    "user": ("root", "0", "0:0", "65535", "nobody:nogroup", ""),
    "workingDir": ("/", "/root", "", "relative"),
}
LISTS: dict[str, tuple[list[str], ...]] = {
    "commandLine": ([], ["true"], ["sh", "-c", "exit 3"], ["true\x00x"], [""]),
    "environment": ([], ["A=B"], ["noequals"], ["=x"], ["A=\x00"], ["PATH="]),
    "closed": ([], ["stdin"], ["stdout", "stderr"], ["bogus"], ["stdin", "stdin"]),
    "env": ([], ["A=B"], ["noequals"], ["A=" + "x" * 70000]),
}


def _skipped_builtin(parameters: dict[str, Any]) -> bool:
    builtin = parameters.get("builtin")
    if not isinstance(builtin, str) or builtin == "debian:no-such-suite":
        return False
    return builtin.split(":", 1)[0].strip().lower() in ("debian", "ubuntu")


# --- sending one call ----------------------------------------------------------------------


@contextlib.contextmanager
def _descriptors(kinds: Sequence[str], scratch: str) -> Iterator[list[int]]:
    """Open one descriptor of each kind; the far ends of pipes and sockets are closed at once
    (nothing will write or read them), so no call waits on the fuzzer."""
    fds: list[int] = []
    try:
        for kind in kinds:
            fds.append(_open_kind(kind, scratch))
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def _open_kind(kind: str, scratch: str) -> int:
    if kind == "directory":
        return os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
    if kind in ("file", "empty"):
        path = os.path.join(scratch, kind)
        with open(path, "wb") as f:
            f.write(b"" if kind == "empty" else b"not an archive\n" * 64)
        return os.open(path, os.O_RDWR)
    if kind == "null":
        return os.open(os.devnull, os.O_RDONLY)
    if kind == "null-w":
        return os.open(os.devnull, os.O_WRONLY)
    if kind == "path":
        return os.open("/", os.O_PATH)
    if kind in ("pipe-r", "pipe-w"):
        read_end, write_end = os.pipe()
        keep, drop = (read_end, write_end) if kind == "pipe-r" else (write_end, read_end)
        os.close(drop)
        return keep
    if kind == "socket":
        ours, theirs = socket.socketpair()
        ours.close()
        return theirs.detach()
    raise ValueError(f"unknown descriptor kind {kind!r}")


def call(socket_path: str, case: dict[str, Any], scratch: str) -> dict[str, Any]:
    """Send one call with its descriptors; its one reply (AssertionError if none comes)."""
    message = {"method": case["method"], "parameters": case["parameters"]}
    data = json.dumps(message).encode("utf-8", "surrogatepass") + b"\0"
    with _descriptors(case.get("fds", []), scratch) as fds, socket.socket(socket.AF_UNIX) as s:
        s.settimeout(REPLY_TIMEOUT)
        s.connect(socket_path)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, b"".join(
            fd.to_bytes(4, sys.byteorder) for fd in fds))] if fds else []  # fmt: skip
        s.sendmsg([data], ancillary)
        reply = b""
        while not reply.endswith(b"\0"):
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no reply within {REPLY_TIMEOUT:.0f} s") from None
            assert chunk, "the service closed the connection without a reply"
            reply += chunk
    assert reply.count(b"\0") == 1, "more than one reply to one call"
    answer: dict[str, Any] = json.loads(reply[:-1])
    return answer


def test_one_input(case: dict[str, Any], socket_path: str, scratch: str) -> str:
    """One call; raise AssertionError on a broken promise. Returns the error's name, or "ok"."""
    if _skipped_builtin(case["parameters"]):
        return "skipped"
    reply = call(socket_path, case, scratch)
    error = reply.get("error")
    known = {f"{SERVICE}.{name}" for name in INTERFACE.errors}
    assert error is None or error in known or error.startswith("org.varlink.service."), reply
    assert error != f"{SERVICE}.InternalError", f"{case}: {reply}"
    alive = call(socket_path, {"method": f"{SERVICE}.GetVersion", "parameters": {}}, scratch)
    assert "error" not in alive, f"after {case}: {alive}"
    return str(error or "ok")


# --- an in-process service whose handler checks what reaches it ----------------------------


def strictly_typed(value: Any, spec: TypeRef, interface: Interface) -> bool:
    """Whether *value* is what a handler may assume of *spec* (written apart from lxss's own
    check, so that one does not vouch for itself)."""
    if value is None:
        return spec.nullable
    if spec.kind == "named":
        return strictly_typed(value, interface.types[spec.name], interface)
    if spec.kind == "int":
        return type(value) is int and -(2**63) <= value <= 2**63 - 1
    if spec.kind == "bool":
        return type(value) is bool
    if spec.kind == "float":
        return type(value) in (int, float)
    if spec.kind == "string":
        return type(value) is str
    if spec.kind == "array":
        assert spec.item is not None
        return type(value) is list and all(strictly_typed(v, spec.item, interface) for v in value)
    if spec.kind == "struct":
        names = {name for name, _ in spec.fields}
        return (
            type(value) is dict
            and set(value) <= names
            and all(strictly_typed(value.get(n), s, interface) for n, s in spec.fields)
        )
    return spec.kind == "object"


class _StrictHandler:
    """Every method of the interface: raises (so the reply is InternalError) if a parameter
    is not strictly of its type, or an fd index names no descriptor of the call."""

    def __getattr__(self, method: str) -> Any:
        if method not in INTERFACE.methods:
            raise AttributeError(method)

        async def handle(call: varlink_server.Call) -> dict[str, Any]:
            spec = INTERFACE.methods[method][0]
            if not strictly_typed(call.parameters, spec, INTERFACE):
                raise TypeError(f"{method} got {call.parameters!r}")
            named = [n for n, s in spec.fields if n in FD_PARAMETERS and s.kind == "int"]
            for fd in call.take_fds(*named).values():
                if fd is not None:
                    os.fstat(fd)
                    os.close(fd)
            return {}

        return handle


@contextlib.contextmanager
def in_process_service(directory: str) -> Iterator[str]:
    """A VarlinkServer for io.lxss.Service with the strict handler, on a socket in
    *directory*, served by a thread of its own; yields the socket's path."""
    path = os.path.join(directory, "fuzz.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    listener.bind(path)
    listener.listen(16)
    listener.setblocking(False)
    loop = asyncio.new_event_loop()
    server = varlink_server.VarlinkServer(
        Path(INTERFACE_FILE).read_text(encoding="utf-8"), _StrictHandler(), "lxss", "fuzz", "0"
    )
    task = loop.create_task(server.serve(listener))

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
        loop.close()
        listener.close()


# --- seeds and generation --------------------------------------------------------------------


def _launch(**overrides: Any) -> dict[str, Any]:
    parameters: dict[str, Any] = {
        "distribution": "fuzz", "filename": "/bin/true", "commandLine": ["true"],
        "shellType": "none", "environment": [], "rows": 24, "columns": 80, "stdin": 0,
        "stdout": 1, "stderr": 2, "control": 3, "consoleId": 1,
    }  # fmt: skip
    parameters.update(overrides)
    return {"method": f"{SERVICE}.CreateLxProcess", "parameters": parameters,
            "fds": ["null", "null-w", "null-w", "socket"]}  # fmt: skip


def seeds() -> dict[str, dict[str, Any]]:
    """The seed corpus: what issue 11's attacker sent, and calls that succeed."""

    def method(method_: str, fds: Sequence[str] = (), **parameters: Any) -> dict[str, Any]:
        return {"method": f"{SERVICE}.{method_}", "parameters": parameters, "fds": list(fds)}

    return {
        "register_busybox": method("RegisterDistribution", name="fuzz", builtin="busybox"),
        "launch": _launch(),
        "launch_console_id_2_63": _launch(consoleId=2**63),
        "launch_console_id_2_63_minus_1": _launch(consoleId=2**63 - 1),
        "launch_rows_2_32": _launch(rows=2**32, columns=-1),
        "launch_control_is_a_directory": {**_launch(), "fds": ["null"] * 3 + ["directory"]},
        "launch_stdin_index_past_the_fds": _launch(stdin=7),
        "configure_flags_2_63": method("ConfigureDistribution", distribution="fuzz", flags=2**63),
        "configure_flags_2_63_minus_1": method(
            "ConfigureDistribution", distribution="fuzz", flags=2**63 - 1
        ),
        "configure_default_uid_negative": method(
            "ConfigureDistribution", distribution="fuzz", defaultUid=-(2**63)
        ),
        "archive_is_a_directory": method(
            "RegisterDistribution", ["directory"], name="fuzz-2", archive=0
        ),
        "archive_is_o_path": method("RegisterDistribution", ["path"], name="fuzz-2", archive=0),
        "archive_is_write_only": method(
            "RegisterDistribution", ["null-w"], name="fuzz-2", archive=0
        ),
        "archive_is_not_an_archive": method(
            "RegisterDistribution", ["file"], name="fuzz-2", archive=0
        ),
        "location_is_a_file": method(
            "RegisterDistribution", ["file"], name="fuzz-2", builtin="busybox", location=0
        ),
        "layers_of_odd_sizes": method(
            "RegisterDistribution",
            ["empty"],
            name="fuzz-2",
            archive=0,
            layers=[{"digest": "sha256:" + "0" * 64, "size": 2**63 - 1}],
        ),
        "export_into_a_directory": method(
            "ExportDistribution", ["directory"], distribution="fuzz", file=0, format="tar"
        ),
        "export_into_o_path": method(
            "ExportDistribution", ["path"], distribution="fuzz", file=0, format="tar.gz"
        ),
        "export_into_a_read_only_file": method(
            "ExportDistribution", ["null"], distribution="fuzz", file=0, format="tar"
        ),
        "progress_is_o_path": method(
            "RegisterDistribution", ["path"], name="fuzz-2", builtin="busybox", progress=0
        ),
        "move_into_a_file": method("MoveDistribution", ["file"], distribution="fuzz", location=0),
        "set_default_version_2_64": method("SetDefaultVersion", version=2**64),
        "enumerate_for_uid_2_63": method("EnumerateDistributions", forUid=2**63),
        "version_a_string": method(
            "RegisterDistribution", name="fuzz-2", version="1", builtin="busybox"
        ),
        "unregister": method("UnregisterDistribution", distribution="fuzz"),
        "shutdown": method("Shutdown", force=True),
    }


def write_seeds(directory: Path) -> None:
    """One file per seed, numbered in the order they are meant to run (the first registers
    the distribution the others act on; the last unregisters it)."""
    directory.mkdir(parents=True, exist_ok=True)
    for number, (name, case) in enumerate(seeds().items()):
        text = json.dumps(case, indent=1, ensure_ascii=True, sort_keys=True) + "\n"
        (directory / f"{number:02d}_{name}.json").write_text(text, encoding="ascii")


def load_case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text(encoding="ascii"))
    return case


def run_corpus(socket_path: str, corpus: Path = SEED_CORPUS) -> dict[str, str]:
    """Every seed through the target once, in name order; {seed: what became of it}."""
    outcomes = {}
    with tempfile.TemporaryDirectory(prefix="fuzz_varlink.") as scratch:
        for path in sorted(corpus.glob("*.json")):
            try:
                outcomes[path.stem] = test_one_input(load_case(path), socket_path, scratch)
            except Exception as error:
                raise AssertionError(f"fuzz target failed on {path}") from error
    return outcomes


def _value(name: str, spec: TypeRef) -> st.SearchStrategy[Any]:
    """Values for parameter *name* of type *spec*: mostly fitting, some at or past the edges,
    some of another type or null."""
    from hypothesis import strategies as st

    return st.one_of(
        _fitting(name, spec), st.sampled_from(WRONG_TYPES), st.none(), st.sampled_from(INT_EDGES)
    )


def _fitting(name: str, spec: TypeRef) -> st.SearchStrategy[Any]:
    from hypothesis import strategies as st

    kind = spec.kind
    if kind == "named":
        return _fitting(name, INTERFACE.types[spec.name])
    if kind == "int":
        if name in FD_PARAMETERS:
            return st.integers(-1, 5)
        return st.one_of(st.sampled_from((0, 1, 2, 24, 80, 1000, 65535)), st.integers())
    if kind == "bool":
        return st.booleans()
    if kind == "float":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "string":
        text = st.text(max_size=40)
        return st.one_of(st.sampled_from(STRINGS[name]), text) if name in STRINGS else text
    if kind == "array":
        assert spec.item is not None
        if name in LISTS:
            return st.one_of(
                st.sampled_from(LISTS[name]), st.lists(st.text(max_size=20), max_size=4)
            )
        return st.lists(_value(name, spec.item), max_size=4)
    if kind == "struct":
        return st.fixed_dictionaries({}, optional={n: _value(n, s) for n, s in spec.fields})
    return st.dictionaries(st.text(max_size=8), st.integers(), max_size=3)


def calls() -> st.SearchStrategy[dict[str, Any]]:
    """Calls of every method, with parameters and descriptors as the module docstring says."""
    from hypothesis import strategies as st

    def of(method: str) -> st.SearchStrategy[dict[str, Any]]:
        arguments = INTERFACE.methods[method][0]
        required = {n: _value(n, s) for n, s in arguments.fields if not s.nullable}
        optional = {n: _value(n, s) for n, s in arguments.fields if s.nullable}
        optional["unknownParameter"] = st.just(1)
        return st.builds(
            lambda parameters, fds: {
                "method": f"{SERVICE}.{method}", "parameters": parameters, "fds": fds,
            },
            st.fixed_dictionaries(required, optional=optional),
            st.lists(st.sampled_from(FD_KINDS), max_size=5),
        )  # fmt: skip

    return st.one_of([of(method) for method in sorted(INTERFACE.methods)])


def fuzz_with_hypothesis(budget: float, socket_path: str) -> int:
    """Generate calls until *budget* seconds are spent; returns how many ran. A failing
    call raises once hypothesis has shrunk it."""
    from hypothesis import HealthCheck, given, settings

    ran = 0
    with tempfile.TemporaryDirectory(prefix="fuzz_varlink.") as scratch:

        @settings(max_examples=50, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(calls())
        def batch(case: dict[str, Any]) -> None:
            nonlocal ran
            ran += 1
            test_one_input(case, socket_path, scratch)

        end = time.monotonic() + budget
        while time.monotonic() < end:
            batch()
    return ran


def default_socket() -> str:
    return os.path.join(os.environ.get("LXSS_RUNTIME_DIR") or "/run/lxss", "lxssd.sock")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--budget", type=float, help="seconds to fuzz; 0: seeds only")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--socket", default=None, help="a running lxssd's socket")
    target.add_argument("--in-process", action="store_true", help="a strict handler, here")
    parser.add_argument("--corpus", type=Path, default=SEED_CORPUS, help="seed corpus directory")
    parser.add_argument("--write-seeds", type=Path, metavar="DIR", help="write the seeds, exit")
    args = parser.parse_args(argv)
    if args.write_seeds is not None:
        write_seeds(args.write_seeds)
        return 0
    if args.budget is None:
        parser.error("--budget is required")
    with contextlib.ExitStack() as stack:
        socket_path = args.socket or default_socket()
        if args.in_process:
            socket_path = stack.enter_context(
                in_process_service(stack.enter_context(tempfile.TemporaryDirectory()))
            )
        outcomes = run_corpus(socket_path, args.corpus)
        print(f"fuzz_varlink_params: {len(outcomes)} seed inputs ok", file=sys.stderr)
        if args.budget > 0:
            ran = fuzz_with_hypothesis(args.budget, socket_path)
            print(f"fuzz_varlink_params: {ran} generated calls ok", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
