"""The HTTP API through the real app (FastAPI TestClient, real engine, real MiniLM)."""

from __future__ import annotations

import json
import logging

import pytest
import sqlalchemy as sa
from apihelp import auth

pytestmark = pytest.mark.slow


def ids(resp) -> list[str]:
    return [r["item"] for r in resp.json()["items"]]


# ----------------------------------------------------------------------- items
def test_items_bulk_get_search_delete(make_client) -> None:
    c = make_client(open_access=True)
    r = c.post("/items", json={"items": [{"id": "n1", "text": "A new novel about dragons", "attributes": {"year": 2024}}]})
    assert r.status_code == 200 and r.json() == {"received": 1, "changed": 1}
    # Same content again: nothing changes, nothing re-encoded.
    assert c.post("/items", json={"items": [{"id": "n1", "text": "A new novel about dragons", "attributes": {"year": 2024}}]}).json()["changed"] == 0
    assert c.get("/items/n1").json() == {"id": "n1", "text": "A new novel about dragons", "attributes": {"year": 2024}}
    found = c.get("/items", params={"q": "harry potter", "limit": 3}).json()
    assert len(found) == 3 and all("harry potter" in f["text"].lower() for f in found)
    assert c.delete("/items/n1").json() == {"deleted": 1}
    r = c.get("/items/n1")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert c.delete("/items/n1").status_code == 404


