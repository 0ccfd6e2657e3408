"""The fuzz targets' hypothesis engine: batches of generated inputs until a budget is spent."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hypothesis import strategies as st


def run_batches(inputs: st.SearchStrategy[bytes], target: Callable[[bytes], object],
                budget: float) -> int:  # fmt: skip
    """Run *target* on batches of 200 inputs from *inputs* until *budget* seconds are spent;
    the number of batches. A failing input raises once hypothesis has shrunk it."""
    from hypothesis import HealthCheck, given, settings

    @settings(
        max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(inputs)
    def batch(data: bytes) -> None:
        target(data)

    end = time.monotonic() + budget
    batches = 0
    while time.monotonic() < end:
        batch()
        batches += 1
    return batches
