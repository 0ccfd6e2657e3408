"""The host's half of an interop connection, in the guest framing, written lean.

lxss-host-exec (lxss/guest/native/lxss-guest.c) sends InteropCreateHostProcess with its
streams attached and then InitSignal frames; the host answers InitCreateProcessResponse
and InitExitStatus. The process that serves a connection is forked from the `lxss` client
for each call, so what it imports is paid on every call: the full catalogue
(lxss.protocol.messages) costs ~60 ms to import here, these few frames nothing. A unit test
holds these bytes equal to the catalogue's encoding, so there is still one wire format.
"""

from __future__ import annotations

from lxss.errors import LxssError

HEADER_SIZE = 16
MAX_REQUEST = 16 * 1024 * 1024  # the framing's MAX_MESSAGE_SIZE
CREATE_HOST_PROCESS = 1
EXIT_STATUS = 9
CREATE_PROCESS_RESPONSE = 11
SIGNAL = 120
STREAM_CLOSED_FLAGS = (0x8, 0x10, 0x20)  # stdin, stdout, stderr: InteropCreateHostProcess's
_FIXED = 24  # flags u32, cwd str, command_line strs (offset, count), environment strs


class HostExecError(LxssError, ValueError):
    """lxss-host-exec sent something that is not its request."""


class Request:
    __slots__ = ("command_line", "cwd", "environment", "flags")

    def __init__(self, flags: int, cwd: str | None, command_line: list[str],
                 environment: list[str]) -> None:  # fmt: skip
        self.flags = flags
        self.cwd = cwd
        self.command_line = command_line
        self.environment = environment

    def fd_count(self) -> int:
        return sum(1 for bit in STREAM_CLOSED_FLAGS if not self.flags & bit)


def _u32(data: bytes | bytearray, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def _strings(frame: bytes, offset: int, count: int, what: str) -> list[str]:
    if count == 0:
        if offset != 0:
            raise HostExecError(f"an empty {what} at offset {offset}")
        return []
    if not HEADER_SIZE + _FIXED <= offset < len(frame):
        raise HostExecError(f"{what} at offset {offset}, outside the heap")
    parts = frame[offset:].split(b"\0")
    if len(parts) <= count:
        raise HostExecError(f"{what}: fewer than {count} strings")
    return [p.decode(errors="surrogateescape") for p in parts[:count]]


def frame_size(header: bytes) -> int:
    """The whole frame's size from its first 16 bytes (HostExecError if out of bounds)."""
    size = _u32(header, 4)
    if _u32(header, 0) != CREATE_HOST_PROCESS or not HEADER_SIZE + _FIXED <= size <= MAX_REQUEST:
        raise HostExecError(
            f"not an InteropCreateHostProcess (type {_u32(header, 0)}, {size} bytes)"
        )
    return size


def decode_request(frame: bytes) -> Request:
    """The InteropCreateHostProcess in *frame* (one whole frame); HostExecError if it is not
    one, or any offset or count points outside it."""
    frame_size(frame[:HEADER_SIZE])
    if len(frame) != _u32(frame, 4):
        raise HostExecError("a truncated InteropCreateHostProcess")
    fixed = HEADER_SIZE
    flags = _u32(frame, fixed)
    if flags & ~sum(STREAM_CLOSED_FLAGS):
        raise HostExecError(f"unknown flags {flags:#x}")
    cwd_offset = _u32(frame, fixed + 4)
    cwd = _strings(frame, cwd_offset, 1, "cwd")[0] if cwd_offset else None
    command_line = _strings(frame, _u32(frame, fixed + 8), _u32(frame, fixed + 12), "command line")
    environment = _strings(frame, _u32(frame, fixed + 16), _u32(frame, fixed + 20), "environment")
    return Request(flags, cwd, command_line, environment)


def _frame(message_type: int, sequence: int, body: bytes) -> bytes:
    size = HEADER_SIZE + len(body)
    head = message_type.to_bytes(4, "little") + size.to_bytes(4, "little")
    return head + sequence.to_bytes(4, "little") + bytes(4) + body


def response(sequence: int, result: int, pid: int, message: str | None) -> bytes:
    """InitCreateProcessResponse(result, pid, message), the *sequence*-th frame sent."""
    text = b"" if message is None else message.encode(errors="surrogateescape") + b"\0"
    offset = (HEADER_SIZE + 12).to_bytes(4, "little") if message is not None else bytes(4)
    body = result.to_bytes(4, "little", signed=True) + pid.to_bytes(4, "little", signed=True)
    return _frame(CREATE_PROCESS_RESPONSE, sequence, body + offset + text)


def exit_status(sequence: int, code: int) -> bytes:
    return _frame(EXIT_STATUS, sequence, code.to_bytes(4, "little", signed=True))


def signals(buffer: bytearray) -> list[int]:
    """The signal numbers of the whole InitSignal frames at the start of *buffer* (consumed);
    HostExecError for anything else."""
    found = []
    while len(buffer) >= HEADER_SIZE:
        size = _u32(buffer, 4)
        if _u32(buffer, 0) != SIGNAL or size != HEADER_SIZE + 4:
            raise HostExecError(f"not an InitSignal (type {_u32(buffer, 0)}, {size} bytes)")
        if len(buffer) < size:
            break
        found.append(int.from_bytes(buffer[HEADER_SIZE:size], "little", signed=True))
        del buffer[:size]
    return found
