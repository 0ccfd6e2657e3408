"""The wsl.conf fuzz target runs over its seed corpus (once, not for a time budget)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lxss.config.wslconf import load_wsl_conf

FUZZ_DIR = Path(__file__).resolve().parents[1] / "fuzz"
TARGET = FUZZ_DIR / "fuzz_wsl_conf.py"
CORPUS = FUZZ_DIR / "corpus" / "wsl_conf"


@pytest.fixture(scope="module")
def target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_wsl_conf", TARGET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_target_accepts_every_seed(target: ModuleType) -> None:
    assert target.run_corpus(CORPUS) >= 12


@pytest.mark.parametrize(
    "data",
    [b"", b"\\", b'"', b"[", b"[a", b"a", b"a=", b"a=\\", b"\r", b"\xff", b"\x00=\x00"],
)
def test_target_accepts_edge_inputs(target: ModuleType, data: bytes) -> None:
    target.test_one_input(data)


def test_seeds_are_what_their_names_say() -> None:
    # valid_* parse as /etc/wsl.conf without a warning; error_* with at least one.
    for path in sorted(CORPUS.iterdir()):
        text = path.read_bytes().decode("utf-8", "surrogateescape")
        _, warnings = load_wsl_conf(text, path.name)
        if path.name.startswith("valid_"):
            assert warnings == [], path.name
        elif path.name.startswith("error_"):
            assert warnings, path.name


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
