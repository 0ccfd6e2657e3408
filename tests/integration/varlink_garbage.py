"""A hostile Varlink client: sends malformed messages to lxssd and reports what came back.

    python varlink_garbage.py SOCKET COUNT SEED INTERFACE_FILE

Run by test_security_service.py as an unprivileged user. Each message is one of the
kinds below, chosen at random (seeded, so a failure can be replayed). After each one
the client reads until a reply ends or the service closes the connection, with a 10 s
limit, and reconnects when closed. It prints one JSON object: outcomes by kind
("error", "ok", "closed", "timeout") and the slowest answer in seconds.

Nothing here may succeed: a kind is either not Varlink at all (the service must close
the connection) or a call it must refuse with an error (wrong types, unknown methods,
descriptors it does not expect, values naming nothing of the caller's).
"""

from __future__ import annotations

import array
import json
import os
import random
import re
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

TIMEOUT = 10.0
SERVICE = "io.lxss.Service"
# Calls with effects even when well-formed are never sent as "valid type, odd value".
SIDE_EFFECTS = {"RegisterDistribution", "Shutdown", "SetDefaultVersion", "CreateLxProcess"}


def interface_methods(text: str) -> dict[str, dict[str, str]]:
    """Method name -> {parameter: type} of a Varlink interface file (enough of the grammar
    for io.lxss.Service: no nested structs in method parameters)."""
    text = re.sub(r"#[^\n]*", "", text)
    methods = {}
    for name, params in re.findall(r"method\s+(\w+)\s*\(([^)]*)\)", text):
        fields = {}
        for field in params.split(","):
            if ":" in field:
                key, kind = field.split(":", 1)
                fields[key.strip()] = kind.strip()
        methods[name] = fields
    return methods


def wrong_value(kind: str, rng: random.Random) -> Any:
    """A JSON value that is not of Varlink type *kind*."""
    base = kind.lstrip("?")
    choices: list[Any] = [{"x": 1}, [1, 2], 3.5, True, "text", -7, 2**70]
    if base == "string":
        choices = [c for c in choices if not isinstance(c, str)]
    elif base == "int":
        choices = [c for c in choices if isinstance(c, dict | list | str | float | bool)]
    elif base == "bool":
        choices = [c for c in choices if not isinstance(c, bool)]
    elif base == "float":
        choices = [c for c in choices if isinstance(c, dict | list | str | bool)]
    elif base.startswith("[]"):
        choices = ["text", 5, {"a": "b"}, [1, None], [[]]]
    return rng.choice(choices)


def right_value(kind: str, rng: random.Random) -> Any:
    base = kind.lstrip("?")
    if base == "string":
        return odd_string(rng)
    if base == "int":
        return rng.choice([0, 1, 7, 99, -1, 2**31, 2**63 - 1])
    if base == "bool":
        return rng.choice([True, False])
    if base == "float":
        return rng.random()
    if base.startswith("[]"):
        return [odd_string(rng) for _ in range(rng.randint(0, 3))]
    return None


def odd_string(rng: random.Random) -> str:
    scattered = "".join(chr(rng.randint(1, 0xD7FF)) for _ in range(20))
    pieces = ["", "x" * rng.randint(1, 20000), "../../etc/shadow", "{" + "0" * 36 + "}",
              "\u202e\x1b[2J", scattered, "nul\u0000inside", "CON", " "]  # fmt: skip
    return rng.choice(pieces)


