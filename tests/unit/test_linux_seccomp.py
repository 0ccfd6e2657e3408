"""The default seccomp filter's program (lxss.linux.seccomp), read without installing it:
every jump lands inside the program and every path ends in a verdict."""

from __future__ import annotations

import pytest

from lxss.linux import seccomp

RET = 0x06


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_jumps_land_inside_and_every_path_returns(machine: str) -> None:
    program = seccomp.program(machine)
    assert program and program[-1][0] == RET
    for index, (code, jt, jf, _) in enumerate(program):
        if code & 0x07 == 0x05:  # BPF_JMP
            for target in (index + 1 + jt, index + 1 + jf):
                assert target < len(program), (index, target)


def test_unknown_architecture_has_no_filter() -> None:
    assert seccomp.program("s390x") == []


def test_each_refused_call_is_checked_for_each_abi() -> None:
    program = seccomp.program("x86_64")
    numbers = {k for code, _, _, k in program if code == 0x15}  # BPF_JMP|BPF_JEQ|BPF_K
    for _, table in seccomp._TABLES["x86_64"]:
        assert {table[name] for name in seccomp.REFUSED} <= numbers
