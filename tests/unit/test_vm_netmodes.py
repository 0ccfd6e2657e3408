"""WSL's networking modes that a backend lacks fall back, with a warning."""

import pytest

from lxss.protocol.messages import NetworkingMode
from lxss.vm.netmodes import effective_mode

NAMESPACE = frozenset({NetworkingMode.MIRRORED, NetworkingMode.NAT, NetworkingMode.NONE})
OTHERS = [NetworkingMode.BRIDGED, NetworkingMode.VIRTIO_PROXY, NetworkingMode.CONSOMME]


@pytest.mark.parametrize("mode", sorted(NAMESPACE))
def test_a_supported_mode_is_kept_without_a_word(mode: NetworkingMode) -> None:
    assert effective_mode(mode, NAMESPACE) == (mode, None)


@pytest.mark.parametrize("mode", OTHERS)
def test_the_others_become_nat_with_a_warning(mode: NetworkingMode) -> None:
    assert effective_mode(mode, NAMESPACE) == (
        NetworkingMode.NAT,
        f"wsl2.networkingMode {mode.spelling} is not supported here, using Nat",
    )


def test_a_backend_without_nat_falls_back_to_none() -> None:
    supported = {NetworkingMode.MIRRORED, NetworkingMode.NONE}
    assert effective_mode(NetworkingMode.BRIDGED, supported)[0] is NetworkingMode.NONE


def test_every_mode_has_a_spelling_and_reads_back() -> None:
    for mode in NetworkingMode:
        assert NetworkingMode.from_spelling(mode.spelling.upper()) is mode
    with pytest.raises(ValueError, match="not a networking mode"):
        NetworkingMode.from_spelling("Tunnel")
