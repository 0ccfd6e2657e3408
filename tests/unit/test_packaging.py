"""The generated manual, completions and lxss.conf (lxss.packaging) cover every option the
parser reads and every key the config schemas know: they are generated from those tables,
and these tests hold the tables and the help text together."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lxss.cli import parse
from lxss.cli.main import USAGE
from lxss.config import lxssconf, wslconf
from lxss.config.syntax import Schema
from lxss.config.syntax import parse as parse_config
from lxss.packaging import completion, manpages
from lxss.packaging.__main__ import generate


def every_option() -> set[str]:
    options = set(parse.LAUNCH_VALUED) | set(parse.LAUNCH_FLAGS) | set(parse.COMMAND_STARTERS)
    for spellings, _, flags, valued in parse.actions().values():
        options |= set(spellings) | flags | valued
    return options


def test_every_long_option_of_the_parser_is_in_the_help_text() -> None:
    """The man page's options are the help text's: it names every long option (short ones
    and wsl.exe's undocumented --setdefault may go unsaid)."""
    words = set(re.split(r"[\s,\[\]|]+", USAGE))
    long_options = {o for o in every_option() if o.startswith("--") and o != "--"}
    missing = long_options - words - {"--setdefault"}
    assert not missing, f"lxss --help does not mention {sorted(missing)}"


def test_every_option_of_the_parser_is_in_the_bash_completion() -> None:
    script = completion.bash_script()
    for option in every_option():
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", script), option


def test_launch_options_of_the_table_parse_and_others_do_not() -> None:
    for option in parse.LAUNCH_VALUED:
        value = "login" if option == "--shell-type" else "0b3c6d3e-5f41-4c2a-9e1d-7a8b9c0d1e2f"
        parse.parse([option, value, "--", "true"])
    for flag in parse.LAUNCH_FLAGS:
        assert parse.parse([flag, "--", "true"]).debug
    with pytest.raises(parse.UsageError):
        parse.parse(["--no-such-option"])


def test_value_kinds_name_real_actions_and_options() -> None:
    actions = parse.actions()
    for action, where in parse.VALUE_KINDS:
        _, (_, most), _, valued = actions[action]
        if isinstance(where, int):
            assert where < most, (action, where)
        else:
            assert where in valued, (action, where)
    for kind in list(parse.VALUE_KINDS.values()) + list(parse.LAUNCH_VALUED.values()):
        assert isinstance(kind, tuple) or kind in (*completion.KINDS, "name", "guid")


def test_help_sections_reads_terms_and_wrapped_descriptions() -> None:
    sections = manpages.help_sections(USAGE)
    titles = [title for title, _ in sections]
    assert titles == ["Run a program in a Linux distribution", "Manage distributions"]
    entries = dict(sections[0][1])
    assert entries["-u, --user USER"] == "run as this user"
    assert entries["lxss [command ...]"].endswith("or a login shell when no command is given")
    with pytest.raises(ValueError, match="cannot place"):
        manpages.help_sections("Options:\n      -x   odd indent\n")


@pytest.mark.parametrize(
    ("schema", "docs"),
    [
        (lxssconf.LXSS_CONF_SCHEMA, lxssconf.LXSS_CONF_DOCS),
        (wslconf.WSL_CONF_SCHEMA, wslconf.WSL_CONF_DOCS),
    ],
)
def test_every_config_key_is_documented(schema: Schema, docs: dict[object, str]) -> None:
    assert set(docs) == set(schema), "a key without documentation, or documentation of no key"


def test_the_commented_lxss_conf_sets_nothing_and_names_every_key() -> None:
    text = generate()["lxss.conf"]
    values, warnings = parse_config(text, "lxss.conf", lxssconf.LXSS_CONF_SCHEMA)
    assert (values, warnings) == ({}, [])
    uncommented = re.sub(r"(?m)^#(\w+ = \S)", r"\1", text)  # those with a default
    values, warnings = parse_config(uncommented, "lxss.conf", lxssconf.LXSS_CONF_SCHEMA)
    assert warnings == [], warnings
    assert set(values) == {k.name for k in lxssconf.LXSS_CONF_SCHEMA if k.default not in (None, "")}


def test_key_names_and_defaults_appear_in_the_config_pages() -> None:
    pages = generate()
    for page, schema in (
        ("man/lxss.conf.5", lxssconf.LXSS_CONF_SCHEMA),
        ("man/wsl.conf.5", wslconf.WSL_CONF_SCHEMA),
    ):
        for key in schema:
            assert f"\\fB{manpages.escape(key.name.partition('.')[2])}\\fR" in pages[page]
    assert "default 15000" in pages["man/lxss.conf.5"]
    assert "default 022" in pages["man/wsl.conf.5"]


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")
def test_man_renders_every_page_without_a_warning(tmp_path: Path) -> None:
    for name, text in generate().items():
        if not name.startswith("man/"):
            continue
        page = tmp_path / Path(name).name
        page.write_text(text)
        result = subprocess.run(
            ["man", "--warnings", "-l", str(page)],
            capture_output=True, text=True, timeout=60,
            env={"PATH": "/usr/bin:/bin", "MANWIDTH": "100", "LC_ALL": "C.UTF-8"},
        )  # fmt: skip
        assert result.returncode == 0 and result.stderr == "", (name, result.stderr)
        assert "OPTIONS" in result.stdout or "DESCRIPTION" in result.stdout


@pytest.mark.parametrize(("shell", "name"), [("zsh", "zsh/_lxss"), ("fish", "fish/lxss.fish")])
def test_zsh_and_fish_scripts_parse(shell: str, name: str, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    script = tmp_path / "script"
    script.write_text(generate()[f"completion/{name}"])
    result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_fish_completes_options_and_choices(tmp_path: Path) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed")
    script = tmp_path / "lxss.fish"
    script.write_text(generate()["completion/fish/lxss.fish"])
    result = subprocess.run(
        ["fish", "--no-config", "-c",
         f"source {script}; complete -C'lxss --export --format '; echo ==;"
         " complete -C'lxss -l --r'"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    formats, _, listing = result.stdout.partition("==\n")
    assert formats.split() == ["tar", "tar.gz", "tar.xz", "tar.zst"], result
    assert listing.split() == ["--running"], result
