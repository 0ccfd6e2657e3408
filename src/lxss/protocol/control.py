"""The client's half of a launched process's control channel, in the guest framing.

Only a few messages cross it — WindowSizeChanged and Signal towards the relay,
ExitStatus back (echoed as its acknowledgement), and InteropConnection, whose frame the
client hands whole to the process it forks to serve it — and the `lxss` client must
start in a few milliseconds, so this module writes and reads exactly those
three with nothing but int.to_bytes: the full catalogue (lxss.protocol.messages)
costs more to import than the whole client may spend. A unit test holds these
bytes equal to the catalogue's encoding, so there is still one wire format.
"""

from __future__ import annotations

from lxss.errors import LxssError

HEADER_SIZE = 16
MAX_CONTROL_MESSAGE = 4096

EXIT_STATUS = 9  # InitExitStatus(exit_code: i32)
WINDOW_SIZE_CHANGED = 10  # InitWindowSizeChanged(rows: u16, columns: u16)
SIGNAL = 120  # InitSignal(signal: i32)
INTEROP_CONNECTION = 125  # InitInteropConnection(host_mount, distribution_name) + 1 fd


class ControlError(LxssError, ValueError):
    """The relay sent something that is not a control message."""


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


class Writer:
    """Frames for the relay, numbered as step-0 (non-transaction) messages: 1, 2, 3..."""

    def __init__(self) -> None:
        self._sent = 0

    def _frame(self, message_type: int, body: bytes) -> bytes:
        self._sent += 1
        size = HEADER_SIZE + len(body)
        return _u32(message_type) + _u32(size) + _u32(self._sent) + _u32(0) + body

    def exit_status(self, code: int) -> bytes:
        return self._frame(EXIT_STATUS, code.to_bytes(4, "little", signed=True))

    def window_size(self, rows: int, columns: int) -> bytes:
        body = min(rows, 0xFFFF).to_bytes(2, "little") + min(columns, 0xFFFF).to_bytes(2, "little")
        return self._frame(WINDOW_SIZE_CHANGED, body)

    def signal(self, signum: int) -> bytes:
        return self._frame(SIGNAL, signum.to_bytes(4, "little", signed=True))


def interop_host_mount(frame: bytes) -> str | None:
    """The host_mount of an InteropConnection *frame* (whole, as Reader collects them);
    None when it has none, or the frame does not hold one."""
    offset = int.from_bytes(frame[HEADER_SIZE : HEADER_SIZE + 4], "little")
    if not HEADER_SIZE + 8 <= offset < len(frame):
        return None
    end = frame.find(b"\0", offset)
    return frame[offset:end].decode(errors="surrogateescape") if end > offset else None


class Reader:
    """Reassembles frames from the relay and yields the exit codes they carry."""

    def __init__(self) -> None:
        self._buffer = b""
        self.connections: list[bytes] = []  # InteropConnection frames, whole, in order

    def feed(self, data: bytes) -> list[int]:
        self._buffer += data
        codes = []
        while len(self._buffer) >= HEADER_SIZE:
            message_type = int.from_bytes(self._buffer[0:4], "little")
            size = int.from_bytes(self._buffer[4:8], "little")
            if not HEADER_SIZE <= size <= MAX_CONTROL_MESSAGE:
                raise ControlError(f"a control message of {size} bytes")
            if len(self._buffer) < size:
                break
            frame, self._buffer = self._buffer[:size], self._buffer[size:]
            body = frame[HEADER_SIZE:]
            if message_type == EXIT_STATUS:
                if len(body) < 4:
                    raise ControlError("a truncated ExitStatus")
                codes.append(int.from_bytes(body[0:4], "little", signed=True))
            elif message_type == INTEROP_CONNECTION:
                self.connections.append(frame)
        return codes
