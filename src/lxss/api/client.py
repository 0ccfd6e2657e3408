"""A blocking Varlink client, lean enough for every `lxss` start.

It imports only C modules (`_socket`, the json accelerator through `wire`):
`socket` itself pulls in `enum` and `selectors`, which would double the
client's start-up time.
"""

from __future__ import annotations

import _socket
import os

from lxss.api import wire

# typing costs ~10 ms to import: the client imports it only for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

DEFAULT_RUNTIME_DIR: Final = "/run/lxss"
SOCKET_NAME: Final = "lxssd.sock"
INTERFACE: Final = "io.lxss.Service"  # also in lxss.api.errors, imported only for error replies


def socket_path() -> str:
    return os.path.join(os.environ.get("LXSS_RUNTIME_DIR") or DEFAULT_RUNTIME_DIR, SOCKET_NAME)


class Client:
    """One connection to lxssd. Calls are sequential; each has its own timeout.

    Raises OSError when the service cannot be reached, a VarlinkError subclass
    for an error reply, wire.WireError for a malformed reply.
    """

    def __init__(self, path: str | None = None, timeout: float = 30.0) -> None:
        self.path = path or socket_path()
        self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(self.path)
        except BaseException:
            self._sock.close()
            raise
        self._buffer = wire.MessageBuffer()

    def fileno(self) -> int:
        return self._sock.fileno()

    def call(
        self,
        method: str,
        parameters: dict[str, Any] | None = None,
        fds: tuple[int, ...] = (),
        timeout: float | None = 30.0,
    ) -> dict[str, Any]:
        """Call `io.lxss.Service.<method>` (or a full method name) and return its reply.

        The fds are only lent: the caller keeps and closes its copies.
        """
        return self._call(method, parameters, fds, timeout, more=False)[0]

    def call_more(
        self, method: str, parameters: dict[str, Any] | None = None, timeout: float | None = 30.0
    ) -> list[dict[str, Any]]:
        """Call with Varlink's `more`: every reply's parameters, in order, until the one
        that does not continue (each within *timeout*)."""
        return self._call(method, parameters, (), timeout, more=True)

    def _call(
        self,
        method: str,
        parameters: dict[str, Any] | None,
        fds: tuple[int, ...],
        timeout: float | None,
        more: bool,
    ) -> list[dict[str, Any]]:
        name = method if "." in method else f"{INTERFACE}.{method}"
        request: dict[str, Any] = {"method": name, "parameters": dict(parameters or {})}
        if more:
            request["more"] = True
        try:
            self._send(wire.dumps(request), fds)
        except (BrokenPipeError, ConnectionResetError):
            # The service may refuse a connection before reading a byte of it (ServiceBusy
            # when the caller holds too many): its reason is still there to be read, and
            # says more than "Broken pipe". Nothing there: "lxssd closed the connection".
            pass
        replies = []
        while True:
            reply = self._receive(timeout)
            error = reply.get("error")
            if error is not None:
                from lxss.api import errors

                raise errors.from_reply(str(error), reply.get("parameters") or {})
            parameters_out = reply.get("parameters") or {}
            if not isinstance(parameters_out, dict):
                raise wire.WireError("reply parameters are not an object")
            replies.append(parameters_out)
            if not (more and reply.get("continues") is True):
                return replies

    def _send(self, data: bytes, fds: tuple[int, ...]) -> None:
        ancillary = (
            [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, wire.fds_to_bytes(fds))] if fds else []
        )
        sent = self._sock.sendmsg([data], ancillary)
        if sent < len(data):
            self._sock.sendall(data[sent:])

    def _receive(self, timeout: float | None) -> dict[str, Any]:
        self._sock.settimeout(timeout)
        while True:
            message = self._buffer.pop()
            if message is not None:
                frame, fds = message
                for fd in fds:  # the service never sends fds to clients
                    os.close(fd)
                return wire.loads(frame)
            data, ancdata, _flags, _ = self._sock.recvmsg(
                65536, _socket.CMSG_SPACE(wire.MAX_FDS * 4), _socket.MSG_CMSG_CLOEXEC
            )
            fds = wire.fds_from_ancillary(ancdata, _socket.SOL_SOCKET, _socket.SCM_RIGHTS)
            if not data:
                for fd in fds:
                    os.close(fd)
                raise ConnectionResetError("lxssd closed the connection")
            self._buffer.feed(data, fds)

    def close(self) -> None:
        self._buffer.close()
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
