"""The figures, in report order: an id, what it means, and the function that measures it."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from ..harness import Figure, Row, Runner, interleave
from ..lab import Lab


@dataclass(frozen=True)
class Spec:
    id: str
    title: str
    unit: str
    better: str  # "lower" or "higher"
    what: str
    measure: Callable[[Lab, Spec], Figure]


SPECS: dict[str, Spec] = {}


def figure(
    id: str, title: str, *, unit: str, better: str, what: str
) -> Callable[[Callable[[Lab, Spec], Figure]], Callable[[Lab, Spec], Figure]]:
    def register(fn: Callable[[Lab, Spec], Figure]) -> Callable[[Lab, Spec], Figure]:
        assert id not in SPECS, id
        SPECS[id] = Spec(id, title, unit, better, what, fn)
        return fn

    return register


def result(
    spec: Spec, runners: list[Runner], *, runs: int, warmup: int, notes: list[str] | None = None
) -> Figure:
    """Measure runners interleaved and wrap the rows up as the figure."""
    rows = interleave(runners, runs=runs, warmup=warmup, progress=spec.id)
    return Figure(
        spec.id, spec.title, spec.unit, spec.better, spec.what, rows, runs, warmup, notes or []
    )


def run_figure(spec: Spec, lab: Lab) -> Figure:
    """Measure one figure; a bug in the bench becomes a visible row, not a lost figure."""
    started = time.monotonic()
    try:
        fig = spec.measure(lab, spec)
    except Exception as exc:  # a bench bug: reported in the table, traceback on stderr
        traceback.print_exc()
        why = f"bench error: {type(exc).__name__}: {exc}"
        fig = Figure(
            spec.id,
            spec.title,
            spec.unit,
            spec.better,
            spec.what,
            [Row("lxss", "", True, unavailable=why)],
            0,
            0,
        )
    fig.seconds = time.monotonic() - started
    return fig
