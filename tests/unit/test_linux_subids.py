"""Subordinate id ranges (lxss.linux.subids): parsing /etc/subuid-style files, the maps
built on them, and allocating new ranges clear of every existing one."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from lxss.linux.subids import (
    FIRST_ALLOCATED,
    RANGE_SIZE,
    IdMap,
    Mapping,
    NoFreeRange,
    SubRange,
    ensure_mapping,
    find_range,
    login_defs_bounds,
    next_free_start,
    parse_ranges,
)


def test_parse_ranges_skips_what_shadow_utils_skips() -> None:
    text = """
# comment
alice:100000:65536
  bob:165536:65536  
broken
too:many:fields:here
carol:abc:65536
dave:-5:10
erin:200000:0
1001:300000:65536
"""  # noqa: W291 - surrounding blanks are part of the test
    assert parse_ranges(text) == [
        SubRange("alice", 100000, 65536),
        SubRange("bob", 165536, 65536),
        SubRange("1001", 300000, 65536),
    ]


def test_find_range_by_name_or_uid_and_size() -> None:
    ranges = parse_ranges("alice:100000:1000\nalice:200000:65536\n1001:300000:65536\n")
    assert find_range(ranges, ("alice", "1000"), RANGE_SIZE) == SubRange("alice", 200000, 65536)
    assert find_range(ranges, ("bob", "1001"), RANGE_SIZE) == SubRange("1001", 300000, 65536)
    assert find_range(ranges, ("carol", "1002"), RANGE_SIZE) is None
    # 65535 ids suffice: id 0 of the namespace is the owner itself.
    assert find_range(parse_ranges("x:5:65535"), ("x",), RANGE_SIZE) is not None
    assert find_range(parse_ranges("x:5:65534"), ("x",), RANGE_SIZE) is None


def test_id_map() -> None:
    ids = IdMap(owner_id=1000, sub_start=100000)
    assert ids.proc_text() == "0 1000 1\n1 100000 65535\n"
    assert [ids.to_host(i) for i in (0, 1, 1000, 65535)] == [1000, 100000, 100999, 165534]
    assert ids.to_host(65536) is None and ids.to_host(-1) is None


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ([], FIRST_ALLOCATED),
        ([SubRange("a", 0, 50)], FIRST_ALLOCATED),
        ([SubRange("a", 300000, 10)], FIRST_ALLOCATED),  # fits below it
        ([SubRange("a", 100000, 65536)], 196608),  # after it, aligned to the range size
        ([SubRange("a", 150000, 10)], 196608),
        ([SubRange("a", 100000, 65536), SubRange("b", 165536, 65536)], 262144),
        ([SubRange("b", 165536, 65536), SubRange("a", 100000, 65536)], 262144),  # any order
        ([SubRange("a", 100000, 1), SubRange("b", 196608, 65536)], 131072),  # a gap that fits
        ([SubRange("a", 100000, 1), SubRange("b", 196607, 2)], 262144),  # a gap too small
    ],
)
def test_next_free_start(existing: list[SubRange], expected: int) -> None:
    start = next_free_start(existing)
    assert start == expected
    assert start == FIRST_ALLOCATED or start % RANGE_SIZE == 0
    assert all(start + RANGE_SIZE <= r.start or start >= r.end for r in existing)


def test_next_free_start_considers_both_files() -> None:
    uids = [SubRange("a", 100000, 65536)]
    gids = [SubRange("b", 196608, 65536)]
    assert next_free_start(uids) == 196608
    assert next_free_start(uids, gids) == 262144


def test_ensure_mapping_allocates_once_and_reuses(tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("root:100000:65536\nbob:165536:65536")  # no final newline
    subgid.write_text("root:100000:65536\n")
    lock = str(tmp_path / "lock")
    mapping = ensure_mapping(1000, 1000, "alice", lock, str(subuid), str(subgid))
    start = mapping.uid.sub_start
    assert start == mapping.gid.sub_start == 262144, "clear of both files' ranges"
    assert (mapping.uid.owner_id, mapping.gid.owner_id) == (1000, 1000)
    # A newline was added before the new line.
    assert subuid.read_text() == "root:100000:65536\nbob:165536:65536\nalice:262144:65536\n"
    assert subgid.read_text() == "root:100000:65536\nalice:262144:65536\n"
    again = ensure_mapping(1000, 1000, "alice", lock, str(subuid), str(subgid))
    assert again == mapping
    assert subuid.read_text().count("alice") == 1


def test_ensure_mapping_uses_an_existing_range_by_uid(tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("1000:500000:65536\n")
    subgid.write_text("alice:600000:65536\n")
    mapping = ensure_mapping(1000, 1000, "alice", str(tmp_path / "l"), str(subuid), str(subgid))
    assert (mapping.uid.sub_start, mapping.gid.sub_start) == (500000, 600000)
    assert subuid.read_text() == "1000:500000:65536\n"


def test_ensure_mapping_completes_a_missing_half(tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("alice:100000:65536\n")
    mapping = ensure_mapping(1000, 1000, "alice", str(tmp_path / "l"), str(subuid), str(subgid))
    assert mapping.uid.sub_start == 100000
    assert mapping.gid.sub_start == 196608, "clear of the uid range too"
    assert subgid.read_text() == "alice:196608:65536\n"


def test_concurrent_allocations_never_overlap(tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    lock = str(tmp_path / "lock")
    results: dict[int, int] = {}

    def allocate(uid: int) -> None:
        results[uid] = ensure_mapping(uid, uid, f"user{uid}", lock, str(subuid),
                                      str(subgid)).uid.sub_start  # fmt: skip

    threads = [threading.Thread(target=allocate, args=(2000 + i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    starts = sorted(results.values())
    assert len(starts) == 8
    assert all(b - a >= RANGE_SIZE for a, b in itertools.pairwise(starts))
    ranges = parse_ranges(subuid.read_text())
    assert len(ranges) == 8 and sorted(r.start for r in ranges) == starts


def test_next_free_start_steps_over_host_accounts() -> None:
    # An account where the next range would go pushes the range past it.
    assert next_free_start([], taken_ids=[100100]) == 131072
    assert next_free_start([], taken_ids=[99999, 1000]) == FIRST_ALLOCATED
    assert next_free_start([SubRange("a", 100000, 65536)], taken_ids=[196608 + 5]) == 262144


def test_next_free_start_stays_inside_login_defs_bounds() -> None:
    assert next_free_start([], low=200000, high=300000) == 200000
    with pytest.raises(NoFreeRange, match="SUB_UID_MIN/MAX"):
        next_free_start([], taken_ids=[200001], low=200000, high=300000)


def test_login_defs_bounds_takes_the_narrower_of_uid_and_gid() -> None:
    text = "SUB_UID_MIN 100000\nSUB_UID_MAX 500000\n#SUB_GID_MIN 1\nSUB_GID_MIN 150000\n"
    assert login_defs_bounds(text) == (150000, 500000)
    assert login_defs_bounds("") == (100000, 600100000)


def test_ensure_mapping_allocates_around_accounts(tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    defs = tmp_path / "login.defs"
    defs.write_text("SUB_UID_MIN 100000\n")
    mapping = ensure_mapping(1000, 1000, "alice", str(tmp_path / "l"), str(subuid), str(subgid),
                             str(defs), lambda: ([0, 1000, 100500], [0, 131073]))  # fmt: skip
    assert mapping.uid.sub_start == mapping.gid.sub_start == 196608


def test_root_faces_are_the_last_id_of_roots_range() -> None:
    mapping = Mapping(IdMap(0, 262144), IdMap(0, 262144))
    faced = mapping.with_root_faces(
        SubRange("root", 262144, 65536), SubRange("root", 262144, 65536)
    )
    assert faced.uid.host_face == faced.gid.host_face == 262144 + 65535
    assert faced.uid.proc_text() == mapping.uid.proc_text(), "the stored mapping is unchanged"
    assert faced.uid.run_text() == "0 327679 1\n1 262144 65535\n"
    with pytest.raises(NoFreeRange, match="65536"):
        mapping.with_root_faces(SubRange("root", 262144, 65535), SubRange("root", 262144, 65536))
