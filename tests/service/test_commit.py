"""GroupCommit on its own: requests queued during a commit share the next one; errors stay per request."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from liverec.errors import ValidationError
from liverec.service.commit import GroupCommit


def test_requests_queued_during_a_commit_share_the_next() -> None:
    calls: list[int] = []
    gate = threading.Event()

    def commit(groups: list) -> list[int]:
        calls.append(len(groups))
        gate.wait(5)  # the first commit is slow: everything else queues behind it
        return [len(g) for g in groups]

    async def main() -> list[int]:
        gc = GroupCommit(commit)
        gc.start()
        first = asyncio.create_task(gc.submit(["a"]))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(gc.submit(["x"] * n)) for n in range(1, 11)]
        await asyncio.sleep(0.05)
        gate.set()
        out = [await first, *[await t for t in rest]]
        await gc.close()
        assert gc.commits == len(calls) and gc.groups == 11
        return out

    assert asyncio.run(main()) == [1, *range(1, 11)]
    assert calls == [1, 10]


def test_a_refused_group_raises_for_its_request_only() -> None:
    def commit(groups: list) -> list:
        return [ValidationError("bad", field="kind") if "bad" in g else len(g) for g in groups]

    async def main() -> None:
        gc = GroupCommit(commit)
        gc.start()
        ok, bad = await asyncio.gather(gc.submit(["a", "b"]), gc.submit(["bad"]), return_exceptions=True)
        await gc.close()
        assert ok == 2 and isinstance(bad, ValidationError)

    asyncio.run(main())


def test_a_failed_commit_reaches_every_waiting_request_and_the_next_still_runs() -> None:
    fail = [True]

    def commit(groups: list) -> list[int]:
        if fail[0]:
            fail[0] = False
            raise OSError("disk full")
        return [len(g) for g in groups]

    async def main() -> None:
        gc = GroupCommit(commit)
        gc.start()
        got = await asyncio.gather(gc.submit(["a"]), gc.submit(["b"]), return_exceptions=True)
        assert all(isinstance(g, OSError) for g in got)
        assert await gc.submit(["c"]) == 1
        await gc.close()

    asyncio.run(main())


def test_commits_run_off_the_event_loop() -> None:
    def commit(groups: list) -> list[int]:
        time.sleep(0.2)
        return [len(g) for g in groups]

    async def main() -> None:
        gc = GroupCommit(commit)
        gc.start()
        task = asyncio.create_task(gc.submit(["a"]))
        ticks = 0
        while not task.done():
            await asyncio.sleep(0.01)
            ticks += 1
        await gc.close()
        assert ticks >= 5  # the loop kept running while the commit slept

    asyncio.run(main())


def test_submit_before_start_says_how_to_fix_it() -> None:
    with pytest.raises(RuntimeError, match="start"):
        asyncio.run(GroupCommit(lambda g: []).submit(["a"]))
