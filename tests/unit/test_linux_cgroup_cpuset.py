"""[wsl2] processors as a cpuset (lxss.linux.cgroup), on made-up hierarchies of both layouts:
a cgroup v1 cpuset controller (a hybrid host) and cgroup2's."""

from __future__ import annotations

from pathlib import Path

import pytest

from lxss.linux.cgroup import Cgroup, Layout, Limits, format_cpu_list, parse_cpu_list


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0", [0]), ("0-3", [0, 1, 2, 3]), ("0-1,4,6-7", [0, 1, 4, 6, 7]), ("", []), ("2,\n", [2])],
)
def test_cpu_lists(text: str, cpus: list[int]) -> None:
    assert parse_cpu_list(text) == cpus
    assert parse_cpu_list(format_cpu_list(cpus)) == cpus
    assert format_cpu_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def _files(root: Path, **values: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        (root / name.replace("_", ".")).write_text(value + "\n")


def test_a_v1_cpuset_fills_every_level_then_takes_the_first_cpus(tmp_path: Path) -> None:
    cpuset = tmp_path / "cpuset"
    _files(cpuset, cpuset_cpus="0-3,6", cpuset_mems="0")
    _files(cpuset / "lxss", cpuset_cpus="", cpuset_mems="")  # as the kernel makes a new one
    _files(cpuset / "lxss" / "user-1000", cpuset_cpus="", cpuset_mems="")
    layout = Layout(unified=None, v1={"cpuset": str(cpuset)}, v2_controllers=frozenset())
    Cgroup(layout, "lxss/user-1000").create(Limits(memory_bytes=1 << 30, pids=100, processors=2))
    assert (cpuset / "lxss" / "cpuset.cpus").read_text() == "0-3,6"
    assert (cpuset / "lxss" / "cpuset.mems").read_text() == "0"
    assert (cpuset / "lxss" / "user-1000" / "cpuset.cpus").read_text() == "0-1"
    assert (cpuset / "lxss" / "user-1000" / "cpuset.mems").read_text() == "0"


def test_a_cgroup2_cpuset_takes_the_first_of_its_parents_effective_cpus(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    _files(unified, cgroup_subtree_control="")
    _files(unified / "lxss", cgroup_subtree_control="", cpuset_cpus_effective="1-3")
    _files(unified / "lxss" / "user-0", cpuset_cpus="")
    controllers = frozenset({"cpuset"})
    layout = Layout(unified=str(unified), v1={}, v2_controllers=controllers)
    Cgroup(layout, "lxss/user-0").create(Limits(memory_bytes=1 << 30, pids=100, processors=2))
    assert (unified / "lxss" / "user-0" / "cpuset.cpus").read_text() == "1-2"
    assert "+cpuset" in (unified / "lxss" / "cgroup.subtree_control").read_text()
    assert not (unified / "lxss" / "user-0" / "cpuset.mems").exists()  # cgroup2 inherits mems
