"""`liverec serve --workers 2`: two processes over one SQLite file, read-your-writes across them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from apihelp import Replica

pytestmark = pytest.mark.slow


def test_two_workers_reflect_each_others_events(books, tmp_path) -> None:
    store = f"sqlite:///{tmp_path}/workers.db"
    f = tmp_path / "items.jsonl"
    f.write_text("".join(json.dumps({"id": b.id, **b.attributes}) + "\n" for b in books[:60]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LIVEREC_ENCODER_PROGRESS": "false"}
    out = subprocess.run([sys.executable, "-m", "liverec.cli", "import-items", str(f), "--store", store],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rep = Replica(store, extra=("--workers", "2")).start(timeout=300)
    try:
        kids = subprocess.run(["pgrep", "-P", str(rep.proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(kids) >= 2, "expected two worker processes"
        accepted = 0
        for i in range(40):
            user, item = f"reader{i % 5}", books[i % 60].id
            # A fresh connection per request: the kernel spreads them over the workers.
            with httpx.Client(base_url=rep.url, timeout=30, headers={"Connection": "close"}) as c:
                r = c.post("/events", json={"user": user, "item": item, "kind": "like", "id": f"w{i}"})
                assert r.status_code == 200
                accepted += r.json()["accepted"]
            with httpx.Client(base_url=rep.url, timeout=30, headers={"Connection": "close"}) as c:
                recs = [x["item"] for x in c.get(f"/recommendations/{user}", params={"k": 10}).json()["items"]]
                assert item not in recs, f"round {i}: a worker served a list that missed the event"
                assert c.get(f"/users/{user}").json()["events"] == i // 5 + 1
        assert accepted == 40
        with httpx.Client(base_url=rep.url, timeout=30, headers={"Connection": "close"}) as c:
            c.put("/users/fan/interests", json={"interests": "wizards"})
        for _ in range(6):  # interests declared on one worker are used by every worker
            with httpx.Client(base_url=rep.url, timeout=30, headers={"Connection": "close"}) as c:
                assert c.get("/users/fan").json()["interests"] == "wizards"
    finally:
        rep.stop()


def test_workers_refuse_an_in_memory_store() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "liverec.cli", "serve", "--open", "--store", "sqlite://",
                          "--workers", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--workers needs a store" in out.stderr
