"""The service over real HTTP (uvicorn on loopback): group commit under concurrency, `liverec serve`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from apihelp import LiveServer, free_port

from liverec import Engine
from liverec.service import create_app
from liverec.settings import Settings
from liverec.store import Store

pytestmark = pytest.mark.slow


def test_concurrent_events_share_commits_and_none_is_lost(encoder, books, tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/live.db"
    s = Settings(open_access=True, encoder_progress=False, store=url)
    eng = Engine(Store.open(url), s, encoder)
    eng.add_items(books[:100])
    n = 400
    with LiveServer(create_app(s, engine=eng)) as base:
        commits = []
        real = eng.record_groups

        def spy(groups, **kw):
            commits.append(len(groups))
            return real(groups, **kw)

        eng.record_groups = spy  # type: ignore[method-assign]
        with httpx.Client(base_url=base, timeout=30) as c, ThreadPoolExecutor(16) as pool:
            def post(i: int) -> dict:
                r = c.post("/events", json={"user": f"u{i % 20}", "item": books[i % 100].id, "id": f"e{i}"})
                assert r.status_code == 200, r.text
                return r.json()

            out = list(pool.map(post, range(n)))
            # Replays of the same ids are acknowledged as duplicates, never stored twice.
            again = list(pool.map(post, range(0, n, 4)))
        assert sum(o["accepted"] for o in out) == n
        assert all(o["duplicates"] == 1 for o in again)
        assert sum(commits) == n + n // 4 and len(commits) < n + n // 4  # several requests per commit
    assert eng.store.count_events() == n
    eng.close()
    # Durable: a fresh engine on the same file sees every acknowledged event.
    reopened = Engine(Store.open(url), s, encoder)
    assert reopened.store.count_events() == n and len(reopened.history("u3")) == n // 20
    reopened.close()


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "liverec.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_liverec_serve_and_keys_cli(tmp_path, books) -> None:
    db = f"sqlite:///{tmp_path}/serve.db"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LIVEREC_ENCODER_PROGRESS": "false"}
    csv = tmp_path / "items.jsonl"
    import json

    csv.write_text("".join(json.dumps({"id": b.id, **b.attributes}) + "\n" for b in books[:30]))
    assert _cli("import-items", str(csv), "--store", db, env=env).returncode == 0
    made = _cli("keys", "create", "app", "--role", "write", "--store", db, env=env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("lr_") and "shown only now" in made.stderr
    assert _cli("keys", "create", "app", "--store", db, env=env).returncode == 2  # name taken
    listed = _cli("keys", "list", "--store", db, env=env).stdout
    assert "app" in listed and key not in listed
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "liverec.cli", "serve", "--store", db, "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(base + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert httpx.get(base + "/ready").json()["items"] == 30
        ev = {"user": "cli-user", "item": books[0].id, "kind": "like"}
        assert httpx.post(base + "/events", json=ev).status_code == 401
        assert httpx.post(base + "/events", json=ev, headers={"X-API-Key": key}).status_code == 200
        r = httpx.get(base + "/recommendations/cli-user", headers={"X-API-Key": key})
        assert r.status_code == 200 and len(r.json()["items"]) == 10
        assert _cli("keys", "revoke", "app", "--store", db, env=env).returncode == 0
        time.sleep(5.5)  # key lookups are cached for 5 s
        assert httpx.get(base + "/recommendations/cli-user", headers={"X-API-Key": key}).status_code == 401
    finally:
        proc.terminate()
        logs = proc.communicate(timeout=30)[0]
    assert "liverec serving at" in logs
    assert "cli-user" not in logs  # no user ids in the log


def test_simulated_traffic_drives_the_api(encoder, books) -> None:
    import threading

    from liverec.service.traffic import run_traffic

    s = Settings(open_access=True, encoder_progress=False)
    eng = Engine(Store.open("sqlite://"), s, encoder)
    eng.add_items(books[:200])
    with LiveServer(create_app(s, engine=eng)) as base:
        stop = threading.Event()
        t = threading.Thread(target=run_traffic, args=(base,), kwargs=dict(rate=50, stop=stop, readers=5))
        t.start()
        deadline = time.time() + 60
        while eng.store.count_events() < 30 and time.time() < deadline:
            time.sleep(0.2)
        stop.set()
        t.join(30)
        stats = httpx.get(base + "/stats").json()
    assert eng.store.count_events() >= 30
    assert all(u.startswith("sim-") for u in {e.user for _, e in eng.store.iter_events()})
    assert stats["events_total"] >= 30 and stats["variants"][0]["served"] > 0
    eng.close()
