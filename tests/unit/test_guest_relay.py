"""The relay's exit status rule (lxss.linux.children.exit_code), on real wait statuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from lxss.linux.children import exit_code


def _status_of(code: str) -> int:
    """The raw wait(2) status of a Python child running *code*."""
    proc = subprocess.Popen([sys.executable, "-c", code])
    _, status = os.waitpid(proc.pid, 0)
    proc.returncode = 0  # reaped here; keep Popen from waiting again
    return status


@pytest.mark.parametrize("code", [0, 1, 42, 127, 255])
def test_exit_codes_pass_through(code: int) -> None:
    assert exit_code(_status_of(f"import os; os._exit({code})")) == code


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_death_by_signal_is_128_plus_n(signum: int) -> None:
    status = _status_of(f"import os; os.kill(os.getpid(), {int(signum)})")
    assert os.WIFSIGNALED(status)
    assert exit_code(status) == 128 + signum


def test_a_core_dump_does_not_change_the_code() -> None:
    # SIGABRT with the core flag (0x80) set, as wait(2) reports a dumped core.
    status = int(signal.SIGABRT) | 0x80
    assert os.WIFSIGNALED(status) and os.WCOREDUMP(status)
    assert exit_code(status) == 128 + signal.SIGABRT
