"""lxssd speaks Varlink to anyone: NUL-terminated JSON over its socket, the
org.varlink.service introspection interface, and errors for malformed calls, while
a misbehaving client never stops it from serving the next one."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from conftest import Service
from mgmt import call, varlink

import lxss
from lxss.api import wire

INTERFACE_FILE = Path(lxss.__file__).parent / "api" / "io.lxss.Service.varlink"


def test_get_info(service: Service) -> None:
    [reply] = varlink(service, {"method": "org.varlink.service.GetInfo"})
    assert reply["parameters"] == {
        "vendor": "lxss",
        "product": "lxssd",
        "version": lxss.__version__,
        "url": "",
        "interfaces": ["org.varlink.service", "io.lxss.Service"],
    }


def test_interface_descriptions(service: Service, test_users: tuple[str, str]) -> None:
    replies = varlink(
        service,
        {"method": "org.varlink.service.GetInterfaceDescription",
         "parameters": {"interface": "io.lxss.Service"}},
        {"method": "org.varlink.service.GetInterfaceDescription",
         "parameters": {"interface": "org.varlink.service"}},
        {"method": "org.varlink.service.GetInterfaceDescription",
         "parameters": {"interface": "com.example.Nothing"}},
        user=test_users[0],  # introspection is for everyone
    )  # fmt: skip
    assert replies[0]["parameters"]["description"] == INTERFACE_FILE.read_text()
    own = replies[1]["parameters"]["description"]
    assert own.startswith("interface org.varlink.service\n")
    for method in ("GetInfo", "GetInterfaceDescription"):
        assert f"method {method}(" in own
    assert replies[2] == {
        "error": "org.varlink.service.InterfaceNotFound",
        "parameters": {"interface": "com.example.Nothing"},
    }


def test_every_method_of_the_interface_file_is_served(service: Service) -> None:
    """No method is described but missing: each answers something other than
    MethodNotFound/MethodNotImplemented when called with no parameters."""
    text = INTERFACE_FILE.read_text()
    methods = [line.split()[1].split("(")[0] for line in text.splitlines()
               if line.startswith("method ")]  # fmt: skip
    assert "RegisterDistribution" in methods and "EnumerateDistributions" in methods
    replies = varlink(service, *({"method": f"io.lxss.Service.{m}", "parameters": {}}
                                 for m in methods))  # fmt: skip
    for method, reply in zip(methods, replies, strict=True):
        assert reply.get("error") not in (
            "org.varlink.service.MethodNotFound",
            "org.varlink.service.MethodNotImplemented",
        ), (method, reply)


def test_malformed_calls_get_varlink_errors(service: Service) -> None:
    cases: list[tuple[dict[str, Any], str, dict[str, Any] | None]] = [
        ({"method": "io.lxss.Service.NoSuchMethod"}, "org.varlink.service.MethodNotFound",
         {"method": "io.lxss.Service.NoSuchMethod"}),
        ({"method": "org.varlink.service.NoSuch"}, "org.varlink.service.MethodNotFound", None),
        ({"method": "com.example.Other.Method"}, "org.varlink.service.InterfaceNotFound",
         {"interface": "com.example.Other"}),
        ({"method": "io.lxss.Service.SetDefaultDistribution", "parameters": {"distribution": 7}},
         "org.varlink.service.InvalidParameter", {"parameter": "distribution"}),
        ({"method": "io.lxss.Service.SetDefaultDistribution", "parameters": {}},
         "org.varlink.service.InvalidParameter", {"parameter": "distribution"}),
        ({"method": "io.lxss.Service.EnumerateDistributions", "parameters": {"extra": 1}},
         "org.varlink.service.InvalidParameter", {"parameter": "extra"}),
        ({"method": "io.lxss.Service.ExportDistribution",
          "parameters": {"distribution": "x", "file": 0, "format": "tar"}},
         "org.varlink.service.InvalidParameter", {"parameter": "file"}),
    ]  # fmt: skip
    replies = varlink(service, *(c[0] for c in cases))
    for (request, error, parameters), reply in zip(cases, replies, strict=True):
        assert reply.get("error") == error, (request, reply)
        if parameters is not None:
            assert reply.get("parameters") == parameters, (request, reply)


def _raw(service: Service, data: bytes) -> bytes:
    """Send raw bytes, then read until the service closes or a reply ends."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(service.runtime_dir / "lxssd.sock"))
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it stopped reading us: that is an answer too
        received = b""
        while not received.endswith(b"\0"):
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received


def test_hostile_clients_are_dropped_and_the_service_keeps_serving(service: Service) -> None:
    for garbage in (b"not json\0", b"[1, 2, 3]\0", b'{"method": 5}\0', b"\xff\xfe\0",
                    b"{" * 100_000 + b"\0", b"x" * (wire.MAX_MESSAGE + 4096)):  # fmt: skip
        assert _raw(service, garbage) == b"", garbage[:20]
        [info] = varlink(service, {"method": "org.varlink.service.GetInfo"})
        assert info["parameters"]["product"] == "lxssd"


def test_a_call_with_its_own_nul_framing(service: Service) -> None:
    """Two calls in one write, each NUL-terminated, get two replies in order."""
    calls = [{"method": "io.lxss.Service.GetVersion", "parameters": {}},
             {"method": "org.varlink.service.GetInfo"}]  # fmt: skip
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(service.runtime_dir / "lxssd.sock"))
        s.sendall(b"".join(json.dumps(c).encode() + b"\0" for c in calls))
        received = b""
        while received.count(b"\0") < 2:
            chunk = s.recv(65536)
            assert chunk, "the service closed the connection"
            received += chunk
    first, second, rest = received.split(b"\0")
    assert rest == b""
    assert json.loads(first)["parameters"]["version"] == lxss.__version__
    assert json.loads(second)["parameters"]["product"] == "lxssd"
    assert call(service, "GetVersion")["parameters"]["version"] == lxss.__version__
