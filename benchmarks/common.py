"""Shared helpers for the liverec benchmarks.

* :func:`latency` / :func:`percentiles` -- p50/p90/p99/max in milliseconds.
* :func:`machine_info` -- CPU, cores, memory, library versions (for the JSON output).
* :func:`write_json` -- every figure + machine info + the exact command line.
* :func:`book_vectors` -- the 10,000 shipped goodbooks books and their vectors from the
  REAL shipped model (all-MiniLM-L6-v2), cached in ``benchmarks/.cache/`` so only the
  first run encodes (1-2 minutes on 2 cores).
* :class:`PrecomputedEncoder` -- an Encoder that looks vectors up instead of running
  the model, so benchmarks never re-encode.
* :func:`synthetic_catalog` -- the real books plus synthetic mixtures of real vectors,
  for catalogs larger than the 10k real texts that ship here.

Nothing here asserts on timings: the benchmarks measure and report.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

# The Makefile runs everything with single-threaded OpenBLAS; do the same (overridable)
# so a benchmark's matrix-vector products do not fight the other users of the 2 cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Engines here get vectors from PrecomputedEncoder (and synthetic ones beyond the real
# books): keep them out of the machine's vector cache, each store holds its own as before.
os.environ.setdefault("LIVEREC_VECTOR_CACHE", "off")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from liverec.data import load_goodbooks  # noqa: E402
from liverec.encode.text import render_text  # noqa: E402
from liverec.settings import DEFAULT_TEXT_TEMPLATE  # noqa: E402
from liverec.types import Item  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"
REAL_MODEL_ID = "st:all-MiniLM-L6-v2"  # SentenceTransformerEncoder().model_id for the shipped model
N_REAL_BOOKS = 10_000

# Wide tables even when piped to a file (rich falls back to 80 columns otherwise).
console = Console(width=None if sys.stdout.isatty() else 120)


# ------------------------------------------------------------------- timings
def percentiles(seconds: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50/p90/p99/max (and mean, n) of durations given in seconds, reported in ms.

    Percentiles use numpy's default linear interpolation between order statistics.
    """
    a = np.asarray(seconds, dtype=np.float64) * 1000.0
    if len(a) == 0:
        return {"n": 0, "p50_ms": float("nan"), "p90_ms": float("nan"), "p99_ms": float("nan"),
                "max_ms": float("nan"), "mean_ms": float("nan")}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"n": int(len(a)), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "max_ms": float(a.max()), "mean_ms": float(a.mean())}


latency = percentiles  # alias: latency(list_of_seconds)


def latency_table(title: str, rows: Mapping[str, Mapping[str, float]], *, caption: str | None = None) -> Table:
    """A rich table with one row per measured operation."""
    t = Table(title=title, caption=caption, title_justify="left")
    t.add_column("operation")
    for c in ("n", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"):
        t.add_column(c, justify="right")
    for name, s in rows.items():
        t.add_row(name, str(s["n"]), *(f"{s[k]:.3f}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")))
    return t


def kv_table(title: str, rows: Iterable[tuple[str, Any]], *, caption: str | None = None) -> Table:
    t = Table(title=title, caption=caption, title_justify="left")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for k, v in rows:
        t.add_row(k, v if isinstance(v, str) else f"{v:,.3f}" if isinstance(v, float) else f"{v:,}")
    return t


