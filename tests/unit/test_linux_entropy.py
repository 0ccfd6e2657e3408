"""RNDADDENTROPY (lxss.linux.entropy): what version 2's mini_init does with InitialConfig's
bytes. Tried on the host's kernel, where root may (and the pool only gains)."""

from __future__ import annotations

import os

import pytest

from lxss.linux.entropy import add_entropy


@pytest.mark.skipif(os.geteuid() != 0, reason="RNDADDENTROPY needs CAP_SYS_ADMIN")
def test_the_kernel_takes_a_whole_4_kib_seed() -> None:
    add_entropy(os.urandom(4096))  # over fcntl's 1 KiB limit for immutable buffers


def test_nothing_to_add_is_no_call() -> None:
    add_entropy(b"", device="/nonexistent")


def test_a_refusal_is_an_os_error(tmp_path: object) -> None:
    with pytest.raises(OSError):
        add_entropy(b"x", device="/dev/null")  # not the random device: ENOTTY
