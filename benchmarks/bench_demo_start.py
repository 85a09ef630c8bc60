"""Time from `liverec serve --demo` to the page and to the first list with reasons.

What `make demo` runs (`liverec serve --demo --open --simulate 2 --store ...`), started
as a subprocess three times:

* cold: an empty machine vector cache (a fresh ``XDG_CACHE_HOME``) and a new store;
* warm cache, new store: the same machine cache, another new store (what a second
  catalog import or another demo store on the same machine sees);
* restart: the warm store again (the usual second `make demo`).

Each run polls ``GET /`` until it answers 200, then ``GET /recommendations/<user>``
until the list is non-empty with reasons, then ``/stats`` until the background import
ends (all 10,000 books encoded and added). The floor row is `liverec --version` (the
CLI's own start-up) measured in the same run.

    .venv/bin/python benchmarks/bench_demo_start.py --json out/demo_start.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import console, print_header, write_json

TARGET = "demo page served within 60 s on a cold machine (2 cores, empty caches)"
LIVEREC = str(Path(sys.executable).with_name("liverec"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(check, timeout: float, proc: subprocess.Popen) -> float | None:
    """perf_counter time at which ``check()`` first returned true (polling every 0.1 s)."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}; see its log")
        try:
            if check():
                return time.perf_counter()
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return None


def run(name: str, store: str, env: dict[str, str], log: Path, full_timeout: float) -> dict[str, float | None]:
    port = _free_port()
    cmd = [LIVEREC, "serve", "--demo", "--open", "--simulate", "2", "--store", store, "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            with httpx.Client(base_url=base, timeout=10) as http:
                page = _until(lambda: http.get("/").status_code == 200, 300, proc)

                def listed() -> bool:
                    r = http.get("/recommendations/bench-reader", params={"k": 5})
                    items = r.json().get("items", []) if r.status_code == 200 else []
                    return bool(items) and bool(items[0].get("reasons"))

                recs = _until(listed, 300, proc)

                def complete() -> bool:
                    st = http.get("/stats").json()
                    return st.get("importing") is None and st.get("items", 0) >= 10_000

                full = _until(complete, full_timeout, proc)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    since = lambda t: None if t is None else round(t - t0, 2)  # noqa: E731
    row = {"page_200_s": since(page), "first_list_with_reasons_s": since(recs), "catalog_complete_s": since(full)}
    console.print(f"{name:<24} page {row['page_200_s']} s, first list with reasons "
                  f"{row['first_list_with_reasons_s']} s, all 10,000 books {row['catalog_complete_s']} s")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default=None)
    ap.add_argument("--full-timeout", type=float, default=900, help="seconds to wait for the whole catalog")
    args = ap.parse_args()
    started = time.time()
    print_header("bench_demo_start", TARGET)
    tmp = Path(tempfile.mkdtemp(prefix="liverec-demo-bench-"))
    env = {k: v for k, v in os.environ.items() if k != "LIVEREC_VECTOR_CACHE" and k != "LIVEREC_STORE"}
    env["XDG_CACHE_HOME"] = str(tmp / "cache")  # platformdirs: the machine cache lives under it
    try:
        t = time.perf_counter()
        subprocess.run([LIVEREC, "--version"], env=env, check=True, capture_output=True)
        floor = round(time.perf_counter() - t, 2)
        console.print(f"{'floor: liverec --version':<24} {floor} s")
        rows = {
            "cold": run("cold", f"sqlite:///{tmp}/a.db", env, tmp / "cold.log", args.full_timeout),
            "warm cache, new store": run("warm cache, new store", f"sqlite:///{tmp}/b.db", env,
                                         tmp / "warm.log", args.full_timeout),
            "restart": run("restart", f"sqlite:///{tmp}/b.db", env, tmp / "restart.log", args.full_timeout),
        }
        cold_page = rows["cold"]["page_200_s"]
        console.print(f"target: page within 60 s cold -> {'met' if cold_page is not None and cold_page <= 60 else 'MISSED'}"
                      f" ({cold_page} s)")
        write_json(args.json, benchmark="bench_demo_start", target=TARGET, config={"simulate": 2},
                   results={"floor_cli_start_s": floor, "runs": rows}, started=started)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
