"""The guest-frame fuzz target still runs: over its seed corpus, once, not for a time budget."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ_DIR = Path(__file__).resolve().parents[1] / "fuzz"
TARGET = FUZZ_DIR / "fuzz_guest_frames.py"
CORPUS = FUZZ_DIR / "corpus" / "guest_frames"


@pytest.fixture(scope="module")
def target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_guest_frames", TARGET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_target_accepts_every_seed(target: ModuleType) -> None:
    assert target.run_corpus(CORPUS) >= 12


def test_checked_in_seeds_are_the_generated_ones(target: ModuleType) -> None:
    on_disk = {path.stem: path.read_bytes() for path in CORPUS.iterdir()}
    assert on_disk == target.seeds(), "regenerate: fuzz_guest_frames.py --write-seeds DIR"


def test_seeds_are_what_their_names_say(target: ModuleType) -> None:
    # valid_*: every frame decodes; invalid_*: a ProtocolError; partial_*: no frame completes.
    for path in sorted(CORPUS.iterdir()):
        assert target.test_one_input(path.read_bytes()) == path.name.split("_")[0], path.name


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x07", b"\xff" * 40, bytes(17), b"\x01" + bytes(15) + b"\x10"],
)
def test_target_accepts_edge_inputs(target: ModuleType, data: bytes) -> None:
    target.test_one_input(data)


def test_entry_point_with_no_budget_runs_the_seeds() -> None:
    result = subprocess.run(
        [sys.executable, str(TARGET), "--budget", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "seed inputs ok" in result.stderr
