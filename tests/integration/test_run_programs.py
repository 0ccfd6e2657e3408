"""Running programs through the real `lxss`: exit status, stdio, argv, user, environment, cwd."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import LXSS, Service
from mgmt import shared_dir

# Exit status ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exit_code_is_the_programs(service: Service, busybox: str, code: int) -> None:
    result = service.lxss("-d", busybox, "--", f"exit {code}")
    assert result.returncode == code, result
    assert result.err == ""


def test_program_killed_by_sigkill_exits_137(service: Service, busybox: str) -> None:
    result = service.lxss("-d", busybox, "--", "echo before; kill -KILL $$; echo after")
    assert result.returncode == 137, result
    assert result.out == "before\n"


def test_exec_exit_code_without_a_shell(service: Service, busybox: str) -> None:
    assert service.lxss("-d", busybox, "-e", "false").returncode == 1
    assert service.lxss("-d", busybox, "-e", "true").returncode == 0


def test_missing_program_is_127_with_its_name(service: Service, busybox: str) -> None:
    result = service.lxss("-d", busybox, "-e", "/no/such/program")
    assert result.returncode == 127, result
    assert "/no/such/program" in result.err


# Standard streams ----------------------------------------------------------------------


def test_50_mb_of_random_bytes_through_stdin_and_stdout(service: Service, busybox: str) -> None:
    data = os.urandom(50 << 20)
    result = service.lxss("-d", busybox, "-e", "cat", input=data, timeout=120)
    assert result.returncode == 0, result
    assert len(result.stdout) == len(data)
    assert hashlib.sha256(result.stdout).hexdigest() == hashlib.sha256(data).hexdigest()


def test_stderr_is_kept_apart_from_stdout(service: Service, busybox: str) -> None:
    result = service.lxss(
        "-d", busybox, "--", "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 3"
    )
    assert result.returncode == 3
    assert result.out == "out1\nout2\n"
    assert result.err == "err1\nerr2\n"


def test_pipes_reach_the_program_as_the_very_same_pipes(service: Service, busybox: str) -> None:
    """No relay copies: the program's fds 0, 1, 2 are the caller's pipes themselves."""
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    inodes = [os.fstat(fd).st_ino for fd in (stdin_r, stdout_w, stderr_w)]
    # Read before any redirection: busybox may run applets inside the shell itself.
    script = (
        'links="$(readlink /proc/$$/fd/0) $(readlink /proc/$$/fd/1) $(readlink /proc/$$/fd/2)"; '
        "echo $links >&2; exec cat"
    )
    chunk = os.urandom(1 << 20)
    total = 64

    def feed() -> None:
        with os.fdopen(stdin_w, "wb") as w:
            for _ in range(total):
                w.write(chunk)

    proc = subprocess.Popen(
        [*LXSS, "-d", busybox, "--", script], env=service.env, stdin=stdin_r,
        stdout=stdout_w, stderr=stderr_w, cwd="/",
    )  # fmt: skip
    for fd in (stdin_r, stdout_w, stderr_w):
        os.close(fd)
    writer = threading.Thread(target=feed)
    writer.start()
    digest = hashlib.sha256()
    received = 0
    try:
        with os.fdopen(stdout_r, "rb") as r:
            while block := r.read(1 << 20):
                digest.update(block)
                received += len(block)
        assert proc.wait(60) == 0
        with os.fdopen(stderr_r, "rb") as r:
            lines = r.read().decode().split()
    finally:
        writer.join(60)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert received == total << 20
    assert digest.hexdigest() == hashlib.sha256(chunk * total).hexdigest()
    assert lines == [f"pipe:[{inode}]" for inode in inodes]


def test_a_file_as_stdout_is_written_by_the_program(
    service: Service, busybox: str, tmp_path: Path
) -> None:
    target = tmp_path / "out.txt"
    with open(target, "wb") as f:
        proc = subprocess.run(
            [*LXSS, "-d", busybox, "--", "echo into the file"], env=service.env,
            stdin=subprocess.DEVNULL, stdout=f, timeout=60, check=False,
        )  # fmt: skip
    assert proc.returncode == 0
    assert target.read_text() == "into the file\n"


# Command forms -------------------------------------------------------------------------


def test_exec_of_an_empty_argument_prints_an_empty_line(service: Service, busybox: str) -> None:
    result = service.ok("-d", busybox, "-e", "echo", "")
    assert result.out == "\n"


def test_variables_expand_in_the_shell_form_not_with_exec(service: Service, busybox: str) -> None:
    shell = service.ok("-d", busybox, "--", "echo", "$LXSS_DISTRO_NAME")
    assert shell.out == f"{busybox}\n"
    direct = service.ok("-d", busybox, "-e", "echo", "$LXSS_DISTRO_NAME")
    assert direct.out == "$LXSS_DISTRO_NAME\n"


def test_joined_words_keep_their_blanks_and_the_shell_sees_the_rest(
    service: Service, busybox: str
) -> None:
    # `lxss -- cmd args` is "$SHELL -c" of the joined text: blanks inside a word survive,
    # while operators written as words are the shell's.
    result = service.ok("-d", busybox, "--", "echo", "a  b", "|", "tr", "a", "x")
    assert result.out == "x  b\n"
    direct = service.ok("-d", busybox, "-e", "echo", "a  b", "|", "tr")
    assert direct.out == "a  b | tr\n"


def test_a_command_without_double_dash(service: Service, busybox: str) -> None:
    assert service.ok("-d", busybox, "echo", "plain").out == "plain\n"


@pytest.mark.parametrize(
    ("shell_type", "expected"),
    [("standard", "/bin/sh"), ("login", "-sh"), ("none", "$0")],
)
def test_shell_types(service: Service, busybox: str, shell_type: str, expected: str) -> None:
    if shell_type == "none":
        result = service.ok("-d", busybox, "--shell-type", "none", "--", "echo", "$0")
    else:
        result = service.ok("-d", busybox, "--shell-type", shell_type, "--", "echo $0")
    assert result.out == f"{expected}\n"


def test_default_shell_type_is_standard_with_a_command(service: Service, busybox: str) -> None:
    assert service.ok("-d", busybox, "--", "echo $0").out == "/bin/sh\n"


def test_no_command_runs_a_login_shell(service: Service, busybox: str) -> None:
    result = service.lxss("-d", busybox, input=b'echo "shell=$0"\nexit 7\n')
    assert result.returncode == 7, result
    assert result.out == "shell=-sh\n"


# User ----------------------------------------------------------------------------------


def test_missing_user_fails_clearly(service: Service, busybox: str) -> None:
    result = service.lxss("-d", busybox, "-u", "no-such-user", "--", "echo should not run")
    assert result.returncode == 255
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith("lxss: ") and "no-such-user" in lines[0]


def test_user_option_runs_as_that_user(service: Service, busybox: str) -> None:
    result = service.ok("-d", busybox, "-u", "nobody", "-e", "id")
    assert result.out.startswith("uid=65534(nobody) gid=65534")


def test_default_user_of_the_builtin_is_root(service: Service, busybox: str) -> None:
    assert service.ok("-d", busybox, "-e", "id", "-u").out == "0\n"


# Environment and directory -------------------------------------------------------------


def test_environment_of_a_launched_program(service: Service, busybox: str) -> None:
    result = service.ok("-d", busybox, "-u", "nobody", "-e", "env", env={"TERM": "vt220"})
    env = dict(line.split("=", 1) for line in result.out.splitlines())
    assert env["HOME"] == "/nonexistent"
    assert env["USER"] == env["LOGNAME"] == "nobody"
    assert env["SHELL"] == "/bin/false"
    assert env["PATH"].split(":")[:2] == ["/usr/local/sbin", "/usr/local/bin"]
    assert "/bin" in env["PATH"].split(":")
    assert env["TERM"] == "vt220"  # the caller's terminal type travels
    assert env["LANG"]
    assert env["LXSS_DISTRO_NAME"] == busybox
    # Nothing else of the caller's environment leaks in.
    assert "LXSS_STATE_DIR" not in env and "LXSS_RUNTIME_DIR" not in env


def test_lxssenv_passes_named_variables(service: Service, busybox: str) -> None:
    result = service.ok(
        "-d", busybox, "-e", "env", env={"LXSSENV": "FOO:BAR", "FOO": "1", "BAR": "two", "BAZ": "3"}
    )
    env = dict(line.split("=", 1) for line in result.out.splitlines())
    assert (env.get("FOO"), env.get("BAR"), env.get("BAZ")) == ("1", "two", None)


def test_cd_tilde_is_home(service: Service, busybox: str) -> None:
    assert service.ok("-d", busybox, "--cd", "~", "-e", "pwd").out == "/root\n"


def test_cd_absolute(service: Service, busybox: str) -> None:
    assert service.ok("-d", busybox, "--cd", "/tmp", "-e", "pwd").out == "/tmp\n"


def test_cd_relative_is_refused(service: Service, busybox: str) -> None:
    result = service.lxss("-d", busybox, "--cd", "tmp", "-e", "pwd")
    assert result.returncode == 255
    assert result.out == "" and result.err.startswith("lxss: ")


def test_host_directory_is_the_start_directory(service: Service, busybox: str) -> None:
    # Root's distributions are mapped (nobody on the host): a directory all may read.
    with shared_dir() as directory:
        (directory / "marker").write_text("from the host\n")
        result = service.ok("-d", busybox, "--", "pwd; cat marker", cwd=str(directory))
    assert result.out == f"/mnt/host{directory}\nfrom the host\n"


# What init set up ----------------------------------------------------------------------


def test_init_mounts_proc_sys_dev_run(service: Service, busybox: str) -> None:
    result = service.ok("-d", busybox, "-e", "cat", "/proc/self/mountinfo")
    mounted = {}
    for line in result.out.splitlines():
        fields = line.split()
        mounted[fields[4]] = fields[fields.index("-") + 1]
    assert mounted["/proc"] == "proc"
    assert mounted["/sys"] == "sysfs"
    assert mounted["/dev"] == "tmpfs"
    assert mounted["/dev/pts"] == "devpts"
    assert mounted["/run"] == "tmpfs"
    assert "/tmp" not in mounted  # on the distribution's disk, as in WSL
    # pid 1 is the distribution's own init.
    assert service.ok("-d", busybox, "-e", "cat", "/proc/1/comm").out.startswith("lxss-init")


def test_dev_is_minimal(service: Service, busybox: str) -> None:
    listing = service.ok("-d", busybox, "-e", "ls", "-A", "/dev").out.split()
    devices = {"null", "zero", "full", "random", "urandom", "tty", "ptmx"}
    assert devices <= set(listing)
    assert set(listing) - devices <= {"fd", "stdin", "stdout", "stderr", "pts", "shm", "mqueue"}
    # The host has block devices or consoles; none of them is here.
    assert not {"sda", "vda", "nvme0n1", "console", "mem", "kmsg"} & set(listing)


def test_devpts_is_the_distributions_own(service: Service, busybox: str) -> None:
    inside = service.ok("-d", busybox, "-e", "stat", "-c", "%d", "/dev/pts").out.strip()
    assert int(inside) != os.stat("/dev/pts").st_dev
    # A fresh instance: no pty of the host's shows in it.
    assert service.ok("-d", busybox, "-e", "ls", "/dev/pts").out.split() == ["ptmx"]


def test_a_process_sees_only_its_distributions_processes(service: Service, busybox: str) -> None:
    result = service.ok("-d", busybox, "-e", "ps", "-o", "pid,comm")
    names = [line.split()[1] for line in result.out.splitlines()[1:]]
    assert names[0] == "lxss-init"
    assert "ps" in names
    assert "lxssd" not in names and "lxss-mini_init" not in names
    assert len(names) < 10
