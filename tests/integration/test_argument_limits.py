"""Argument lists as long as Linux allows (ARG_MAX in all, MAX_ARG_STRLEN each) are carried
whole through lxss, lxssd and the guest; longer ones end in one line saying so."""

from __future__ import annotations

import os
import resource
import subprocess

from conftest import LXSS, Result, Service

MAX_ARG_STRLEN = 32 * os.sysconf("SC_PAGE_SIZE")  # the kernel's limit for one string
ARG_MAX = os.sysconf("SC_ARG_MAX")
BIG_STACK = 256 << 20  # lets lxss itself be started with up to 6 MiB of arguments


def _words(total: int, size: int = MAX_ARG_STRLEN - 1, letter: str = "") -> list[str]:
    """Words of *size* characters (the longest one argument may be) adding up to *total*."""
    return [(letter or chr(ord("a") + i % 26)) * size for i in range(total // size)]


def _lxss_with_a_big_stack(service: Service, *args: str) -> Result:
    """lxss started with a large stack limit, so that the kernel lets it start with more
    arguments than the distribution (lxssd's default 8 MiB stack: 2 MiB) would take."""

    def raise_stack_limit() -> None:
        resource.setrlimit(resource.RLIMIT_STACK, (BIG_STACK, BIG_STACK))

    proc = subprocess.run(
        [*LXSS, *args], stdin=subprocess.DEVNULL, capture_output=True, env=service.env,
        timeout=120, check=False, cwd="/", preexec_fn=raise_stack_limit,
    )  # fmt: skip
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_an_argument_list_near_arg_max_is_carried_whole(service: Service, busybox: str) -> None:
    # Keep 64 KiB for the environment and lxss's own words.
    words = _words(ARG_MAX - 64 * 1024)
    assert sum(len(w) + 1 for w in words) > 1 << 20  # past the old 1 MiB message limit
    result = service.ok("-d", busybox, "-e", "sh", "-c", 'echo $#; printf %s "$@" | wc -c', "sh",
                        *words, timeout=120)  # fmt: skip
    assert result.out.split() == [str(len(words)), str(sum(len(w) for w in words))]


def test_more_than_the_distribution_takes_is_exec_refusing_it(
    service: Service, busybox: str
) -> None:
    # As a local shell says it (exit 126): the distribution's exec refuses the list.
    result = _lxss_with_a_big_stack(service, "-d", busybox, "-e", "true", *_words(3 << 20))
    assert result.returncode == 126, result
    assert result.err == "lxss: true: Argument list too long\n"


def test_a_call_larger_than_lxssd_takes_is_one_line(service: Service, busybox: str) -> None:
    # Control characters are six bytes each in JSON: 1.5 MiB of them, which the kernel
    # takes, is past the call limit (wire.MAX_MESSAGE, 4 MiB).
    words = _words(3 << 19, letter="\x01")
    result = _lxss_with_a_big_stack(service, "-d", busybox, "-e", "true", *words)
    assert result.returncode == 255, result
    assert result.err.startswith("lxss: the argument list is too long: "), result
    assert len(result.err.splitlines()) == 1, result


def test_a_shell_command_line_longer_than_max_arg_strlen_is_one_line(
    service: Service, busybox: str
) -> None:
    # The shell form joins its words into one string for `$SHELL -c`, which Linux limits.
    half = "x" * (MAX_ARG_STRLEN // 2)
    result = service.lxss("-d", busybox, "--", "echo", half, half)
    assert result.returncode == 255, result
    assert result.err == (
        f"lxss: the argument list is too long: one argument is {2 * len(half) + 6} bytes, and "
        f"Linux takes at most {MAX_ARG_STRLEN - 1} (a shell command line counts as one)\n"
    )
    words = ["x" * (MAX_ARG_STRLEN // 4)] * 3
    assert service.ok("-d", busybox, "--", "echo", *words).out == " ".join(words) + "\n"
