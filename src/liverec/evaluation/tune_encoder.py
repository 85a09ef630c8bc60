"""Fine-tune the language model itself on behaviour (the seed's step 5, §6.3).

The pretrained encoder places items by what their text says; users place them by what
they do next. This module teaches the encoder the second: for every user, each pair of
consecutive *positive* interactions ``(item, next item)`` becomes a training pair of
texts, and a contrastive loss (sentence-transformers' ``MultipleNegativesRankingLoss``:
the other pairs of the batch are the negatives) pulls the two texts together. The tuned
model is an ordinary sentence-transformers folder: point ``LIVEREC_ENCODER_MODEL`` at it
and the engine re-encodes the catalog under the new model id (the vector cache is keyed
by model id; a local folder's id includes its absolute path and a fingerprint of its
files, so re-tuning into the same folder never serves stale vectors).

The honest test is cold start, where only text can help: :func:`cold_split_pairs` holds
out 10% of the items with >= 5 interactions (:func:`~liverec.evaluation.splits.cold_item_split`)
and builds pairs from the remaining *train* events only, refusing to return a pair that
contains a held-out item's text; :func:`cold_start_report` then ranks just the cold
items for the users who interacted with them with a :class:`~liverec.models.content.ContentProfile`
on base-model vectors ("before") and on tuned-model vectors ("after").

The pieces:

- :func:`behaviour_pairs` — (item text, next item text) per user in time order: positive
  events only (``FeedbackConfig`` weight > 0: clicks, likes, ratings above the neutral
  star...), consecutive identical items or texts skipped, duplicate pairs kept once (first
  occurrence), at most ``max_pairs`` kept by a seeded uniform sample (chronological order
  preserved).
- :func:`cold_split_pairs` — the cold split and the pairs of its train part, checked by
  :func:`check_no_cold_text` (raises if any pair holds a held-out item's text).
- :func:`tune_encoder` — contrastive fine-tuning on CPU with a plain PyTorch loop (no
  ``datasets``/``accelerate`` needed): AdamW, linear warm-up/decay, gradient clipping,
  batches that never hold one text twice (a repeated text would be its own false
  negative); saves a folder ``SentenceTransformerEncoder(str(out_dir))`` loads offline.
- :func:`cold_start_report` — NDCG@k, Recall@k (and HR, MAP, MRR) on the cold items,
  before and after.

``liverec tune-encoder --dataset movielens --data ml-latest-small --out tuned-minilm``
runs the whole loop, prints the before/after table and says how to use the model.

Examples
--------
>>> from liverec import Event
>>> evs = [Event(user="u", item=i, kind="like", timestamp=float(t), id=f"e{t}")
...        for t, i in enumerate(["a", "b", "b", "c", "a", "b"])]
>>> behaviour_pairs(evs, {"a": "Dune", "b": "Foundation", "c": "Hyperion"})
[('Dune', 'Foundation'), ('Foundation', 'Hyperion'), ('Hyperion', 'Dune')]

The whole loop on a dataset (minutes on a CPU for MovieLens):

>>> from liverec.evaluation.datasets import load_dataset                     # doctest: +SKIP
>>> from liverec.settings import DEFAULT_TEXT_TEMPLATE as T                    # doctest: +SKIP
>>> ds = load_dataset("movielens", "ml-latest-small")                          # doctest: +SKIP
>>> pairs, split = cold_split_pairs(ds.items, ds.events, template=T)           # doctest: +SKIP
>>> out = tune_encoder(pairs, "tuned-minilm")                                  # doctest: +SKIP
>>> rep = cold_start_report(ds.items, ds.events, base_model=None, tuned_model=out,
...                         template=T, pairs=pairs)                           # doctest: +SKIP
>>> rep["before"]["ndcg@10"], rep["after"]["ndcg@10"]                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import ValidationError
from ..models.base import FeedbackConfig
from ..types import Event, Item
from ..encode.encoder import SentenceTransformerEncoder, shipped_model_path
from ..encode.text import render_text

__all__ = [
    "behaviour_pairs",
    "check_no_cold_text",
    "cold_split_pairs",
    "cold_start_report",
    "torch_threads",
    "tune_encoder",
]

Pair = tuple[str, str]


# ------------------------------------------------------------------------ pairs
def behaviour_pairs(
    events: Iterable[Event],
    texts_by_item: Mapping[str, str],
    *,
    max_pairs: int | None = 20_000,
    seed: int = 0,
    feedback: FeedbackConfig | None = None,
) -> list[Pair]:
    """(item text, next item text) for consecutive positive interactions of each user.

    Parameters
    ----------
    events : Iterable[Event]
        The interactions to learn from (for an honest evaluation: the train part only).
        Ordered by (timestamp, event id, input position), then chained per user.
    texts_by_item : Mapping[str, str]
        Item id -> the text the encoder reads. Items absent or with empty text are left
        out of the chain (the user's previous and next positive items become neighbours).
    max_pairs : int or None
        Keep at most this many pairs, drawn uniformly with ``numpy.random.default_rng(seed)``;
        the kept pairs stay in chronological order. ``None`` keeps all.
    seed : int
        Seed of that draw.
    feedback : FeedbackConfig, optional
        What counts as positive: an event whose weight is > 0 (default kind weights;
        ratings above 3 stars).

    Returns
    -------
    list[tuple[str, str]]
        Distinct ordered pairs of distinct texts, first occurrence first.

    Examples
    --------
    ``u`` likes a, b then dislikes c; ``v`` likes c then a. The dislike is not a step.

    >>> from liverec import Event
    >>> evs = [Event("u", "a", "like", timestamp=0.0, id="1"), Event("v", "c", "like", timestamp=1.0, id="2"),
    ...        Event("u", "b", "like", timestamp=2.0, id="3"), Event("u", "c", "dislike", timestamp=3.0, id="4"),
    ...        Event("v", "a", "like", timestamp=4.0, id="5")]
    >>> behaviour_pairs(evs, {"a": "A", "b": "B", "c": "C"})
    [('A', 'B'), ('C', 'A')]
    """
    if max_pairs is not None and (isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1):
        raise ValidationError(f"max_pairs must be a positive integer or None, got {max_pairs!r}.", field="max_pairs")
    fb = feedback or FeedbackConfig()
    events = list(events)
    # Stable sort: ties on (timestamp, id) keep their input order, like the splits do.
    order = sorted(range(len(events)), key=lambda i: (events[i].timestamp, events[i].id))
    last: dict[str, str] = {}  # user -> previous positive item with text
    seen: set[Pair] = set()
    pairs: list[Pair] = []
    for i in order:
        e = events[i]
        text = texts_by_item.get(e.item)
        if not text or fb.weight(e.kind, e.value) <= 0:
            continue
        prev = last.get(e.user)
        last[e.user] = e.item
        if prev is None or prev == e.item:
            continue
        pair = (texts_by_item[prev], text)
        if pair[0] == pair[1] or pair in seen:
            continue
        seen.add(pair)
        pairs.append(pair)
    if max_pairs is not None and len(pairs) > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=max_pairs, replace=False))
        pairs = [pairs[int(j)] for j in keep]
    return pairs


def check_no_cold_text(pairs: Iterable[Pair], cold_texts: Iterable[str]) -> None:
    """Raise :class:`~liverec.errors.ValidationError` if a pair contains a held-out text.

    Examples
    --------
    >>> check_no_cold_text([("A", "B")], {"C"})
    >>> check_no_cold_text([("A", "C")], {"C"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    liverec.errors.ValidationError: the tuning pairs are leaking: 1 pair(s) contain the text of a held-out cold item...
    """
    cold = {t for t in cold_texts if t}
    leaked = [p for p in pairs if p[0] in cold or p[1] in cold]
    if leaked:
        raise ValidationError(
            f"the tuning pairs are leaking: {len(leaked)} pair(s) contain the text of a held-out cold item "
            f"(e.g. {leaked[0]!r}). Build the pairs from the train part of the cold split only "
            "(cold_split_pairs does).",
            field="pairs",
        )


def _texts(items: Sequence[Item], template: str) -> dict[str, str]:
    return {it.id: render_text(it.text, it.attributes, template) for it in items}


def cold_split_pairs(
    items: Sequence[Item],
    events: Sequence[Event],
    *,
    template: str,
    max_pairs: int | None = 20_000,
    seed: int = 0,
    feedback: FeedbackConfig | None = None,
):
    """Tuning pairs from the train part of the cold-item split, and the split.

    The split is :func:`~liverec.evaluation.splits.cold_item_split` with ``seed`` (10% of
    the items with >= 5 interactions held out): the same one :func:`cold_start_report`
    evaluates on. A train item whose rendered text equals a cold item's text is left
    out too, so no held-out text can reach the model; the result is checked with
    :func:`check_no_cold_text` before it is returned.

    Returns
    -------
    (list[tuple[str, str]], ColdSplit)
    """
    from .splits import cold_item_split

    split = cold_item_split(events, seed=seed)
    texts = _texts(items, template)
    cold_texts = {texts[i] for i in split.cold_items if i in texts}
    train_texts = {i: t for i, t in texts.items() if i not in split.cold_items and t not in cold_texts}
    pairs = behaviour_pairs(split.train, train_texts, max_pairs=max_pairs, seed=seed, feedback=feedback)
    check_no_cold_text(pairs, cold_texts)
    return pairs, split


# --------------------------------------------------------------------- training
@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch intra-op threads inside the block (None or 0 = leave torch alone).

    On a machine whose cores are busy with other work, 1 thread is several times faster
    than torch's default (its worker threads wait on each other). The setting is
    process-wide, so it is restored on exit.
    """
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batches(pairs: Sequence[Pair], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffled batches in which no text occurs twice (a repeat would be its own false negative).

    A pair that collides with the batch being filled waits for the next one; a final
    batch of one pair (no negative to learn from) is dropped. Batches are uniformly
    shuffled on purpose: grouping pairs by text length (less padding) saved only ~12%
    of a CPU step on MovieLens and made the in-batch negatives too alike (long texts
    are the heavily tagged, popular movies): cold-start NDCG@10 fell from 0.092 to
    0.075 instead of holding at 0.093.
    """
    remaining = [int(i) for i in rng.permutation(len(pairs))]
    out: list[list[int]] = []
    while remaining:
        batch: list[int] = []
        used: set[str] = set()
        deferred: list[int] = []
        pos = 0
        while pos < len(remaining) and len(batch) < batch_size:
            j = remaining[pos]
            pos += 1
            a, b = pairs[j]
            if a in used or b in used:
                deferred.append(j)
                continue
            batch.append(j)
            used.update((a, b))
        remaining = deferred + remaining[pos:]
        if len(batch) >= 2:
            out.append(batch)
    return out


def tune_encoder(
    pairs: Sequence[Pair],
    out_dir: str | Path,
    *,
    base_model: str | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 2e-5,
    seed: int = 0,
    warmup_frac: float = 0.1,
    threads: int | None = None,
    progress: bool = True,
    on_step: Callable[[int, int, float], None] | None = None,
) -> Path:
    """Fine-tune a sentence-transformers model on text pairs; save it to ``out_dir``.

    Parameters
    ----------
    pairs : Sequence[tuple[str, str]]
        (anchor, positive) texts, e.g. from :func:`behaviour_pairs`; at least 2.
    out_dir : str or Path
        Folder to write (created; existing model files are overwritten).
    base_model : str or None
        Model name or local folder to start from; ``None`` = the shipped all-MiniLM-L6-v2.
    epochs, batch_size, lr : int, int, float
        Passes over the pairs, pairs per step (the in-batch negatives: larger is a harder
        task), AdamW peak learning rate.
    seed : int
        Seeds the batch order and dropout (in a forked torch RNG: the global one is left
        alone), so a run is repeatable on one machine.
    warmup_frac : float
        Share of the steps over which the learning rate ramps up linearly (then decays
        linearly to 0).
    threads : int or None
        torch CPU threads while training (see :func:`torch_threads`); None = torch's choice.
    progress : bool
        Show a tqdm bar over the steps.
    on_step : callable, optional
        Called as ``on_step(step, n_steps, loss)`` after every optimiser step.

    Returns
    -------
    Path
        ``out_dir``, loadable offline with ``SentenceTransformerEncoder(str(out_dir))``.

    Examples
    --------
    >>> out = tune_encoder([("Dune", "Foundation"), ("Emma", "Persuasion")], "tuned")  # doctest: +SKIP
    >>> SentenceTransformerEncoder(str(out)).encode(["Dune"]).shape                      # doctest: +SKIP
    (1, 384)
    """
    pairs = [(str(a), str(b)) for a, b in pairs]
    if len(pairs) < 2:
        raise ValidationError(
            f"need at least 2 pairs to fine-tune (in-batch negatives), got {len(pairs)}. "
            "Pass more events (or users with at least two positive interactions).",
            field="pairs",
        )
    if batch_size < 2:
        raise ValidationError(f"batch_size must be >= 2 (in-batch negatives), got {batch_size}.", field="batch_size")
    if epochs < 1:
        raise ValidationError(f"epochs must be >= 1, got {epochs}.", field="epochs")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValidationError(f"lr must be a positive number, got {lr!r}.", field="lr")

    path = base_model or shipped_model_path()
    if base_model is None or os.path.isdir(path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss  # type: ignore[no-redef]  # same class, older home

    hf_logging.disable_progress_bar()
    rng = np.random.default_rng(seed)
    model = SentenceTransformer(path, device="cpu")
    loss_fn = MultipleNegativesRankingLoss(model)
    tokenize = getattr(model, "preprocess", None) or model.tokenize  # preprocess: sentence-transformers >= 6

    plan = [_batches(pairs, batch_size, rng) for _ in range(epochs)]
    n_steps = sum(len(p) for p in plan)
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
    params = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in params if not any(nd in n for nd in no_decay)], "weight_decay": 0.01},
            {"params": [p for n, p in params if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_frac * n_steps), n_steps)
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        labels = torch.empty(0)  # MultipleNegativesRankingLoss uses the batch position as the label
        model.train()
        step = 0
        with tqdm(total=n_steps, desc="fine-tune", unit="step", disable=not progress) as bar:
            for epoch_batches in plan:
                for batch in epoch_batches:
                    anchors = tokenize([pairs[j][0] for j in batch])
                    positives = tokenize([pairs[j][1] for j in batch])
                    loss = loss_fn([anchors, positives], labels)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                    step += 1
                    value = float(loss.detach())
                    bar.set_postfix(loss=f"{value:.3f}")
                    bar.update(1)
                    if on_step is not None:
                        on_step(step, n_steps, value)
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return out


# ------------------------------------------------------------------- evaluation
def _encode(model: str | None, texts: list[str], cache_url: str | None, progress: bool) -> tuple[np.ndarray, str]:
    enc = SentenceTransformerEncoder(model)
    if cache_url is None:
        return enc.encode(texts, progress=progress), enc.model_id
    from ..encode.cache import CachedEncoder, open_cache

    store = open_cache(cache_url)  # its directory made on first use
    try:
        return CachedEncoder(enc, store, progress=progress).encode(texts), enc.model_id
    finally:
        store.close()


def cold_start_report(
    items: Sequence[Item],
    events: Sequence[Event],
    *,
    base_model: str | None,
    tuned_model: str | Path,
    template: str,
    k: int = 10,
    seed: int = 0,
    pairs: Iterable[Pair] | None = None,
    cache_url: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Cold-item ranking quality of a content profile, base-model vs tuned-model vectors.

    The protocol of ``liverec eval --protocol cold``: ``cold_item_split(events, seed=seed)``
    hides 10% of the items with >= 5 interactions from training; a
    :class:`~liverec.models.content.ContentProfile` fitted on the train events ranks only
    the cold items for every user who interacted with one; relevant = the cold items the
    user interacted with. Both models see the same split and the same texts.

    Parameters
    ----------
    items, events : sequences
        The dataset.
    base_model : str or None
        The "before" model (``None`` = shipped all-MiniLM-L6-v2).
    tuned_model : str or Path
        The "after" model (a folder written by :func:`tune_encoder`).
    template : str
        Item text template (``Settings.text_template``): the same one the pairs used.
    k : int
        Cut-off of the metrics.
    seed : int
        Seed of the cold split (use the one the pairs were built with).
    pairs : iterable of pairs, optional
        The tuning pairs: checked to contain no cold item's text (raises if they do).
    cache_url : str, optional
        Store URL of a vector cache (keyed by model id and text); ``None`` encodes directly.
    progress : bool
        Progress bars while encoding.

    Returns
    -------
    dict
        ``{"before": {"ndcg@10": ..., "recall@10": ..., "hr@10", "map@10", "mrr@10",
        "encoder": model id}, "after": {...}, "cold_items": n, "cold_users": n}``.
    """
    from .adapters import LearnerModel
    from .harness import run_cold
    from .splits import cold_item_split
    from ..models.content import ContentProfile
    from ..encode.catalog import Catalog

    split = cold_item_split(events, seed=seed)
    by_id = _texts(items, template)
    if pairs is not None:
        check_no_cold_text(pairs, {by_id[i] for i in split.cold_items if i in by_id})
    ids = [it.id for it in items]
    texts = [by_id[i] for i in ids]
    attrs = [dict(it.attributes) for it in items]
    out: dict[str, Any] = {}
    for label, model in (("before", base_model), ("after", str(tuned_model))):
        t = time.perf_counter()
        vecs, model_id = _encode(model, texts, cache_url, progress)
        encode_s = time.perf_counter() - t
        catalog = Catalog(vecs.shape[1])
        catalog.upsert(ids, vecs, attrs, texts)
        res = run_cold(events, [lambda: LearnerModel("content", ContentProfile(), catalog)], k=k, seed=seed)[0]
        row: dict[str, Any] = {m: (None if not math.isfinite(v) else round(float(v), 6)) for m, v in res.metrics.items()}
        row.pop("cold_items", None)
        row["encoder"] = model_id
        row["encode_seconds"] = round(encode_s, 2)
        out[label] = row
    out["cold_items"] = len(split.cold_items)
    out["cold_users"] = sum(1 for rel in split.test_by_user.values() if rel)
    return out
