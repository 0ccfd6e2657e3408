"""Typed parameters at and past their edges get a clean refusal, never InternalError
(issue 11): every `int` parameter of the calls a user makes, given the values at the
ends of the ranges JSON can carry (and past what the guest protocol's fields hold), and
a directory where an archive should be. An InternalError means a handler met a value it
did not expect; promise 6 of docs/security.md says the service refuses those cleanly.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

import pytest
from conftest import REPO, Service
from mgmt import call
from security_support import call_with_fds, run_as

EDGES = (-(2**63), -(2**31) - 1, -1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64)


def _launch(distribution: str, **overrides: Any) -> dict[str, Any]:
    parameters: dict[str, Any] = {
        "distribution": distribution, "filename": "/bin/true", "commandLine": ["true"],
        "shellType": "none", "environment": [], "rows": 24, "columns": 80, "control": 0,
        "consoleId": 1, "flags": 0,
    }  # fmt: skip
    parameters.update(overrides)
    return parameters


def _calls(distribution: str, value: int) -> list[tuple[str, dict[str, Any]]]:
    """(method, parameters) with *value* in one int parameter each."""
    return [
        ("ConfigureDistribution", {"distribution": distribution, "flags": value}),
        ("ConfigureDistribution", {"distribution": distribution, "defaultUid": value}),
        ("SetDefaultVersion", {"version": value}),
        ("RegisterDistribution", {"name": "edge", "version": value, "builtin": "busybox"}),
        ("EnumerateDistributions", {"forUid": value}),
        ("CreateLxProcess", _launch(distribution, consoleId=value)),
        ("CreateLxProcess", _launch(distribution, flags=value)),
        ("CreateLxProcess", _launch(distribution, rows=value)),
        ("CreateLxProcess", _launch(distribution, columns=value)),
        ("CreateLxProcess", _launch(distribution, stdin=value)),
    ]


def _no_internal_error(reply: dict[str, Any], what: str) -> None:
    assert reply.get("error") != "io.lxss.Service.InternalError", f"{what}: {reply}"


@pytest.mark.parametrize("value", EDGES)
def test_int_parameters_at_their_edges(service: Service, busybox: str, value: int) -> None:
    for method, parameters in _calls(busybox, value):
        reply = call(service, method, **parameters)
        _no_internal_error(reply, f"{method} {parameters}")
        if reply.get("error") is None and method == "RegisterDistribution":
            service.ok("--unregister", "edge")
    # The distribution is as it was.
    assert service.ok("-d", busybox, "--", "echo fine").out == "fine\n"


def test_random_int_parameters(service: Service, busybox: str) -> None:
    """A seeded fuzz of the same parameters with values of every magnitude."""
    rng = random.Random(1111)
    for _ in range(60):
        value = rng.choice((1, -1)) * rng.getrandbits(rng.randrange(1, 66))
        method, parameters = rng.choice(_calls(busybox, value))
        reply = call(service, method, **parameters)
        _no_internal_error(reply, f"{method} {parameters}")
        if reply.get("error") is None and method == "RegisterDistribution":
            service.ok("--unregister", "edge")


def test_a_directory_as_the_archive(service: Service, test_users: tuple[str, str]) -> None:
    """A descriptor of a directory where an archive is expected (the `lxss` command
    refuses a directory before it asks; any Varlink client can send one)."""
    reply = call_with_fds(
        service, test_users[0], "RegisterDistribution", [("/tmp", os.O_RDONLY)],
        name="dir-archive", archive=0,
    )  # fmt: skip
    _no_internal_error(reply, "a directory as the archive")
    assert "error" in reply, reply


@pytest.mark.parametrize(
    ("method", "opened", "parameters"),
    [
        ("ExportDistribution", ("/tmp", os.O_RDONLY), {"file": 0, "format": "tar"}),
        ("ExportDistribution", ("/tmp", os.O_PATH), {"file": 0, "format": "tar"}),
        ("ExportDistribution", ("/dev/null", os.O_RDONLY), {"file": 0, "format": "tar"}),
        ("RegisterDistribution", ("/tmp", os.O_PATH), {"progress": 0, "builtin": "busybox"}),
    ],
    ids=["export-into-a-directory", "export-into-o-path", "export-into-read-only",
         "progress-o-path"],
)  # fmt: skip
def test_descriptors_that_cannot_be_written(
    service: Service, test_users: tuple[str, str], method: str, opened: tuple[str, int],
    parameters: dict[str, Any],
) -> None:  # fmt: skip
    """An export's file or a build's progress that cannot be written to is refused when the
    call arrives (the archive worker crashed on a directory with IsADirectoryError)."""
    named = {"distribution": "no-such"} if method == "ExportDistribution" else {"name": "fd"}
    reply = call_with_fds(service, test_users[0], method, [opened], **named, **parameters)
    assert reply.get("error") == "io.lxss.Service.InvalidArgument", reply
    assert reply["parameters"]["parameter"] in parameters, reply  # type: ignore[index]


def test_fuzz_target_against_the_service(
    fresh_service: Service, test_users: tuple[str, str]
) -> None:
    """tests/fuzz/fuzz_varlink_params.py, as a user, against a real lxssd: its seeds (the
    values above, descriptors of every kind where files are expected), then a minute of
    generated calls of every method. It asserts itself that no reply is InternalError and
    that the service answers after each call."""
    user = test_users[1]
    target = REPO / "tests" / "fuzz" / "fuzz_varlink_params.py"
    socket_path = str(fresh_service.runtime_dir / "lxssd.sock")
    fuzz = run_as(user, sys.executable, str(target), "--socket", socket_path, "--budget", "60",
                  timeout=900)  # fmt: skip
    assert fuzz.returncode == 0, fuzz.stderr.decode(errors="replace")[-5000:]
    assert b"seed inputs ok" in fuzz.stderr and b"generated calls ok" in fuzz.stderr
    # Nothing crashed on the way to those answers (an archive worker's traceback, say).
    crashes = [line for line in fresh_service.log_text().splitlines()
               if "Traceback" in line or " ERROR " in line]  # fmt: skip
    assert not crashes, "\n".join(crashes)
    fresh_service.lxss("--unregister", "fuzz", user=user)
    fresh_service.lxss("--unregister", "fuzz-2", user=user)
