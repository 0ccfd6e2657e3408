"""The guest protocol's wire format: how a message class becomes bytes and back.

WSL counterpart: ``MessageWriter`` (``src/shared/inc/message.h``) and the bounds-checked readers
of ``lxinitshared.h``. The message classes themselves are in :mod:`lxss.protocol.messages`,
which is what callers import; it re-exports :func:`encode` and :func:`decode`.

Wire layout, after the 16-byte header: the fixed part, every field packed little-endian in
declaration order with no padding, then a heap. A ``str`` field is a u32 offset, counted from the
first byte of the message, of a NUL-terminated string in the heap (0 means ``None``);
``strs`` is a u32 offset and a u32 count of consecutive NUL-terminated strings; ``bytes`` is a
u32 offset and a u32 size. An empty ``strs`` or ``bytes`` is offset 0, count 0. A ``bool`` is one
byte, 0 or 1.

Strings are bytes, any but NUL, since what they carry (paths, arguments, environment values,
user names) is bytes to Linux. In Python they are ``str`` decoded as the os module decodes
file names: UTF-8 with ``surrogateescape`` (PEP 383), so each byte that is not part of valid
UTF-8 is the code point U+DC00 + byte, and encoding gives the same bytes back. A ``str`` with
any other surrogate cannot be sent.

:func:`decode` trusts nothing: anything malformed raises
:class:`~lxss.protocol.framing.ProtocolError` naming the message and the field. It is stricter
than WSL's readers in two ways, so that every offset a message holds is checked: an offset must
point into the heap (not the header or fixed part), and an empty list or blob has offset 0.
"""

import struct
from collections.abc import Iterator, Sequence
from typing import (
    Annotated,
    ClassVar,
    Final,
    NamedTuple,
    dataclass_transform,
    get_args,
    get_origin,
    get_type_hints,
)

from lxss.protocol.framing import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    MessageHeader,
    ProtocolError,
    pack_header,
    unpack_header,
)


class Kind(NamedTuple):
    """How one field travels: its struct format in the fixed part and, for ints, its range."""

    name: str
    format: str
    low: int = 0
    high: int = 0


U8_KIND: Final = Kind("u8", "B", 0, 0xFF)
U16_KIND: Final = Kind("u16", "H", 0, 0xFFFF)
U32_KIND: Final = Kind("u32", "I", 0, 0xFFFF_FFFF)
I32_KIND: Final = Kind("i32", "i", -(2**31), 2**31 - 1)
U64_KIND: Final = Kind("u64", "Q", 0, 2**64 - 1)
I64_KIND: Final = Kind("i64", "q", -(2**63), 2**63 - 1)
BOOL_KIND: Final = Kind("bool", "B", 0, 1)  # not "?": the wire must say exactly 0 or 1
STR_KIND: Final = Kind("str", "I")
STRS_KIND: Final = Kind("strs", "II")
BYTES_KIND: Final = Kind("bytes", "II")
_INT_KINDS: Final = (U8_KIND, U16_KIND, U32_KIND, I32_KIND, U64_KIND, I64_KIND)

U8 = Annotated[int, U8_KIND]
U16 = Annotated[int, U16_KIND]
U32 = Annotated[int, U32_KIND]
I32 = Annotated[int, I32_KIND]
U64 = Annotated[int, U64_KIND]
I64 = Annotated[int, I64_KIND]
Bool = Annotated[bool, BOOL_KIND]
Str = Annotated[str | None, STR_KIND]
Strs = Annotated[tuple[str, ...], STRS_KIND]
Bytes = Annotated[bytes, BYTES_KIND]


class Layout(NamedTuple):
    """A message class's wire layout, computed once when the class is defined."""

    fields: tuple[tuple[str, Kind], ...]
    fixed: struct.Struct  # the fixed part, without the header


class FrozenInstanceError(AttributeError):
    """Raised on an attempt to change a field of a message."""


CATALOGUE: Final[dict[int, "type[Message]"]] = {}
TYPE_NAMES: Final[dict[int, str]] = {}  # for errors raised below the catalogue (framing)


def _layout_of(cls: "type[Message]") -> Layout:
    """Read a message class's fields, in order, from its annotations (and its bases')."""
    inherited = getattr(super(cls, cls), "_layout", None)
    layout = list(inherited.fields) if inherited is not None else []
    own = vars(cls).get("__annotations__", {})
    if any(isinstance(hint, str) for hint in own.values()):
        # Postponed annotations (PEP 563) in the defining module: evaluate them there.
        hints = get_type_hints(cls, include_extras=True)
        own = {name: hints[name] for name in own}
    for name, hint in own.items():
        if hint is ClassVar or get_origin(hint) is ClassVar:
            continue
        kinds = [arg for arg in get_args(hint) if isinstance(arg, Kind)]
        if get_origin(hint) is not Annotated or len(kinds) != 1:
            raise TypeError(f"{cls.__name__}.{name}: annotate fields with U32, Str, ...")
        if name in vars(cls):
            raise TypeError(f"{cls.__name__}.{name}: message fields take no default")
        layout.append((name, kinds[0]))
    fixed = struct.Struct("<" + "".join(kind.format for _, kind in layout))
    return Layout(tuple(layout), fixed)


