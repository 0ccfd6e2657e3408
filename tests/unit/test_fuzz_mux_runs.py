"""The multiplexer's fuzz target still runs: its seeds, then a few seconds of generated input."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

TARGET = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_mux_frames.py"


@pytest.fixture(scope="module")
def target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_mux_frames", TARGET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seeds_are_what_their_names_say(target: ModuleType) -> None:
    assert target.run_seeds() >= 7


def test_generated_input_never_breaks_the_receiver(target: ModuleType) -> None:
    assert target.fuzz_with_hypothesis(3.0) >= 1
