"""The typed-parameter fuzz target runs: its seeds, and a few seconds of generated calls,
against an in-process server whose handler checks every value it receives (no root)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from lxss.api.interface import TypeRef

FUZZ_DIR = Path(__file__).resolve().parents[1] / "fuzz"
TARGET = FUZZ_DIR / "fuzz_varlink_params.py"
CORPUS = FUZZ_DIR / "corpus" / "varlink_params"


@pytest.fixture(scope="module")
def target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_varlink_params", TARGET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def socket_path(target: ModuleType) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory, target.in_process_service(directory) as path:
        yield path


def test_checked_in_seeds_are_the_generated_ones(target: ModuleType, tmp_path: Path) -> None:
    target.write_seeds(tmp_path)
    written = {path.name: path.read_text() for path in tmp_path.iterdir()}
    assert written == {path.name: path.read_text() for path in CORPUS.iterdir()}, (
        "regenerate: fuzz_varlink_params.py --write-seeds DIR"
    )


def test_every_seed_reaches_the_handler_typed(target: ModuleType, socket_path: str) -> None:
    outcomes = target.run_corpus(socket_path, CORPUS)
    assert len(outcomes) >= 20
    # The values past int64 never reach a handler: the interface check refuses them.
    assert outcomes["02_launch_console_id_2_63"] == "org.varlink.service.InvalidParameter"
    assert outcomes["07_configure_flags_2_63"] == "org.varlink.service.InvalidParameter"
    assert outcomes["03_launch_console_id_2_63_minus_1"] == "ok"


def test_the_strict_check_is_strict(target: ModuleType) -> None:
    interface = target.INTERFACE
    assert target.strictly_typed(2**63 - 1, TypeRef("int"), interface)
    for value in (2**63, True, 1.0, "1", None):
        assert not target.strictly_typed(value, TypeRef("int"), interface), value
    assert target.strictly_typed(None, TypeRef("int", nullable=True), interface)


def test_generated_calls_for_a_few_seconds() -> None:
    result = subprocess.run(
        [sys.executable, str(TARGET), "--in-process", "--budget", "3"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "seed inputs ok" in result.stderr and "generated calls ok" in result.stderr
