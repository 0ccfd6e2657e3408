"""The guest protocol's message catalogue.

WSL counterpart: ``LX_MESSAGE_TYPE`` and the message structs of ``src/shared/inc/lxinitshared.h``.
Messages are named by their receiver as there: ``Init*`` go to a distribution's init, session
leader or relay, ``MiniInit*`` to mini_init. Type numbers are WSL's where WSL has the message;
lxss's own start at 120. The fields are lxss's: what this implementation needs, no more.

Each class behaves as a frozen dataclass. Its field annotations (``U32``, ``Str``...) say how a
field travels (see :mod:`lxss.protocol.codec`), ``TYPE`` is its number, and ``FDS`` or
:meth:`~lxss.protocol.codec.Message.fd_count` says how many descriptors ride with it
(SCM_RIGHTS). :func:`encode` and :func:`decode` are re-exported from the codec; defining a class
here is what puts it in :data:`CATALOGUE`.
"""

from collections.abc import Sequence
from enum import IntEnum
from typing import ClassVar, Final, NamedTuple

from lxss.protocol.codec import (
    CATALOGUE,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
    Bytes,
    FrozenInstanceError,
    Message,
    Str,
    Strs,
    decode,
    encode,
    message_error,
    type_name,
)
from lxss.protocol.framing import MessageHeader, ProtocolError

__all__ = [
    "CATALOGUE",
    "CreateProcessFds",
    "FailureStep",
    "FrozenInstanceError",
    "GnsInterfaceConfiguration",
    "GnsResult",
    "InitCreateProcess",
    "InitCreateProcessResponse",
    "InitCreateSession",
    "InitCreateSessionResponse",
    "InitDistributionConf",
    "InitExitStatus",
    "InitInitialize",
    "InitInitializeResponse",
    "InitQueryDistributionConf",
    "InitSignal",
    "InitTerminateInstance",
    "InitWindowSizeChanged",
    "Message",
    "MessageHeader",
    "MiniInitChildExit",
    "MiniInitCreateInstanceResult",
    "MiniInitEarlyConfig",
    "MiniInitGuestCapabilities",
    "MiniInitInitialConfig",
    "MiniInitLaunchInit",
    "MiniInitMapIdentity",
    "MiniInitMapIdentityResponse",
    "NetworkingMode",
    "ProtocolError",
    "ResultBool",
    "ResultInt32",
    "ResultUint8",
    "ResultUint32",
    "decode",
    "encode",
    "type_name",
]


class CreateProcessFds(NamedTuple):
    """The descriptors of an InitCreateProcess, by role. Unused roles are None."""

    control: int  # carries WindowSizeChanged, Signal and ExitStatus
    lifetime: int  # the client holds the other end; its hangup means the client is gone
    console: int | None = None  # the client's terminal, when any stream is a console
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


# --- the catalogue ----------------------------------------------------------------------------


class InitCreateSession(Message):
    """Service -> init: start a session leader for one client console."""

    TYPE: ClassVar[int] = 2
    console_id: I64  # identifies the client console the session serves


class InitCreateSessionResponse(Message):
    """Init -> service. On success one descriptor travels: the new session leader's channel."""

    TYPE: ClassVar[int] = 3
    result: I32  # 0 or an errno

    def fd_count(self) -> int:
        return 1 if self.result == 0 else 0


class InitInitialize(Message):
    """Service -> init: the configuration a distribution's init applies before its first session."""

    TYPE: ClassVar[int] = 5
    hostname: Str
    domainname: Str
    distribution_name: Str
    default_uid: U32  # the registry's default uid, before /etc/wsl.conf's [user] default
    feature_flags: U32  # LX_INIT_FEATURE_FLAGS-style bits
    timezone: Str  # IANA name, e.g. "Europe/Paris"
    dns_servers: Strs  # nameservers for a generated /etc/resolv.conf (empty: leave it alone)
    dns_search: Strs  # search domains for it


class InitInitializeResponse(Message):
    """Init -> service: what the distribution turned out to be."""

    TYPE: ClassVar[int] = 6
    result: I32  # 0 or an errno
    default_uid: U32  # after /etc/wsl.conf's [user] default
    systemd_enabled: Bool
    pid_namespace: U64  # inode of the distribution's pid namespace
    flavor: Str  # os-release ID
    version: Str  # os-release VERSION_ID
    warnings: Strs  # one line each, for the user


