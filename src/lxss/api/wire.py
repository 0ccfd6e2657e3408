"""Varlink's wire format: JSON objects terminated by a NUL byte, fds beside them.

Shared by the lean client and the service. Import cost matters here (every
`lxss` run pays it), so this module uses the C halves of the json package
directly: `json.decoder` pulls in `re`, which alone costs more than the rest
of the client.

File descriptors travel with SCM_RIGHTS in the same sendmsg as a message's
first byte; the kernel then delivers them with that message's bytes.
"""

from __future__ import annotations

import _json
import os

from lxss.linux.fdpass import fds_from_ancillary as fds_from_ancillary
from lxss.linux.fdpass import fds_to_bytes as fds_to_bytes

# typing costs ~10 ms to import: the client imports it only for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

MAX_MESSAGE: Final = 4 << 20
"""Longest message accepted, in bytes (a hostile peer cannot make us buffer more). Sized
for CreateLxProcess: the argument list a distribution's exec takes with the usual 8 MiB
stack limit (ARG_MAX, 2 MiB) fits twice over, as JSON. Only a list of mostly escaped
characters (controls, bytes that are not UTF-8) or one for a larger stack limit can be
longer; the client refuses those with one line rather than have every connection's
buffer grow for them."""
MAX_FDS: Final = 16
"""Most descriptors accepted with one message."""


class WireError(ValueError):
    """A peer sent something that is not a Varlink message."""


class _DecoderContext:
    # The attributes _json.make_scanner reads; parse_float/int as the types
    # themselves select the scanner's fast paths.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> Any:
        raise WireError(f"{name} is not valid JSON")


def _unencodable(value: object) -> Any:
    raise TypeError(f"cannot send a {type(value).__name__} over Varlink")


_scan = _json.make_scanner(_DecoderContext())  # type: ignore[arg-type]
_encode = _json.make_encoder(
    None, _unencodable, _json.encode_basestring_ascii, None, ":", ",", False, False, False
)


def dumps(message: dict[str, Any]) -> bytes:
    """One framed message: compact ASCII JSON plus the terminating NUL."""
    return "".join(_encode(message, 0)).encode("ascii") + b"\0"


def loads(frame: bytes) -> dict[str, Any]:
    """Decode one message (without its NUL); anything but a JSON object is an error."""
    try:
        text = frame.decode("utf-8").strip(" \t\r\n")
        value, end = _scan(text, 0)
    except (StopIteration, UnicodeDecodeError, RecursionError) as e:
        raise WireError(f"not a JSON message: {type(e).__name__}") from None
    except ValueError as e:  # JSONDecodeError, raised from inside the scanner
        raise WireError(f"not a JSON message: {e}") from None
    if end != len(text):
        raise WireError("trailing data after the JSON message")
    if not isinstance(value, dict):
        raise WireError("a Varlink message must be a JSON object")
    return value


class MessageBuffer:
    """Sans-IO reassembly of NUL-terminated messages with the fds that came with them.

    Feed it what recvmsg returned; take complete messages with :meth:`pop`.
    Fds received while a message's bytes were arriving belong to that message.
    """

    def __init__(self, max_message: int = MAX_MESSAGE, max_fds: int = MAX_FDS) -> None:
        self._data = bytearray()
        self._fds: list[int] = []
        self._max_message = max_message
        self._max_fds = max_fds
        self._complete: list[tuple[bytes, list[int]]] = []

    def feed(self, data: bytes, fds: list[int]) -> None:
        """Add received bytes and fds; raises WireError (and closes the fds) past the limits."""
        self._fds.extend(fds)
        if len(self._fds) > self._max_fds:
            self.close()
            raise WireError(f"more than {self._max_fds} file descriptors with one message")
        start = 0
        while True:
            end = data.find(b"\0", start)
            if end < 0:
                break
            self._data += data[start:end]
            self._check_size()
            self._complete.append((bytes(self._data), self._fds))
            self._data = bytearray()
            self._fds = []
            start = end + 1
        self._data += data[start:]
        self._check_size()

    def _check_size(self) -> None:
        if len(self._data) > self._max_message:
            self.close()
            raise WireError(f"a message longer than {self._max_message} bytes")

    def pop(self) -> tuple[bytes, list[int]] | None:
        return self._complete.pop(0) if self._complete else None

    @property
    def pending(self) -> bool:
        """True while a message has begun but not ended (data or fds are buffered)."""
        return bool(self._data or self._fds)

    def close(self) -> None:
        """Close every fd still held (of incomplete or unclaimed messages)."""
        for _, fds in self._complete:
            for fd in fds:
                os.close(fd)
        for fd in self._fds:
            os.close(fd)
        self._complete.clear()
        self._fds = []
        self._data = bytearray()
