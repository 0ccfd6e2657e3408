"""The lean interop frames (lxss.protocol.hostexec, control.interop_host_mount) are the
catalogue's bytes: one wire format, two readers."""

from __future__ import annotations

import pytest

from lxss.protocol import control, hostexec
from lxss.protocol import messages as m


def _with_sequence(frame: bytes, sequence: int) -> bytes:
    return frame[:8] + sequence.to_bytes(4, "little") + frame[12:]


@pytest.mark.parametrize(
    "message",
    [
        m.InteropCreateHostProcess(0, "/mnt/host/tmp", ("cat", "-"), ("LXSSENV=A/p", "A=/x")),
        m.InteropCreateHostProcess(0x18, None, ("true",), ()),
        m.InteropCreateHostProcess(0x38, "/", ("a\udcffb", ""), ("E=",)),
    ],
)
def test_requests_decode_as_the_catalogue_encodes(message: m.InteropCreateHostProcess) -> None:
    request = hostexec.decode_request(m.encode(message))
    assert request.flags == message.flags
    assert request.cwd == message.cwd
    assert request.command_line == list(message.command_line)
    assert request.environment == list(message.environment)
    assert request.fd_count() == message.fd_count()


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        m.encode(m.InitSignal(signal=2)),
        m.encode(m.InteropCreateHostProcess(0, None, ("a",), ()))[:-1],
        m.encode(m.InteropCreateHostProcess(0x40, None, ("a",), ())),
    ],
    ids=["empty", "another-type", "truncated", "unknown-flag"],
)
def test_malformed_requests_are_refused(frame: bytes) -> None:
    with pytest.raises(hostexec.HostExecError):
        hostexec.decode_request(frame.ljust(16, b"\0"))


def test_an_offset_outside_the_frame_is_refused() -> None:
    frame = bytearray(m.encode(m.InteropCreateHostProcess(0, "/x", ("a",), ())))
    frame[20:24] = (1 << 20).to_bytes(4, "little")  # cwd's offset, past the end
    with pytest.raises(hostexec.HostExecError):
        hostexec.decode_request(bytes(frame))


def test_replies_are_the_catalogues_bytes() -> None:
    assert hostexec.response(1, 0, 42, None) == _with_sequence(
        m.encode(m.InitCreateProcessResponse(result=0, pid=42, message=None)), 1
    )
    assert hostexec.response(1, 2, 0, "x: not found") == _with_sequence(
        m.encode(m.InitCreateProcessResponse(result=2, pid=0, message="x: not found")), 1
    )
    assert hostexec.exit_status(2, 130) == _with_sequence(
        m.encode(m.InitExitStatus(exit_code=130)), 2
    )


def test_signals_are_read_whole_frames_at_a_time() -> None:
    one, two = m.encode(m.InitSignal(signal=2)), m.encode(m.InitSignal(signal=15))
    buffer = bytearray(one + two[:5])
    assert hostexec.signals(buffer) == [2]
    buffer += two[5:]
    assert hostexec.signals(buffer) == [15]
    assert buffer == b""
    with pytest.raises(hostexec.HostExecError):
        hostexec.signals(bytearray(m.encode(m.InitExitStatus(exit_code=1))))


def test_the_host_mount_of_an_interop_connection() -> None:
    frame = m.encode(m.InitInteropConnection(host_mount="/win/host", distribution_name="d"))
    assert control.interop_host_mount(frame) == "/win/host"
    none = m.encode(m.InitInteropConnection(host_mount=None, distribution_name="d"))
    assert control.interop_host_mount(none) is None
