"""Fuzz target: whatever a guest writes on the multiplexed stream, the host's mux survives it.

    python tests/fuzz/fuzz_mux_frames.py --budget SECONDS

An input is one control byte and a byte stream. The control byte says how big the chunks are
(1 to 256 bytes). The stream goes into a host-side Mux (lxss.protocol.mux) chunk by chunk, and
the receiver's side of the bargain is checked: only MuxError escapes, a failed mux stays
failed, the peer never holds more channels than the limit, no channel's unconsumed bytes pass
its window, and every Data event's bytes are within one frame's payload. Everything received
is handed on at once (consumed), as the pump does, so credit keeps flowing.

hypothesis generates inputs (from the seeds in `seeds()`, mutated, and structured frame
sequences) until the budget is spent; `--budget 0` runs the seeds once.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))  # runnable from a checkout without installing
sys.path.insert(0, str(HERE))  # budget.py, also when loaded from elsewhere

from budget import run_batches  # noqa: E402

from lxss.protocol import mux  # noqa: E402
from lxss.protocol.mux import ATTACH, FrameType, Kind, Mux, MuxError, Role, frame  # noqa: E402


def hello() -> bytes:
    return frame(FrameType.HELLO, 0, struct.pack("<8sI", mux.MAGIC, mux.VERSION))


def open_frame(channel: int, kind: int = Kind.SOCKET, service: int = 0) -> bytes:
    return frame(FrameType.OPEN, channel, struct.pack("<BI", kind, service))


def test_one_input(data: bytes) -> str:
    """Feed one input; "ok" if the stream held, "failed" if it was refused (MuxError)."""
    chunk = 1 + (data[0] if data else 0)
    stream = data[1:]
    host = Mux(Role.HOST)
    try:
        for start in range(0, len(stream), chunk):
            events = host.receive(stream[start : start + chunk])
            for event in events:
                if isinstance(event, mux.Data):
                    assert 0 < len(event.data) <= mux.MAX_PAYLOAD
                    host.consumed(event.channel, len(event.data))
            _check_invariants(host)
            host.take_output()
    except MuxError:
        assert host.failed is not None
        try:
            host.receive(b"x")
        except MuxError:
            return "failed"
        raise AssertionError("a failed mux took more input") from None
    return "ok"


def _check_invariants(host: Mux) -> None:
    peer_channels = [c for c in host.channels.values() if not c.ours]
    assert len(peer_channels) <= mux.MAX_PEER_CHANNELS
    assert sum(c.pending_attachment for c in peer_channels) <= mux.MAX_PENDING_ATTACHMENTS
    for channel in host.channels.values():
        assert 0 <= channel.receive_outstanding <= mux.WINDOW
        assert 0 <= channel.send_credit <= mux.WINDOW


def seeds() -> dict[str, bytes]:
    """Named inputs: valid_* hold, invalid_* are refused."""
    attach = struct.pack("<HI", 1, 4) + b"payload"
    return {
        "valid_open_data_eof_close": bytes([255])
        + hello()
        + open_frame(2, service=1)
        + frame(FrameType.DATA, 2, b"\x00\x01binary\xff")
        + frame(FrameType.EOF, 2)
        + frame(FrameType.CLOSE, 2),
        "valid_attachment_bytewise": bytes([0])
        + hello()
        + open_frame(2, service=1)
        + open_frame(4, Kind.READER)
        + frame(FrameType.DATA, 2, attach, ATTACH),
        "valid_full_window": bytes([200])
        + hello()
        + open_frame(2, service=1)
        + frame(FrameType.DATA, 2, b"z" * mux.MAX_PAYLOAD) * (mux.WINDOW // mux.MAX_PAYLOAD),
        "invalid_no_hello": bytes([7]) + open_frame(2),
        "invalid_host_id": bytes([7]) + hello() + open_frame(1),
        "invalid_huge_data": bytes([7])
        + hello()
        + open_frame(2, service=1)
        + mux.HEADER.pack(FrameType.DATA, 0, 0, 2, 1 << 31),
        "invalid_attach_unknown": bytes([3])
        + hello()
        + open_frame(2, service=1)
        + frame(FrameType.DATA, 2, attach, ATTACH),
    }


def run_seeds() -> int:
    for name, data in seeds().items():
        assert test_one_input(data) == name.split("_")[0].replace("invalid", "failed").replace(
            "valid", "ok"
        ), name
    return len(seeds())


def fuzz_with_hypothesis(budget: float) -> int:
    """Generate inputs until *budget* seconds are spent; the batches run."""
    from hypothesis import strategies as st

    ids = st.integers(0, 12)
    frames = st.one_of(
        st.builds(lambda c, k, s: open_frame(c, k, s), ids, st.integers(0, 4), st.integers(0, 2)),
        st.builds(
            lambda c, d: frame(FrameType.DATA, c, d), ids, st.binary(min_size=1, max_size=64)
        ),
        st.builds(
            lambda c, a, d: frame(
                FrameType.DATA,
                c,
                struct.pack("<H", len(a)) + b"".join(struct.pack("<I", i) for i in a) + d,
                ATTACH,
            ),
            ids,
            st.lists(ids, max_size=3),
            st.binary(max_size=8),
        ),
        st.builds(
            lambda c, n: frame(FrameType.CREDIT, c, struct.pack("<I", n)),
            ids,
            st.integers(0, 2**32 - 1),
        ),
        st.builds(lambda c: frame(FrameType.EOF, c), ids),
        st.builds(lambda c: frame(FrameType.CLOSE, c), ids),
        st.binary(min_size=1, max_size=16),
    )
    structured = st.builds(
        lambda control, body: bytes([control]) + hello() + b"".join(body),
        st.integers(0, 255),
        st.lists(frames, max_size=40),
    )
    mutated = st.builds(
        lambda seed, position, value: seed[:position] + bytes([value]) + seed[position + 1 :],
        st.sampled_from(list(seeds().values())),
        st.integers(0, 200),
        st.integers(0, 255),
    )

    return run_batches(
        st.one_of(structured, mutated, st.binary(max_size=512)), test_one_input, budget
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget", type=float, default=60.0, help="seconds to fuzz (0: seeds only)"
    )
    options = parser.parse_args()
    count = run_seeds()
    print(f"{count} seeds held")
    if options.budget > 0:
        print(f"{fuzz_with_hypothesis(options.budget)} batches of 200 inputs held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
