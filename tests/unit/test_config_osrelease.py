"""os-release(5) parsing (lxss.config.osrelease), shared by the archive worker and init."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lxss.config.osrelease import parse_os_release


def test_a_typical_file() -> None:
    text = """# comment
NAME="Debian GNU/Linux"
ID=debian
VERSION_ID='12'
EMPTY=
broken line
 PRETTY_NAME = "spaced" \n"""
    assert parse_os_release(text) == {
        "NAME": "Debian GNU/Linux",
        "ID": "debian",
        "VERSION_ID": "12",
        "EMPTY": "",
        "PRETTY_NAME": "spaced",
    }


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ('X="a \\"quoted\\" word"', 'a "quoted" word'),
        ('X="cost: \\$5, \\`cmd\\`, back\\\\slash"', "cost: $5, `cmd`, back\\slash"),
        ('X="\\n stays"', "\\n stays"),  # only "$`\ escape inside double quotes
        ("X='single \\ \"kept\" $HOME'", 'single \\ "kept" $HOME'),
        ("X=unquoted\\ space", "unquoted space"),
        ("X=\"adjoining\"'parts'", "adjoiningparts"),
        ('X="unterminated', "unterminated"),
        ("X=a=b", "a=b"),
        ('X=""', ""),
    ],
)
def test_shell_quoting(line: str, value: str) -> None:
    assert parse_os_release(line) == {"X": value}


def test_what_is_not_an_assignment_is_skipped() -> None:
    text = "; a comment\n# another\n=value\n9X=1\nA-B=1\nGOOD_1=yes\nno equals sign\n"
    assert parse_os_release(text) == {"GOOD_1": "yes"}


def test_the_last_assignment_wins_and_line_ends_vary() -> None:
    assert parse_os_release("ID=a\r\nID=b\r\n") == {"ID": "b"}


def test_both_readers_use_this_parser() -> None:
    """One parser: the worker's and init's readers are this function."""
    from lxss.archive import unpack
    from lxss.guest import init

    assert unpack.parse_os_release is parse_os_release
    assert init.parse_os_release is parse_os_release


@given(st.text())
def test_never_raises(text: str) -> None:
    for key, value in parse_os_release(text).items():
        assert key and "\n" not in value
