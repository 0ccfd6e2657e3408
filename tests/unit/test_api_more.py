"""Several replies to one call (Varlink's `more`): lxss.api.server.paged and Replies, served
by a real VarlinkServer on a socket and read by lxss's own Client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lxss.api import errors, wire
from lxss.api.client import Client
from lxss.api.server import PAGE_BYTES, Call, Replies, VarlinkServer, paged

INTERFACE = """\
interface io.lxss.Service
method EnumerateDistributions(forUid: ?int) -> (distributions: []object, defaultVersion: int)
method GetVersion() -> (version: string, kernel: string)
"""


def rows(count: int) -> list[dict[str, Any]]:
    return [{"name": f"d{i}", "basePath": "/var/lib/lxss/1000/" + "x" * 300} for i in range(count)]


class Handler:
    def __init__(self, count: int) -> None:
        self.count = count

    async def EnumerateDistributions(self, call: Call) -> Replies:
        return paged(rows(self.count), "distributions", {"defaultVersion": 1})

    async def GetVersion(self, call: Call) -> dict[str, Any]:
        return {"version": "0", "kernel": "k"}


@contextlib.contextmanager
def serving(tmp_path: Path, handler: Handler) -> Iterator[str]:
    path = str(tmp_path / "s.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    listener.setblocking(False)
    loop = asyncio.new_event_loop()
    task = loop.create_task(VarlinkServer(INTERFACE, handler, "v", "p", "0").serve(listener))

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield path
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
        loop.close()
        listener.close()


def test_pages_stay_near_their_budget_and_keep_every_item() -> None:
    items = rows(20_000)
    replies = paged(items, "distributions", {"defaultVersion": 2})
    assert len(replies.parts) > 1
    assert [d for part in replies.parts for d in part["distributions"]] == items
    for part in replies.parts:
        assert part["defaultVersion"] == 2
        assert len(wire.dumps(part)) <= PAGE_BYTES + 1024


def test_no_items_is_one_empty_page() -> None:
    assert paged([], "distributions", {"defaultVersion": 1}).parts == [
        {"distributions": [], "defaultVersion": 1}
    ]


def test_the_client_reads_every_reply(tmp_path: Path) -> None:
    with serving(tmp_path, Handler(20_000)) as path, Client(path) as client:
        replies = client.call_more("EnumerateDistributions", {})
        listed = [d for reply in replies for d in reply["distributions"]]
        assert listed == rows(20_000)
        # The connection is in step after the last reply.
        assert client.call("GetVersion")["version"] == "0"


def test_one_page_is_one_plain_reply(tmp_path: Path) -> None:
    with serving(tmp_path, Handler(3)) as path, Client(path) as client:
        assert len(client.call("EnumerateDistributions")["distributions"]) == 3
        assert len(client.call_more("EnumerateDistributions")) == 1


def test_several_pages_without_more_are_expected_more(tmp_path: Path) -> None:
    with serving(tmp_path, Handler(20_000)) as path, Client(path) as client:
        with pytest.raises(errors.ExpectedMore):
            client.call("EnumerateDistributions")
        assert client.call("GetVersion")["version"] == "0"
