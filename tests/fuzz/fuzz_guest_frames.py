"""Fuzz target: guest protocol frames never break the receiver, whatever the bytes.

    python tests/fuzz/fuzz_guest_frames.py --budget SECONDS [--engine auto|atheris|hypothesis]

An input is one control byte and a byte stream. The control byte's low three bits say how many
real descriptors (/dev/null) arrive with the first chunk, the other five how big the chunks are
(1 to 249 bytes). The stream goes through a FrameAssembler, each frame through decode. Only
ProtocolError may escape, and besides that the target checks what the protocol promises: every
descriptor is handed out in a frame or closed (never leaked, never closed twice), a frame is as
long as its header says, and whatever decodes re-encodes to the same message.

With atheris installed, libFuzzer drives it from the seed corpus in corpus/guest_frames/ (new
inputs go to a scratch directory removed afterwards; crash files land in the current directory).
Without atheris, hypothesis mutates the seeds and generates fresh inputs until the budget is
spent. `--budget 0` runs the seed corpus once and stops, with either engine.
`--write-seeds DIR` regenerates the seed corpus.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent
SEED_CORPUS = HERE / "corpus" / "guest_frames"
sys.path.insert(0, str(HERE.parents[1] / "src"))  # runnable from a checkout without installing
sys.path.insert(0, str(HERE))  # budget.py, also when loaded from elsewhere

from budget import run_batches  # noqa: E402

from lxss.protocol import messages  # noqa: E402
from lxss.protocol.codec import TYPE_NAMES  # noqa: E402
from lxss.protocol.framing import (  # noqa: E402
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    FrameAssembler,
    ProtocolError,
    close_fds,
    pack_header,
)


def split_input(data: bytes) -> tuple[int, int, bytes]:
    """(descriptor count, chunk size, stream) of a fuzz input."""
    control = data[0] if data else 0
    return control & 0x7, 1 + (control >> 3) * 8, data[1:]


def make_input(stream: bytes, fds: int = 0, chunk_selector: int = 31) -> bytes:
    """The fuzz input that feeds `stream` in chunks of 1 + 8 * `chunk_selector` bytes."""
    return bytes([chunk_selector << 3 | fds]) + stream


def test_one_input(data: bytes) -> str:
    """Feed one input through the receiver; raise AssertionError on a broken promise.

    Returns what became of it: "valid" (every frame decoded), "invalid" (a ProtocolError) or
    "partial" (no frame completed), which is how the seeds are named.
    """
    count, chunk, stream = split_input(data)
    fds = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(count)]
    handed_out: list[int] = []
    assembler = FrameAssembler(TYPE_NAMES)
    decoded: list[bool] = []
    try:
        for start in range(0, max(len(stream), 1), chunk):
            frames = assembler.feed(stream[start : start + chunk], fds if start == 0 else ())
            handed_out.extend(fd for frame in frames for fd in frame.fds)
            decoded.extend(_check_frame(frame.data, len(frame.fds)) for frame in frames)
    except ProtocolError:
        decoded.append(False)
    finally:
        assembler.close()
        leaked = [fd for fd in fds if _is_open(fd) and fd not in handed_out]
        close_fds(handed_out)
        close_fds(leaked)
    assert not leaked, f"descriptors neither handed out nor closed: {leaked}"
    assert len(handed_out) == len(set(handed_out)) <= count, handed_out
    return "partial" if not decoded else "valid" if all(decoded) else "invalid"


def _check_frame(data: bytes, fd_count: int) -> bool:
    """Check one frame; False if it is rejected with a ProtocolError."""
    size = struct.unpack_from("<I", data, 4)[0]
    assert HEADER_SIZE <= size == len(data) <= MAX_MESSAGE_SIZE, (size, len(data))
    try:
        header, message = messages.decode(data, fd_count)
    except ProtocolError:
        return False
    assert message.fd_count() == fd_count
    again = messages.encode(message, header.transaction_id, header.step)
    assert messages.decode(again, fd_count) == (header._replace(size=len(again)), message)
    return True


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


# --- seeds ----------------------------------------------------------------------------------


def seeds() -> dict[str, bytes]:
    """The seed corpus: valid_* decode cleanly, invalid_* raise ProtocolError, partial_* stop
    before a frame completes."""
    m = messages
    create_process = m.InitCreateProcess(
        24, 80, 0, m.InitCreateProcess.SHELL_LOGIN, 1000, "/bin/sh", "/root", "root",
        ("sh", "-c", "echo hé"), ("TERM=xterm",), "debian", "/home/me",
    )  # fmt: skip
    response = m.encode(m.InitCreateProcessResponse(2, 0, "no such file"), 1)
    warnings = m.encode(m.MiniInitCreateInstanceResult(1, 2, 3, ("a", "b")), 1)
    return {
        "valid_create_session_bytewise": make_input(
            m.encode(m.InitCreateSession(-1), 1), chunk_selector=0
        ),
        "valid_create_process": make_input(m.encode(create_process, 0, 1), fds=5),
        "valid_initialize_response": make_input(
            m.encode(m.InitInitializeResponse(0, 1000, True, 4026531836, "debian", "12", ("w",)))
        ),
        "valid_initial_config": make_input(m.encode(m.MiniInitInitialConfig(1, bytes(range(64))))),
        "valid_launch_init": make_input(
            m.encode(m.MiniInitLaunchInit("debian", "{1}", "/distro", "host", 0, 1000)), fds=2
        ),
        "valid_two_frames": make_input(
            m.encode(m.InitExitStatus(3), 1) + m.encode(m.InitWindowSizeChanged(50, 132), 2), 0, 1
        ),
        "valid_result_reply": make_input(m.encode(m.ResultBool(True), 7, 2)),
        "invalid_size_below_header": make_input(pack_header(9, 15) + bytes(4)),
        "invalid_size_above_maximum": make_input(pack_header(8, MAX_MESSAGE_SIZE + 1)),
        "invalid_unknown_type": make_input(pack_header(250, 16)),
        "invalid_bool": make_input(pack_header(76, 17) + b"\x02"),
        "invalid_string_offset": make_input(_patch(response, 24, 9999)),
        "invalid_string_without_nul": make_input(_patch(response[:-1], 4, len(response) - 1)),
        "valid_string_of_non_utf8_bytes": make_input(response[:28] + b"\xc3\x28" + response[30:]),
        "invalid_strs_count": make_input(_patch(warnings, 32, 1000)),
        "invalid_descriptor_count": make_input(
            m.encode(m.MiniInitLaunchInit("d", None, None, None, 0, 0)), fds=0
        ),
        "partial_huge_announcement": make_input(pack_header(8, MAX_MESSAGE_SIZE) + bytes(4)),
    }


def _patch(data: bytes, offset: int, value: int) -> bytes:
    patched = bytearray(data)
    struct.pack_into("<I", patched, offset, value)
    return bytes(patched)


def write_seeds(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (directory / f"{name}.bin").write_bytes(data)


# --- engines --------------------------------------------------------------------------------


def run_corpus(corpus: Path = SEED_CORPUS) -> int:
    """Run every file of `corpus` through the target once; returns how many ran."""
    files = sorted(path for path in corpus.iterdir() if path.is_file())
    for path in files:
        try:
            test_one_input(path.read_bytes())
        except Exception as error:
            raise AssertionError(f"fuzz target failed on {path}") from error
    return len(files)


def fuzz_with_atheris(budget: int, corpus: Path) -> int:
    """Run libFuzzer for `budget` seconds in a child; returns its exit status.

    libFuzzer leaves through exit(), skipping Python's cleanup, so it runs in a forked child and
    this process removes the scratch directory.
    """
    with tempfile.TemporaryDirectory(prefix="fuzz_guest_frames.") as scratch:
        pid = os.fork()
        if pid == 0:
            try:
                _run_libfuzzer(budget, scratch, corpus)
            finally:
                os._exit(70)  # libFuzzer exits by itself; reaching this is a failure
        try:
            _, status = os.waitpid(pid, 0)
        except KeyboardInterrupt:
            os.waitpid(pid, 0)  # the child got ^C too; let it finish before cleaning up
            raise
    return os.waitstatus_to_exitcode(status)


def _run_libfuzzer(budget: int, scratch: str, corpus: Path) -> None:
    import atheris  # type: ignore[import-untyped,unused-ignore]  # optional engine

    _instrument_protocol(atheris.instrument_func)
    # libFuzzer writes new inputs into the first directory and only reads the others.
    atheris.Setup([sys.argv[0], f"-max_total_time={budget}", scratch, str(corpus)], test_one_input)
    atheris.Fuzz()


def _instrument_protocol(instrument: Callable[[types.FunctionType], object]) -> None:
    """Instrument lxss.protocol's own functions and methods, in place.

    atheris.instrument_all() would do it too, but spends most of a short budget instrumenting
    the standard library first.
    """
    for name, module in list(sys.modules.items()):
        if not name.startswith("lxss.protocol"):
            continue
        for value in vars(module).values():
            inside = isinstance(value, type) and value.__module__ == name
            for candidate in vars(value).values() if inside else [value]:
                function = getattr(candidate, "__func__", candidate)  # static/class methods
                if isinstance(function, types.FunctionType) and function.__module__ == name:
                    instrument(function)


def fuzz_with_hypothesis(budget: float, corpus: Path) -> int:
    """Generate and mutate inputs until `budget` seconds are spent; returns the batches run.
    A failing input raises once hypothesis has shrunk it."""
    # Imported here: atheris.instrument_all() would otherwise spend its start-up on hypothesis.
    from hypothesis import strategies as st

    corpus_seeds = [path.read_bytes() for path in sorted(corpus.iterdir()) if path.is_file()]
    framed = st.builds(
        lambda control, kind, body: (
            bytes([control]) + pack_header(kind, HEADER_SIZE + len(body), 1) + body
        ),
        st.integers(0, 255),
        st.sampled_from(sorted(messages.CATALOGUE)),
        st.binary(max_size=256),
    )
    inputs = st.one_of(
        st.sampled_from(corpus_seeds).flatmap(_mutations), framed, st.binary(max_size=1024)
    )

    return run_batches(inputs, test_one_input, budget)


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    from hypothesis import strategies as st

    edit = st.tuples(
        st.integers(0, len(seed)), st.sampled_from("ird"), st.binary(min_size=1, max_size=8)
    )
    return st.lists(edit, max_size=6).map(lambda edits: _apply(seed, edits))


def _apply(seed: bytes, edits: list[tuple[int, str, bytes]]) -> bytes:
    data = bytearray(seed)
    for position, kind, chunk in edits:
        at = min(position, len(data))
        if kind == "i":
            data[at:at] = chunk
        elif kind == "r":
            data[at : at + len(chunk)] = chunk
        else:
            del data[at : at + len(chunk)]
    return bytes(data)


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--budget", type=int, help="seconds to fuzz; 0: seeds only")
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    parser.add_argument("--corpus", type=Path, default=SEED_CORPUS, help="seed corpus directory")
    parser.add_argument("--write-seeds", type=Path, metavar="DIR", help="write the seeds, exit")
    args = parser.parse_args(argv)
    if args.write_seeds is not None:
        write_seeds(args.write_seeds)
        return 0
    if args.budget is None:
        parser.error("--budget is required")

    count = run_corpus(args.corpus)
    print(f"fuzz_guest_frames: {count} seed inputs ok", file=sys.stderr)
    if args.budget <= 0:
        return 0
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _have_atheris() else "hypothesis"
    if engine == "atheris":
        return fuzz_with_atheris(args.budget, args.corpus)
    batches = fuzz_with_hypothesis(args.budget, args.corpus)
    print(f"fuzz_guest_frames: hypothesis ran {batches} batches, no failure", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
