"""A reader for Varlink interface files, and parameter checking against them.

The service validates every call's parameters against the interface file it
serves, so a malformed call ends in `org.varlink.service.InvalidParameter`
before any handler runs. Supports the subset of the IDL lxss uses: the
primitive types, `?T`, `[]T`, `[string]T`, named types and inline structs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

# io.lxss.Service itself, shipped beside this module (pyproject: package data). Read by path:
# importlib.resources would add ~12 ms to the service's start.
INTERFACE_FILE = os.path.join(os.path.dirname(__file__), "io.lxss.Service.varlink")

_TOKEN = re.compile(r"\s*(->|\[\]|\[string\]|[(),:?]|[A-Za-z_][A-Za-z0-9_.]*)")


class InterfaceSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class TypeRef:
    kind: str  # bool, int, float, string, object, array, map, struct, named
    nullable: bool = False
    item: TypeRef | None = None
    fields: tuple[tuple[str, TypeRef], ...] = ()
    name: str = ""


@dataclass
class Interface:
    name: str
    description: str
    types: dict[str, TypeRef] = field(default_factory=dict)
    methods: dict[str, tuple[TypeRef, TypeRef]] = field(default_factory=dict)
    errors: dict[str, TypeRef] = field(default_factory=dict)


def _tokens(text: str) -> list[str]:
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    tokens, pos = [], 0
    while pos < len(body):
        if body[pos:].strip() == "":
            break
        match = _TOKEN.match(body, pos)
        if match is None:
            raise InterfaceSyntaxError(f"unexpected text: {body[pos : pos + 20]!r}")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0

    def next(self) -> str:
        if self.pos >= len(self.tokens):
            raise InterfaceSyntaxError("unexpected end of interface")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, token: str) -> None:
        got = self.next()
        if got != token:
            raise InterfaceSyntaxError(f"expected {token!r}, got {got!r}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def struct(self) -> TypeRef:
        self.expect("(")
        fields: list[tuple[str, TypeRef]] = []
        while self.peek() != ")":
            name = self.next()
            self.expect(":")
            fields.append((name, self.type()))
            if self.peek() == ",":
                self.next()
        self.expect(")")
        return TypeRef("struct", fields=tuple(fields))

    def type(self) -> TypeRef:
        token = self.peek()
        if token == "?":
            self.next()
            inner = self.type()
            return TypeRef(inner.kind, True, inner.item, inner.fields, inner.name)
        if token == "[]":
            self.next()
            return TypeRef("array", item=self.type())
        if token == "[string]":
            self.next()
            return TypeRef("map", item=self.type())
        if token == "(":
            return self.struct()
        name = self.next()
        if name in ("bool", "int", "float", "string", "object"):
            return TypeRef(name)
        return TypeRef("named", name=name)


def parse_interface(text: str) -> Interface:
    description = text
    parser = _Parser(_tokens(text))
    parser.expect("interface")
    interface = Interface(parser.next(), description)
    while parser.peek() is not None:
        keyword = parser.next()
        name = parser.next()
        if keyword == "type":
            interface.types[name] = parser.type()
        elif keyword == "error":
            interface.errors[name] = parser.struct()
        elif keyword == "method":
            arguments = parser.struct()
            parser.expect("->")
            interface.methods[name] = (arguments, parser.struct())
        else:
            raise InterfaceSyntaxError(f"unknown keyword {keyword!r}")
    return interface


def check(value: Any, spec: TypeRef, interface: Interface, path: str) -> str | None:
    """The name of the first parameter (dotted path) that does not match *spec*, or None."""
    if value is None:
        return None if spec.nullable else path
    kind = spec.kind
    if kind == "named":
        named = interface.types.get(spec.name)
        return path if named is None else check(value, named, interface, path)
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        # Varlink's int is a signed 64-bit integer: past it, a handler (and SQLite) could not
        # take the value, so it is refused here as InvalidParameter.
        ok = isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    elif kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "string":
        ok = isinstance(value, str)
    elif kind == "object":
        ok = True
    elif kind == "array":
        if not isinstance(value, list):
            return path
        assert spec.item is not None
        for i, item in enumerate(value):
            bad = check(item, spec.item, interface, f"{path}[{i}]")
            if bad:
                return bad
        return None
    elif kind == "map":
        if not isinstance(value, dict):
            return path
        assert spec.item is not None
        for key, item in value.items():
            bad = check(item, spec.item, interface, f"{path}[{key}]")
            if bad:
                return bad
        return None
    elif kind == "struct":
        return check_struct(value, spec, interface, path)
    else:
        ok = False
    return None if ok else path


def check_struct(value: Any, spec: TypeRef, interface: Interface, path: str = "") -> str | None:
    """Like :func:`check` for a struct: unknown fields are errors, absent ones must be nullable."""
    if not isinstance(value, dict):
        return path or "parameters"
    known = dict(spec.fields)
    for key in value:
        if key not in known:
            return f"{path}.{key}" if path else str(key)
    for key, field_spec in spec.fields:
        bad = check(value.get(key), field_spec, interface, f"{path}.{key}" if path else key)
        if bad:
            return bad
    return None
