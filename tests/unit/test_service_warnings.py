"""A distribution start's warnings (from files its root writes) reach the user bounded."""

from __future__ import annotations

from lxss.service.launch import MAX_WARNING_LENGTH, MAX_WARNINGS, bounded_warnings


def test_few_warnings_pass_unchanged() -> None:
    assert bounded_warnings(["a", "b"]) == ["a", "b"]


def test_many_or_long_warnings_are_cut_and_counted() -> None:
    many = [f"w{i}" for i in range(40_000)]
    kept = bounded_warnings(many)
    assert kept[:MAX_WARNINGS] == many[:MAX_WARNINGS]
    assert kept[-1] == f"... and {40_000 - MAX_WARNINGS} more warnings like these"
    assert len(kept) == MAX_WARNINGS + 1
    long = bounded_warnings(["x" * 10 * MAX_WARNING_LENGTH])
    assert long == ["x" * MAX_WARNING_LENGTH + "..."]
