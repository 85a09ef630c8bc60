"""Encoding throughput of the shipped language model (texts/s), cold and through the cache.

Measures the torch path that liverec uses (sentence-transformers, CPU). The ONNX path
mentioned in the evaluation issue is not implemented in liverec yet; this script says
so rather than inventing a figure.

    .venv/bin/python benchmarks/bench_encode.py --n 2000 --json out/encode.json
"""

from __future__ import annotations

import argparse
import time

import torch

from common import console, kv_table, print_header, rendered_texts, write_json
from liverec.data import load_goodbooks
from liverec.encode import CachedEncoder, SentenceTransformerEncoder
from liverec.store import Store

TARGET = "encoding throughput (texts/s), torch path; ONNX path not implemented"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="texts to encode (goodbooks titles)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    started = time.time()
    print_header("bench_encode", TARGET)
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = rendered_texts(load_goodbooks(limit=args.n))
    enc = SentenceTransformerEncoder(batch_size=args.batch_size)
    t = time.perf_counter()
    enc.encode(["warm up"])
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    enc.encode(texts)
    cold_s = time.perf_counter() - t
    store = Store.open("sqlite://")
    cached = CachedEncoder(enc, store, progress=False)
    cached.encode(texts)
    t = time.perf_counter()
    cached.encode(texts)
    hit_s = time.perf_counter() - t
    results = {
        "texts": len(texts),
        "model_load_and_first_call_s": round(load_s, 3),
        "torch_texts_per_s": round(len(texts) / cold_s, 1),
        "cache_hit_texts_per_s": round(len(texts) / hit_s, 1),
        "torch_threads": torch.get_num_threads(),
    }
    from liverec.encode.onnx import OnnxEncoder

    onnx = OnnxEncoder(batch_size=args.batch_size, threads=args.threads or None)
    t = time.perf_counter()
    onnx.encode(["warm up"])  # exports the model on the very first run (cached afterwards)
    results["onnx_export_or_load_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    ovecs = onnx.encode(texts)
    onnx_s = time.perf_counter() - t
    results["onnx_texts_per_s"] = round(len(texts) / onnx_s, 1)
    results["onnx_speedup_vs_torch"] = round(cold_s / onnx_s, 2)
    results["onnx_max_abs_diff_vs_torch"] = float(abs(ovecs - enc.encode(texts)).max())
    console.print(kv_table("encoding", results.items()))
    write_json(args.json, benchmark="bench_encode", target=TARGET, config=vars(args), results=results, started=started)


if __name__ == "__main__":
    main()
