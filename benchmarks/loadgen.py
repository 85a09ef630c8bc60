"""An open-loop HTTP load generator: requests leave on a fixed schedule, whatever the server does.

Why not wrk: Debian's wrk (4.1) is closed-loop — a slow response delays the next request
on that connection, so "p99 at 300 req/s" silently becomes "p99 at whatever rate the
server allowed" (coordinated omission). wrk2's fixed-rate mode is not packaged here.
This sends request k at ``t0 + k / rate`` on a pool of keep-alive connections (raw
asyncio streams, minimal HTTP/1.1 parsing, so the client costs little CPU) and
measures each latency from its scheduled send time, so queueing is counted.

    python loadgen.py http://127.0.0.1:8000 --rate 300 --seconds 20 --users 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Callable
from urllib.parse import urlparse


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.partition(b":")
        if k.lower() == b"content-length":
            length = int(v)
    if length:
        await reader.readexactly(length)
    return status


async def run(base: str | list[str], make: Callable[[int], bytes], *, rate: float, seconds: float,
              connections: int = 64) -> dict:
    """Open-loop load; ``make(k)`` returns request k's raw HTTP bytes. Returns latencies and errors.

    Several base URLs (replicas) share the connections round-robin.
    """
    bases = [base] if isinstance(base, str) else list(base)
    pool: asyncio.Queue = asyncio.Queue()
    for c in range(connections):
        u = urlparse(bases[c % len(bases)])
        r, w = await asyncio.open_connection(u.hostname, u.port)
        pool.put_nowait((r, w, u))
    lat: list[float] = []
    writes: list[float] = []  # the POSTs' latencies (also in ``lat``)
    errors = {"non2xx": 0, "failed": 0}
    n = int(rate * seconds)
    t0 = time.perf_counter() + 0.1

    async def one(k: int) -> None:
        due = t0 + k / rate
        conn = await pool.get()  # waiting for a free connection counts as latency (from `due`)
        raw = make(k)
        try:
            status = await _request(conn[0], conn[1], raw)
            if status >= 300:
                errors["non2xx"] += 1
        except Exception:  # noqa: BLE001 - counted, connection replaced
            errors["failed"] += 1
            conn[1].close()
            u = conn[2]
            r, w = await asyncio.open_connection(u.hostname, u.port)
            conn = (r, w, u)
        finally:
            pool.put_nowait(conn)
        lat.append(time.perf_counter() - due)
        if raw.startswith(b"POST"):
            writes.append(lat[-1])

    tasks = []
    for k in range(n):
        delay = t0 + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(k)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    while not pool.empty():
        pool.get_nowait()[1].close()
    return {"sent": n, "seconds": elapsed, "achieved_rate": n / elapsed, "latencies_s": lat,
            "write_latencies_s": writes, **errors}


def get_recommendations(host: str, users: int, seed: int = 0) -> Callable[[int], bytes]:
    rng = random.Random(seed)

    def make(k: int) -> bytes:
        return (f"GET /recommendations/u{rng.randrange(users)}?k=10 HTTP/1.1\r\nHost: {host}\r\n\r\n").encode()

    return make


def mixed(host: str, users: int, items: list[str], *, write_share: float = 0.2, seed: int = 0) -> Callable[[int], bytes]:
    """``write_share`` of requests POST a click, the rest GET a user's recommendations."""
    rng = random.Random(seed)
    get, post = get_recommendations(host, users, seed), post_event(host, users, items, seed)
    return lambda k: post(k) if rng.random() < write_share else get(k)


def post_event(host: str, users: int, items: list[str], seed: int = 0) -> Callable[[int], bytes]:
    rng = random.Random(seed)

    def make(k: int) -> bytes:
        body = json.dumps({"user": f"u{rng.randrange(users)}", "item": rng.choice(items), "kind": "click"}).encode()
        return (f"POST /events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    return make


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base")
    ap.add_argument("--rate", type=float, default=300)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--users", type=int, default=2000)
    a = ap.parse_args()
    host = urlparse(a.base).netloc
    r = asyncio.run(run(a.base, get_recommendations(host, a.users), rate=a.rate, seconds=a.seconds))
    import numpy as np

    r.pop("write_latencies_s")
    ms = np.array(r.pop("latencies_s")) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    print(json.dumps({**r, "n": len(ms), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": ms.max(),
                      "mean_ms": ms.mean()}))
