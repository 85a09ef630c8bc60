"""Hostile input over HTTP: refused with a 4xx naming the field, nothing stored, and no
other caller's answers change. On SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from apihelp import LiveServer, auth

from liverec.encode import text_hash
from liverec.service.ab import LiveStats

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, postgres_url, tmp_path: Path) -> str:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hostile.db'}"
        return
    url = postgres_url()
    yield url
    postgres_url.drop(url)


def deep(n: int) -> dict:
    x: dict = {}
    root = x
    for _ in range(n):
        x["a"] = {}
        x = x["a"]
    return root


def raw(c, method: str, path: str, body: str, **kw):
    return c.request(method, path, content=body.encode("utf-8", "surrogatepass"),
                     headers={"content-type": "application/json", **kw.pop("headers", {})}, **kw)


# ----------------------------------------------------------- item attributes
@pytest.mark.parametrize(
    "attributes",
    [
        json.dumps({"deep": deep(900)}),
        '{"k": "\\udc00"}',
        '{"\\ud800key": 1}',
        '{"year": ' + "9" * 400 + "}",
        '{"r": NaN}',
        '{"r": Infinity}',
    ],
    ids=["deep", "surrogate-value", "surrogate-key", "400-digit-int", "nan", "infinity"],
)
def test_hostile_attributes_are_refused_and_lists_stay_intact(make_client, store_url, attributes) -> None:
    c = make_client(store_url, open_access=True)
    before = c.get("/recommendations/newcomer", params={"k": 5}).json()["items"]
    r = raw(c, "POST", "/items", '{"items": [{"id": "evil", "text": "evil book", "attributes": ' + attributes + "}]}")
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == "items[0].attributes" and body["fix"]
    assert c.get("/items/evil").status_code == 404
    assert c.engine.store.get_item("evil") is None
    assert [x["item"] for x in c.get("/recommendations/newcomer2", params={"k": 5}).json()["items"]] == [
        x["item"] for x in before]
    # Filters on the attribute still work, and removing the item (never stored) changes nothing.
    assert c.delete("/items/evil").status_code == 404
    r = c.get("/recommendations/newcomer3", params={"k": 5, "filters": '{"year": {"gte": 1990, "lt": 2000}}'})
    assert r.status_code == 200 and r.json()["items"]
    assert all(1990 <= x["attributes"]["year"] < 2000 for x in r.json()["items"])


def test_event_context_and_text_checked_like_attributes(make_client, store_url) -> None:
    c = make_client(store_url, open_access=True)
    for body, field in [
        ('{"user": "u", "item": "2", "context": {"k": "\\udc00"}}', "events[0].context"),
        ('{"user": "u", "item": "2", "context": ' + json.dumps({"d": deep(20)}) + "}", "events[0].context"),
        ('{"user": "u\\udc00", "item": "2"}', "body.user"),  # pydantic refuses it as a string
        ('{"items": [{"id": "t", "text": "bad \\udc00 text"}]}', "body.items.0.text"),
    ]:
        path = "/items" if body.startswith('{"items"') else "/events"
        r = raw(c, "POST", path, body)
        assert r.status_code == 422 and r.json()["field"] == field, (body, r.text)
    assert c.engine.store.count_events() == 0


def test_a_non_text_title_does_not_break_the_list_it_is_served_in(make_client) -> None:
    c = make_client(open_access=True)
    assert c.post("/items", json={"items": [{"id": "odd", "text": "odd", "attributes": {
        "marker": "m", "title": 5, "image_url": ["x"]}}]}).status_code == 200
    r = c.get("/recommendations/anyone", params={"filters": '{"marker": "m"}'})
    assert r.status_code == 200 and [x["item"] for x in r.json()["items"]] == ["odd"]
    assert r.json()["items"][0]["title"] is None


# --------------------------------------------------------------- event values
def test_event_value_is_bounded_and_trending_stays_sane(make_client, store_url) -> None:
    c = make_client(store_url, open_access=True)
    r = c.post("/events", json={"user": "a", "item": "2", "kind": "click", "value": 1.7e308})
    assert r.status_code == 422 and r.json()["field"] == "events[0].value" and "max_event_value" in r.json()["message"]
    assert c.engine.store.count_events() == 0
    for user in ("a", "b"):  # the largest allowed value, twice
        assert c.post("/events", json={"user": user, "item": "2", "value": 1e6}).status_code == 200
    items = c.get("/recommendations/newcomer", params={"k": 10}).json()["items"]
    assert len(items) == 10 and all(x["score"] == x["score"] for x in items)  # no NaN
    assert c.delete("/users/a").status_code == 200


# -------------------------------------------------------------------- filters
@pytest.mark.parametrize(
    "filters",
    [
        '{"year": [[1997]]}',
        '{"year": [{"a": 1}]}',
        json.dumps({"year": {"gte": deep(50)}}),
        '{"year": {"gte": ' + "9" * 400 + "}}",
        '{"year": {"about": 1997}}',
        '{"year": null}',
    ],
)
def test_malformed_filters_are_422_naming_the_attribute(make_client, filters) -> None:
    c = make_client(open_access=True)
    r = c.get("/recommendations/u1", params={"filters": filters})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "filters.year" and r.json()["fix"]
    assert c.get("/recommendations/u1", params={"filters": '{"year": {"gte": 1990}}'}).status_code == 200


# ------------------------------------------------------------------------ ids
def test_ids_written_are_ids_that_can_be_read_and_erased(make_client, store_url) -> None:
    c = make_client(store_url, open_access=True)
    for bad in ("a/b", "a\nb", ".."):
        r = c.post("/events", json={"user": bad, "item": "2"})
        assert r.status_code == 422 and r.json()["field"] == "events[0].user" and "'/'" in r.json()["message"]
        r = c.post("/items", json={"items": [{"id": bad, "text": "x"}]})
        assert r.status_code == 422 and r.json()["field"] == "items[0].id"
    odd = "<script>alert(1)<\\script> ü?#%"
    r = c.post("/events", json={"user": odd, "item": "2", "kind": "like"})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    from urllib.parse import quote

    assert c.get(f"/users/{quote(odd, safe='')}").json()["events"] == 1
    assert c.delete(f"/users/{quote(odd, safe='')}").json()["deleted"]["events"] == 1
    assert c.engine.store.count_events() == 0
    # Items by the same rule: an odd id is read and removed by its escaped path.
    assert c.post("/items", json={"items": [{"id": odd, "text": "an odd book"}]}).status_code == 200
    assert c.get(f"/items/{quote(odd, safe='')}").json()["id"] == odd
    assert c.delete(f"/items/{quote(odd, safe='')}").json() == {"deleted": 1}
    assert c.get(f"/items/{quote(odd, safe='')}").status_code == 404
    # Event ids never appear in a path: a '/' is allowed there.
    assert c.post("/events", json={"user": "u", "item": "2", "id": "shop/order/7"}).json()["accepted"] == 1


def test_nul_in_paths_and_interests_is_refused_alike_on_every_store(make_client, store_url) -> None:
    c = make_client(store_url, open_access=True)
    # The same answer on every store (this test runs on each): 422 naming the path field.
    for method, path, field in [("get", "/users/%00", "user"), ("delete", "/users/%00", "user"),
                                ("get", "/items/%00", "item_id"), ("delete", "/items/%00", "item_id"),
                                ("get", "/recommendations/%00", "user"), ("get", "/explain/%00/2", "user"),
                                ("get", "/users/a%00b", "user")]:
        r = getattr(c, method)(path)
        assert r.status_code == 422, (method, path, r.status_code, r.text)
        assert set(r.json()) == {"error", "message", "field", "fix"} and r.json()["field"] == field
        assert r.json()["error"] == "validation_error" and "NUL" in r.json()["message"]
    r = c.put("/users/x/interests", json={"interests": "a\u0000b"})
    assert r.status_code == 422 and r.json()["field"] == "body.interests"
    r = raw(c, "PUT", "/users/x/interests", '{"interests": "\\udc00"}')
    assert r.status_code == 422
    assert c.engine.store.get_interests("x") is None


# ----------------------------------------------------------------- error shape
def test_404_405_400_have_the_error_shape(make_client) -> None:
    c = make_client(open_access=True)
    for r, status in [(c.get("/no/such/route"), 404), (c.post("/health"), 405),
                      (c.get("/items/never-added"), 404),
                      (raw(c, "POST", "/events", '{"user": ' * 5000 + '"u"' + "}" * 5000), 400)]:
        assert r.status_code == status, r.text
        body = r.json()
        assert set(body) == {"error", "message", "field", "fix"} and body["fix"] and "detail" not in body


def test_malformed_json_is_401_before_422(make_client) -> None:
    c = make_client()
    for headers in ({}, {"X-API-Key": "lr_wrong"}):
        r = c.post("/events", content=b"{not json", headers={"content-type": "application/json", **headers})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = c.post("/events", content=b"{not json", headers={"content-type": "application/json", **auth("read")})
    assert r.status_code == 403
    r = c.post("/events", content=b"{not json", headers={"content-type": "application/json", **auth("write")})
    assert r.status_code == 422 and r.json()["field"] == "body"


def test_openapi_lists_401_and_422_in_the_error_shape(make_client) -> None:
    c = make_client()
    doc = c.get("/openapi.json").json()
    post = doc["paths"]["/events"]["post"]["responses"]
    assert {"400", "401", "403", "422", "413"} <= set(post)
    assert post["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    for export in ("/admin/export/popularity", "/admin/export/variants"):
        assert "429" in doc["paths"][export]["get"]["responses"]
    assert post["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    assert "401" not in doc["paths"]["/health"]["get"]["responses"]
    assert "401" in doc["paths"]["/users/{user}"]["delete"]["responses"]


def test_a_500_is_logged_once_and_the_connection_stays_open(make_client, monkeypatch, caplog) -> None:
    c = make_client(open_access=True)

    def boom(*a, **k):
        raise RuntimeError("internal detail")

    monkeypatch.setattr(c.engine, "explain", boom)
    caplog.set_level(logging.ERROR)
    with LiveServer(c.app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            replies = []
            for path in ("/explain/u/2", "/health"):
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                data = b""
                while b"\r\n\r\n" not in data:
                    data += s.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
                while len(rest) < length:
                    rest += s.recv(65536)
                replies.append((head.split(b" ")[1], head.lower()))
    assert replies[0][0] == b"500" and replies[1][0] == b"200"  # the second answer came on the same connection
    assert b"connection: close" not in replies[0][1]
    logged = [r for r in caplog.records if r.exc_info or "internal error" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]


# ------------------------------------------------------------ security headers
def test_security_headers_on_every_response_and_docs_served_locally(make_client) -> None:
    c = make_client()
    for path in ("/", "/static/app.js", "/docs", "/openapi.json", "/health", "/recommendations/u1", "/nope"):
        h = c.get(path).headers
        assert "default-src 'self'" in h["content-security-policy"], path
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"
    docs = c.get("/docs").text
    assert "http://" not in docs and "https://" not in docs and "<script>" not in docs  # local files, no inline script
    for src in ("/static/docs.js", "/static/docs.css"):
        assert c.get(src).status_code == 200
    assert c.get("/redoc").status_code == 404
    # The page sets styles through the CSSOM: a style attribute is blocked by style-src 'self'.
    assert "el.style.cssText" in c.get("/static/app.js").text


def test_docs_use_the_local_swagger_ui_when_installed(make_client, monkeypatch) -> None:
    import liverec.service.routes.page as app_mod

    if app_mod.swagger_ui_dir() is None:
        pytest.skip("swagger-ui-bundle-v2 is not installed: /docs lists the endpoints itself")
    c = make_client(open_access=True)
    assert "/docs/assets/swagger-ui-bundle.js" in c.get("/docs").text
    assert c.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    monkeypatch.setattr(app_mod, "swagger_ui_dir", lambda: None)
    c2 = make_client(open_access=True)
    assert "swagger-ui-bundle" not in c2.get("/docs").text.split("<body>")[0]


# ---------------------------------------------------------------------- privacy
def test_dp_contribution_is_bounded_across_variants() -> None:
    stats = LiveStats(max_contributions=3)
    for variant in ("default", "default+epsilon", "default+linucb", "default+lints"):
        stats.served("heavy", variant, [f"{variant}-{i}" for i in range(3)], 1.0)
        stats.event("heavy", f"{variant}-0", 1.0)
    counts = stats.dp_counts()
    assert sum(s for s, _ in counts.values()) == 3 and sum(k for _, k in counts.values()) <= 3
    stats.forget("heavy")
    assert not stats.knows("heavy")


def test_dp_budget_epsilon_cap_and_empty_policy(make_client) -> None:
    c = make_client(open_access=True, dp_budget=2.5)
    assert c.get("/admin/export/popularity", params={"epsilon": 100}).status_code == 422
    r = c.get("/admin/export/popularity", params={"epsilon": 1}).json()
    assert r["budget"] == 2.5 and r["budget_spent"] == pytest.approx(1)
    assert c.get("/admin/export/variants", params={"epsilon": 1}).json()["budget_spent"] == pytest.approx(2)
    r = c.get("/admin/export/variants", params={"epsilon": 1})
    assert r.status_code == 429 and "privacy budget" in r.json()["message"] and r.json()["fix"]
    assert c.get("/admin/export/popularity", params={"epsilon": 0.5}).status_code == 200  # what is left
    assert c.get("/admin/export/popularity", params={"epsilon": 0.01}).status_code == 429
    # The budget lives in the store: a restarted service does not get a fresh one.
    assert c.engine.store.spend("dp_epsilon_spent:open", 0.01, limit=2.5) == (False, pytest.approx(2.5))
    r = c.get("/recommendations/u1", params={"policy": ""})
    assert r.status_code == 422 and r.json()["field"] == "policy"
    assert [v["name"] for v in c.get("/variants").json()["variants"]] == ["default"]


def test_dp_budget_is_per_key_and_starts_afresh_each_window(make_client, monkeypatch) -> None:
    import liverec.service.routes.variants as variants_mod
    from apihelp import KEYS

    from liverec.service.auth import hash_key

    clock = [1_800_000_000.0]
    monkeypatch.setattr(variants_mod, "time", SimpleNamespace(time=lambda: clock[0]))
    c = make_client(dp_budget=2.0, dp_budget_window_s=86_400)
    c.engine.store.add_api_key("second-admin", "admin", hash_key("lr_second_admin_key"))
    first, second = {"X-API-Key": KEYS["admin"]}, {"X-API-Key": "lr_second_admin_key"}
    window_end = (clock[0] // 86_400 + 1) * 86_400
    r = c.get("/admin/export/popularity", params={"epsilon": 1.5}, headers=first).json()
    assert r["budget_spent"] == pytest.approx(1.5) and r["budget_renews_at"] == window_end
    r = c.get("/admin/export/variants", params={"epsilon": 1}, headers=first)
    assert r.status_code == 429 and "this API key" in r.json()["message"] and "starts afresh at" in r.json()["message"]
    # Another key has a budget of its own; the refused export spent nothing.
    r = c.get("/admin/export/variants", params={"epsilon": 1}, headers=second).json()
    assert r["budget_spent"] == pytest.approx(1)
    assert c.get("/admin/export/popularity", params={"epsilon": 0.5}, headers=first).json()["budget_spent"] == 2.0
    assert c.get("/admin/export/popularity", params={"epsilon": 0.1}, headers=first).status_code == 429
    clock[0] = window_end + 1  # the next window: the key's budget starts afresh
    r = c.get("/admin/export/popularity", params={"epsilon": 1.5}, headers=first).json()
    assert r["budget_spent"] == pytest.approx(1.5) and r["budget_renews_at"] == window_end + 86_400
    doc = c.get("/openapi.json").json()["components"]["schemas"]["DPCountOut"]["properties"]
    assert "budget_renews_at" in doc
    # Without a window the budget never renews, and says so.
    c2 = make_client(open_access=True, dp_budget=1.0)
    assert c2.get("/admin/export/popularity", params={"epsilon": 1}).json()["budget_renews_at"] is None
    clock[0] += 10 * 86_400
    r = c2.get("/admin/export/popularity", params={"epsilon": 1})
    assert r.status_code == 429 and "starts afresh" not in r.json()["message"]


# ---------------------------------------------------------------------- erasure
def test_erasure_removes_the_interest_vector_and_forgets_event_ids(make_client, store_url) -> None:
    c = make_client(store_url, open_access=True)
    interests = "slow-burning gothic mysteries set in lighthouses"
    assert c.put("/users/eraseme/interests", json={"interests": interests}).status_code == 200
    assert c.post("/events", json={"user": "eraseme", "item": "2", "kind": "like", "id": "ev-1"}).json()["accepted"] == 1
    with c.engine.store.engine.connect() as conn:
        q = sa.text("SELECT count(*) FROM vectors WHERE text_hash = :h")
        assert conn.execute(q, {"h": text_hash(interests)}).scalar() == 1
    r = c.delete("/users/eraseme").json()
    assert r["deleted"]["events"] == 1
    with c.engine.store.engine.connect() as conn:
        assert conn.execute(q, {"h": text_hash(interests)}).scalar() == 0
    # The erased user's event ids went with them: the same id again is new data.
    assert c.post("/events", json={"user": "eraseme", "item": "2", "kind": "like", "id": "ev-1"}).json()["accepted"] == 1
    if store_url.startswith("sqlite"):
        db = Path(sa.engine.make_url(store_url).database)
        c.delete("/users/eraseme")
        wal = db.with_name(db.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0
        assert interests.encode() not in db.read_bytes()
        with c.engine.store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