class InitCreateProcess(Message):
    """Service -> session leader: launch one program through a new relay.

    Descriptors, in order: ``control``, ``lifetime``, then ``console`` if any ``*_CONSOLE`` flag
    is set, then ``stdin``, ``stdout``, ``stderr`` for each stream with neither its
    ``*_CONSOLE`` nor its ``*_CLOSED`` flag set. A closed stream (the caller's was closed) is
    closed for the program too.
    :meth:`name_fds` names them; :meth:`order_fds` lays them out.
    """

    TYPE: ClassVar[int] = 8
    STDIN_CONSOLE: ClassVar[int] = 0x1
    STDOUT_CONSOLE: ClassVar[int] = 0x2
    STDERR_CONSOLE: ClassVar[int] = 0x4
    CONSOLE_FLAGS: ClassVar[int] = 0x7
    STDIN_CLOSED: ClassVar[int] = 0x8
    STDOUT_CLOSED: ClassVar[int] = 0x10
    STDERR_CLOSED: ClassVar[int] = 0x20
    SHELL_LOGIN: ClassVar[int] = 0x1  # run the user's shell as a login shell
    SHELL_NONE: ClassVar[int] = 0x2  # exec filename directly; no shell wraps the command line
    # lxss: leave the console open for a process that follows on it (the first-run command,
    # then the shell it precedes)
    KEEP_CONSOLE: ClassVar[int] = 0x4

    rows: U16  # initial terminal size, when a stream is a console
    columns: U16
    flags: U32  # *_CONSOLE and *_CLOSED bits (at most one of the two for each stream)
    shell_options: U32  # SHELL_* bits
    default_uid: U32  # used when username is None
    filename: Str  # the program; None means the user's shell
    cwd: Str  # None means the user's home directory
    username: Str  # None means default_uid
    command_line: Strs  # argv, argv[0] included
    environment: Strs  # "NAME=value" entries added to the distribution's defaults
    distribution_name: Str
    host_cwd: Str  # the client's directory on the host: the start directory when cwd is None

    def fd_count(self) -> int:
        return 2 + sum(needed for _, needed in self._roles())

    def _roles(self) -> list[tuple[str, bool]]:
        """The optional descriptor roles in wire order, each with whether the flags need it."""
        return [
            ("console", bool(self.flags & self.CONSOLE_FLAGS)),
            ("stdin", not self.flags & (self.STDIN_CONSOLE | self.STDIN_CLOSED)),
            ("stdout", not self.flags & (self.STDOUT_CONSOLE | self.STDOUT_CLOSED)),
            ("stderr", not self.flags & (self.STDERR_CONSOLE | self.STDERR_CLOSED)),
        ]

    def name_fds(self, fds: Sequence[int]) -> CreateProcessFds:
        """Name the descriptors received with this message, by role.

        Raises ``ProtocolError`` if their number is not :meth:`fd_count`. Ownership does not
        change: the caller still owns every descriptor in ``fds``.
        """
        if len(fds) != self.fd_count():
            raise message_error(type(self), None, f"{len(fds)} descriptors, not {self.fd_count()}")
        rest = iter(fds[2:])
        optional = {role: next(rest) if needed else None for role, needed in self._roles()}
        return CreateProcessFds(fds[0], fds[1], **optional)

    def order_fds(self, fds: CreateProcessFds) -> list[int]:
        """Lay out ``fds`` in wire order for this message's flags.

        Raises ``ValueError`` if a role the flags need is None or one they exclude is set, so a
        sender cannot ship a layout the receiver would misread.
        """
        ordered = [fds.control, fds.lifetime]
        for role, needed in self._roles():
            fd = getattr(fds, role)
            if needed != (fd is not None):
                state = "needs" if needed else "must not have"
                raise ValueError(f"InitCreateProcess with flags {self.flags:#x} {state} {role}")
            if fd is not None:
                ordered.append(fd)
        return ordered


class InitExitStatus(Message):
    """Relay -> client: the program ended. The client echoes it back as an acknowledgement."""

    TYPE: ClassVar[int] = 9
    exit_code: I32  # 0-255, or 128+N for death by signal N


class InitWindowSizeChanged(Message):
    """Client -> relay: the client's terminal was resized."""

    TYPE: ClassVar[int] = 10
    rows: U16
    columns: U16


class InitCreateProcessResponse(Message):
    """Relay or session leader -> client: whether the program started."""

    TYPE: ClassVar[int] = 11
    result: I32  # 0 or an errno
    pid: I32  # the program's pid in the distribution, when result is 0
    message: Str  # why it failed, for the user, e.g. "user 'bob' not found"


class InitTerminateInstance(Message):
    """Service -> init: stop the distribution. Replied to with ResultBool."""

    TYPE: ClassVar[int] = 14
    force: Bool  # kill what refuses to stop