class Kinds:
    def __init__(self, methods: dict[str, dict[str, str]], rng: random.Random) -> None:
        self.methods = methods
        self.rng = rng
        self.uid = os.getuid()

    def call(self, method: str, parameters: dict[str, Any]) -> bytes:
        return json.dumps({"method": method, "parameters": parameters}).encode() + b"\0"

    # Not Varlink: the connection must be closed.

    def random_bytes(self) -> bytes:
        return os.urandom(self.rng.randint(1, 3000)).replace(b"\0", b"\1") + b"\0"

    def truncated(self) -> bytes:
        whole = self.call(f"{SERVICE}.GetVersion", {})[:-1]
        return whole[: self.rng.randint(1, len(whole) - 1)] + b"\0"

    def not_an_object(self) -> bytes:
        return self.rng.choice([b"[]", b"42", b'"text"', b"null", b"true", b"", b"   "]) + b"\0"

    def invalid_utf8(self) -> bytes:
        call = self.call(f"{SERVICE}.GetVersion", {})[:-1]
        at = self.rng.randint(1, len(call) - 2)
        return call[:at] + self.rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]) + b"\0"

    def deep_nesting(self) -> bytes:
        depth = self.rng.choice([1000, 10000, 100000])
        return b'{"method": ' + b"[" * depth + b"]" * depth + b"}\0"

    def bad_numbers(self) -> bytes:
        value = self.rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999999", b"0x10", b"01"])
        return b'{"method": "io.lxss.Service.GetVersion", "parameters": {"n": ' + value + b"}}\0"

    def bad_shape(self) -> bytes:
        shape = self.rng.choice([{"method": 5}, {"method": None}, {"parameters": {}},
                                 {"method": "x", "parameters": []},
                                 {"method": "x", "parameters": "y"}])  # fmt: skip
        return json.dumps(shape).encode() + b"\0"

    # Varlink, but a call the service must refuse.

    def unknown_method(self) -> bytes:
        number = self.rng.randint(0, 10**6)
        name = self.rng.choice([f"{SERVICE}.No{number}", "org.varlink.service.X", "", ".",
                                "com.example.Evil.Call", SERVICE, f"{SERVICE}."])  # fmt: skip
        return self.call(name, {})

    def wrong_types(self) -> bytes:
        method = self.rng.choice(sorted(self.methods))
        fields = self.methods[method]
        parameters = {key: right_value(kind, self.rng) for key, kind in fields.items()
                      if not kind.startswith("?")}  # fmt: skip
        if fields:
            key = self.rng.choice(sorted(fields))
            parameters[key] = wrong_value(fields[key], self.rng)
        else:
            parameters["unexpected"] = 1
        return self.call(f"{SERVICE}.{method}", parameters)

    def odd_values(self) -> bytes:
        """Well-typed calls naming nothing the caller has (or root's privilege)."""
        method = self.rng.choice(sorted(set(self.methods) - SIDE_EFFECTS))
        fields = self.methods[method]
        parameters = {key: right_value(kind, self.rng) for key, kind in fields.items()
                      if not kind.startswith("?")}  # fmt: skip
        named = "distribution" in fields
        if named:
            suffix = odd_string(self.rng)
            parameters["distribution"] = f"no-such-{self.rng.randint(0, 10**9)}{suffix}"
        # Without a distribution to name, the call asks for root's privilege (or, where
        # the method has no forUid, passes a parameter it does not have).
        if not named or self.rng.random() < 0.5:
            parameters["forUid"] = self.rng.choice([0, 1, self.uid + 1, 2**32 - 1, -5])
        if method == "ExportDistribution":
            parameters["file"] = self.rng.randint(0, 5)  # no descriptor comes with it
        return self.call(f"{SERVICE}.{method}", parameters)


def build_kinds(kinds: Kinds) -> dict[str, Callable[[], bytes]]:
    return {
        "random_bytes": kinds.random_bytes,
        "truncated": kinds.truncated,
        "not_an_object": kinds.not_an_object,
        "invalid_utf8": kinds.invalid_utf8,
        "deep_nesting": kinds.deep_nesting,
        "bad_numbers": kinds.bad_numbers,
        "bad_shape": kinds.bad_shape,
        "unknown_method": kinds.unknown_method,
        "wrong_types": kinds.wrong_types,
        "odd_values": kinds.odd_values,
    }


def garbage_fds(rng: random.Random) -> list[int]:
    """Descriptors of every kind, to ride beside a message that does not want them."""
    fds: list[int] = []
    for _ in range(rng.randint(1, 20)):
        kind = rng.randrange(5)
        if kind == 0:
            fds.append(os.open("/dev/null", os.O_RDWR))
        elif kind == 1:
            r, w = os.pipe()
            os.close(w)
            fds.append(r)
        elif kind == 2:
            a, b = socket.socketpair()
            b.close()
            fds.append(a.detach())
        elif kind == 3:
            fds.append(os.eventfd(0))
        else:
            fds.append(os.memfd_create("garbage"))
    return fds


class Client:
    def __init__(self, path: str) -> None:
        self.path = path
        self.sock: socket.socket | None = None

    def connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(TIMEOUT)
            self.sock.connect(self.path)
        return self.sock

    def drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def exchange(self, data: bytes, fds: list[int]) -> str:
        sock = self.connect()
        try:
            if fds:
                ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                sent = sock.sendmsg([data[:4096]], ancillary)
                sock.sendall(data[sent:])
            else:
                sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.drop()
            return "closed"
        received = b""
        while not received.endswith(b"\0"):
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                self.drop()
                return "timeout"
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.drop()
                return "closed"
            received += chunk
        reply = json.loads(received[:-1])
        return "error" if "error" in reply else "ok"


def main(argv: list[str]) -> int:
    path, count, seed, interface = argv[0], int(argv[1]), int(argv[2]), argv[3]
    rng = random.Random(seed)
    with open(interface) as f:
        kinds = build_kinds(Kinds(interface_methods(f.read()), rng))
    names = sorted(kinds)
    outcomes: dict[str, dict[str, int]] = {name: {} for name in [*names, "oversized", "fds"]}
    slowest = 0.0
    client = Client(path)
    for i in range(count):
        fds: list[int] = []
        if i % 2000 == 1999:  # a few, past lxssd's 4 MiB (lxss.api.wire.MAX_MESSAGE)
            name, data = "oversized", b"x" * (5 << 20)
        elif i % 10 == 7:
            name = "fds"
            data = kinds[rng.choice(names)]()
            fds = garbage_fds(rng)
        else:
            name = rng.choice(names)
            data = kinds[name]()
        started = time.monotonic()
        try:
            outcome = client.exchange(data, fds)
        finally:
            for fd in fds:
                os.close(fd)
        slowest = max(slowest, time.monotonic() - started)
        outcomes[name][outcome] = outcomes[name].get(outcome, 0) + 1
    client.drop()
    json.dump({"outcomes": outcomes, "slowest": slowest}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
