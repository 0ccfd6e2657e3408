"""The Varlink interface reader and parameter checks (lxss.api.interface), on the real
interface file the service serves and on small made-up ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lxss
from lxss.api import errors
from lxss.api.interface import (
    Interface,
    InterfaceSyntaxError,
    TypeRef,
    check,
    check_struct,
    parse_interface,
)

INTERFACE_FILE = Path(lxss.__file__).parent / "api" / "io.lxss.Service.varlink"


@pytest.fixture(scope="module")
def service_interface() -> Interface:
    return parse_interface(INTERFACE_FILE.read_text())


def test_real_interface_parses(service_interface: Interface) -> None:
    interface = service_interface
    assert interface.name == errors.INTERFACE == "io.lxss.Service"
    assert interface.description == INTERFACE_FILE.read_text()
    text = INTERFACE_FILE.read_text()
    declared = {line.split()[1].split("(")[0] for line in text.splitlines()
                if line.startswith("method ")}  # fmt: skip
    assert set(interface.methods) == declared
    assert {
        "RegisterDistribution",
        "UnregisterDistribution",
        "EnumerateDistributions",
        "ExportDistribution",
        "SetDefaultDistribution",
        "CreateLxProcess",
    } <= declared
    assert set(interface.types) == {
        "Distribution", "Layer", "ImageConfig", "ShortcutIcon", "NetworkStatus"
    }  # fmt: skip


def test_every_declared_error_has_a_class(service_interface: Interface) -> None:
    for name in service_interface.errors:
        cls = type(errors.from_reply(f"io.lxss.Service.{name}", {}))
        assert cls.name == f"io.lxss.Service.{name}", name
        assert cls is getattr(errors, name)


def test_register_distribution_signature(service_interface: Interface) -> None:
    arguments, reply = service_interface.methods["RegisterDistribution"]
    fields = dict(arguments.fields)
    assert fields["name"] == TypeRef("string")
    assert fields["version"] == TypeRef("int", nullable=True)
    assert fields["builtin"] == TypeRef("string", nullable=True)
    assert dict(reply.fields)["warnings"] == TypeRef("array", item=TypeRef("string"))
    enumerate_reply = dict(service_interface.methods["EnumerateDistributions"][1].fields)
    assert enumerate_reply["distributions"] == TypeRef(
        "array", item=TypeRef("named", name="Distribution")
    )


@pytest.mark.parametrize(
    ("method", "parameters", "bad"),
    [
        ("RegisterDistribution", {"name": "x"}, None),
        ("RegisterDistribution", {"name": "x", "archive": 0, "version": None}, None),
        ("RegisterDistribution", {}, "name"),
        ("RegisterDistribution", {"name": None}, "name"),
        ("RegisterDistribution", {"name": 1}, "name"),
        ("RegisterDistribution", {"name": "x", "archive": "0"}, "archive"),
        ("RegisterDistribution", {"name": "x", "archive": True}, "archive"),
        ("RegisterDistribution", {"name": "x", "archive": 2**64}, "archive"),
        ("RegisterDistribution", {"name": "x", "version": 1.5}, "version"),
        ("RegisterDistribution", {"name": "x", "unknown": 1}, "unknown"),
        ("Shutdown", {"force": 1}, "force"),
        ("Shutdown", {"force": False}, None),
        ("CreateLxProcess", {"commandLine": ["a", 1]}, "commandLine[1]"),
        ("SetDefaultVersion", {"version": -(2**63)}, None),
        ("SetDefaultVersion", {"version": -(2**63) - 1}, "version"),
        ("SetDefaultVersion", {"version": 2**63 - 1}, None),
        ("SetDefaultVersion", {"version": 2**63}, "version"),  # Varlink's int is int64
    ],
)
def test_check_parameters(
    service_interface: Interface, method: str, parameters: dict[str, object], bad: str | None
) -> None:
    arguments, _ = service_interface.methods[method]
    assert check_struct(parameters, arguments, service_interface) == bad


def test_check_struct_wants_an_object(service_interface: Interface) -> None:
    arguments, _ = service_interface.methods["Shutdown"]
    assert check_struct([], arguments, service_interface) == "parameters"


SMALL = """
# a comment line
interface org.example.Test   # trailing comment

type Point (x: float, y: float)
type Shape (name: string, points: []Point, tags: [string]string, extra: ?object,
            nested: (a: int, b: ?bool))

method Draw(shape: Shape, scale: ?float) -> (ok: bool)
error Failed (why: string)
"""


def test_small_interface() -> None:
    interface = parse_interface(SMALL)
    assert interface.name == "org.example.Test"
    assert set(interface.types) == {"Point", "Shape"}
    assert set(interface.errors) == {"Failed"}
    arguments, _ = interface.methods["Draw"]
    shape = {"name": "s", "points": [{"x": 1, "y": 2.5}], "tags": {"a": "b"},
             "extra": {"anything": [1]}, "nested": {"a": 1, "b": None}}  # fmt: skip
    good: dict[str, Any] = {"shape": shape, "scale": None}
    assert check_struct(good, arguments, interface) is None
    cases: dict[str, dict[str, Any]] = {
        "shape.points[0].y": {"points": [{"x": 1, "y": "2"}]},
        "shape.points": {"points": {"x": 1}},
        "shape.tags[a]": {"tags": {"a": 1}},
        "shape.tags": {"tags": ["a"]},
        "shape.nested.a": {"nested": {"a": True}},
        "shape.nested.c": {"nested": {"a": 1, "c": 2}},
    }
    for expected, change in cases.items():
        shape = {**good["shape"], **change}
        assert check_struct({"shape": shape}, arguments, interface) == expected


def test_an_unknown_named_type_never_matches() -> None:
    interface = parse_interface("interface a.B\nmethod M(p: Missing) -> ()")
    assert check({"x": 1}, TypeRef("named", name="Missing"), interface, "p") == "p"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "type X (a: int)",
        "interface a.B\nmethod M(a: int)",
        "interface a.B\nmethod M(a int) -> ()",
        "interface a.B\nfunction M() -> ()",
        "interface a.B\ntype T (a: int",
        "interface a.B\ntype T (a: int) $",
    ],
)
def test_syntax_errors(text: str) -> None:
    with pytest.raises(InterfaceSyntaxError):
        parse_interface(text)
