"""The guest protocol's message catalogue and codec (lxss.protocol.messages, .codec)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lxss.protocol import codec
from lxss.protocol.framing import HEADER_SIZE, MAX_MESSAGE_SIZE, MessageHeader, pack_header
from lxss.protocol.messages import (
    CATALOGUE,
    CreateProcessFds,
    FailureStep,
    FrozenInstanceError,
    GnsInterfaceConfiguration,
    GnsResult,
    InitClientGone,
    InitCreateProcess,
    InitCreateProcessResponse,
    InitCreateSession,
    InitCreateSessionResponse,
    InitDistributionConf,
    InitExitStatus,
    InitInitialize,
    InitInitializeResponse,
    InitInteropConnection,
    InitQueryDistributionConf,
    InitSignal,
    InitTerminateInstance,
    InitWindowSizeChanged,
    InteropCreateHostProcess,
    Message,
    MiniInitChildExit,
    MiniInitCreateInstanceResult,
    MiniInitEarlyConfig,
    MiniInitGuestCapabilities,
    MiniInitInitialConfig,
    MiniInitLaunchInit,
    MiniInitMapIdentity,
    MiniInitMapIdentityResponse,
    NetworkingMode,
    ProtocolError,
    ResultBool,
    ResultInt32,
    ResultUint8,
    ResultUint32,
    decode,
    encode,
    type_name,
)

CREATE_PROCESS = InitCreateProcess(
    rows=24,
    columns=80,
    flags=InitCreateProcess.STDIN_CONSOLE | InitCreateProcess.STDOUT_CONSOLE,
    shell_options=InitCreateProcess.SHELL_LOGIN,
    default_uid=1000,
    filename="/usr/bin/make",
    cwd=None,
    username="",
    command_line=("make", "-C", "/srv/ünïcode", ""),
    environment=(),
    distribution_name="debian",
    host_cwd="/home/me/src",
)

SAMPLES: list[Message] = [
    InitCreateSession(console_id=-(2**63)),
    InitCreateSessionResponse(result=0),
    InitCreateSessionResponse(result=22),
    InitInitialize("host", None, "debian", 1000, 0x21, "Europe/Paris", ("127.0.0.53",), ()),
    InitQueryDistributionConf(),
    InitDistributionConf("/usr/lib/lxss/first-run", -1, ("line 3: unknown key",)),
    InitInitializeResponse(0, 1000, True, 2**64 - 1, "debian", "12", ("no systemd", "")),
    CREATE_PROCESS,
    InitExitStatus(exit_code=-1),
    InitWindowSizeChanged(rows=0xFFFF, columns=0),
    InitCreateProcessResponse(result=67, pid=0, message="user 'bob' not found"),
    InitTerminateInstance(force=False),
    MiniInitLaunchInit("debian", "{0c5d}", "/var/lib/lxss/0/x/rootfs", "host", 1, 0),
    MiniInitCreateInstanceResult(5, FailureStep.LAUNCH_INIT, -1, ("disk full",)),
    MiniInitEarlyConfig(
        hostname="vm",
        memory_bytes=8 << 30,
        processors=4,
        flags=0,
        networking_mode=NetworkingMode.NONE,
    ),
    MiniInitInitialConfig(networking_mode=NetworkingMode.NAT, entropy=bytes(range(256)) * 16),
    MiniInitGuestCapabilities(kernel_version="6.1.0-13-amd64", pid=2**31 - 1),
    GnsInterfaceConfiguration(configuration='{"interface": "eth0", "mtu": 1500}'),
    GnsResult(result=1, error="eth0: adding 172.16.5.2/24: Operation not permitted"),
    MiniInitChildExit(child_pid=42, status=0x0900),
    ResultBool(value=True),
    ResultInt32(value=-(2**31)),
    ResultUint32(value=2**32 - 1),
    ResultUint8(value=255),
    InitSignal(signal=2),
    MiniInitMapIdentity(uid=1000, gid=1000),
    MiniInitMapIdentityResponse(result=0, mapped=True, reason=""),
    InteropCreateHostProcess(0x10, "/mnt/host/tmp", ("cat", "-"), ("LXSSENV=A/p", "A=/x")),
    InitInteropConnection(host_mount="/mnt/host", distribution_name="debian"),
    InitClientGone(),
]


def test_catalogue_keeps_wsl_numbers() -> None:
    numbers = {cls.__name__: number for number, cls in CATALOGUE.items()}
    assert numbers == {
        "InitCreateSession": 2,
        "InitCreateSessionResponse": 3,
        "InitInitialize": 5,
        "InitInitializeResponse": 6,
        "InitCreateProcess": 8,
        "InitExitStatus": 9,
        "InitWindowSizeChanged": 10,
        "InitCreateProcessResponse": 11,
        "InitTerminateInstance": 14,
        "MiniInitLaunchInit": 29,
        "MiniInitCreateInstanceResult": 33,
        "MiniInitEarlyConfig": 36,
        "MiniInitInitialConfig": 37,
        "MiniInitGuestCapabilities": 43,
        "GnsInterfaceConfiguration": 53,
        "GnsResult": 54,
        "MiniInitChildExit": 45,
        "ResultBool": 76,
        "ResultInt32": 77,
        "ResultUint32": 78,
        "ResultUint8": 79,
        "InitSignal": 120,
        "MiniInitMapIdentity": 121,
        "MiniInitMapIdentityResponse": 122,
        "InitQueryDistributionConf": 123,
        "InitDistributionConf": 124,
        "InteropCreateHostProcess": 1,
        "InitInteropConnection": 125,
        "InitClientGone": 126,
    }
    assert {mode.name: int(mode) for mode in NetworkingMode} == {
        "NONE": 0,
        "NAT": 1,
        "BRIDGED": 2,
        "MIRRORED": 3,
        "VIRTIO_PROXY": 4,
        "CONSOMME": 5,  # lxss's own number: WSL has Consomme in .wslconfig only
    }
    assert {step.name: int(step) for step in FailureStep} == {
        "NONE": 0,
        "MOUNT": 1,
        "LAUNCH_INIT": 2,
        "CONFIG": 3,
    }
    assert type_name(8) == "InitCreateProcess" and type_name(1000) == "type 1000"


def test_samples_cover_the_catalogue() -> None:
    assert {type(sample) for sample in SAMPLES} == set(CATALOGUE.values())


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    data = encode(message, transaction_id=7, step=2)
    header, decoded = decode(data, message.fd_count())
    assert header == MessageHeader(message.TYPE, len(data), 7, 2)
    assert decoded == message and type(decoded) is type(message)


def test_fixed_part_is_packed_little_endian_without_padding() -> None:
    assert encode(InitWindowSizeChanged(24, 80), 3) == pack_header(10, 20, 3) + b"\x18\x00\x50\x00"
    body = encode(InitInitializeResponse(1, 2, True, 3, None, None, ()))[HEADER_SIZE:]
    # i32, u32, bool (one byte), u64 right after it, then four u32 offset/count words.
    assert body == struct.pack("<iIBQIIII", 1, 2, 1, 3, 0, 0, 0, 0)


def test_strings_live_in_a_heap_addressed_from_the_message_start() -> None:
    data = encode(InitCreateProcessResponse(result=2, pid=0, message="no such file"))
    fixed_end = HEADER_SIZE + 12
    assert struct.unpack_from("<iiI", data, HEADER_SIZE) == (2, 0, fixed_end)
    assert data[fixed_end:] == b"no such file\x00"


def test_none_empty_string_and_empty_lists_are_distinct() -> None:
    data = encode(CREATE_PROCESS)
    words = struct.unpack_from("<HHIIIIIIIIIII", data, HEADER_SIZE)
    filename, cwd, username, argv, argc, env, envc = words[5:12]
    assert cwd == 0  # None
    assert data[username] == 0  # "": an offset to a lone NUL
    assert argc == 4 and data[argv:].startswith(b"make\x00-C\x00/srv/\xc3\xbcn\xc3\xafcode\x00\x00")
    assert (env, envc) == (0, 0)
    assert data[filename:].startswith(b"/usr/bin/make\x00")


def test_bytes_are_offset_and_size() -> None:
    data = encode(MiniInitInitialConfig(1, b"\x00\xff\x00"))
    assert struct.unpack_from("<III", data, HEADER_SIZE) == (1, HEADER_SIZE + 12, 3)
    assert data[HEADER_SIZE + 12 :] == b"\x00\xff\x00"
    assert encode(MiniInitInitialConfig(1, b""))[HEADER_SIZE:] == struct.pack("<III", 1, 0, 0)


# --- descriptors ---------------------------------------------------------------------------


def test_fixed_descriptor_counts() -> None:
    assert MiniInitLaunchInit("d", None, None, None, 0, 0).fd_count() == 2
    assert InitCreateSessionResponse(0).fd_count() == 1
    assert InitCreateSessionResponse(-5).fd_count() == 0
    assert InitExitStatus(0).fd_count() == 0


@pytest.mark.parametrize("flags", range(8))
def test_create_process_descriptor_layout(flags: int) -> None:
    message = _create_process(flags)
    console = flags != 0
    streams = [
        name for bit, name in ((1, "stdin"), (2, "stdout"), (4, "stderr")) if not flags & bit
    ]
    assert message.fd_count() == 2 + console + len(streams)

    fds = list(range(100, 100 + message.fd_count()))
    named = message.name_fds(fds)
    expected = {"control": 100, "lifetime": 101}
    if console:
        expected["console"] = 102
    for index, name in enumerate(streams):
        expected[name] = 102 + console + index
    assert named == CreateProcessFds(**expected)
    assert message.order_fds(named) == fds


def test_create_process_descriptor_helpers_reject_mismatches() -> None:
    message = _create_process(InitCreateProcess.STDIN_CONSOLE)  # console, stdout, stderr
    with pytest.raises(ProtocolError, match=r"InitCreateProcess \(type 8\): 3 descriptors, not 5"):
        message.name_fds([1, 2, 3])
    with pytest.raises(ValueError, match="needs stdout"):
        message.order_fds(CreateProcessFds(1, 2, console=3, stderr=5))
    with pytest.raises(ValueError, match="must not have stdin"):
        message.order_fds(CreateProcessFds(1, 2, 3, stdin=4, stdout=5, stderr=6))


def test_descriptor_count_is_checked_on_decode() -> None:
    data = encode(_create_process(0))
    with pytest.raises(ProtocolError, match="arrived with 4 descriptors; it carries 5") as caught:
        decode(data, 4)
    assert caught.value.message_type == 8
    with pytest.raises(ProtocolError, match="InitCreateSessionResponse"):
        decode(encode(InitCreateSessionResponse(0)), 0)
    with pytest.raises(ProtocolError, match="arrived with 1 descriptors; it carries 0"):
        decode(encode(InitCreateSessionResponse(1)), 1)


def _create_process(flags: int) -> InitCreateProcess:
    return InitCreateProcess(0, 0, flags, 0, 0, None, None, None, (), (), None, None)


# --- malformed input -----------------------------------------------------------------------


def _patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    patched = bytearray(data)
    struct.pack_into(fmt, patched, offset, *values)
    return bytes(patched)


def _resized(data: bytes) -> bytes:
    return _patch(data, 4, "<I", len(data))


RESPONSE = encode(InitCreateProcessResponse(1, 2, "why"))  # message: offset at 24, heap at 28
RESULT = encode(MiniInitCreateInstanceResult(0, 0, 1, ("a", "bc")))  # warnings at 28, count at 32
CONFIG = encode(MiniInitInitialConfig(1, b"xyz"))  # entropy offset at 20, size at 24

MALFORMED = {
    "unknown type": (pack_header(200, 16), 200, None),
    "type zero": (pack_header(0, 16), 0, None),
    "size below header": (_patch(RESPONSE, 4, "<I", 8), 11, None),
    "size above maximum": (_patch(RESPONSE, 4, "<I", MAX_MESSAGE_SIZE + 1), 11, None),
    "size disagrees with length": (RESPONSE + b"\x00", 11, None),
    "truncated header": (RESPONSE[:10], None, None),
    "body shorter than fixed part": (_resized(RESPONSE[: HEADER_SIZE + 8]), 11, None),
    "bool not 0 or 1": (_patch(encode(ResultBool(True)), HEADER_SIZE, "<B", 2), 76, "value"),
    "string offset past the end": (_patch(RESPONSE, 24, "<I", len(RESPONSE)), 11, "message"),
    "string offset into the fixed part": (_patch(RESPONSE, 24, "<I", 20), 11, "message"),
    "string offset into the header": (_patch(RESPONSE, 24, "<I", 4), 11, "message"),
    "string without NUL": (_resized(RESPONSE[:-1]), 11, "message"),
    "strs count past the end": (_patch(RESULT, 32, "<I", 3), 33, "warnings"),
    "strs count huge": (_patch(RESULT, 32, "<I", 2**32 - 1), 33, "warnings"),
    "strs last string unterminated": (_resized(RESULT[:-1]), 33, "warnings"),
    "strs offset outside": (_patch(RESULT, 28, "<I", 2**31), 33, "warnings"),
    "strs empty with an offset": (_patch(RESULT, 28, "<II", 36, 0), 33, "warnings"),
    "bytes size past the end": (_patch(CONFIG, 24, "<I", 4), 37, "entropy"),
    "bytes offset outside": (_patch(CONFIG, 20, "<I", 1000), 37, "entropy"),
    "bytes empty with an offset": (_patch(CONFIG, 20, "<II", 28, 0), 37, "entropy"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_input_raises_protocol_error_naming_message_and_field(case: str) -> None:
    data, message_type, field = MALFORMED[case]
    with pytest.raises(ProtocolError) as caught:
        decode(data)
    error = caught.value
    assert (error.message_type, error.field) == (message_type, field)
    if message_type in CATALOGUE:
        assert CATALOGUE[message_type].__name__ in str(error)
    if field is not None:
        assert repr(field) in str(error)


@given(st.binary(max_size=512), st.integers(0, 8))
def test_decode_of_arbitrary_bytes_returns_a_message_or_raises_protocol_error(
    data: bytes, fd_count: int
) -> None:
    try:
        header, message = decode(data, fd_count)
    except ProtocolError:
        return
    assert header.type == message.TYPE and header.size == len(data)


@given(
    st.sampled_from(sorted(CATALOGUE)),
    st.binary(max_size=200),
    st.integers(0, 2**32 - 1),
    st.integers(0, 8),
)
def test_decode_of_arbitrary_bodies_returns_a_message_or_raises_protocol_error(
    message_type: int, body: bytes, step: int, fd_count: int
) -> None:
    # A well-formed header for a known type reaches the field readers, not just the header check.
    data = pack_header(message_type, HEADER_SIZE + len(body), 1, step) + body
    try:
        _, message = decode(data, fd_count)
    except ProtocolError:
        return
    assert decode(encode(message), fd_count)[1] == message


# Any bytes but NUL, as the os module decodes them (surrogate escapes for what is not UTF-8).
_text = st.binary().filter(lambda b: b"\0" not in b).map(os.fsdecode)
_VALUES: dict[str, st.SearchStrategy[object]] = {
    "str": st.none() | _text,
    "strs": st.lists(_text, max_size=5).map(tuple),
    "bytes": st.binary(max_size=64),
    "bool": st.booleans(),
}


def _messages() -> st.SearchStrategy[Message]:
    def build(cls: type[Message]) -> st.SearchStrategy[Message]:
        fields = {
            name: _VALUES[kind.name] if kind.name in _VALUES else st.integers(kind.low, kind.high)
            for name, kind in cls._layout.fields
        }
        return st.fixed_dictionaries(fields).map(lambda values: cls(**values))

    return st.one_of([build(cls) for cls in CATALOGUE.values()])


@given(_messages(), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_round_trip_of_generated_messages(message: Message, transaction_id: int, step: int) -> None:
    header, decoded = decode(encode(message, transaction_id, step), message.fd_count())
    assert decoded == message
    assert (header.transaction_id, header.step) == (transaction_id, step)


# --- encoding errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"\xff", b"\xe9t\xe9", b"\xed\xa0\x80", b"\xc0\xaf", "été".encode(), b"a\x80b"]
)
def test_strings_carry_any_bytes_but_nul(raw: bytes) -> None:
    """Linux allows any bytes but NUL in paths, arguments and values: the heap carries them
    exactly, decoded as the os module decodes file names."""
    message = InitCreateProcessResponse(1, 0, os.fsdecode(raw))
    data = encode(message)
    assert raw + b"\0" in data
    decoded = decode(data)[1]
    assert isinstance(decoded, InitCreateProcessResponse) and decoded == message
    assert os.fsencode(decoded.message or "") == raw


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (InitWindowSizeChanged(rows=70000, columns=1), "'rows': 70000 is outside u16 .0..65535."),
        (ResultUint32(value=-1), "'value': -1 is outside u32"),
        (ResultBool(value=2), "'value': 2 is outside bool .0..1."),  # type: ignore[arg-type]
        (InitExitStatus(exit_code="0"), "'exit_code': i32 needs an int, got str"),  # type: ignore[arg-type]
        (InitSignal(signal=2**31), "'signal': 2147483648 is outside i32"),
        (InitCreateProcessResponse(1, 0, "a\0b"), "'message': 'a\\\\x00b' contains a NUL"),
        (InitCreateProcessResponse(1, 0, "\ud800"), "'message': .* cannot be sent as bytes"),
        (MiniInitCreateInstanceResult(0, 0, 0, "ab"), "'warnings': strs needs a sequence"),  # type: ignore[arg-type]
        (MiniInitCreateInstanceResult(0, 0, 0, (b"x",)), "'warnings': str needed"),  # type: ignore[arg-type]
        (MiniInitInitialConfig(0, "xyz"), "'entropy': bytes needed"),  # type: ignore[arg-type]
    ],
)
def test_encode_rejects_values_that_do_not_fit(message: Message, match: str) -> None:
    with pytest.raises(ValueError, match=f"{type(message).__name__} field {match}"):
        encode(message)


def test_encode_rejects_oversized_messages_and_bad_header_words() -> None:
    with pytest.raises(ValueError, match="the limit is 16777216"):
        encode(MiniInitInitialConfig(0, bytes(MAX_MESSAGE_SIZE)))
    with pytest.raises(ValueError, match="unsigned 32-bit"):
        encode(ResultBool(True), transaction_id=-1)


# --- message classes -----------------------------------------------------------------------


def test_messages_are_frozen_values() -> None:
    message = InitWindowSizeChanged(24, 80)
    with pytest.raises(FrozenInstanceError):
        message.rows = 25  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del message.rows
    assert message == InitWindowSizeChanged(rows=24, columns=80)
    assert message != InitWindowSizeChanged(24, 81)
    assert message != InitExitStatus(24)
    assert len({message, InitWindowSizeChanged(24, 80)}) == 1
    assert repr(message) == "InitWindowSizeChanged(rows=24, columns=80)"
    match message:
        case InitWindowSizeChanged(rows, columns):
            assert (rows, columns) == (24, 80)
        case _:
            pytest.fail("positional match")


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((1, 2, 3), {}, "takes 2 fields, got 3"),
        ((1,), {}, "missing field 'columns'"),
        ((1,), {"rows": 2}, "unexpected or repeated field 'rows'"),
        ((), {"rows": 1, "columns": 2, "depth": 3}, "unexpected or repeated field 'depth'"),
    ],
)
def test_constructor_checks_fields(
    args: tuple[int, ...], kwargs: dict[str, int], match: str
) -> None:
    with pytest.raises(TypeError, match=match):
        InitWindowSizeChanged(*args, **kwargs)


def test_class_definitions_are_checked() -> None:
    before = dict(CATALOGUE)
    with pytest.raises(TypeError, match="type 9 is both InitExitStatus"):

        class Clash(Message):
            TYPE: ClassVar[int] = 9

    with pytest.raises(TypeError, match="annotate fields"):

        class Untyped(Message):
            TYPE: ClassVar[int] = 1000
            value: int

    with pytest.raises(TypeError, match="take no default"):

        class Defaulted(Message):
            TYPE: ClassVar[int] = 1001
            value: codec.U8 = 0

    assert before == CATALOGUE


def test_importing_the_protocol_stays_light() -> None:
    # Guest roles import it after pivot_root and the client on every command: only the
    # standard library, and none of its heavier modules.
    src = Path(codec.__file__).resolve().parents[2]
    script = (
        f"import sys; sys.path.insert(0, {str(src)!r}); import lxss.protocol.channel; "
        "print(sorted({'asyncio', 'dataclasses', 'logging', 'inspect'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_closed_streams_carry_no_descriptor() -> None:
    """A stream the caller closed is neither passed nor served by the console."""
    flags = InitCreateProcess.STDIN_CLOSED | InitCreateProcess.STDERR_CONSOLE
    message = InitCreateProcess(
        rows=24, columns=80, flags=flags,
        shell_options=0, default_uid=0, filename=None, cwd=None, username=None, command_line=(),
        environment=(), distribution_name="d", host_cwd=None,
    )  # fmt: skip
    fds = CreateProcessFds(control=3, lifetime=4, console=5, stdin=None, stdout=6, stderr=None)
    assert message.order_fds(fds) == [3, 4, 5, 6]
    assert message.name_fds([3, 4, 5, 6]) == fds
    with pytest.raises(ValueError, match="must not have stdin"):
        message.order_fds(CreateProcessFds(3, 4, console=5, stdin=7, stdout=6, stderr=None))
