"""The id maps that make a distribution's default user its owner (lxss.linux.idmap)."""

from __future__ import annotations

import pytest

from lxss.linux.idmap import (
    Lines,
    compose,
    invert,
    is_identity,
    map_text,
    mount_lines,
    swap_lines,
)
from lxss.linux.subids import IdMap


def apply(lines: Lines, value: int) -> int | None:
    for first, to, count in lines:
        if first <= value < first + count:
            return to + value - first
    return None


def test_swap_lines_trade_the_default_user_and_root() -> None:
    assert swap_lines(0) == ((0, 0, 1), (1, 1, 65535))  # one line per line of the VM's map
    lines = swap_lines(1000)
    assert [apply(lines, i) for i in (0, 1, 999, 1000, 1001, 65535)] == [
        1000, 1, 999, 0, 1001, 65535,
    ]  # fmt: skip
    assert swap_lines(1) == ((0, 1, 1), (1, 0, 1), (2, 2, 65534))
    assert swap_lines(65535)[-1] == (65535, 0, 1)
    with pytest.raises(ValueError, match="not one of the distribution's ids"):
        swap_lines(65536)


def test_compose_and_invert() -> None:
    lines = swap_lines(5)
    assert is_identity(compose(lines, invert(lines)))
    assert compose(((0, 10, 5),), ((12, 100, 10),)) == ((2, 100, 3),)


def test_the_tree_shows_each_stored_owner_as_its_inside_id() -> None:
    ids = IdMap(owner_id=1001, sub_start=200000)
    stored_to_shown = mount_lines(ids, 1000)
    shown_to_inside = compose(invert(ids.run_lines()), swap_lines(1000))
    inside_to_stored = ids.lines()
    for inside in (0, 1, 999, 1000, 1001, 65535):
        stored = apply(inside_to_stored, inside)
        assert stored is not None
        shown = apply(stored_to_shown, stored)
        assert shown is not None and apply(shown_to_inside, shown) == inside
    # The default user's files are the owner's at run time; root's show as root's id.
    assert apply(stored_to_shown, 200000 + 999) == 1001
    assert apply(stored_to_shown, 1001) == 200000 + 999
    assert is_identity(mount_lines(ids, 0))


def test_root_faces_make_the_tree_mapped_even_for_root() -> None:
    ids = IdMap(owner_id=0, sub_start=262144, face=262144 + 65535)
    lines = mount_lines(ids, 0)
    assert not is_identity(lines)
    assert apply(lines, 0) == 262144 + 65535
    assert map_text(lines).startswith("0 327679 1\n")
