"""lxss.aio.FdWatch serves several waiters on one descriptor (asyncio keeps one reader per
fd: a second add_reader would replace the first, and the first waiter would time out)."""

from __future__ import annotations

import asyncio
import os

import pytest

from lxss.aio import FdWatch


def test_every_waiter_wakes_when_the_descriptor_is_ready() -> None:
    async def scenario() -> None:
        read_end, write_end = os.pipe()
        watch = FdWatch(read_end)
        try:
            waits = [asyncio.create_task(watch.wait(timeout=10.0)) for _ in range(3)]
            await asyncio.sleep(0.05)
            os.write(write_end, b"x")
            await asyncio.gather(*waits)  # each would raise TimeoutError if not woken
            # Registered again for the next waiter, and not left registered in between.
            await watch.wait(timeout=1.0)
        finally:
            watch.close()
            os.close(read_end)
            os.close(write_end)

    asyncio.run(scenario())


def test_one_waiter_timing_out_leaves_the_others_waiting() -> None:
    async def scenario() -> None:
        read_end, write_end = os.pipe()
        watch = FdWatch(read_end)
        try:
            patient = asyncio.create_task(watch.wait(timeout=10.0))
            with pytest.raises(TimeoutError):
                await watch.wait(timeout=0.05)
            os.write(write_end, b"x")
            await patient
        finally:
            watch.close()
            os.close(read_end)
            os.close(write_end)

    asyncio.run(scenario())


def test_closing_fails_every_waiter_with_the_closed_error() -> None:
    async def scenario() -> None:
        read_end, write_end = os.pipe()
        watch = FdWatch(read_end, EOFError)
        waits = [asyncio.create_task(watch.wait(timeout=10.0)) for _ in range(2)]
        await asyncio.sleep(0.05)
        watch.close()
        for wait in waits:
            with pytest.raises(EOFError):
                await wait
        with pytest.raises(EOFError):
            await watch.wait()
        os.close(read_end)
        os.close(write_end)

    asyncio.run(scenario())