def timed(fn: Any, *a: Any, **kw: Any) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this thread) of ``fn(*a, **kw)``.

    On a shared machine the CPU time is the contention-robust figure: it excludes time
    spent waiting for a core (and for the disk), the wall time includes both.
    """
    c0, t0 = time.thread_time(), time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t0, time.thread_time() - c0


def print_load(note: str = "") -> None:
    la = os.getloadavg()
    console.print(f"[dim]load average now: {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} on {os.cpu_count()} cores{note}[/]")


class Stopwatch:
    """``with Stopwatch() as sw: ...; sw.seconds``"""

    def __enter__(self) -> "Stopwatch":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0


# -------------------------------------------------------------- machine info
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_head() -> str | None:
    """The checked-out commit, read from .git directly (no git command is run)."""
    git = REPO / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        p = git / ref
        if p.exists():
            return p.read_text().strip()
        packed = git / "packed-refs"
        if packed.exists():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
    except OSError:
        pass
    return None


def _src_digest() -> str | None:
    """sha256 over the imported liverec package's .py files: identifies the exact code
    measured, uncommitted edits included (other engineers change src/ concurrently)."""
    try:
        import liverec

        root = Path(liverec.__file__).resolve().parent
        h = hashlib.sha256()
        for f in sorted(root.rglob("*.py")):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
        return h.hexdigest()[:16]
    except Exception:  # noqa: BLE001 - informational only
        return None


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def fs_type(path: str | Path) -> str:
    """Filesystem type holding ``path`` (from /proc/mounts), e.g. ext4, tmpfs, overlay."""
    p = str(Path(path).resolve())
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and (p == parts[1] or p.startswith(parts[1].rstrip("/") + "/")) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def machine_info() -> dict[str, Any]:
    import sqlite3

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "mem_total_gb": _mem_total_gb(),
        "loadavg": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": _version("torch"),
        "sentence_transformers": _version("sentence-transformers"),
        "usearch": _version("usearch"),
        "sqlalchemy": _version("SQLAlchemy"),
        "psycopg": _version("psycopg"),
        "sqlite": sqlite3.sqlite_version,
        "liverec": _version("liverec"),
        "git_head": _git_head(),
        "liverec_src_sha256": _src_digest(),
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
    }


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def write_json(path: str | Path | None, *, benchmark: str, target: str, config: Mapping[str, Any],
               results: Mapping[str, Any], started: float, notes: Sequence[str] = ()) -> None:
    """Write every figure, the machine info and the exact command line to ``path``."""
    if not path:
        return
    machine = dict(_START_MACHINE or machine_info())
    machine["loadavg_at_start"] = machine.pop("loadavg")
    machine["loadavg_at_end"] = list(os.getloadavg())
    doc = {
        "benchmark": benchmark,
        "target": target,
        "command": command_line(),
        "started_utc": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "duration_s": round(time.time() - started, 3),
        "machine": machine,
        "config": dict(config),
        "results": dict(results),
        "notes": list(notes),
    }
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=2, default=_json_default, allow_nan=True) + "\n")
    console.print(f"[dim]wrote {p}[/dim]")


_START_MACHINE: dict[str, Any] | None = None


def print_header(benchmark: str, target: str) -> None:
    global _START_MACHINE
    m = _START_MACHINE = machine_info()
    console.rule(f"[bold]{benchmark}")
    console.print(f"target: {target}")
    console.print(
        f"machine: {m['cpu_model']}, {m['cpus_usable']} usable cores, {m['mem_total_gb']} GB, "
        f"python {m['python']}, numpy {m['numpy']}, torch {m['torch']}, usearch {m['usearch']}, "
        f"sqlite {m['sqlite']}; load avg (1/5/15 min) {', '.join(f'{x:.2f}' for x in m['loadavg'])}"
    )
    console.print(f"code: git HEAD {str(m['git_head'])[:10]}, liverec src sha256 {m['liverec_src_sha256']} "
                  "(working tree as imported)")
    console.print(f"command: {command_line()}")


# ------------------------------------------------------------------- vectors
def rendered_texts(items: Sequence[Item], template: str = DEFAULT_TEXT_TEMPLATE) -> list[str]:
    """The exact texts the Engine sends to its encoder for ``items`` (Engine._render)."""
    return [render_text(it.text, it.attributes, template) for it in items]


class PrecomputedEncoder:
    """An Encoder (model_id, dim, encode) that looks each text up in a dict of vectors.

    Benchmarks use it so that building an engine never re-runs the language model.
    The vectors are the REAL shipped model's (all-MiniLM-L6-v2) vectors of those exact
    texts, computed once by :func:`book_vectors` and cached on disk -- or, for items
    beyond the 10k real books, synthetic mixtures of those real vectors (see
    :func:`synthetic_catalog`). ``model_id`` defaults to the real model's id so the
    store's vector cache is keyed as if the model had produced them.

    ``encode`` raises ``KeyError`` for a text it was not given: a benchmark must never
    silently score an item with a made-up vector.
    """

    def __init__(self, vectors: Mapping[str, np.ndarray], *, dim: int | None = None,
                 model_id: str = REAL_MODEL_ID) -> None:
        self.vectors = vectors
        self.model_id = model_id
        if dim is None:
            dim = len(next(iter(vectors.values())))
        self.dim = int(dim)
        self.calls = 0

    @classmethod
    def for_items(cls, items: Sequence[Item], vectors: np.ndarray, *,
                  template: str = DEFAULT_TEXT_TEMPLATE, model_id: str = REAL_MODEL_ID) -> "PrecomputedEncoder":
        """Map each item's rendered text (what the engine encodes) to its row of ``vectors``."""
        texts = rendered_texts(items, template)
        table: dict[str, np.ndarray] = {}
        for t, v in zip(texts, vectors):  # rows are views: no copy of the matrix
            table[t] = v
        return cls(table, dim=vectors.shape[1], model_id=model_id)

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        self.calls += len(texts)
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            try:
                out[i] = self.vectors[t]
            except KeyError:
                raise KeyError(
                    f"PrecomputedEncoder has no vector for text {t[:80]!r}: only the benchmark "
                    "catalog's texts are known (refusing to invent a vector)."
                ) from None
        return out


