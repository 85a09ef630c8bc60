"""Fine-tuning the LM on behaviour: pairs, a tiny real fine-tune, and the CLI command."""

from __future__ import annotations

import doctest
import json
import os
import time

import numpy as np
import pytest
from typer.testing import CliRunner

import liverec.evaluation.tune_encoder as tune_mod
from liverec import Event
from liverec.encode.encoder import SentenceTransformerEncoder, model_id_for
from liverec.encode.text import render_text
from liverec.evaluation.tune_encoder import behaviour_pairs, check_no_cold_text, cold_split_pairs, tune_encoder
from liverec.errors import ValidationError
from liverec.models import FeedbackConfig
from liverec.settings import DEFAULT_TEXT_TEMPLATE

T0 = 1_600_000_000.0


def ev(user, item, t, kind="like", value=1.0):
    return Event(user=user, item=item, kind=kind, value=value, timestamp=T0 + t, id=f"{user}-{item}-{t}")


TEXTS = {i: f"text {i}" for i in "abcdefg"}


# ------------------------------------------------------------------ pairs
def test_pairs_follow_time_order_per_user_not_input_order():
    # Given out of order and interleaved across users.
    evs = [ev("u", "c", 3), ev("v", "e", 2), ev("u", "a", 1), ev("v", "d", 1), ev("u", "b", 2)]
    assert behaviour_pairs(evs, TEXTS) == [
        ("text a", "text b"),  # u at t=2 (ties on time: event id "u-b-2" < "v-e-2")
        ("text d", "text e"),  # v at t=2
        ("text b", "text c"),  # u at t=3
    ]


def test_pairs_never_cross_users_and_skip_negative_and_unknown():
    evs = [
        ev("u", "a", 1),
        ev("v", "b", 2),            # another user: no (a, b)
        ev("u", "c", 3, kind="dislike"),  # negative: not a step
        ev("u", "d", 4, kind="rating", value=2.0),  # 2 stars: negative when stars are read signed
        ev("u", "zzz", 5),          # no text: left out of the chain
        ev("u", "e", 6, kind="rating", value=5.0),
    ]
    signed = FeedbackConfig(rating_engagement=0.0, rating_valence=1.0)
    assert behaviour_pairs(evs, TEXTS, feedback=signed) == [("text a", "text e")]
    # By default any rating is engagement: the 2-star item is a step of the chain.
    assert behaviour_pairs(evs, TEXTS) == [("text a", "text d"), ("text d", "text e")]


def test_pairs_skip_identical_items_and_texts_and_dedupe():
    texts = dict(TEXTS, f="text a")  # f renders to the same text as a
    evs = [ev("u", "a", 1), ev("u", "a", 2), ev("u", "b", 3), ev("u", "a", 4), ev("u", "b", 5),
           ev("v", "a", 1), ev("v", "f", 2), ev("v", "b", 3)]
    pairs = behaviour_pairs(evs, texts)
    assert pairs == [("text a", "text b"), ("text b", "text a")]
    assert len(set(pairs)) == len(pairs)


def test_pairs_sample_is_deterministic_and_keeps_order():
    evs = [ev(f"u{n}", it, t) for n in range(30) for t, it in enumerate("abcdefg")]
    evs += [ev(f"w{n}", it, t) for n in range(30) for t, it in enumerate("gfedcba")]
    full = behaviour_pairs(evs, TEXTS, max_pairs=None)
    assert len(full) == 12  # 6 forward + 6 backward steps, deduplicated
    a = behaviour_pairs(evs, TEXTS, max_pairs=5, seed=1)
    assert a == behaviour_pairs(evs, TEXTS, max_pairs=5, seed=1) and len(a) == 5
    assert a == [p for p in full if p in set(a)]  # a chronological subsequence
    assert behaviour_pairs(evs, TEXTS, max_pairs=5, seed=2) != a
    with pytest.raises(ValidationError):
        behaviour_pairs(evs, TEXTS, max_pairs=0)


def test_cold_split_pairs_hold_no_cold_item_text(books):
    items = books[:60]
    rng = np.random.default_rng(3)
    evs = [ev(f"u{u}", items[int(j)].id, t) for u in range(25) for t, j in enumerate(rng.choice(60, 8, replace=False))]
    pairs, split = cold_split_pairs(items, evs, template=DEFAULT_TEXT_TEMPLATE, max_pairs=None)
    texts = {it.id: render_text(it.text, it.attributes, DEFAULT_TEXT_TEMPLATE) for it in items}
    cold_texts = {texts[i] for i in split.cold_items}
    assert split.cold_items and pairs
    assert not {t for p in pairs for t in p} & cold_texts
    # Building pairs from every event instead would leak, and the check says so.
    leaky = behaviour_pairs(evs, texts, max_pairs=None)
    with pytest.raises(ValidationError, match="leaking"):
        check_no_cold_text(leaky, cold_texts)


def test_docstring_examples():
    import liverec.encode.encoder as encoder_mod

    for mod in (tune_mod, encoder_mod):
        assert doctest.testmod(mod, optionflags=doctest.ELLIPSIS).failed == 0