def _register(cls: "type[Message]") -> None:
    if cls.TYPE in CATALOGUE:
        raise TypeError(f"type {cls.TYPE} is both {CATALOGUE[cls.TYPE].__name__} and {cls}")
    CATALOGUE[cls.TYPE] = cls
    TYPE_NAMES[cls.TYPE] = cls.__name__


# Messages behave as frozen dataclasses (type checkers are told so by dataclass_transform), but
# their methods are generic rather than generated: the `dataclasses` module and the code it
# compiles per class would cost an `lxss` command tens of milliseconds at start-up.
@dataclass_transform(eq_default=True, frozen_default=True)
class Message:
    """Base of every message: an immutable value with typed fields.

    A subclass sets ``TYPE`` and annotates its fields with the kinds above (``U32``, ``Str``...);
    defining it lays out its wire format and adds it to :data:`CATALOGUE`. Instances compare
    by type and field values, hash, and support ``match`` by position.

    ``FDS`` is the number of descriptors that travel with the message; classes whose count
    depends on their fields override :meth:`fd_count` instead.
    """

    TYPE: ClassVar[int]
    FDS: ClassVar[int] = 0
    __match_args__: ClassVar[tuple[str, ...]] = ()
    _layout: ClassVar[Layout]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._layout = _layout_of(cls)
        # mypy sees __match_args__ as read-only; this is where it is made, once per class.
        cls.__match_args__ = tuple(name for name, _ in cls._layout.fields)  # type: ignore[misc]
        _register(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        names = self.__match_args__
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes {len(names)} fields, got {len(args)}")
        values = dict(zip(names, args, strict=False))
        for name, value in kwargs.items():
            if name not in names or name in values:
                raise TypeError(f"{type(self).__name__}: unexpected or repeated field {name!r}")
            values[name] = value
        for name in names:
            if name not in values:
                raise TypeError(f"{type(self).__name__}: missing field {name!r}")
            object.__setattr__(self, name, values[name])

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__match_args__)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r} of a message")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r} of a message")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{type(self).__name__}({fields})"

    def fd_count(self) -> int:
        """How many descriptors must travel with this message, in the order its docs give."""
        return self.FDS


def message_error(cls: type[Message], field: str | None, text: str) -> ProtocolError:
    """A ProtocolError that names the message, its type number and, if known, the field."""
    where = f"{cls.__name__} (type {cls.TYPE})"
    if field is not None:
        where += f" field {field!r}"
    return ProtocolError(f"{where}: {text}", message_type=cls.TYPE, field=field)


def type_name(message_type: int) -> str:
    """A message type's class name, or ``type N`` for a number not in the catalogue."""
    return TYPE_NAMES.get(message_type, f"type {message_type}")


# --- encoding ---------------------------------------------------------------------------------


def encode(message: Message, transaction_id: int = 0, step: int = 0) -> bytes:
    """Serialise ``message`` with the given header words.

    Raises ``ValueError`` naming the field if a value does not fit its kind (out of range, a
    string with a NUL or that is not valid UTF-8), or if the message exceeds the maximum size.
    """
    cls = type(message)
    layout = cls._layout
    heap = bytearray()
    heap_start = HEADER_SIZE + layout.fixed.size
    words: list[int] = []
    for name, kind in layout.fields:
        value = getattr(message, name)
        try:
            words.extend(_encode_field(kind, value, heap, heap_start))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{cls.__name__} field {name!r}: {error}") from None
    size = heap_start + len(heap)
    if size > MAX_MESSAGE_SIZE:
        raise ValueError(f"{cls.__name__} is {size} bytes; the limit is {MAX_MESSAGE_SIZE}")
    return pack_header(cls.TYPE, size, transaction_id, step) + layout.fixed.pack(*words) + heap


def _encode_field(kind: Kind, value: object, heap: bytearray, heap_start: int) -> list[int]:
    """Return the fixed-part words for one field, appending its heap data to ``heap``."""
    if kind in _INT_KINDS or kind is BOOL_KIND:
        if not isinstance(value, int):
            raise TypeError(f"{kind.name} needs an int, got {type(value).__name__}")
        if not kind.low <= value <= kind.high:
            raise ValueError(f"{value} is outside {kind.name} ({kind.low}..{kind.high})")
        return [int(value)]
    if kind is STR_KIND:
        if value is None:
            return [0]
        return [_append_strings(heap, heap_start, [value])]
    if kind is STRS_KIND:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise TypeError(f"{kind.name} needs a sequence of str, got {type(value).__name__}")
        return [_append_strings(heap, heap_start, value) if value else 0, len(value)]
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"bytes needed, got {type(value).__name__}")
    data = bytes(value)
    offset = heap_start + len(heap) if data else 0
    heap += data
    return [offset, len(data)]


