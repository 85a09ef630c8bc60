"""API keys the service tests create (hashed) in every test store, and a header helper."""

KEYS = {"read": "lr_test_read_key", "write": "lr_test_write_key", "admin": "lr_test_admin_key"}


def auth(role: str) -> dict[str, str]:
    """The header carrying the test key of ``role``."""
    return {"X-API-Key": KEYS[role]}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A real uvicorn server in a thread on a free loopback port: ``with LiveServer(app) as url:``."""

    def __init__(self, app, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> str:
        import threading
        import time

        import httpx

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the test server did not start within 60 s")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class Replica:
    """A `liverec serve` process on a free loopback port (open access), killable and restartable."""

    def __init__(self, store: str, *, state: str | None = None, prefix: str = "liverec",
                 sync_seconds: float = 0.3, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.extra = extra
        self.store, self.state, self.prefix, self.sync_seconds = store, state, prefix, sync_seconds
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 180) -> "Replica":
        import os
        import subprocess
        import sys
        import time

        import httpx

        env = {**os.environ, "HF_HUB_OFFLINE": "1", "LIVEREC_ENCODER_PROGRESS": "false",
               "LIVEREC_STATE_PREFIX": self.prefix, "LIVEREC_SYNC_SECONDS": str(self.sync_seconds),
               "OPENBLAS_NUM_THREADS": "1"}
        args = [sys.executable, "-m", "liverec.cli", "serve", "--open", "--store", self.store,
                "--port", str(self.port), "--log-level", "warning"]
        if self.state:
            args += ["--state", self.state]
        args += list(self.extra)
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica exited: {self.proc.stderr.read()[-3000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("replica did not become ready")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except Exception:  # noqa: BLE001
                self.proc.kill()


def kill_cycles(rep: Replica, item_ids: list[str], cycles: int, *, users: int = 7, writers: int = 4,
                run_seconds: float = 1.0) -> list[str]:
    """Start ``rep``, let ``writers`` threads post events with unique ids, SIGKILL it after
    ``run_seconds``; ``cycles`` times. Returns the ids the server acknowledged (HTTP 200)."""
    import threading
    import time

    import httpx

    acked: list[str] = []
    lock = threading.Lock()
    for cycle in range(cycles):
        rep.start()
        stop = threading.Event()

        def send(worker: int, cycle: int = cycle) -> None:
            with httpx.Client(base_url=rep.url, timeout=5) as c:
                k = 0
                while not stop.is_set():
                    eid = f"c{cycle}-w{worker}-{k}"
                    k += 1
                    ev = {"user": f"u{k % users}", "item": item_ids[k % len(item_ids)], "kind": "click", "id": eid}
                    try:
                        if c.post("/events", json=ev).status_code == 200:
                            with lock:
                                acked.append(eid)
                    except httpx.HTTPError:
                        return  # the server died mid-request: not acknowledged
        threads = [threading.Thread(target=send, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        time.sleep(run_seconds)
        rep.kill()  # SIGKILL mid-stream
        stop.set()
        for t in threads:
            t.join(10)
    return acked
