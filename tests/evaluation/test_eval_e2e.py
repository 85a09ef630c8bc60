"""A tiny end-to-end evaluation run (seconds): every protocol, reports written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from liverec import Event
from liverec.encode.text import render_text
from liverec.evaluation.datasets import Dataset
from liverec.evaluation.report import write_html, write_json
from liverec.evaluation.run import evaluate
from liverec.settings import DEFAULT_TEXT_TEMPLATE


@pytest.fixture(scope="module")
def tiny(books, encoder):
    """40 users on 250 real books; each user reads around a seed book (LM neighbours)."""
    items = books[:250]
    vecs = encoder.encode([render_text(i.text, i.attributes, DEFAULT_TEXT_TEMPLATE) for i in items])
    rng = np.random.default_rng(7)
    events, t = [], 1_600_000_000.0
    for u in range(40):
        seed = rng.integers(len(items))
        near = np.argsort(-(vecs @ vecs[seed]))[:40]
        picks = rng.choice(near, size=14, replace=False)
        for j in picks:
            t += float(rng.integers(10, 500))
            events.append(Event(user=f"u{u}", item=items[j].id, kind="click", timestamp=t, id=f"e{u}-{j}"))
    return Dataset("tiny", items, events)


@pytest.mark.parametrize("protocol", ["static", "stream", "cold"])
def test_every_protocol_runs_and_liverec_learns_taste(tiny, encoder, protocol, tmp_path):
    models = ["liverec", "trending", "liverec@frozen"] if protocol == "stream" else ["liverec", "trending"]
    out = evaluate(tiny, models, protocol=protocol, k=10, encoder=encoder, cache_url=f"sqlite:///{tmp_path}/v.db")
    res = out["results"]
    assert set(res) == set(models)
    headline = "hr@10" if protocol == "stream" else "ndcg@10"
    for r in res.values():
        assert 0.0 <= r[headline] <= 1.0
    if protocol == "stream":
        # Users read around one taste: learning from each revealed event must help.
        assert res["liverec"]["hr@10"] > res["liverec@frozen"]["hr@10"]
        assert res["liverec"]["hr@10"] > res["trending"]["hr@10"]
        assert out["curves"] == {} or all(len(c) >= 0 for c in out["curves"].values())
        # Every model's hit rate per tenth of the stream; the predictions add up to the total.
        assert set(out["tenths"]) == set(models)
        for name, t in out["tenths"].items():
            assert len(t["hr@10"]) == 10 and sum(t["predictions"]) == res[name]["predictions"]
            hits = sum(h * n for h, n in zip(t["hr@10"], t["predictions"]) if n)
            assert hits == pytest.approx(res[name]["hr@10"] * res[name]["predictions"], abs=1e-3)
    else:
        assert res["liverec"][headline] > res["trending"][headline]
        assert out["tenths"] == {}
    write_json(out, tmp_path / "out.json")
    write_html(out, tmp_path / "out.html")
    assert json.loads((tmp_path / "out.json").read_text())["settings"]["protocol"] == protocol
    page = (tmp_path / "out.html").read_text()
    assert "<img" in page and "liverec" in page


def test_cli_eval_on_generic_folder(tiny, encoder, tmp_path, monkeypatch):
    import liverec.evaluation.run as run_mod
    from typer.testing import CliRunner

    from liverec.cli import app

    monkeypatch.setattr(run_mod, "SentenceTransformerEncoder", lambda *a, **k: encoder)
    d = tmp_path / "data"
    d.mkdir()
    (d / "items.jsonl").write_text(
        "\n".join(json.dumps({"id": i.id, "text": "", "attributes": dict(i.attributes)}) for i in tiny.items)
    )
    (d / "events.csv").write_text(
        "user,item,kind,timestamp,id\n" + "\n".join(f"{e.user},{e.item},click,{e.timestamp},{e.id}" for e in tiny.events)
    )
    res = CliRunner().invoke(
        app,
        ["eval", "--protocol", "static", "--dataset", "generic", "--data", str(d), "--models", "liverec,trending",
         "--json", str(tmp_path / "r.json"), "--report", str(tmp_path / "r.html"), "--cache", f"sqlite:///{tmp_path}/c.db"],
    )
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "r.json").read_text())
    assert set(got["results"]) == {"liverec", "trending"} and "ndcg@10" in got["results"]["liverec"]
    fit = got["tuning"]["liverec"]
    assert fit["engine_fit"] == "fit(tune=True)"
    assert fit["configuration"]["weights"] and fit["configuration"]["score"] >= fit["configuration"]["default_score"]
    bad = CliRunner().invoke(app, ["eval", "--dataset", "movielens", "--models", "nonsense"])
    assert bad.exit_code == 2 and "--data" in bad.output


@pytest.mark.parametrize("protocol", ["static", "stream", "cold"])
def test_jobs_give_the_same_figures_in_the_same_order(tiny, encoder, protocol, tmp_path):
    models = ["trending", "liverec", "itemknn", "ease"] + (["liverec@frozen"] if protocol == "stream" else [])
    runs, seen = {}, {}
    for jobs in (1, 2):
        calls: list[tuple[str, int, int]] = []

        def progress(it, desc, total, calls=calls):
            n = 0
            for x in it:
                n += 1
                yield x
            calls.append((desc, total, n))

        runs[jobs] = evaluate(tiny, models, protocol=protocol, encoder=encoder, jobs=jobs, progress=progress,
                              cache_url=f"sqlite:///{tmp_path}/v.db")
        seen[jobs] = calls
    timing = {"fit_s", "latency_p50_ms", "latency_p99_ms"}
    one, two = runs[1], runs[2]
    assert list(two["results"]) == list(one["results"]) == models
    for m in models:
        figures = {k: v for k, v in one["results"][m].items() if k not in timing}
        assert {k: v for k, v in two["results"][m].items() if k not in timing} == figures, m
        assert two["latencies_ms"][m]["n"] == one["latencies_ms"][m]["n"]
    assert two["curves"] == one["curves"]
    assert (one["settings"]["jobs"], two["settings"]["jobs"]) == (1, 2)
    # Sequential: one bar per model; parallel: one bar for all, run to its end.
    assert len(seen[1]) == len(models) and all(total == n for _, total, n in seen[1])
    [(desc, total, n)] = seen[2]
    assert "2 jobs" in desc and total == n == sum(t for _, t, _ in seen[1])


def test_a_failing_model_in_a_worker_raises_in_the_caller(tiny, encoder, tmp_path):
    from liverec.evaluation.harness import run_models

    def boom():
        raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError, match="model exploded"):
        run_models([lambda: 1, boom], lambda f, progress: f(), jobs=2)


@pytest.mark.parametrize("cache", ["new-dir", "off"])
def test_eval_creates_the_cache_directory_or_runs_without_a_cache(tiny, encoder, tmp_path, cache):
    # A fresh machine has no cache directory yet; 'off' keeps no vectors on disk at all.
    url = f"sqlite:///{tmp_path}/not/yet/there/v.db" if cache == "new-dir" else "off"
    out = evaluate(tiny, ["trending"], protocol="static", k=10, encoder=encoder, cache_url=url)
    assert 0.0 <= out["results"]["trending"]["ndcg@10"] <= 1.0
    assert (tmp_path / "not/yet/there/v.db").exists() == (cache == "new-dir")


def test_book_vectors_and_encoder_reports_create_the_cache_directory(encoder, tmp_path):
    from liverec.evaluation.simulator import load_book_vectors
    from liverec.evaluation.tune_encoder import _encode

    url = f"sqlite:///{tmp_path}/sim/cache/v.db"
    vecs, ids, titles = load_book_vectors(20, encoder=encoder, cache_url=url)
    assert vecs.shape == (20, encoder.dim) and (tmp_path / "sim/cache/v.db").exists()
    url = f"sqlite:///{tmp_path}/report/cache/v.db"
    got, _ = _encode(None, ["a book about the sea", "a book about the stars"], url, False)
    assert got.shape == (2, encoder.dim) and (tmp_path / "report/cache/v.db").exists()