class MiniInitLaunchInit(Message):
    """Service -> mini_init: start a distribution. Two descriptors: its init's channel and
    its stored tree, a detached mount (open_tree(2))."""

    TYPE: ClassVar[int] = 29
    FDS: ClassVar[int] = 2
    distribution_name: Str
    guid: Str  # the registry's GUID for the distribution
    root_path: Str  # its root filesystem, as mini_init sees it
    hostname: Str
    flags: U32
    default_uid: U32


class FailureStep(IntEnum):
    """Where starting a distribution failed (``MiniInitCreateInstanceResult.failure_step``)."""

    NONE = 0
    MOUNT = 1
    LAUNCH_INIT = 2
    CONFIG = 3


class MiniInitCreateInstanceResult(Message):
    """Mini_init -> service: the outcome of MiniInitLaunchInit."""

    TYPE: ClassVar[int] = 33
    result: I32  # 0 or an errno
    failure_step: U32  # a FailureStep
    pid: I32  # init's pid as mini_init sees it
    warnings: Strs  # one line each, for the user


class NetworkingMode(IntEnum):
    """`wsl2.networkingMode`: how the utility VM reaches the network, by WSL's
    LX_MINI_INIT_NETWORKING_MODE numbers. The one definition: the configuration parses
    `spelling`s onto it, the VM spec carries it, the guest messages send its number.

    `MIRRORED` is lxss's default (WSL's is `NAT`). WSL's mirrored mode copies the host's
    interfaces into the VM; lxss's namespace VM (version 1) goes one step further and keeps
    the host's own network namespace. A VM backend declares the modes it implements
    (`VmBackend.networking_modes`); any other falls back with a warning the user sees
    (lxss.vm.netmodes).
    """

    NONE = 0  # loopback only
    NAT = 1  # a private network behind the host
    BRIDGED = 2  # a bridge onto the host's network
    MIRRORED = 3  # the host's network itself
    VIRTIO_PROXY = 4  # user-mode networking through the VMM
    CONSOMME = 5  # WSL's user-mode network stack (a .wslconfig value; lxss's number)

    @property
    def spelling(self) -> str:
        """The name .wslconfig and .lxssconfig use ("None", "Nat", "VirtioProxy")."""
        return _NETWORKING_SPELLINGS[self]

    @property
    def shares_host_network(self) -> bool:
        """The VM's processes use the host's own network (no network namespace of theirs)."""
        return self is NetworkingMode.MIRRORED

    @classmethod
    def from_spelling(cls, text: str) -> "NetworkingMode":
        """The mode spelled *text* (case-insensitive, as WSL reads it); ValueError else."""
        for mode, spelling in _NETWORKING_SPELLINGS.items():
            if spelling.lower() == text.lower():
                return mode
        raise ValueError(f"not a networking mode: {text!r}")


_NETWORKING_SPELLINGS: Final = {
    NetworkingMode.NONE: "None",
    NetworkingMode.NAT: "Nat",
    NetworkingMode.BRIDGED: "Bridged",
    NetworkingMode.MIRRORED: "Mirrored",
    NetworkingMode.VIRTIO_PROXY: "VirtioProxy",
    NetworkingMode.CONSOMME: "Consomme",
}


class MiniInitEarlyConfig(Message):
    """Service -> mini_init: settings needed before anything else starts (gns starts
    here, so the networking mode comes here too: lxss's own field)."""

    TYPE: ClassVar[int] = 36
    hostname: Str
    memory_bytes: U64  # memory the utility VM may use
    processors: U32
    flags: U32
    networking_mode: U32  # a NetworkingMode


class MiniInitInitialConfig(Message):
    """Service -> mini_init: configuration sent once the guest is up."""

    TYPE: ClassVar[int] = 37
    networking_mode: U32  # a NetworkingMode
    entropy: Bytes  # random bytes to seed the guest's pool


class GnsInterfaceConfiguration(Message):
    """Service -> gns (through mini_init's channel): configure one interface of the VM.

    WSL sends an HNS endpoint as JSON; lxss's JSON has what lxss's NAT network needs:
    ``{"interface": "eth0", "addresses": ["172.16.5.2/24"], "gateway": "172.16.5.1",
    "mtu": 1500}``. Answered with GnsResult.
    """

    TYPE: ClassVar[int] = 53
    configuration: Str  # JSON


class GnsResult(Message):
    """Gns -> service: 0, or the errno of the step that failed and what it was."""

    TYPE: ClassVar[int] = 54
    result: I32
    error: Str  # "eth0: adding 172.16.5.2/24: Operation not permitted"


class MiniInitGuestCapabilities(Message):
    """Mini_init -> service: the first message on a new utility VM channel."""

    TYPE: ClassVar[int] = 43
    kernel_version: Str  # uname -r
    pid: I32  # mini_init's pid as the host sees it


