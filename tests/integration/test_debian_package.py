"""The Debian package (`./setup.sh deb`): built from the tree, lintian clean of errors,
installed with apt, a first command through its own launchers and its own on-demand lxssd,
its completion, manual and `wsl`, then removed and purged, leaving only what purge names.

The installed lxss runs with state, runtime directory, cgroup and machine config of the
test's own (the variables lxssd reads), so a real installation and other test runs on the
machine are untouched; the package's maintainer scripts read the same variables.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "-y", "-q"]
PACKAGE_FILES = ("/usr/bin/lxss", "/usr/sbin/lxssd", "/etc/lxss.conf",
                 "/usr/lib/python3/dist-packages/lxss", "/lib/systemd/system/lxssd.socket",
                 "/usr/share/bash-completion/completions/lxss")  # fmt: skip


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, (
        f"{argv}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout + result.stderr


def installed() -> bool:
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "lxss"], capture_output=True, text=True
    )
    return "installed" in status.stdout or "config-files" in status.stdout


@pytest.fixture(scope="module")
def deb() -> str:
    """The package, built from this tree by the one command, once for the module."""
    if shutil.which("dpkg-buildpackage") is None or shutil.which("lintian") is None:
        pytest.skip("dpkg-dev and lintian are not installed (./setup.sh installs them)")
    return run([str(REPO / "setup.sh"), "deb"]).split()[-1]


@pytest.fixture
def private_env() -> Iterator[dict[str, str]]:
    root = Path(tempfile.mkdtemp(prefix="lxss-deb-", dir="/var/tmp"))
    root.chmod(0o755)  # root's distributions run mapped: their VM must reach its runtime dir
    (root / "lxss.conf").write_text("")
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "DEBIAN_FRONTEND": "noninteractive",
        "LXSS_STATE_DIR": str(root / "state"),
        "LXSS_RUNTIME_DIR": str(root / "run"),
        "LXSS_CGROUP_NAME": f"lxss-test-deb-{os.getpid()}",
    }
    try:
        yield env
    finally:
        lock = root / "run" / "lxssd.lock"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(lock.read_text().split()[0]), signal.SIGTERM)  # a failed test's
        if installed():
            subprocess.run([*APT, "purge", "lxss"], env=env, capture_output=True, timeout=600)
        shutil.rmtree(root, ignore_errors=True)


def test_package_builds_installs_runs_and_leaves_only_what_purge_names(
    deb: str, private_env: dict[str, str]
) -> None:
    if installed() or Path("/usr/bin/lxss").exists() or Path("/usr/bin/wsl").exists():
        pytest.skip("lxss (or a wsl) is installed on this machine: not replacing it")
    env = private_env
    had_state_dir = Path("/var/lib/lxss").exists()  # a real installation's: left alone
    lint = subprocess.run(["lintian", deb], capture_output=True, text=True, timeout=600)
    errors = [line for line in lint.stdout.splitlines() if line.startswith("E:")]
    assert not errors, lint.stdout

    run([*APT, "install", deb], env=env)
    for path in PACKAGE_FILES:
        assert os.path.exists(path), path
    assert Path("/usr/bin/lxss").read_text().startswith("#!/usr/bin/python3 -IS\n")
    assert oct(os.stat("/var/lib/lxss").st_mode & 0o7777) == "0o755"

    # A first command, on the installed launchers and the lxssd they start on demand.
    run(["lxss", "--install", "busybox", "--no-launch"], env=env)
    assert run(["lxss", "-d", "busybox", "--", "echo", "hello"], env=env).strip() == "hello"
    assert run(["wsl", "-l", "-q"], env=env).split() == ["busybox"]
    assert run(["man", "-w", "lxss.conf"], env=env).strip().endswith("lxss.conf.5.gz")

    # The installed bash completion, against the installed lxss.
    drive = (
        "source /usr/share/bash-completion/completions/lxss\n"
        'c() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _lxss;'
        ' echo "${COMPREPLY[*]}"; }\n'
        'c lxss --export ""\nc lxss -d busybox -u r\n'
    )
    names, users = run(["bash", "-c", drive], env=env).splitlines()
    assert names.split() == ["busybox"]
    assert users.split() == ["root"]

    # `apt remove` stops the service and leaves the distributions.
    pid = int((Path(env["LXSS_RUNTIME_DIR"]) / "lxssd.lock").read_text().split()[0])
    run(["lxss", "--shutdown"], env=env)
    run([*APT, "remove", "lxss"], env=env)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists(), "apt remove left lxssd running"
    assert not Path("/usr/bin/lxss").exists()
    assert Path("/etc/lxss.conf").exists(), "remove keeps the conffile, purge deletes it"
    registry = Path(env["LXSS_STATE_DIR"]) / "registry.sqlite"
    assert registry.exists()

    # `apt purge` says where the distributions are and leaves them.
    said = run([*APT, "purge", "lxss"], env=env)
    assert f"files in {env['LXSS_STATE_DIR']} are kept" in said
    assert registry.exists() and any(Path(env["LXSS_STATE_DIR"]).iterdir())
    assert not installed()
    expected_gone = [*PACKAGE_FILES, "/usr/bin/wsl"] + ([] if had_state_dir else ["/var/lib/lxss"])
    left = [p for p in expected_gone if os.path.lexists(p)]
    assert not left, f"purge left {left}"
    wants = list(Path("/etc/systemd/system").rglob("lxssd.*"))
    assert not wants, wants
    query = subprocess.run(["update-alternatives", "--query", "wsl"], capture_output=True)
    assert query.returncode != 0, "the wsl alternative outlived the package"


FAKE_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
"""
RECORDED = ("systemctl", "deb-systemd-helper", "deb-systemd-invoke", "update-alternatives",
            "py3compile", "py3clean")  # fmt: skip


