"""WSL's networking modes that a backend lacks fall back, with a warning."""

import pytest

from lxss.vm.netmodes import effective_mode

NAMESPACE = ("Mirrored", "Nat", "None")


@pytest.mark.parametrize("mode", NAMESPACE)
def test_a_supported_mode_is_kept_without_a_word(mode: str) -> None:
    assert effective_mode(mode, NAMESPACE) == (mode, None)


@pytest.mark.parametrize("mode", ["Bridged", "VirtioProxy", "Consomme"])
def test_the_others_become_nat_with_a_warning(mode: str) -> None:
    assert effective_mode(mode, NAMESPACE) == (
        "Nat",
        f"wsl2.networkingMode {mode} is not supported here, using Nat",
    )


def test_a_backend_without_nat_falls_back_to_none() -> None:
    assert effective_mode("Bridged", ("Mirrored", "None"))[0] == "None"