class MiniInitChildExit(Message):
    """Mini_init -> service: a distribution's init exited."""

    TYPE: ClassVar[int] = 45
    child_pid: I32
    status: I32  # the raw wait(2) status


class ResultBool(Message):
    """Generic reply carrying one bool."""

    TYPE: ClassVar[int] = 76
    value: Bool


class ResultInt32(Message):
    """Generic reply carrying one signed 32-bit integer."""

    TYPE: ClassVar[int] = 77
    value: I32


class ResultUint32(Message):
    """Generic reply carrying one unsigned 32-bit integer."""

    TYPE: ClassVar[int] = 78
    value: U32


class ResultUint8(Message):
    """Generic reply carrying one byte."""

    TYPE: ClassVar[int] = 79
    value: U8


class InitSignal(Message):
    """Client -> relay (lxss addition): deliver a signal to the program's process group."""

    TYPE: ClassVar[int] = 120
    signal: I32


class MiniInitMapIdentity(Message):
    """A distribution being started -> service (lxss addition): the uid and gid of its
    default user, from the registry, /etc/wsl.conf and its /etc/passwd. Answered with
    MiniInitMapIdentityResponse; sent once, before CreateInstanceResult."""

    TYPE: ClassVar[int] = 121
    uid: U32
    gid: U32


class MiniInitMapIdentityResponse(Message):
    """Service -> a distribution being started: its root file system, a detached mount
    id-mapped so that *uid* and *gid* are the owner (one descriptor when result is 0)."""

    TYPE: ClassVar[int] = 122
    result: I32  # 0 or an errno
    mapped: Bool  # False: the stored tree already is the mapping (no descriptor)
    reason: Str  # why not, for the user

    def fd_count(self) -> int:
        return 1 if self.result == 0 and self.mapped else 0


class InitQueryDistributionConf(Message):
    """Service -> init (lxss addition): read /etc/wsl-distribution.conf's first-run keys.

    WSL's init reads them in the process it launches with LxInitCreateProcessFlagAllowOOBE;
    lxss's service runs the first-run command itself, so it asks init before and after.
    """

    TYPE: ClassVar[int] = 123


class InitDistributionConf(Message):
    """Init -> service: `[oobe] command` and `defaultUid` of /etc/wsl-distribution.conf."""

    TYPE: ClassVar[int] = 124
    oobe_command: Str  # None: no first-run command
    oobe_default_uid: I64  # -1: not set
    warnings: Strs  # the file's problems, one line each, for the user


# --- interop: running host programs from a distribution ---------------------------------------


class InteropCreateHostProcess(Message):
    """lxss-host-exec (inside) -> the session's interop server (the `lxss` client, or
    lxss-host after it): run a host program as the owner (WSL's LX_INIT_CREATE_NT_PROCESS).

    Descriptors: the caller's stdin, stdout and stderr, in that order, each one unless its
    *_CLOSED flag is set; the host program gets them as they are (pipe, file or terminal).
    Answered with InitCreateProcessResponse, then InitExitStatus when the program ends; the
    caller may send InitSignal meanwhile. Written by lxss/guest/native/lxss-guest.c too.
    """

    TYPE: ClassVar[int] = 1
    STDIN_CLOSED: ClassVar[int] = 0x8  # the same bits as InitCreateProcess's
    STDOUT_CLOSED: ClassVar[int] = 0x10
    STDERR_CLOSED: ClassVar[int] = 0x20
    STREAMS: ClassVar[tuple[int, int, int]] = (0x8, 0x10, 0x20)

    flags: U32  # *_CLOSED bits
    cwd: Str  # the caller's directory in the distribution; None: the owner's home
    command_line: Strs  # argv, argv[0] being the program to find on the owner's PATH
    environment: Strs  # LXSSENV and the variables it names, "NAME=value"

    def fd_count(self) -> int:
        return sum(1 for bit in self.STREAMS if not self.flags & bit)


class InitInteropConnection(Message):
    """Relay -> client (lxss addition), on the control channel: a program of the session
    connected to its interop socket. One descriptor: that connection, which the client (or
    lxss-host after it) serves from then on."""

    TYPE: ClassVar[int] = 125
    FDS: ClassVar[int] = 1
    host_mount: Str  # where the host's root is in the distribution; None: not mounted
    distribution_name: Str


class InitClientGone(Message):
    """lxss-host -> relay (lxss addition), on the control channel: the `lxss` client has
    exited and lxss-host serves the channel now. The relay hangs the terminal up, as if the
    client had closed the channel, but keeps the channel for interop."""

    TYPE: ClassVar[int] = 126