def _append_strings(heap: bytearray, heap_start: int, values: Sequence[object]) -> int:
    offset = heap_start + len(heap)
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"str needed, got {type(value).__name__}")
        if "\0" in value:
            raise ValueError(f"{value!r} contains a NUL")
        try:
            heap += value.encode("utf-8", "surrogateescape") + b"\0"
        except UnicodeEncodeError as error:
            raise ValueError(f"{value!r} cannot be sent as bytes: {error.reason}") from None
    return offset


# --- decoding ---------------------------------------------------------------------------------


def decode(data: bytes, fd_count: int = 0) -> tuple[MessageHeader, Message]:
    """Parse one whole message (header included) that arrived with ``fd_count`` descriptors.

    Raises :class:`ProtocolError`, naming the message and field, for anything malformed: a bad
    or mismatched size, an unknown type, a short fixed part, a bool other than 0/1, an offset
    outside the heap, a string with no NUL before the end, invalid UTF-8, a count running past
    the end, or a descriptor count other than the message declares. Nothing else escapes.
    Descriptors are not touched: the caller closes them on error.
    """
    header = unpack_header(data, TYPE_NAMES)
    if header.size != len(data):
        raise ProtocolError(
            f"{type_name(header.type)} announces {header.size} bytes but is {len(data)}",
            message_type=header.type,
        )
    cls = CATALOGUE.get(header.type)
    if cls is None:
        raise ProtocolError(f"unknown message type {header.type}", message_type=header.type)
    layout = cls._layout
    heap_start = HEADER_SIZE + layout.fixed.size
    if len(data) < heap_start:
        raise message_error(
            cls, None, f"{len(data)} bytes, shorter than its fixed part ({heap_start} bytes)"
        )
    words = iter(layout.fixed.unpack_from(data, HEADER_SIZE))
    values: dict[str, object] = {}
    for name, kind in layout.fields:
        reader = _Reader(cls, name, data, heap_start)
        values[name] = reader.read(kind, words)
    message = cls(**values)
    if message.fd_count() != fd_count:
        raise message_error(
            cls, None, f"arrived with {fd_count} descriptors; it carries {message.fd_count()}"
        )
    return header, message


class _Reader:
    """Reads one field's value out of a received message, checking every bound."""

    def __init__(self, cls: type[Message], field: str, data: bytes, heap_start: int) -> None:
        self.cls = cls
        self.field = field
        self.data = data
        self.heap_start = heap_start

    def error(self, text: str) -> ProtocolError:
        return message_error(self.cls, self.field, text)

    def read(self, kind: Kind, words: Iterator[int]) -> object:
        word = next(words)
        if kind is BOOL_KIND:
            if word > 1:
                raise self.error(f"bool is {word}, not 0 or 1")
            return bool(word)
        if kind in _INT_KINDS:
            return word
        if kind is STR_KIND:
            return None if word == 0 else self.strings(word, 1)[0]
        length = next(words)
        if kind is STRS_KIND:
            return self.strings(word, length) if length else self.empty(word, "count")
        return self.blob(word, length) if length else self.empty(word, "size")

    def check_offset(self, offset: int) -> None:
        if not self.heap_start <= offset < len(self.data):
            raise self.error(
                f"offset {offset} is outside the heap ({self.heap_start}..{len(self.data)})"
            )

    def empty(self, offset: int, what: str) -> object:
        # Empty values are encoded as offset 0 so that every offset a message holds is checked.
        if offset != 0:
            raise self.error(f"{what} 0 with offset {offset}; an empty value has offset 0")
        return b"" if what == "size" else ()

    def strings(self, offset: int, count: int) -> tuple[str, ...]:
        self.check_offset(offset)
        if count > len(self.data) - offset:  # each string needs at least its NUL
            raise self.error(f"{count} strings cannot fit in {len(self.data) - offset} bytes")
        result: list[str] = []
        for index in range(count):
            end = self.data.find(b"\0", offset)
            if end < 0:
                raise self.error(f"string {index} at offset {offset} has no NUL before the end")
            # Never fails: each byte that is not UTF-8 becomes a surrogate escape.
            result.append(self.data[offset:end].decode("utf-8", "surrogateescape"))
            offset = end + 1
        return tuple(result)

    def blob(self, offset: int, size: int) -> bytes:
        self.check_offset(offset)
        if size > len(self.data) - offset:
            raise self.error(f"{size} bytes at offset {offset} run past the end")
        return self.data[offset : offset + size]
