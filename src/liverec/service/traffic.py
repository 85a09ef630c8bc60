"""Simulated readers for the demo: real HTTP traffic so the live page has something to show.

Each reader has a hidden taste: two authors drawn from the catalog. They ask for
recommendations, click a shown book by one of their authors with probability 0.6
(else any shown book with probability 0.05, discounted by position), and sometimes
skip the top book. Nothing here is used by the engine: it only talks to the API.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import httpx

log = logging.getLogger("liverec.traffic")


def _authors(attrs: dict) -> set[str]:
    return {a.strip() for a in str(attrs.get("authors", "")).split(",") if a.strip()}


def _catalog_authors(c: httpx.Client, stop: threading.Event, *, wait: float = 600.0) -> list[str]:
    """Authors of the first 200 items; waits while a background import has added none yet."""
    end = time.monotonic() + wait
    while not stop.is_set():
        pool = c.get("/items", params={"limit": 200}).json()
        authors = sorted({a for it in pool for a in _authors(it["attributes"])})
        if authors:
            return authors
        if time.monotonic() > end:
            log.warning("simulated traffic: the catalog has no authors to build tastes from; stopping")
            break
        stop.wait(2.0)
    return []


def run_traffic(base: str, *, rate: float, key: str | None = None, readers: int = 50, seed: int = 0,
                stop: threading.Event | None = None) -> None:
    """Send about ``rate`` events per second until ``stop`` is set (or forever)."""
    rng = random.Random(seed)
    headers = {"X-API-Key": key} if key else {}
    stop = stop or threading.Event()
    with httpx.Client(base_url=base, headers=headers, timeout=10) as c:
        while not stop.is_set():
            try:
                if c.get("/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        authors = _catalog_authors(c, stop)
        if not authors:
            return
        tastes = {f"sim-{i:03d}": set(rng.sample(authors, min(2, len(authors)))) for i in range(readers)}
        names = list(tastes)
        while not stop.is_set():
            t0 = time.perf_counter()
            user = rng.choice(names)
            try:
                recs = c.get(f"/recommendations/{user}", params={"k": 10, "explain": "false"}).json()["items"]
                events = []
                for pos, r in enumerate(recs):
                    item = c.get(f"/items/{r['item']}").json()
                    liked = bool(_authors(item["attributes"]) & tastes[user])
                    p = (0.6 if liked else 0.05) / (1 + 0.3 * pos)
                    if rng.random() < p:
                        events.append({"user": user, "item": r["item"], "kind": "click"})
                        break
                if not events and recs and rng.random() < 0.3:
                    events.append({"user": user, "item": recs[0]["item"], "kind": "skip"})
                if not events:  # browse: seed the taste through search
                    author = rng.choice(sorted(tastes[user]))
                    found = c.get("/items", params={"q": author, "limit": 5}).json()
                    if found:
                        events.append({"user": user, "item": rng.choice(found)["id"], "kind": "click"})
                for e in events:
                    c.post("/events", json=e)
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                log.warning("simulated traffic: %s", exc.__class__.__name__)
                time.sleep(1)
            stop.wait(max(0.0, 1.0 / rate - (time.perf_counter() - t0)))


def start_traffic(base: str, *, rate: float, key: str | None = None) -> threading.Event:
    """Run :func:`run_traffic` in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=run_traffic, args=(base,), kwargs=dict(rate=rate, key=key, stop=stop),
                     name="liverec-traffic", daemon=True).start()
    return stop