# --------------------------------------------------------------- fine-tune
def test_batches_cover_pairs_without_repeating_a_text():
    rng = np.random.default_rng(0)
    # "hot" is in a quarter of the pairs: it may appear only once per batch.
    pairs = [("hot" if n % 4 == 0 else f"a{n}", f"b{n}" * (1 + n % 5)) for n in range(200)]
    batches = tune_mod._batches(pairs, 16, rng)
    seen = [j for b in batches for j in b]
    assert len(seen) == len(set(seen))
    # Every other pair is used; "hot" pairs only as long as there are batches to put them in
    # (a leftover batch of one "hot" pair has no negative and is dropped).
    assert {j for j in range(200) if j % 4} <= set(seen)
    assert sum(1 for j in seen if j % 4 == 0) == len(batches)
    for b in batches:
        texts = [t for j in b for t in pairs[j]]
        assert len(texts) == len(set(texts)) and 2 <= len(b) <= 16
    again = tune_mod._batches(pairs, 16, np.random.default_rng(0))
    assert again == batches


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, books):
    """40 pairs of real book texts, 1 epoch, batch 8: seconds on a CPU."""
    texts = [render_text(b.text, b.attributes, "{title}\nby {authors}") for b in books[:80]]
    pairs = list(zip(texts[0::2], texts[1::2]))
    out = tmp_path_factory.mktemp("tuned") / "model"
    losses = []
    tune_encoder(pairs, out, epochs=1, batch_size=8, lr=2e-5, seed=0, threads=1, progress=False,
                 on_step=lambda step, n, loss: losses.append(loss))
    return pairs, out, losses


def _pair_cos(enc, pairs):
    a = enc.encode([p[0] for p in pairs])
    b = enc.encode([p[1] for p in pairs])
    return np.sum(a * b, axis=1)


def test_tuned_model_loads_offline_and_pulls_pairs_together(tuned, encoder):
    pairs, out, losses = tuned
    assert len(losses) == 5 and all(np.isfinite(losses))
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    enc = SentenceTransformerEncoder(str(out))
    assert enc.dim == encoder.dim == 384
    before, after = _pair_cos(encoder, pairs), _pair_cos(enc, pairs)
    assert np.mean(after > before) >= 0.8, (before, after)
    assert after.mean() > before.mean() + 0.02
    v = enc.encode(["The Hobbit"])
    assert v.shape == (1, 384) and abs(float(np.linalg.norm(v)) - 1.0) < 1e-4


def test_local_folder_model_ids_are_absolute_and_change_on_retrain(tmp_path, monkeypatch):
    for sub in ("x", "y"):
        (tmp_path / sub / "m").mkdir(parents=True)
        (tmp_path / sub / "m" / "model.safetensors").write_bytes(sub.encode())
    monkeypatch.chdir(tmp_path / "x")
    id_x = SentenceTransformerEncoder("m").model_id
    assert id_x.startswith(f"st:{os.path.realpath(tmp_path / 'x' / 'm')}@")
    assert SentenceTransformerEncoder("./m").model_id == id_x
    monkeypatch.chdir(tmp_path / "y")
    assert SentenceTransformerEncoder("m").model_id != id_x  # same name, another folder
    monkeypatch.chdir(tmp_path / "x")
    time.sleep(0.01)
    (tmp_path / "x" / "m" / "model.safetensors").write_bytes(b"retrained")
    assert SentenceTransformerEncoder("m").model_id != id_x  # same folder, new weights
    assert model_id_for(None) == "st:all-MiniLM-L6-v2"


def test_too_few_pairs_is_a_clear_error(tmp_path):
    with pytest.raises(ValidationError, match="at least 2 pairs"):
        tune_encoder([("a", "b")], tmp_path / "m")


# --------------------------------------------------------------------- CLI
def test_cli_tune_encoder_on_generic_folder(books, encoder, tmp_path, monkeypatch):
    from liverec.cli import app

    real = tune_mod.SentenceTransformerEncoder
    # The base model's vectors come from the process's memoised encoder (same model).
    monkeypatch.setattr(tune_mod, "SentenceTransformerEncoder", lambda m=None, **k: encoder if m is None else real(m, **k))
    monkeypatch.delenv("LIVEREC_ENCODER_MODEL", raising=False)
    items = books[:60]
    rng = np.random.default_rng(5)
    d = tmp_path / "data"
    d.mkdir()
    (d / "items.jsonl").write_text(
        "\n".join(json.dumps({"id": i.id, "text": "", "attributes": dict(i.attributes)}) for i in items)
    )
    rows = []
    for u in range(20):
        for t, j in enumerate(rng.choice(60, 7, replace=False)):
            rows.append(f"u{u},{items[int(j)].id},like,{T0 + t * 60},e{u}-{t}")
    (d / "events.csv").write_text("user,item,kind,timestamp,id\n" + "\n".join(rows) + "\n")
    out, js = tmp_path / "tuned", tmp_path / "r.json"
    res = CliRunner().invoke(
        app,
        ["tune-encoder", "--dataset", "generic", "--data", str(d), "--out", str(out), "--epochs", "1",
         "--batch-size", "8", "--max-pairs", "24", "--seed", "0", "--json", str(js), "--threads", "1",
         "--cache", f"sqlite:///{tmp_path}/c.db"],
    )
    assert res.exit_code == 0, res.output
    got = json.loads(js.read_text())
    assert got["pairs"] == 24 and got["seconds"] > 0 and got["model_dir"] == str(out.resolve())
    for side in ("before", "after"):
        assert 0.0 <= got[side]["ndcg@10"] <= 1.0 and 0.0 <= got[side]["recall@10"] <= 1.0
    assert got["before"]["encoder"] == "st:all-MiniLM-L6-v2"
    assert got["after"]["encoder"].startswith(f"st:{out.resolve()}@")
    assert "NDCG@10" in res.output and "LIVEREC_ENCODER_MODEL=" in res.output
    assert (out / "config_sentence_transformers.json").exists()