@pytest.mark.parametrize("systemd", [True, False], ids=["systemd", "no-systemd"])
def test_maintainer_scripts_start_and_stop_the_service_either_way(
    deb: str, systemd: bool, tmp_path: Path
) -> None:
    """postinst and prerm as dpkg runs them, on a /run/systemd of the test's own (a private
    mount namespace): under systemd the units are enabled, started and stopped; without it
    they are only enabled (for a later boot with systemd) and prerm stops the lxssd that lxss
    started on demand, found by the instance lock of LXSS_RUNTIME_DIR. The tools that would
    change the machine are stand-ins that record their calls."""
    control = tmp_path / "control"
    run(["dpkg-deb", "-e", deb, str(control)])
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in RECORDED:
        (tools / name).write_text(FAKE_TOOL)
        (tools / name).chmod(0o755)
    runtime = tmp_path / "run"
    runtime.mkdir()
    # Stands for an on-demand lxssd: what prerm looks for is the module in its command line.
    lxssd = subprocess.Popen(
        ["/usr/bin/python3", "-c", "import time; time.sleep(600)", "lxss.service.main"]
    )
    try:
        (runtime / "lxssd.lock").write_text(f"{lxssd.pid}\n")
        calls = tmp_path / "calls"
        systemd_dir = "mkdir /run/systemd/system;" if systemd else ""
        script = (
            f"mount -t tmpfs tmpfs /run/systemd && {systemd_dir}"
            f" sh -e {control}/postinst configure && sh -e {control}/prerm remove"
        )
        env = {"PATH": f"{tools}:/usr/sbin:/usr/bin:/sbin:/bin", "CALLS": str(calls),
               "LXSS_RUNTIME_DIR": str(runtime)}  # fmt: skip
        run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], env=env)
        said = calls.read_text()
        stopped = lxssd.wait(timeout=60) if not systemd else lxssd.poll()
    finally:
        lxssd.kill()
        lxssd.wait(10)
    assert "update-alternatives --install /usr/bin/wsl wsl /usr/bin/lxss" in said
    assert "update-alternatives --remove wsl /usr/bin/lxss" in said
    assert "deb-systemd-helper enable lxssd.socket" in said
    if systemd:
        assert "deb-systemd-invoke start lxssd.service lxssd.socket" in said
        assert "deb-systemd-invoke stop lxssd.service lxssd.socket" in said
        assert stopped is None, "under systemd, prerm leaves stopping to systemd"
    else:
        assert "deb-systemd-invoke" not in said and "systemctl" not in said, said
        assert stopped == -signal.SIGTERM, "prerm did not stop the on-demand lxssd"
