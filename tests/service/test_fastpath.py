"""The hot routes' fast path answers exactly as the full FastAPI routes do.

Two apps over identical engines, one with the fast path and one without, get the same
requests in the same order; every answer (status, body, content type) must match, and
the fast path must have answered the well-formed ones itself (it would be a test that
cannot fail if every request fell through).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from apihelp import KEYS, auth
from liverec.service.fastpath import FastPath, fast_route

BOOKS = ("b0", "b1", "b2", "b3")


def _fast(client: Any) -> FastPath:
    return next(m.kwargs["fast"] for m in client.app.user_middleware if "fast" in m.kwargs)


def _comparable(resp: Any) -> tuple[int, Any, str]:
    ctype = resp.headers.get("content-type", "")
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    if isinstance(body, dict):
        body.pop("took_ms", None)
    return resp.status_code, body, ctype


@pytest.fixture
def pair(make_client, books):
    ids = [b.id for b in books[:4]]
    fast, plain = make_client(), make_client(fast_path=False)
    assert _fast(fast) is not None and _fast(plain) is None
    return fast, plain, ids


def warm_keys(pair) -> None:
    """A key the Service has not looked up yet goes through the full route once (the store lookup)."""
    for role in KEYS:
        both(pair, "GET", "/recommendations/warm-up?k=1", headers=auth(role))


def both(pair, method: str, url: str, **kw: Any) -> Any:
    fast, plain, _ = pair
    a, b = fast.request(method, url, **kw), plain.request(method, url, **kw)
    assert _comparable(a) == _comparable(b), (method, url, kw)
    return a


def test_events_and_their_errors_match_the_full_route(pair):
    fast, _, ids = pair
    w = auth("write")
    warm_keys(pair)
    good = [
        {"user": "u1", "item": ids[0], "kind": "click"},
        {"user": "u1", "item": ids[1], "kind": "like", "id": "e-1"},
        {"events": [{"user": "u2", "item": ids[2]}, {"user": "u2", "item": ids[3], "kind": "rating", "value": 4}]},
        {"user": "u1", "item": ids[1], "kind": "like", "id": "e-1"},  # a repeated id: a duplicate
    ]
    before = _fast(fast).answered
    for body in good:
        r = both(pair, "POST", "/events", json=body, headers=w)
        assert r.status_code == 200, r.text
    assert _fast(fast).answered - before == len(good)
    assert fast.engine.store.count_events() == 4

    bad = [
        {"user": "u1", "item": "not-a-book"},  # engine error after validation: the handlers' answer
        {"user": "u1", "item": ids[0], "kind": "teleport"},  # a kind the settings do not weigh
        {"user": "u1", "item": ids[0], "kind": "rating", "value": 99},
        {"user": "", "item": ids[0]},
        {"user": "u1", "item": ids[0], "surprise": 1},
        {"events": []},
        {"events": [{"user": "u3", "item": ids[0]}, {"user": "u3"}]},
        {"user": "u1", "item": ids[0], "timestamp": "yesterday"},
    ]
    for body in bad:
        r = both(pair, "POST", "/events", json=body, headers=w)
        assert r.status_code in (413, 422), (body, r.text)
    both(pair, "POST", "/events", content=b'{"user": "u1", "item": ', headers={**w, "content-type": "application/json"})
    both(pair, "POST", "/events", content=json.dumps(good[0]).encode(), headers={**w, "content-type": "text/plain"})
    both(pair, "POST", "/events", json=good[0])  # no key: 401
    both(pair, "POST", "/events", json=good[0], headers=auth("read"))  # too low a role: 403
    both(pair, "POST", "/events", json=good[0], headers={"Authorization": f"Bearer {KEYS['write']}"})
    both(pair, "POST", "/events", json=good[0], headers={"X-API-Key": "lr_not_a_key"})
    assert fast.engine.store.count_events() == pair[1].engine.store.count_events()


def test_a_batch_over_the_limit_is_left_to_the_full_route(make_client, books):
    ids = [b.id for b in books[:3]]
    fast, plain = make_client(max_batch=2), make_client(max_batch=2, fast_path=False)
    body = {"events": [{"user": "u", "item": i} for i in ids]}
    a, b = (c.post("/events", json=body, headers=auth("write")) for c in (fast, plain))
    assert a.status_code == 413 and _comparable(a) == _comparable(b)
    assert fast.engine.store.count_events() == 0


def test_recommendations_and_their_errors_match_the_full_route(pair):
    fast, _, ids = pair
    r = auth("read")
    warm_keys(pair)
    # Fixed timestamps: with the server's clock the two apps' events would be microseconds apart
    # and their time-decayed scores differ in the last digits.
    for body in ({"user": "u1", "item": ids[0], "timestamp": 1.7e9},
                 {"user": "u1", "item": ids[1], "kind": "like", "timestamp": 1.7e9 + 60}):
        both(pair, "POST", "/events", json=body, headers=auth("write"))
    top = [x["item"] for x in pair[1].get("/recommendations/u1?k=2", headers=r).json()["items"]]
    good = [
        "/recommendations/u1", "/recommendations/u1?k=3", "/recommendations/u1?k=5&explain=false",
        f"/recommendations/u1?k=4&exclude={top[0]}&exclude={top[1]}",  # both leave the list "/recommendations/u1?exclude_seen=false&k=3",
        "/recommendations/u1?diversity=0.5&k=3", '/recommendations/u1?filters={"year":{"gte":1990}}&k=3',
        '/recommendations/u1?filters={"year":{"gte":3000}}&k=3',  # matches nothing: the warning
        "/recommendations/nobody?k=3", "/recommendations/u%20one?k=2", '/recommendations/u1?context={"page":"home"}',
        "/recommendations/u1?k=3&policy=greedy",
    ]
    before = _fast(fast).answered
    for url in good:
        assert both(pair, "GET", url, headers=r).status_code == 200, url
    assert _fast(fast).answered - before == len(good)
    bad = [
        "/recommendations/u1?k=0", "/recommendations/u1?k=ten", "/recommendations/u1?diversity=2",
        "/recommendations/u1?filters=notjson", "/recommendations/u1?filters=[1]", "/recommendations/u1?variant=nope",
        "/recommendations/u1?policy=%20", "/recommendations/u1?policy=nope", "/recommendations/u%00x",
        "/recommendations/" + "x" * 300, "/recommendations/u1?context=[1]",
    ]
    for url in bad:
        assert both(pair, "GET", url, headers=r).status_code in (404, 422), url
    both(pair, "GET", "/recommendations/u1?k=3&unknown=1", headers=r)  # an unknown parameter: ignored by both
    both(pair, "GET", "/recommendations/u1?k=3")  # no key: 401
    both(pair, "GET", "/recommendations/u1/extra", headers=r)  # not the route: 404


def test_the_fast_path_names_its_route_in_the_metrics(make_client, books):
    client = make_client(open_access=True)
    client.post("/events", json={"user": "u1", "item": books[0].id})
    client.get("/recommendations/u1?k=2")
    text = client.get("/metrics").text
    assert 'route="/events"' in text and 'route="/recommendations/{user}"' in text
    assert _fast(client).answered == 2


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::liverec.errors.NoMatchWarning")
def test_fuzzed_requests_get_the_same_answer_with_and_without_the_fast_path(make_client) -> None:
    """The hostile request generator of the HTTP fuzz test, sent to both apps in turn."""
    from hypothesis import HealthCheck, given, settings
    from starlette.testclient import httpx

    from test_fuzz import _answer, calls

    fast, plain = make_client(open_access=True), make_client(open_access=True, fast_path=False)
    for c in (fast, plain):
        for user, item in [("u1", "1"), ("u1", "2"), ("u2", "2")]:
            assert c.post("/events", json={"user": user, "item": item, "kind": "like", "timestamp": 1.7e9}).status_code == 200

    def answer(r: httpx.Response) -> tuple:
        if r.status_code == 200 and r.request.method == "GET" and r.url.path.startswith("/recommendations/"):
            body = r.json()
            return 200, [x["item"] for x in body["items"]], body["warnings"], body["variant"], body["policy"]
        if r.status_code < 400 and r.request.url.path == "/events":
            return r.status_code, r.json()
        return _answer(r) + ((r.json().get("message"),) if r.status_code >= 400 and r.content[:1] == b"{" else ())

    served = []  # well-formed requests on the two routes the fast path serves (the full route answered 200)

    @given(call=calls())
    @settings(max_examples=150, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def check(call) -> None:
        try:
            a = call.send(fast)
        except (httpx.InvalidURL, UnicodeEncodeError):
            return  # the client library refuses to send it
        b = call.send(plain)
        assert answer(a) == answer(b), (call, a.text[:300], b.text[:300])
        if b.status_code == 200 and fast_route(b.request.method, b.request.url.path):
            served.append(call)

    before = _fast(fast).answered
    check()
    assert served and _fast(fast).answered - before >= len(served)  # each of them took the fast path
    assert fast.engine.store.count_events() == plain.engine.store.count_events()


def test_the_setting_turns_the_fast_path_off(make_client, books):
    client = make_client(open_access=True, http_fast_path=False)
    assert _fast(client) is None
    assert client.post("/events", json={"user": "u1", "item": books[0].id}).status_code == 200
    assert client.get("/recommendations/u1?k=2").status_code == 200


def test_the_edge_answers_hot_requests_before_starlettes_middleware(make_client, books, monkeypatch):
    """While the edge is the app's only middleware, requests go to it directly, not through
    Starlette's outer layers; an error inside a route still gets the service's 500; a
    middleware the app's user adds sees every request, hot ones included."""
    from starlette.middleware.errors import ServerErrorMiddleware

    client = make_client(open_access=True)
    entered: list[str] = []
    outer = ServerErrorMiddleware.__call__

    async def counting(self, scope, receive, send):
        if scope["type"] == "http":
            entered.append(scope["path"])
        await outer(self, scope, receive, send)

    monkeypatch.setattr(ServerErrorMiddleware, "__call__", counting)
    assert client.post("/events", json={"user": "u1", "item": books[0].id}).status_code == 200
    assert client.get("/recommendations/u1?k=2").status_code == 200
    assert client.get("/health").status_code == 200
    assert entered == []

    def boom(*a, **k):
        raise RuntimeError("internal detail")

    client.engine.explain = boom  # an error inside a route off the fast path
    r = client.get(f"/explain/u1/{books[0].id}")
    assert r.status_code == 500 and r.json()["error"] == "internal_error" and "internal detail" not in r.text

    from fastapi.testclient import TestClient

    from liverec.service import create_app

    seen: list[str] = []

    class Tap:  # a user's own middleware
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http":
                seen.append(scope["path"])
            await self.app(scope, receive, send)

    app = create_app(client.engine.settings, engine=client.engine)
    app.add_middleware(Tap)
    with TestClient(app) as tapped:
        assert tapped.get("/recommendations/u1?k=2").status_code == 200
        assert tapped.post("/events", json={"user": "u1", "item": books[1].id}).status_code == 200
    assert seen == ["/recommendations/u1", "/events"] and entered[-2:] == seen  # through the whole stack
