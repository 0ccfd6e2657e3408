"""What a launched program gets: user, argv, environment, directory (lxss.guest.process)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from lxss.guest.process import (
    DEFAULT_PATH,
    USER_NOT_FOUND,
    Context,
    PlanError,
    Request,
    plan,
)
from lxss.guest.users import UserDatabase

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
alice:x:1000:1000::/home/alice:/bin/sh
bob:x:1001:1001::/home/bob:/does/not/exist
carol:x:1002:1002::/home/carol:{shell}
"""
GROUP = "root:x:0:\nalice:x:1000:\nwheel:x:10:alice\n"


@pytest.fixture
def users(tmp_path: Path) -> UserDatabase:
    # carol's shell is a real file that is not /bin/sh, to tell "the user's shell" apart.
    shell = tmp_path / "fancy-shell"
    shell.write_text("#!/bin/sh\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD.format(shell=shell))
    (tmp_path / "etc/group").write_text(GROUP)
    return UserDatabase(str(tmp_path))


@pytest.fixture
def context(users: UserDatabase) -> Context:
    return Context(users=users, conf_default_user=None, hostname="box", host_mount=None)


def request(**changes: object) -> Request:
    base = Request(
        filename=None,
        command_line=["echo hi"],
        cwd=None,
        host_cwd=None,
        username=None,
        login_shell=False,
        default_uid=0,
        environment=[],
        distribution_name="deb",
    )
    return dataclasses.replace(base, **changes)


# The user: -u, else [user] default, else the registered uid, else root ------------------


def test_user_option_wins_over_everything(context: Context) -> None:
    ctx = dataclasses.replace(context, conf_default_user="alice")
    assert plan(request(username="bob", default_uid=1000), ctx).user.name == "bob"


def test_user_option_takes_a_uid(context: Context) -> None:
    assert plan(request(username="1001"), context).user.name == "bob"


def test_missing_user_is_refused_with_wsls_code(context: Context) -> None:
    with pytest.raises(PlanError) as caught:
        plan(request(username="mallory"), context)
    assert caught.value.code == USER_NOT_FOUND == 67
    assert "mallory" in str(caught.value)


def test_wsl_conf_default_user_wins_over_the_registered_uid(context: Context) -> None:
    ctx = dataclasses.replace(context, conf_default_user="alice")
    assert plan(request(default_uid=1001), ctx).user.name == "alice"


def test_wsl_conf_default_user_that_does_not_exist_falls_back(context: Context) -> None:
    ctx = dataclasses.replace(context, conf_default_user="ghost")
    assert plan(request(default_uid=1001), ctx).user.name == "bob"


def test_registered_default_uid(context: Context) -> None:
    assert plan(request(default_uid=1000), context).user.name == "alice"


def test_unknown_registered_uid_falls_back_to_root(context: Context) -> None:
    launched = plan(request(default_uid=4242), context)
    assert (launched.user.name, launched.user.uid) == ("root", 0)


def test_identity_and_groups(context: Context) -> None:
    launched = plan(request(username="alice"), context)
    assert (launched.user.uid, launched.user.gid) == (1000, 1000)
    assert launched.groups == [1000, 10]


# argv for each shell type --------------------------------------------------------------


def test_standard_shell_runs_the_command_with_dash_c(context: Context) -> None:
    launched = plan(request(command_line=["echo $HOME | wc"]), context)
    assert launched.executable == "/bin/sh"
    assert launched.argv == ["/bin/sh", "-c", "echo $HOME | wc"]


def test_login_shell_with_a_command(context: Context) -> None:
    launched = plan(request(login_shell=True, command_line=["id"]), context)
    assert launched.executable == "/bin/sh"
    assert launched.argv == ["-sh", "-c", "id"]


def test_no_command_is_an_interactive_shell(context: Context) -> None:
    login = plan(request(login_shell=True, command_line=[]), context)
    assert (login.executable, login.argv) == ("/bin/sh", ["-sh"])
    standard = plan(request(command_line=[]), context)
    assert (standard.executable, standard.argv) == ("/bin/sh", ["/bin/sh"])


def test_the_shell_is_the_users_own(context: Context, tmp_path: Path) -> None:
    launched = plan(request(username="carol", login_shell=True, command_line=["id"]), context)
    assert launched.executable == str(tmp_path / "fancy-shell")
    assert launched.argv == ["-fancy-shell", "-c", "id"]
    assert launched.environment["SHELL"] == str(tmp_path / "fancy-shell")


def test_a_missing_shell_becomes_bin_sh(context: Context) -> None:
    launched = plan(request(username="bob"), context)
    assert launched.executable == "/bin/sh"
    assert launched.argv[0] == "/bin/sh"
    assert launched.environment["SHELL"] == "/bin/sh"


def test_exec_runs_the_program_without_a_shell(context: Context) -> None:
    argv = ["printf", "%s|", "$HOME", "a  b", ""]
    launched = plan(request(filename="printf", command_line=argv), context)
    assert launched.executable == "printf"
    assert launched.argv == argv


def test_exec_without_argv_is_refused(context: Context) -> None:
    with pytest.raises(PlanError) as caught:
        plan(request(filename="/bin/true", command_line=[]), context)
    assert caught.value.code != 0


def test_a_shell_command_must_be_one_string(context: Context) -> None:
    with pytest.raises(PlanError):
        plan(request(command_line=["echo", "hi"]), context)


# Environment ---------------------------------------------------------------------------


def test_environment_has_wsls_variables(context: Context) -> None:
    ctx = dataclasses.replace(context, lang="de_DE.UTF-8")
    env = plan(request(username="alice", distribution_name="deb"), ctx).environment
    assert env["HOME"] == "/home/alice"
    assert env["USER"] == env["LOGNAME"] == "alice"
    assert env["SHELL"] == "/bin/sh"
    assert env["PATH"] == DEFAULT_PATH
    assert env["TERM"] == "xterm-256color"
    assert env["LANG"] == "de_DE.UTF-8"
    assert env["LXSS_DISTRO_NAME"] == "deb"
    assert env["HOSTTYPE"] == os.uname().machine
    assert env["NAME"] == "box"


def test_caller_variables_are_added_but_cannot_change_identity(context: Context) -> None:
    passed = [
        "TERM=vt100",
        "COLORTERM=truecolor",
        "HOME=/evil",
        "USER=mallory",
        "LOGNAME=mallory",
        "SHELL=/bin/evil",
        "LXSS_DISTRO_NAME=other",
        "NOEQUALS",
        "=nameless",
        "EMPTY=",
    ]
    env = plan(request(username="alice", environment=passed), context).environment
    assert env["TERM"] == "vt100"
    assert env["COLORTERM"] == "truecolor"
    assert env["EMPTY"] == ""
    assert (env["HOME"], env["USER"], env["LOGNAME"]) == ("/home/alice", "alice", "alice")
    assert env["SHELL"] == "/bin/sh"
    assert env["LXSS_DISTRO_NAME"] == "deb"
    assert "NOEQUALS" not in env and "" not in env


# Working directory ---------------------------------------------------------------------


def test_cd_tilde_is_the_users_home(context: Context) -> None:
    assert plan(request(username="alice", cwd="~"), context).cwd == "/home/alice"
    assert plan(request(username="alice", cwd="~/src/x"), context).cwd == "/home/alice/src/x"


def test_cd_absolute_path_is_kept(context: Context) -> None:
    assert plan(request(cwd="/tmp"), context).cwd == "/tmp"
    # "~user" is not expanded (WSL only knows "~").
    assert plan(request(cwd="/srv/~x"), context).cwd == "/srv/~x"


def test_default_directory_is_home_without_a_host_mount(context: Context) -> None:
    assert plan(request(username="alice", host_cwd="/var/tmp"), context).cwd == "/home/alice"


def test_host_directory_is_translated_through_the_host_mount(
    context: Context, tmp_path: Path
) -> None:
    mount = tmp_path / "mnt-host"
    (mount / "work/project").mkdir(parents=True)
    ctx = dataclasses.replace(context, host_mount=str(mount) + "/")
    launched = plan(request(username="alice", host_cwd="/work/project"), ctx)
    assert launched.cwd == f"{mount}/work/project"


def test_unreachable_host_directory_falls_back_to_home(context: Context, tmp_path: Path) -> None:
    mount = tmp_path / "mnt-host"
    mount.mkdir()
    ctx = dataclasses.replace(context, host_mount=str(mount))
    launched = plan(request(username="alice", host_cwd="/gone"), ctx)
    assert launched.cwd == "/home/alice"
    assert launched.warnings == (
        f"cannot enter {mount}/gone (the host's /gone): not a directory the distribution can "
        "see; starting in /home/alice",
    )


def test_no_warning_when_the_host_is_not_mounted_or_cd_is_given(context: Context) -> None:
    assert plan(request(username="alice", host_cwd="/var/tmp"), context).warnings == ()
    ctx = dataclasses.replace(context, host_mount="/nonexistent-mount")
    assert plan(request(cwd="/tmp", host_cwd="/gone"), ctx).warnings == ()


def test_cd_wins_over_the_host_directory(context: Context, tmp_path: Path) -> None:
    mount = tmp_path / "mnt-host"
    (mount / "work").mkdir(parents=True)
    ctx = dataclasses.replace(context, host_mount=str(mount))
    assert plan(request(cwd="/tmp", host_cwd="/work"), ctx).cwd == "/tmp"


def test_umask_comes_from_the_distribution(context: Context) -> None:
    ctx = dataclasses.replace(context, umask=0o077)
    assert plan(request(), ctx).umask == 0o077
