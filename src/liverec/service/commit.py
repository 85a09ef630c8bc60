"""Group commit: concurrent event requests share one durable commit.

Each request submits its events and waits; one committer task takes every
submission queued while the previous commit ran and hands them to ``commit`` in one
call (one transaction, one fsync), on a thread of its own so the event loop keeps
serving. ``commit`` returns, per submission, the number of events newly stored or
the exception that refused that submission alone.

Examples
--------
>>> import asyncio
>>> async def main():
...     gc = GroupCommit(lambda groups: [len(g) for g in groups])
...     gc.start()
...     counts = await asyncio.gather(gc.submit(["a"]), gc.submit(["b", "c"]))
...     await gc.close()
...     return counts, gc.groups
>>> asyncio.run(main())
([1, 2], 2)
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

Commit = Callable[[list[Sequence[Any]]], Sequence["int | Exception"]]


class GroupCommit:
    """One committer task over a queue of ``(events, future)`` submissions."""

    def __init__(self, commit: Commit, *, max_groups: int = 512) -> None:
        self.commit, self.max_groups = commit, max_groups
        self.commits = 0  # commit calls made
        self.groups = 0  # submissions committed
        self._queue: asyncio.Queue[tuple[Sequence[Any], asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        # A thread of its own: commits never wait behind requests in the default pool.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="liverec-commit")

    def start(self) -> None:
        """Start the committer on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, events: Sequence[Any]) -> int:
        """Wait until ``events`` are committed; their count newly stored, or the refusal raised."""
        if self._queue is None:
            raise RuntimeError("GroupCommit.submit before start(): start it inside the app's lifespan.")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((events, fut))
        res = await fut
        if isinstance(res, BaseException):
            raise res
        return res

    async def close(self) -> None:
        """Stop taking submissions; the commit in flight finishes first."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < self.max_groups:
                batch.append(self._queue.get_nowait())
            try:
                results = await loop.run_in_executor(self._pool, self.commit, [evs for evs, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                results = [exc] * len(batch)
            self.commits += 1
            self.groups += len(batch)
            for (_, fut), res in zip(batch, results):
                if not fut.done():
                    fut.set_result(res)
