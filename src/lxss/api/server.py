"""The Varlink server: accepts connections, checks calls against the interface
file, and dispatches them to a handler object's `Method` coroutines.

Every client is untrusted: messages are size-bounded, a connection idle or
mid-message for too long is dropped, connections are capped per owning user and
in total with a reserve only root may use, running out of descriptors refuses
new clients (cleanly) without stopping the server, and a handler's unexpected
exception becomes an InternalError reply (logged once) while the server keeps
serving. The caller's identity is what the kernel says (SO_PEERCRED), never what
the caller says.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from lxss.aio import FdWatch
from lxss.api import errors, wire
from lxss.api.interface import Interface, check_struct, parse_interface

log = logging.getLogger(__name__)

VARLINK_SERVICE = "org.varlink.service"
_SERVICE_DESCRIPTION = """\
interface org.varlink.service
method GetInfo() -> (vendor: string, product: string, version: string, url: string,
  interfaces: []string)
method GetInterfaceDescription(interface: string) -> (description: string)
error InterfaceNotFound (interface: string)
error MethodNotFound (method: string)
error MethodNotImplemented (method: string)
error InvalidParameter (parameter: string)
error ExpectedMore ()
"""


# accept() failing for want of a resource: the listener is fine, the process (or machine)
# is out of descriptors or memory for now.
_EXHAUSTED = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
_ACCEPT_BACKOFF_MAX = 1.0


@dataclass(frozen=True)
class Limits:
    """Connection limits. A user's connections are counted with those of its
    subordinate ids (see `VarlinkServer.owner_of`); `reserve` of the `connections`
    are root's alone, so root can always reach a service that users have filled."""

    per_owner_connections: int = 64
    connections: int = 1024
    reserve: int = 64
    idle_timeout: float = 60.0  # no message begun for this long: the connection is closed
    message_timeout: float = 30.0  # a message begun must end within this, however sent

    def refusal(self, owner: int, of_owner: int, total: int) -> str | None:
        """Why a new connection of *owner* (who holds *of_owner* of *total*) is refused."""
        if total >= self.connections:
            return "too many connections"
        if owner != 0:
            if of_owner >= self.per_owner_connections:
                return "too many connections of this user"
            if total >= self.connections - self.reserve:
                return "too many connections (the rest are kept for root)"
        return None


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


@dataclass
class Call:
    """One call being handled. The call owns the fds that came with it and closes
    whatever the handler did not :meth:`take_fd`."""

    method: str
    parameters: dict[str, Any]
    peer: Peer
    connection: Connection
    fds: list[int] = field(default_factory=list)
    more: bool = False  # the caller takes several replies (Varlink's `more`)

    def take_fd(self, parameter: str) -> int | None:
        """The fd named by *parameter* (an index into the fds); the caller owns it now."""
        return self.take_fds(parameter)[parameter]

    def take_fds(self, *parameters: str) -> dict[str, int | None]:
        """The fds named by *parameters*, all or none: every index is checked (in range,
        not taken, not named twice) before any fd changes hands. The caller owns them."""
        indexes: dict[str, int | None] = {}
        seen: set[int] = set()
        for parameter in parameters:
            index = self.parameters.get(parameter)
            if index is not None:
                if not 0 <= index < len(self.fds) or self.fds[index] < 0 or index in seen:
                    raise errors.InvalidParameter(parameter=parameter)
                seen.add(index)
            indexes[parameter] = index
        taken: dict[str, int | None] = {}
        for parameter, index in indexes.items():
            taken[parameter] = None if index is None else self.fds[index]
            if index is not None:
                self.fds[index] = -1
        return taken

    def close_fds(self) -> None:
        for fd in self.fds:
            if fd >= 0:
                os.close(fd)
        self.fds = []


@dataclass(frozen=True)
class Replies:
    """A method's answer in several replies (Varlink's `more`), each a reply's parameters.

    A caller that asked for more gets them one by one, each but the last marked
    `continues`; one that did not gets the only one, or ExpectedMore when there are
    several (a single reply holding them all could be past what a client takes)."""

    parts: list[dict[str, Any]]


PAGE_BYTES = 256 << 10
"""About how large a page of `paged` gets: well inside what a client takes (wire.MAX_MESSAGE)."""


def paged(items: list[dict[str, Any]], key: str, common: dict[str, Any]) -> Replies:
    """*items* as replies of `{key: [some items], **common}` of about PAGE_BYTES each (at
    least one item per page; no items: one reply with an empty list)."""
    parts: list[dict[str, Any]] = []
    page: list[dict[str, Any]] = []
    size = 0
    for item in items:
        item_size = len(wire.dumps(item))
        if page and size + item_size > PAGE_BYTES:
            parts.append({key: page, **common})
            page, size = [], 0
        page.append(item)
        size += item_size
    parts.append({key: page, **common})
    return Replies(parts)


Handler = Callable[[Call], Awaitable[dict[str, Any]]]