def test_limits_413(make_client) -> None:
    c = make_client(open_access=True, max_batch=5, max_body_bytes=4096)
    events = [{"user": "u", "item": "2"} for _ in range(6)]
    r = c.post("/events", json={"events": events})
    assert r.status_code == 413 and "limit is 5" in r.json()["message"]
    r = c.post("/items", json={"items": [{"id": f"x{i}"} for i in range(6)]})
    assert r.status_code == 413
    big = {"user": "u", "item": "2", "context": {"pad": "x" * 5000}}
    r = c.post("/events", json=big)
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    # A body with no Content-Length (streamed) is measured too.
    r = c.post("/events", content=iter([json.dumps(big).encode()]), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert c.engine.store.count_events() == 0


# ---------------------------------------------------------------------- events
def test_events_single_batch_idempotent(make_client) -> None:
    c = make_client(open_access=True)
    assert c.post("/events", json={"user": "u1", "item": "2", "kind": "like", "id": "e1"}).json() == {
        "received": 1, "accepted": 1, "duplicates": 0}
    r = c.post("/events", json={"events": [
        {"user": "u1", "item": "18", "id": "e2"}, {"user": "u1", "item": "18", "id": "e2"},
        {"user": "u1", "item": "2", "kind": "like", "id": "e1"}]})
    assert r.json() == {"received": 3, "accepted": 1, "duplicates": 2}
    assert [e.id for e in c.engine.history("u1")] == ["e1", "e2"] or sorted(e.id for e in c.engine.history("u1")) == ["e1", "e2"]
    assert c.engine.store.count_events() == 2


@pytest.mark.parametrize(
    "body, field",
    [
        ({"user": "u1", "item": "nope"}, "events[0].item"),
        ({"user": "u1", "item": "2", "kind": "teleport"}, "events[0].kind"),
        ({"user": "u1", "item": "2", "kind": "rating", "value": 9}, "events[0].value"),
        ({"user": "u1", "item": "2", "timestamp": 1e13}, "events[0].timestamp"),
        ({"user": "u1"}, "body.item"),
        ({"user": "", "item": "2"}, "body.user"),
        ({"user": "u1", "item": "2", "colour": "red"}, "body.colour"),
        ({"events": [{"user": "u1", "item": "2"}, {"user": "u1", "item": "2", "value": "many"}]}, "body.events.1.value"),
        ({"events": [{"user": "u1", "item": "2"}, {"user": "u1", "item": "missing"}]}, "events[1].item"),
    ],
)
def test_bad_events_422_name_the_field_and_store_nothing(make_client, body, field) -> None:
    c = make_client(open_access=True)
    r = c.post("/events", json=body)
    assert r.status_code == 422, r.text
    out = r.json()
    assert out["field"] == field, out
    assert out["message"] and "Traceback" not in r.text
    assert c.engine.store.count_events() == 0


def test_malformed_json_is_422_not_500(make_client) -> None:
    c = make_client(open_access=True)
    r = c.post("/events", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


# -------------------------------------------------------------- recommendations
def test_recommendations_reflect_the_next_event_and_cache_until_then(make_client) -> None:
    c = make_client(open_access=True)
    first = c.get("/recommendations/reader", params={"k": 10})
    assert first.status_code == 200 and first.json()["cached"] is False
    again = c.get("/recommendations/reader", params={"k": 10})
    assert again.json()["cached"] is True and ids(again) == ids(first)
    # Harry Potter liked: the very next request is recomputed and shows it.
    assert c.post("/events", json={"user": "reader", "item": "2", "kind": "like"}).status_code == 200
    after = c.get("/recommendations/reader", params={"k": 10})
    body = after.json()
    assert body["cached"] is False
    assert ids(after) != ids(first)
    assert "2" not in ids(after)  # seen items are excluded
    titles = " ".join(r["title"] for r in body["items"])
    assert "Harry Potter" in titles
    top = body["items"][0]
    assert top["reasons"] and top["explanation"] and 0 < top["propensity"] <= 1
    # A cached answer is still logged as served (impressions) with the variant.
    c.get("/recommendations/reader", params={"k": 10})
    c.engine.flush()
    imps = list(c.engine.store.iter_impressions(user="reader"))
    assert len(imps) == 40 and all(i.context["variant"] == "default" for i in imps)


def test_recommendation_knobs(make_client) -> None:
    c = make_client(open_access=True)
    c.post("/events", json={"user": "u", "item": "2", "kind": "like"})
    r = c.get("/recommendations/u", params={"k": 5, "filters": json.dumps({"year": {"lt": 1950}})})
    assert r.status_code == 200
    years = [c.engine.get_item(i).attributes.get("year") for i in ids(r)]
    assert years and all(y is not None and y < 1950 for y in years)
    r = c.get("/recommendations/u", params={"k": 5, "exclude": ["18", "23"]})
    assert not {"18", "23"} & set(ids(r))
    r = c.get("/recommendations/u", params={"k": 5, "policy": "epsilon"})
    assert r.status_code == 200 and r.json()["policy"] == "epsilon" and r.json()["cached"] is False
    assert r.json()["variant"] == "default+epsilon"
    for params, field in [({"filters": "{bad"}, "filters"), ({"filters": "[1]"}, "filters"),
                          ({"variant": "nope"}, "variant"), ({"policy": "nope"}, "policy"),
                          ({"k": 0}, "query.k"), ({"diversity": 2}, "query.diversity")]:
        r = c.get("/recommendations/u", params=params)
        assert r.status_code == 422 and r.json()["field"] == field, (params, r.text)


def test_a_filter_that_matches_nothing_comes_back_as_a_warning(make_client) -> None:
    c = make_client(open_access=True)
    years = [a["year"] for a in c.engine.catalog.attributes if "year" in a]
    lo, hi = int(min(years)), int(max(years))
    r = c.get("/recommendations/u", params={"k": 5, "filters": json.dumps({"year": {"gt": 3000}, "lang": "xx"})})
    assert r.status_code == 200 and r.json()["items"] == []
    warns = r.json()["warnings"]
    assert [(w["warning"], w["field"]) for w in warns] == [("no_match", "filters.year"), ("no_match", "filters.lang")]
    assert 'filter year={"gt": 3000} matches no item' in warns[0]["message"]
    assert warns[0]["fix"] == f"the items' year runs from {lo} to {hi}: choose a condition within that range."
    r = c.get("/recommendations/u", params={"k": 5, "filters": json.dumps({"genre": "Horror"})})
    (w,) = r.json()["warnings"]  # an attribute no item carries: the fix names those they do
    assert w["field"] == "filters.genre" and "'title'" in w["fix"] and "'year'" in w["fix"]
    again = c.get("/recommendations/u", params={"k": 5, "filters": json.dumps({"genre": "Horror"})})
    assert again.json()["cached"] is True and again.json()["warnings"] == [w]  # a cached answer says it too
    ok = c.get("/recommendations/u", params={"k": 5, "filters": json.dumps({"year": {"lt": 1950}})})
    assert ok.json()["items"] and ok.json()["warnings"] == []
    assert c.get("/recommendations/u", params={"k": 5}).json()["warnings"] == []
    schema = c.get("/openapi.json").json()["components"]["schemas"]
    assert "warnings" in schema["RecommendationsOut"]["properties"]
    assert {"warning", "message", "field", "fix"} <= set(schema["WarningOut"]["properties"])


def test_put_interests_moves_a_light_readers_list(make_client) -> None:
    c = make_client(open_access=True)
    hp = [i for i in c.engine.catalog.ids if "Rowling" in str(c.engine.attributes_of(i).get("authors"))][:5]
    assert c.post("/events", json={"events": [{"user": "new-reader", "item": i, "kind": "click", "timestamp": 1e9 + n}
                                              for n, i in enumerate(hp)]}).status_code == 200
    before = ids(c.get("/recommendations/new-reader", params={"k": 10}))
    interests = "detective mysteries and crime investigations"
    assert c.put("/users/new-reader/interests", json={"interests": interests}).status_code == 200
    r = c.get("/recommendations/new-reader", params={"k": 10})
    assert r.json()["cached"] is False
    new = [it for it in r.json()["items"] if it["item"] not in before]
    assert len(new) >= 5, f"only {len(new)} of 10 changed"
    assert sum(f"the interests you declared “{interests}”" in it["explanation"] for it in new) >= len(new) / 2


def test_explain_and_interests(make_client) -> None:
    c = make_client(open_access=True)
    r = c.put("/users/fan/interests", json={"interests": "wizards and a school of magic"})
    assert r.status_code == 200 and r.json()["interests"] == "wizards and a school of magic"
    recs = c.get("/recommendations/fan", params={"k": 10}).json()["items"]
    assert any("Harry Potter" in (x["title"] or "") for x in recs)
    e = c.get(f"/explain/fan/{recs[0]['item']}").json()
    assert e["rank"] >= 0 and e["reasons"]
    assert c.get("/explain/fan/does-not-exist").status_code == 404
    assert c.put("/users/fan/interests", json={"interests": None}).json()["interests"] is None


# ------------------------------------------------------------------------ auth
ENDPOINTS = [
    ("get", "/recommendations/u1", None, "read"),
    ("get", "/items/2", None, "read"),
    ("get", "/items?q=harry", None, "read"),
    ("get", "/explain/u1/2", None, "read"),
    ("get", "/users/u1", None, "read"),
    ("get", "/variants", None, "read"),
    ("get", "/stats", None, "read"),
    ("post", "/events", {"user": "u1", "item": "2"}, "write"),
    ("post", "/items", {"items": [{"id": "z1", "text": "zebra"}]}, "write"),
    ("put", "/users/u1/interests", {"interests": "cats"}, "write"),
    ("delete", "/users/u9", None, "write"),
    ("post", "/admin/fit", None, "admin"),
    ("get", "/admin/fit", None, "admin"),
    ("get", "/admin/export/popularity", None, "admin"),
    ("get", "/admin/export/variants", None, "admin"),
]
RANK = {"read": 0, "write": 1, "admin": 2}


def test_auth_matrix(make_client) -> None:
    c = make_client()
    for method, path, body, need in ENDPOINTS:
        kw = {"json": body} if body is not None else {}
        r = getattr(c, method)(path, **kw)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.json()["error"] == "unauthorized"
        r = getattr(c, method)(path, headers={"X-API-Key": "lr_wrong"}, **kw)
        assert r.status_code == 401, (method, path)
        for role in ("read", "write", "admin"):
            r = getattr(c, method)(path, headers=auth(role), **kw)
            if RANK[role] >= RANK[need]:
                assert r.status_code < 300, (method, path, role, r.status_code, r.text)
            else:
                assert r.status_code == 403, (method, path, role, r.status_code)
                assert need in r.json()["message"]
    # Bearer works too; open endpoints need nothing.
    assert c.get("/variants", headers={"Authorization": f"Bearer {auth('read')['X-API-Key']}"}).status_code == 200
    for path in ("/health", "/ready", "/metrics", "/", "/openapi.json"):
        assert c.get(path).status_code == 200, path


def test_keys_are_stored_hashed_and_revocable(make_client, monkeypatch) -> None:
    c = make_client()
    with c.engine.store.engine.connect() as conn:
        stored = [r[0] for r in conn.execute(sa.text("SELECT key_hash FROM api_keys"))]
    assert stored and not any(k in stored for k in (auth(r)["X-API-Key"] for r in ("read", "write", "admin")))
    assert all(len(h) == 64 for h in stored)
    monkeypatch.setattr(c.app.state.svc, "key_ttl", 0.0)  # no lookup caching: revocation is immediate
    assert c.get("/variants", headers=auth("read")).status_code == 200
    c.engine.store.delete_api_key("test-read")
    assert c.get("/variants", headers=auth("read")).status_code == 401


def test_keys_from_settings(make_client) -> None:
    from liverec.service.auth import hash_key

    c = make_client(api_keys={hash_key("env-key"): "write"})
    assert c.post("/events", json={"user": "u", "item": "2"}, headers={"X-API-Key": "env-key"}).status_code == 200
    assert c.post("/admin/fit", headers={"X-API-Key": "env-key"}).status_code == 403


# --------------------------------------------------------------------- erasure
def test_erasure_leaves_no_trace(make_client) -> None:
    c = make_client(open_access=True, impression_flush_seconds=30.0,
                    variants={"a": {"share": 0.5}, "b": {"share": 0.5, "diversity": 0.3}})
    for item in ("2", "18", "21"):
        c.post("/events", json={"user": "erased-7f3a", "item": item, "kind": "like"})
    c.put("/users/erased-7f3a/interests", json={"interests": "magic"})
    served = ids(c.get("/recommendations/erased-7f3a", params={"k": 5}))
    c.post("/events", json={"user": "erased-7f3a", "item": served[0], "kind": "click"})  # a credited click
    c.get("/recommendations/erased-7f3a", params={"k": 5})  # cached entry + buffered impressions
    c.post("/events", json={"user": "stays", "item": "2", "kind": "like"})
    svc = c.app.state.svc
    assert svc.knows("erased-7f3a")
    in_flight = svc.version("erased-7f3a")  # a request computing while the erasure runs

    r = c.delete("/users/erased-7f3a")
    assert r.status_code == 200
    deleted = r.json()["deleted"]
    assert deleted["events"] == 4 and deleted["impressions"] == 10 and deleted["users"] == 1

    eng = c.engine
    eng.flush()
    with eng.store.engine.connect() as conn:
        tables = [t for t in sa.inspect(conn).get_table_names()]
        for table in tables:
            cols = [col["name"] for col in sa.inspect(conn).get_columns(table)]
            for col in cols:
                if col in ("vector", "payload"):
                    continue
                n = conn.execute(
                    sa.text(f'SELECT count(*) FROM "{table}" WHERE CAST("{col}" AS TEXT) LIKE :p'), {"p": "%erased-7f3a%"}
                ).scalar()
                assert n == 0, f"{table}.{col} still mentions the erased user"
    assert "erased-7f3a" not in eng.state and "erased-7f3a" not in eng.served.pending
    svc.cache.put("erased-7f3a", "k", in_flight, b"[]", [])  # its answer must not be cached
    assert svc.cache.get("erased-7f3a", "k") is None
    assert not svc.knows("erased-7f3a")
    for name, m in eng.learners.items():
        assert "erased-7f3a" not in json.dumps(getattr(m, "__dict__", {}), default=lambda o: None), name
    # Served again as a brand-new user; the other user is untouched.
    assert c.get("/users/erased-7f3a").json()["events"] == 0
    assert c.get("/users/stays").json()["events"] == 1
    cold = c.get("/recommendations/erased-7f3a", params={"k": 5}).json()
    assert cold["cached"] is False


# ------------------------------------------------------------------------- A/B
def test_variants_assignment_attribution_and_ctr(make_client) -> None:
    c = make_client(open_access=True, variants={"control": {"share": 0.7}, "explore": {"share": 0.3, "policy": "epsilon"}})
    from liverec.service.ab import assign

    svc = c.app.state.svc
    counts = {"control": 0, "explore": 0}
    for i in range(4000):
        counts[assign(svc.variants, f"user{i}", salt=svc.settings.ab_salt).name] += 1
    assert abs(counts["control"] / 4000 - 0.7) < 0.03
    user = next(f"user{i}" for i in range(100) if assign(svc.variants, f"user{i}", salt=svc.settings.ab_salt).name == "explore")
    r = c.get(f"/recommendations/{user}", params={"k": 4}).json()
    assert r["variant"] == "explore" and r["policy"] == "epsilon"
    r2 = c.get(f"/recommendations/{user}", params={"k": 4}).json()
    assert r2["variant"] == "explore"  # sticky
    c.post("/events", json={"user": user, "item": r["items"][1]["item"], "kind": "click"})
    served = {x["item"] for x in r["items"] + r2["items"]}
    other = next(b for b in map(str, range(1, 300)) if b not in served)
    c.post("/events", json={"user": user, "item": other, "kind": "click"})  # never served: no credit
    rows = {v["name"]: v for v in c.get("/variants").json()["variants"]}
    assert rows["explore"]["served"] == 8 and rows["explore"]["clicked"] == 1
    assert rows["explore"]["ctr"] == pytest.approx(1 / 8)
    lo, hi = rows["explore"]["ctr_ci95"]
    assert 0 < lo < 1 / 8 < hi < 1
    assert rows["control"]["served"] == 0 and rows["control"]["ctr"] is None
    c.engine.flush()
    imps = list(c.engine.store.iter_impressions(user=user))
    assert {i.context["variant"] for i in imps} == {"explore"} and {i.policy for i in imps} == {"epsilon"}
    # Stats for the page and the Prometheus gauge agree.
    stats = c.get("/stats").json()
    assert stats["events_total"] == 2 and stats["series"]
    assert 'liverec_variant_ctr{variant="explore"} 0.125' in c.get("/metrics").text


def test_bad_variants_refuse_to_start(encoder) -> None:
    from liverec.errors import ValidationError
    from liverec.service.ab import parse_variants

    with pytest.raises(ValidationError, match="variants.x.policy"):
        parse_variants({"x": {"policy": "nope"}}, policies={"greedy"}, default_policy="greedy")
    with pytest.raises(ValidationError, match="share"):
        parse_variants({"x": {"share": 0}}, policies={"greedy"}, default_policy="greedy")
    with pytest.raises(ValidationError, match="unknown keys"):
        parse_variants({"x": {"colour": 1}}, policies={"greedy"}, default_policy="greedy")


# --------------------------------------------------------------------- privacy
def test_dp_exports(make_client) -> None:
    c = make_client(open_access=True, dp_max_contributions=3, dp_budget=20)
    events = [{"user": f"u{i}", "item": "2", "kind": "like"} for i in range(40)]
    events += [{"user": f"u{i}", "item": "18", "kind": "click"} for i in range(10)]
    events += [{"user": "heavy", "item": str(i), "kind": "click"} for i in range(1, 60)]
    c.post("/events", json={"events": events})
    r = c.get("/admin/export/popularity", params={"epsilon": 10, "top": 300}).json()
    assert r["sensitivity"] == 3 and "geometric" in r["mechanism"]
    counts = r["counts"]
    assert len(counts) == 300  # every catalog item gets noise, zeros included
    assert abs(counts["2"] - 41) <= 3 and abs(counts["18"] - 11) <= 3
    # The heavy user counts for at most 3 items (their first ones).
    assert sum(1 for i in range(4, 60) if counts.get(str(i), 0) >= 1) <= 10
    lo = c.get("/admin/export/popularity", params={"epsilon": 0.05, "top": 300}).json()["counts"]
    assert sum(abs(lo[k] - counts[k]) for k in counts) > 300  # small epsilon = visible noise
    v = c.get("/admin/export/variants").json()
    assert set(v["variants"]) == {"default"} and v["epsilon"] == 1.0


# ----------------------------------------------------------------- operations
def test_ops_endpoints(make_client) -> None:
    c = make_client(open_access=True)
    assert c.get("/health").json() == {"status": "ok"}
    ready = c.get("/ready").json()
    assert ready["ready"] and ready["items"] == 300 and ready["open_access"] is True
    c.post("/events", json={"user": "u", "item": "2"})
    c.get("/recommendations/u")
    m = c.get("/metrics").text
    assert 'liverec_request_seconds_bucket{le="0.005",method="GET",route="/recommendations/{user}",status="200"}' in m
    assert "liverec_events_ingested_total 1.0" in m and "liverec_model_version" in m
    # One request, one commit (the TestClient sends them one at a time).
    assert "liverec_group_commits 1.0" in m and "liverec_group_committed_requests 1.0" in m
    before = c.engine.model_version
    r = c.post("/admin/fit")
    assert r.status_code == 202 and r.json()["started"] is True
    c.engine.lifecycle.thread and c.engine.lifecycle.thread.join(60)
    assert c.get("/admin/fit").json()["model_version"] == before + 1
    assert c.get("/docs").status_code == 200


def test_no_stack_traces_and_no_ids_in_info_logs(make_client, monkeypatch, caplog) -> None:
    c = make_client(open_access=True)
    caplog.set_level(logging.INFO, logger="liverec")
    c.post("/events", json={"user": "alice-private-id", "item": "2", "kind": "like", "context": {"secret": "payload-xyz"}})
    c.get("/recommendations/alice-private-id")
    c.delete("/users/alice-private-id")

    def boom(*a, **k):
        raise RuntimeError("internal detail /etc/passwd")

    monkeypatch.setattr(c.engine, "explain", boom)
    r = c.get("/explain/bob/2")
    assert r.status_code == 500
    assert "passwd" not in r.text and "Traceback" not in r.text and "reference" in r.json()["message"]
    info = [rec.getMessage() for rec in caplog.records if rec.levelno <= logging.INFO]
    assert info, "the access log should have lines"
    assert not any("alice-private-id" in m or "payload-xyz" in m for m in info)