def _texts_digest(ids: Sequence[str], texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i, t in zip(ids, texts):
        h.update(i.encode())
        h.update(b"\0")
        h.update(t.encode())
        h.update(b"\1")
    return h.hexdigest()


def book_vectors(*, template: str = DEFAULT_TEXT_TEMPLATE, cache_dir: Path = CACHE_DIR,
                 quiet: bool = False) -> tuple[list[Item], np.ndarray]:
    """(items, vectors): the 10,000 shipped goodbooks books and their real-model vectors.

    Vectors are all-MiniLM-L6-v2 (liverec.encode.SentenceTransformerEncoder, the shipped
    weights) encodings of each book's rendered text -- exactly what
    ``Engine.add_items`` would encode with the default settings. They are cached in
    ``benchmarks/.cache/books_vectors.npy`` (+ ``books_ids.json`` holding the ids and a
    digest of the texts); the cache is rebuilt when the catalog, template or model id
    no longer match.
    """
    items = load_goodbooks()
    ids = [it.id for it in items]
    texts = rendered_texts(items, template)
    digest = _texts_digest(ids, texts)
    vec_path, meta_path = cache_dir / "books_vectors.npy", cache_dir / "books_ids.json"
    if vec_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("digest") == digest and meta.get("model_id") == REAL_MODEL_ID and meta.get("ids") == ids:
            vecs = np.load(vec_path)
            if vecs.shape == (len(items), meta["dim"]):
                return items, vecs
        if not quiet:
            console.print("[yellow]book vector cache is stale (catalog/template/model changed); re-encoding[/]")
    from liverec.encode import SentenceTransformerEncoder

    if not quiet:
        console.print(f"encoding {len(texts):,} books with the shipped all-MiniLM-L6-v2 (one-time, ~1-2 min)...")
    enc = SentenceTransformerEncoder()
    t0 = time.perf_counter()
    vecs = enc.encode(texts, progress=not quiet and sys.stderr.isatty())
    seconds = time.perf_counter() - t0
    assert enc.model_id == REAL_MODEL_ID, enc.model_id
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(vec_path, vecs)
    meta_path.write_text(json.dumps({
        "model_id": enc.model_id, "dim": int(vecs.shape[1]), "digest": digest,
        "template": template, "encode_seconds": round(seconds, 2), "ids": ids,
    }))
    if not quiet:
        console.print(f"encoded in {seconds:.1f} s ({len(texts) / seconds:.0f} texts/s); cached in {vec_path}")
    return items, vecs


SYNTHETIC_NOTE = (
    "items beyond the 10,000 real goodbooks books are SYNTHETIC: each vector is "
    "normalize(v_a + 0.5*v_b + noise) of a random pair (a, b) of real all-MiniLM-L6-v2 book "
    "vectors, noise Gaussian with expected L2 norm 0.15; ids 'syn-<k>', texts '#<k>' (no title "
    "words, so the title-word cap applies among real books only). No corpus of 100k+ real texts "
    "ships with liverec."
)


def synthetic_catalog(n: int, *, seed: int = 0, noise: float = 0.15,
                      quiet: bool = False) -> tuple[list[Item], np.ndarray]:
    """(items, vectors) of ``n`` items: the real books first, then synthetic ones.

    The first ``min(n, 10_000)`` items are the shipped books with their real vectors
    (:func:`book_vectors`). Each further item ``syn-<k>`` (text ``"#<k>"``: no title words;
    no attributes) gets ``normalize(v_a + 0.5 * v_b + e)`` for a random pair of distinct
    real books ``a, b``, where ``e`` is Gaussian noise with per-component std
    ``noise / sqrt(dim)`` (expected norm ``noise``, i.e. 0.15 of a unit vector). These are
    plausible points of the real LM space (near mixtures of real books), not real texts.
    """
    books, real = book_vectors(quiet=quiet)
    if n <= len(books):
        return books[:n], real[:n]
    m = n - len(books)
    rng = np.random.default_rng(seed)
    dim = real.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    out[: len(books)] = real
    chunk = 50_000
    for s in range(0, m, chunk):
        c = min(chunk, m - s)
        a = rng.integers(0, len(real), c)
        b = (a + rng.integers(1, len(real), c)) % len(real)  # b != a
        v = real[a] + 0.5 * real[b] + rng.standard_normal((c, dim), dtype=np.float32) * np.float32(noise / np.sqrt(dim))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out[len(books) + s: len(books) + s + c] = v
    # Digits only: a shared word ("syn") in every title would let the slate's title-word cap
    # (Settings.max_per_title_word) admit only a few synthetic items per list.
    items = list(books) + [Item(id=f"syn-{k}", text=f"#{k}") for k in range(m)]
    return items, out


def add_items_in_batches(engine: Any, items: Sequence[Item], batch: int = 50_000) -> float:
    """engine.add_items in batches (bounded memory per transaction); returns seconds."""
    t0 = time.perf_counter()
    for s in range(0, len(items), batch):
        engine.add_items(items[s: s + batch])
    return time.perf_counter() - t0


def recommend_stages(eng: Any, users: Sequence[str], k: int = 10, *, log_impressions: bool = False,
                     rng: np.random.Generator | None = None, n: int = 500) -> dict[str, dict[str, float]]:
    """Diagnostic: time the stages of a plain Engine.recommend one by one (the pipeline's parts).

    * ``ranker.retrieve_with_floors`` -- candidate generation and (two-stage serving only)
      each source's catalog-wide lowest score, one search per source where it can;
    * ``ranker.fuse`` -- every source scores the candidates, min-max with the floors, fused;
    * ``Pipeline.score`` -- the two above again + blocklist/seen exclusion;
    * slate selection (``build_slate`` with the settings' diversity);
    * ``ranker.to_recommendations`` with reasons;
    * optionally the impression write;
    * ``source: <name>`` -- each source's ``score`` of the same candidates alone, on a fresh
      user state (what the source costs inside ``fuse``, its normalisation aside).

    It calls the engine's own functions rather than copying their logic, so it follows
    the engine as it changes; it is not a substitute for timing ``recommend()``.
    """
    import uuid

    from liverec.rank import ranker
    from liverec.rank.pipeline import Request
    from liverec.rank.slate import build_slate
    from liverec.store import Impression

    rng = rng or np.random.default_rng(0)
    names = ["retrieve + floors (candidates, catalog-wide minima)", "fuse (score the candidates)",
             "score: retrieve + floors + exclude + fuse (Pipeline.score)", "slate (top-k / MMR)",
             "to_recommendations (reasons)"]
    if log_impressions:
        names.append("store.log_impressions (k rows)")
    out: dict[str, list[float]] = {s: [] for s in names}
    n_cand: list[int] = []
    w = eng._weights(None)
    diversity = float(getattr(eng.settings, "diversity", 0.0) or 0.0)
    for _ in range(n):
        user = users[int(rng.integers(len(users)))]
        state, seen = eng.user_state(user), eng.state.seen(user)
        req = Request(user=user, k=k, weights=w, exclude_seen=eng.settings.exclude_seen, log=False)
        with eng._lock:
            t0 = time.perf_counter()
            idx, floor = ranker.retrieve_with_floors(state, eng.learners, w, eng.catalog, eng.index,
                                                     max(k, eng.pipeline.per_source()) + len(seen))
            t1 = time.perf_counter()
            ranker.fuse(state, eng.catalog.from_idx(idx), eng.learners, w, floor)
            t2 = time.perf_counter()
            scored = eng.pipeline.score(state, seen, eng.learners, req)
            t3 = time.perf_counter()
            order = build_slate(scored.fused, eng.catalog.vectors, k, diversity=diversity, rows=scored.items.idx)
            t4 = time.perf_counter()
            recs = ranker.to_recommendations(state, scored, order, eng.learners, eng.catalog, with_reasons=True)
            t5 = time.perf_counter()
        times = [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4]
        if log_impressions:
            rid, now = uuid.uuid4().hex, time.time()
            eng.store.log_impressions([Impression(rid, user, r.item, r.position, r.score, r.propensity, "greedy",
                                                  now, {}) for r in recs])
            times.append(time.perf_counter() - t5)
        for name, d in zip(names, times):
            out[name].append(d)
        n_cand.append(len(scored.items))
        items = eng.catalog.from_idx(idx)
        for src, model in eng.learners.items():
            fresh = eng.user_state(user)  # nothing the fused pass derived and kept on the state
            with eng._lock:
                t0 = time.perf_counter()
                model.score(fresh, items)
                out.setdefault(f"source: {src}", []).append(time.perf_counter() - t0)
    res = {name: percentiles(v) for name, v in out.items()}
    res["_candidates_scored_mean"] = {"n": len(n_cand), "value": float(np.mean(n_cand))}  # type: ignore[dict-item]
    return res


def stages_table(title: str, stages: Mapping[str, Any]) -> Table:
    rows = {k: v for k, v in stages.items() if not k.startswith("_")}
    cand = stages.get("_candidates_scored_mean", {}).get("value")
    return latency_table(title, rows, caption=None if cand is None else f"mean candidates scored per request: {cand:,.0f}")


def fsync_probe(directory: str | Path, n: int = 200) -> dict[str, float]:
    """Latency of append 4 KiB + fsync in ``directory``: the floor under every durable commit.

    SQLite in WAL mode with synchronous=FULL fsyncs the WAL once per commit, so a
    record() cannot be faster than this on the same disk at the same moment.
    """
    p = Path(directory) / f".fsync-probe-{os.getpid()}"
    buf = os.urandom(4096)
    out = []
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, buf)
            os.fsync(fd)
            out.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        p.unlink(missing_ok=True)
    return percentiles(out)