class Connection:
    """One client connection; calls on it are handled in order."""

    def __init__(self, server: VarlinkServer, sock: socket.socket, peer: Peer) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self._watch = FdWatch(sock.fileno())
        self._buffer = wire.MessageBuffer()
        self._close_callbacks: list[Callable[[], None]] = []
        self.closed = False

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        """Run *callback* when this connection closes (now, if it already has)."""
        if self.closed:
            callback()
        else:
            self._close_callbacks.append(callback)

    def __repr__(self) -> str:
        return f"<Connection uid={self.peer.uid} pid={self.peer.pid} closed={self.closed}>"

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        limits = self.server.limits
        message_deadline: float | None = None  # of the message begun, if one has
        try:
            while True:
                message = self._buffer.pop()
                if message is None:
                    if not self._buffer.pending:
                        message_deadline = None
                        timeout = limits.idle_timeout
                    else:
                        if message_deadline is None:
                            message_deadline = loop.time() + limits.message_timeout
                        # One deadline for the whole message: a byte now and then does not
                        # keep a half-sent message alive.
                        timeout = max(0.0, message_deadline - loop.time())
                    if not await self._receive(loop, timeout):
                        return
                    continue
                message_deadline = None
                frame, fds = message
                if not await self._dispatch(frame, fds):
                    return
        except TimeoutError:
            what = "a message unfinished" if message_deadline is not None else "idle"
            log.info("uid %d pid %d: closing connection: %s too long", self.peer.uid,
                     self.peer.pid, what)  # fmt: skip
        except wire.WireError as e:
            log.info("uid %d pid %d: closing connection: %s", self.peer.uid, self.peer.pid, e)
        except OSError as e:
            if e.errno not in (errno.ECONNRESET, errno.EPIPE, errno.EBADF):
                log.warning("uid %d: connection error: %s", self.peer.uid, e)
        finally:
            self.close()

    async def _receive(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> bool:
        """Read once into the buffer; False at end of stream."""
        while True:
            try:
                data, ancdata, _flags, _ = self.sock.recvmsg(
                    65536, socket.CMSG_SPACE(wire.MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC
                )
                break
            except BlockingIOError:
                await self._watch.wait(False, timeout)
        fds = wire.fds_from_ancillary(ancdata, socket.SOL_SOCKET, socket.SCM_RIGHTS)
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        self._buffer.feed(data, fds)
        return True

    async def _dispatch(self, frame: bytes, fds: list[int]) -> bool:
        call: Call | None = None
        try:
            request = wire.loads(frame)
            method = request.get("method")
            parameters = request.get("parameters", {})
            if not isinstance(method, str) or not isinstance(parameters, dict):
                raise wire.WireError("a call needs a method name and parameters")
            call = Call(method, parameters, self.peer, self, fds, request.get("more") is True)
            fds = []
            replies = await self.server.handle(call)
        except wire.WireError:
            for fd in fds:
                os.close(fd)
            raise
        except errors.VarlinkError as e:
            replies = [{"error": e.name, "parameters": e.parameters}]
        finally:
            if call is not None:
                call.close_fds()
        if call is not None and request.get("oneway"):
            return True
        for reply in replies[:-1]:
            await self._send({**reply, "continues": True})
        await self._send(replies[-1])
        return True

    async def _send(self, reply: dict[str, Any]) -> None:
        # A client that stops reading its replies must not hold its connection forever.
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_sendall(self.sock, wire.dumps(reply)),
            self.server.limits.message_timeout,
        )

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._buffer.close()
        self.server.forget(self)
        self._watch.close()
        self.sock.close()
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("connection close callback failed")


def _open_spare() -> int:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1  # out of descriptors already: taken back at the next refusal


def _send_busy(sock: socket.socket, reason: str) -> None:
    """Tell a client we do not serve why (one non-blocking send, best effort), then close."""
    with contextlib.suppress(OSError):
        busy = errors.ServiceBusy(reason=reason)
        sock.send(wire.dumps({"error": busy.name, "parameters": busy.parameters}))
    sock.close()


def peer_credentials(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


class VarlinkServer:
    """Serves one interface (plus org.varlink.service) on a listening socket.

    *handler* has one coroutine per method, named as the method
    (`async def GetVersion(self, call) -> dict`).
    """

    def __init__(
        self,
        interface_text: str,
        handler: object,
        vendor: str,
        product: str,
        version: str,
        limits: Limits | None = None,
    ) -> None:
        self.interface: Interface = parse_interface(interface_text)
        self.handler = handler
        self.info = {"vendor": vendor, "product": product, "version": version, "url": ""}
        self.limits = limits or Limits()
        # Whose quota a peer uid counts against: the owner of a subordinate id (set by the
        # service; by default every uid is its own owner).
        self.owner_of: Callable[[int], int] = lambda uid: uid
        self._connections: set[Connection] = set()
        self._owners: dict[Connection, int] = {}
        self._spare_fd = -1  # given up to accept (and refuse) one client when out of fds
        self._tasks: set[asyncio.Task[None]] = set()
        self._service_interface = parse_interface(_SERVICE_DESCRIPTION)

    def connections_of(self, owner: int) -> int:
        return sum(1 for o in self._owners.values() if o == owner)

    def forget(self, connection: Connection) -> None:
        self._connections.discard(connection)
        self._owners.pop(connection, None)

    async def serve(self, listener: socket.socket) -> None:
        """Accept until cancelled; the listener must be non-blocking.

        Out of descriptors (EMFILE and the like), accept() fails while the client waits
        in the backlog: the server refuses it with the spare descriptor it keeps for that
        (so the client hears why), backs off, and goes on; the connections it has are
        served throughout, and new ones are again once descriptors are free.
        """
        loop = asyncio.get_running_loop()
        backoff = 0.0
        self._spare_fd = _open_spare()
        try:
            while True:
                try:
                    sock, _ = await loop.sock_accept(listener)
                except OSError as e:
                    if e.errno not in _EXHAUSTED:
                        raise
                    if backoff == 0.0:
                        log.warning("cannot accept connections: %s; refusing them meanwhile",
                                    e.strerror)  # fmt: skip
                    self._refuse_with_spare(listener)
                    backoff = min(_ACCEPT_BACKOFF_MAX, backoff * 2 or 0.05)
                    await asyncio.sleep(backoff)
                    continue
                if backoff:
                    log.info("accepting connections again")
                    backoff = 0.0
                self._accept(sock)
        finally:
            for task in list(self._tasks):
                task.cancel()
            for connection in list(self._connections):
                connection.close()
            if self._spare_fd >= 0:
                os.close(self._spare_fd)
                self._spare_fd = -1

    def _refuse_with_spare(self, listener: socket.socket) -> None:
        """Free the spare descriptor, accept one waiting client, tell it the service is
        busy, and take the spare back (later, if the descriptor went to someone else)."""
        if self._spare_fd >= 0:
            os.close(self._spare_fd)
            self._spare_fd = -1
        try:
            sock, _ = listener.accept()
        except OSError:
            pass
        else:
            _send_busy(sock, "the service is out of file descriptors; try again later")
        self._spare_fd = _open_spare()

    def _accept(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        try:
            peer = peer_credentials(sock)
        except OSError:
            sock.close()
            return
        owner = self.owner_of(peer.uid)
        refusal = self.limits.refusal(owner, self.connections_of(owner), len(self._connections))
        if refusal is not None:
            log.warning("uid %d (owner %d) pid %d: %s, refusing", peer.uid, owner, peer.pid,
                        refusal)  # fmt: skip
            _send_busy(sock, refusal)
            return
        connection = Connection(self, sock, peer)
        self._connections.add(connection)
        self._owners[connection] = owner
        task = asyncio.get_running_loop().create_task(connection.serve())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, call: Call) -> list[dict[str, Any]]:
        """The replies to *call* (more than one only if it asked for more)."""
        interface_name, _, method = call.method.rpartition(".")
        if interface_name == VARLINK_SERVICE:
            return [{"parameters": self._varlink_service(method, call.parameters)}]
        if interface_name != self.interface.name:
            raise errors.InterfaceNotFound(interface=interface_name)
        spec = self.interface.methods.get(method)
        implementation = getattr(self.handler, method, None)
        if spec is None:
            raise errors.MethodNotFound(method=call.method)
        if implementation is None:
            raise errors.MethodNotImplemented(method=call.method)
        bad = check_struct(call.parameters, spec[0], self.interface)
        if bad is not None:
            raise errors.InvalidParameter(parameter=bad)
        try:
            result = await implementation(call)
        except errors.VarlinkError:
            raise
        except Exception as e:
            log.exception("uid %d: %s failed", call.peer.uid, call.method)
            raise errors.InternalError(reason=f"{type(e).__name__}: {e}") from e
        if not isinstance(result, Replies):
            return [{"parameters": result}]
        if len(result.parts) > 1 and not call.more:
            raise errors.ExpectedMore()
        return [{"parameters": part} for part in result.parts]

    def _varlink_service(self, method: str, parameters: dict[str, Any]) -> dict[str, Any]:
        spec = self._service_interface.methods.get(method)
        if spec is None:
            raise errors.MethodNotFound(method=f"{VARLINK_SERVICE}.{method}")
        bad = check_struct(parameters, spec[0], self._service_interface)
        if bad is not None:
            raise errors.InvalidParameter(parameter=bad)
        if method == "GetInfo":
            return {**self.info, "interfaces": [VARLINK_SERVICE, self.interface.name]}
        name = parameters.get("interface")
        if name == self.interface.name:
            return {"description": self.interface.description}
        if name == VARLINK_SERVICE:
            return {"description": _SERVICE_DESCRIPTION}
        raise errors.InterfaceNotFound(interface=str(name))
