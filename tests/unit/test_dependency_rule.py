"""DESIGN.md's dependency rule, read from the imports of src/lxss (lazy and TYPE_CHECKING
imports included: a cycle hidden under TYPE_CHECKING is still a cycle for the reader).

Dependencies point down: cli -> api (and protocol's lean control messages); service -> vm
-> protocol, linux; guest -> protocol, linux, config; config and linux are leaves. The
guest never imports the service or vm, the service never names a concrete backend, and
nothing imports cli (but packaging, which makes the man page and completion from its
option table).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "lxss"

# Small top-level modules below every layer (no lxss import of their own but each other).
BASE = {"lxss", "lxss.errors", "lxss.aio", "lxss.readiness", "lxss.text", "lxss.jsondoc"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _resolve(name: str) -> str:
    """The module *name* is, or is in (`from lxss.vm import spec` names lxss.vm.spec)."""
    modules = _modules()
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


@cache
def imports(module: str) -> frozenset[str]:
    """Every lxss module *module* imports, anywhere in its text."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(_modules()[module].read_text())):
        if isinstance(node, ast.Import):
            found.update(_resolve(a.name) for a in node.names if a.name.startswith("lxss"))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("lxss")
        ):
            found.update(_resolve(f"{node.module}.{a.name}") for a in node.names)
    found.discard(module)
    return frozenset(found)


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def edges(source: str, target: str) -> Iterator[tuple[str, str]]:
    """Every import from a module of *source* into *target*."""
    for module in sorted(_modules()):
        if _in(module, source):
            for imported in sorted(imports(module)):
                if _in(imported, target):
                    yield module, imported


def test_the_reader_sees_every_module() -> None:
    assert {"lxss.service.runtime", "lxss.guest.mini_init", "lxss.vm.backend"} <= set(_modules())
    assert "lxss.vm.spec" in imports("lxss.vm.nsboot")


def test_nothing_imports_the_client() -> None:
    found = [
        (a, b)
        for a, b in edges("lxss", "lxss.cli")
        if not _in(a, "lxss.cli") and not _in(a, "lxss.packaging")
    ]
    assert found == []


@pytest.mark.parametrize("layer", ["lxss.service", "lxss.vm", "lxss.api", "lxss.cli"])
def test_the_guest_imports_no_host_layer(layer: str) -> None:
    """mini_init and every role below it learn everything over the guest protocol: the same
    modules run unchanged in a QEMU guest, where no host object exists."""
    assert list(edges("lxss.guest", layer)) == []


@pytest.mark.parametrize("layer", ["lxss.service", "lxss.api", "lxss.cli"])
def test_the_vm_layer_imports_nothing_above_it(layer: str) -> None:
    assert list(edges("lxss.vm", layer)) == []


def test_the_vm_layer_enters_the_guest_only_at_boot() -> None:
    """nsboot hands the namespace VM over to mini_init, as a kernel hands over to /init."""
    assert list(edges("lxss.vm", "lxss.guest")) == [("lxss.vm.nsboot", "lxss.guest.mini_init")]


def test_the_service_does_not_reach_into_the_guest() -> None:
    assert list(edges("lxss.service", "lxss.guest")) == []


@pytest.mark.parametrize(
    ("leaf", "allowed"),
    [
        ("lxss.linux", ()),
        ("lxss.config", ("lxss.linux", "lxss.protocol.messages")),
        ("lxss.protocol", ("lxss.linux",)),
    ],
)
def test_leaves_import_only_below_them(leaf: str, allowed: tuple[str, ...]) -> None:
    found = [
        (module, imported)
        for module in sorted(_modules())
        if _in(module, leaf)
        for imported in sorted(imports(module))
        if not _in(imported, leaf)
        and imported not in BASE
        and not any(_in(imported, a) for a in allowed)
    ]
    assert found == []


def _cycles(package: str) -> list[list[str]]:
    """Strongly connected sets of more than one module among *package*'s modules."""
    graph = {m: [i for i in imports(m) if _in(i, package)] for m in _modules() if _in(m, package)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize(
    "package",
    ["lxss.service", "lxss.vm", "lxss.guest", "lxss.protocol", "lxss.linux", "lxss.api"],
)
def test_no_import_cycles(package: str) -> None:
    """No two modules own each other (the runtime and the user session once did)."""
    assert _cycles(package) == []


def test_the_service_names_no_concrete_backend() -> None:
    """The service sees the VmBackend/Vm/Link protocols, the VM spec, the table of backends
    by version and the networking-mode fallbacks; never a backend, its link or its errors."""
    allowed = {"lxss.vm.backend", "lxss.vm.backends", "lxss.vm.spec", "lxss.vm.netmodes"}
    assert {b for _, b in edges("lxss.service", "lxss.vm")} <= allowed
