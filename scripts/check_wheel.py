#!/usr/bin/env python3
"""Build liverec's sdist and wheel, install the wheel into a fresh venv and use it.

What it checks, in order (any failure stops it with exit code 1):

1. ``python -m build`` makes an sdist and, from it, a wheel.
2. Both hold every tracked file under ``src/liverec`` — among them the live page
   (``service/page``), the shipped book catalog (``data/goodbooks``) and the schema and
   its migrations (``store/schema.py``) — and the wheel holds nothing else but its
   metadata: the ``liverec`` script, the version, every extra.
3. A fresh venv gets ``torch==2.13.0`` (the CPU build) and then the wheel with the
   ``[redis]`` extra (versions pinned to ``requirements.txt`` unless ``--no-pins``).
4. From a temporary folder outside the checkout: ``liverec`` is imported from the venv;
   ``liverec --version`` and ``python -m liverec --version``; the shipped catalog
   loads; the first Python block of README.md runs as written; ``liverec serve --open`` answers
   ``/``, the page's static files and ``/health``; ``liverec serve --open --state
   redis://127.0.0.1:6379/15`` reports ``replication: redis`` at ``/ready``.
5. The extras not installed (postgres, onnx, eval) are really absent, and using each
   gives exit code 2 with the ``pip install 'liverec[...]'`` to run and no traceback.

Nothing is skipped silently: without Redis on 127.0.0.1:6379 the check fails unless
``--skip-redis`` is given, and a skipped step is listed in the summary.

Usage::

    .venv/bin/python scripts/check_wheel.py [--keep] [--workdir DIR] [--no-pins] [--skip-redis]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the CPU wheel; an unpinned torch pulls a multi-GB CUDA build
REDIS_URL = "redis://127.0.0.1:6379/15"
#: files named in the output when present (the rest are compared as a set)
MUST_SHIP = ("service/page/index.html", "service/page/app.js", "service/page/style.css",
             "data/goodbooks/books.csv.gz", "data/goodbooks/LICENSE", "store/schema.py", "py.typed",
             "__main__.py", "_extras.py")
EXTRAS = ("postgres", "redis", "onnx", "eval", "all")
#: (extra, a module it installs that must be absent without it, a command that needs it, extra env)
ABSENT = (
    ("postgres", "psycopg", ["serve", "--open", "--store", "postgresql://nobody@127.0.0.1:9/none", "--port", "9"], {}),
    ("onnx", "onnxruntime", ["recommend", "u1", "--store", "sqlite:///onnx.db"], {"LIVEREC_ENCODER_BACKEND": "onnx"}),
    ("eval", "vowpalwabbit", ["simulate", "--agents", "static,vw", "--seeds", "1", "--steps", "1"], {}),
    ("eval", "matplotlib", ["simulate", "--agents", "static", "--seeds", "1", "--steps", "1", "--report", "r.html"], {}),
)

class CheckFailed(Exception):
    pass


class Checker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.timings: list[tuple[str, float]] = []
        self.sub_timings: list[tuple[str, float]] = []
        self.passed: list[str] = []
        self.skipped: list[str] = []
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="liverec-wheel-")).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        if self.work == ROOT or ROOT in self.work.parents:
            raise CheckFailed(f"--workdir {self.work} is inside the checkout; the installed package must be used "
                              "from outside it")
        self.dist = self.work / "dist"
        self.venv = self.work / "venv"
        self.run_dir = self.work / "run"
        self.bin = self.venv / "bin"
        self.version = _source_version()

    # ------------------------------------------------------------------ plumbing
    def step(self, name: str):
        checker = self

        class _Step:
            def __enter__(self):
                self.t = time.perf_counter()
                print(f"\n== {name}", flush=True)

            def __exit__(self, kind, exc, tb):
                dt = time.perf_counter() - self.t
                checker.timings.append((name, dt))
                checker.timings.extend(checker.sub_timings)
                checker.sub_timings = []
                if kind is None:
                    print(f"   ok ({dt:.1f} s)", flush=True)
                return False

        return _Step()

    def ok(self, what: str) -> None:
        self.passed.append(what)
        print(f"   PASS {what}", flush=True)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
               and not k.startswith("LIVEREC_")}
        env.update(PATH=f"{self.bin}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(self.venv),
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OPENBLAS_NUM_THREADS="1", COLUMNS="200",
                   LIVEREC_STATE_PREFIX=f"liverec-wheel-check-{os.getpid()}")
        env.update(extra)
        return env

    def run(self, cmd: list[str], *, cwd: Path | None = None, timeout: float = 1800, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        shown = " ".join(str(c) for c in cmd)
        print("   $ " + (shown if len(shown) < 160 and "\n" not in shown else shown.split("\n")[0][:150] + " ..."),
              flush=True)
        proc = subprocess.run([str(c) for c in cmd], cwd=cwd or self.run_dir, env=env or self.env(),
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise CheckFailed(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                              f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
        return proc

    # ------------------------------------------------------------------ 1-2 build
    def build(self) -> None:
        with self.step("build sdist + wheel (python -m build)"):
            dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "pyproject.toml"], cwd=ROOT,
                                   capture_output=True, text=True).stdout.splitlines()
            if dirty:  # the wheel is built from the working tree, as it is now
                print(f"   note: {len(dirty)} uncommitted change(s) under src/ or in pyproject.toml go into this build")
            if self.dist.exists():
                shutil.rmtree(self.dist)
            self.run([sys.executable, "-m", "build", "--outdir", self.dist, ROOT], cwd=ROOT, env=dict(os.environ))
            self.sdist = _one(self.dist.glob("liverec-*.tar.gz"), "sdist")
            self.wheel = _one(self.dist.glob("liverec-*.whl"), "wheel")
            print(f"   {self.sdist.name} ({self.sdist.stat().st_size / 1e6:.2f} MB), "
                  f"{self.wheel.name} ({self.wheel.stat().st_size / 1e6:.2f} MB)")
            if f"-{self.version}-" not in self.wheel.name:
                raise CheckFailed(f"wheel {self.wheel.name} is not version {self.version} (liverec.__version__)")

    def contents(self) -> None:
        with self.step("contents of the wheel and the sdist"):
            expected = _tracked_package_files()
            with zipfile.ZipFile(self.wheel) as z:
                names = set(z.namelist())
                info = f"liverec-{self.version}.dist-info"
                meta = z.read(f"{info}/METADATA").decode()
                entry_points = z.read(f"{info}/entry_points.txt").decode()
            in_wheel = {n[len("liverec/"):] for n in names if n.startswith("liverec/")}
            for f in MUST_SHIP:
                if f not in in_wheel:
                    raise CheckFailed(f"the wheel lacks liverec/{f}")
            self.ok("wheel ships " + ", ".join(MUST_SHIP))
            missing = sorted(expected - in_wheel)
            if missing:
                raise CheckFailed(f"the wheel lacks tracked files: {missing} (package-data in pyproject.toml)")
            self.ok(f"wheel holds all {len(expected)} tracked files under src/liverec")
            stray = sorted(n for n in names if not n.startswith(("liverec/", f"{info}/")))
            if stray:
                raise CheckFailed(f"the wheel holds files outside the package: {stray[:10]}")
            if not re.search(r"^liverec = liverec\.cli:app$", entry_points, re.M):
                raise CheckFailed(f"no `liverec` console script in entry_points.txt:\n{entry_points}")
            provided = set(re.findall(r"^Provides-Extra: (\S+)$", meta, re.M))
            if not set(EXTRAS) <= provided:
                raise CheckFailed(f"METADATA lacks extras {sorted(set(EXTRAS) - provided)}")
            torch_req = re.search(r"^Requires-Dist: torch(.*)$", meta, re.M)
            if not torch_req or not _satisfies("2.13.0", torch_req.group(1)):
                raise CheckFailed(f"torch requirement {torch_req and torch_req.group(0)!r} excludes 2.13.0")
            self.ok(f"metadata: `liverec` script, extras {', '.join(EXTRAS)}, torch{torch_req.group(1).strip()}")
            with tarfile.open(self.sdist) as t:
                top = f"liverec-{self.version}/"
                in_sdist = {n[len(top):] for n in t.getnames() if n.startswith(top)}
            need = {f"src/liverec/{f}" for f in expected} | {"pyproject.toml", "README.md"}
            if need - in_sdist:
                raise CheckFailed(f"the sdist lacks {sorted(need - in_sdist)[:10]}")
            self.ok(f"sdist holds pyproject.toml, README.md and all {len(expected)} package files")

    # ------------------------------------------------------------------ 3 install
    def install(self) -> None:
        with self.step(f"fresh venv: {TORCH}, then the wheel with [redis]"):
            if self.venv.exists():
                shutil.rmtree(self.venv)
            base = getattr(sys, "_base_executable", sys.executable)
            self.run([base, "-m", "venv", self.venv], cwd=self.work, env=dict(os.environ))
            pip = [self.bin / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            t = time.perf_counter()
            self.run([*pip, TORCH], cwd=self.work, env=self.env())
            t_torch = time.perf_counter() - t
            pins: list[str] = []
            if not self.args.no_pins:
                constraints = self.work / "constraints.txt"
                constraints.write_text(_constraints(ROOT / "requirements.txt"))
                pins = ["-c", str(constraints)]
            t = time.perf_counter()
            self.run([*pip, *pins, f"{self.wheel}[redis]"], cwd=self.work, env=self.env())
            t_deps = time.perf_counter() - t
            self.sub_timings = [("  of which torch", t_torch), ("  of which the wheel + dependencies", t_deps)]
            print(f"   torch {t_torch:.0f} s, wheel + dependencies {t_deps:.0f} s"
                  f" ({'pinned to requirements.txt' if pins else 'newest allowed versions'})")

    # ------------------------------------------------------------------ 4 use it
    def use(self) -> None:
        self.run_dir.mkdir(exist_ok=True)
        py = self.bin / "python"
        with self.step("installed package, outside the checkout"):
            where = self.run([py, "-c", "import liverec, sys; print(liverec.__file__)"]).stdout.strip()
            if not Path(where).resolve().is_relative_to(self.venv):
                raise CheckFailed(f"liverec was imported from {where}, not from the fresh venv")
            self.ok(f"imported from {Path(where).parent}")
            for cmd in ([self.bin / "liverec", "--version"], [py, "-m", "liverec", "--version"]):
                out = self.run(cmd).stdout.strip()
                if out != f"liverec {self.version}":
                    raise CheckFailed(f"{cmd[-2:]} printed {out!r}, expected 'liverec {self.version}'")
            self.ok(f"`liverec --version` and `python -m liverec --version` print liverec {self.version}")
            out = self.run([py, "-c", (
                "from importlib import resources; from liverec.data import load_goodbooks\n"
                "page = resources.files('liverec') / 'service' / 'page' / 'index.html'\n"
                "assert '/static/app.js' in page.read_text(), 'page'\n"
                "books = load_goodbooks()\n"
                "print(len(books), books[0].attributes['title'])")]).stdout.strip()
            if not out.startswith("10000 "):
                raise CheckFailed(f"the shipped catalog did not load 10,000 books: {out!r}")
            self.ok(f"shipped catalog loads from the wheel: {out}")

        with self.step("README quick start (first ```python block of README.md)"):
            block = _readme_block(ROOT / "README.md")
            script = self.run_dir / "quickstart.py"
            script.write_text(block + "\nprint('quick start: ok')\n")  # as written: no set-up of its own
            out = self.run([py, script], timeout=900).stdout
            if "quick start: ok" not in out:
                raise CheckFailed(f"the quick start did not finish:\n{out}")
            self.ok(f"README quick start ran as written ({len(block.splitlines())} lines)")

        with self.step("liverec serve --open"):
            port = _free_port()
            with Server(self, ["serve", "--open", "--port", str(port)], port) as srv:
                srv.wait_ready("/health")
                page = srv.get("/")
                if "<html" not in page.lower():
                    raise CheckFailed(f"GET / did not return the page: {page[:200]!r}")
                assets = re.findall(r"(?:src|href)=\"(/static/[^\"]+)\"", page)
                if not assets:
                    raise CheckFailed("the page references no /static/ files")
                for a in assets:
                    if not srv.get(a):
                        raise CheckFailed(f"GET {a} is empty")
                health = json.loads(srv.get("/health"))
            self.ok(f"GET / (the page), {', '.join(assets)}, /health -> {health}")

        with self.step(f"liverec serve --open --state {REDIS_URL}"):
            if not _redis_up():
                if self.args.skip_redis:
                    self.skipped.append(f"serve --state {REDIS_URL}: Redis not reachable, --skip-redis given")
                    print("   SKIPPED (--skip-redis): Redis is not reachable on 127.0.0.1:6379")
                else:
                    raise CheckFailed("Redis is not reachable on 127.0.0.1:6379: start redis-server (as .ci/run "
                                      "does) or pass --skip-redis to skip this step on purpose")
            else:
                port = _free_port()
                cmd = ["serve", "--open", "--state", REDIS_URL, "--store", "sqlite:///replica.db", "--port", str(port)]
                with Server(self, cmd, port) as srv:
                    srv.wait_ready("/health")
                    deadline, ready = time.monotonic() + 60, {}
                    while time.monotonic() < deadline:
                        try:
                            ready = json.loads(srv.get("/ready"))
                        except CheckFailed:
                            ready = {}
                        if ready.get("replication") == "redis":
                            break
                        time.sleep(0.5)
                    if ready.get("replication") != "redis":
                        raise CheckFailed(f"/ready never reported replication 'redis': {ready}")
                self.ok(f"/ready -> {ready}")

        with self.step("extras not installed give a one-line error naming them"):
            for extra, module, cmd, extra_env in ABSENT:
                probe = self.run([py, "-c", f"import importlib.util as u; print(u.find_spec({module!r}) is None)"])
                if probe.stdout.strip() != "True":
                    raise CheckFailed(f"{module} is installed without liverec[{extra}]: a core dependency pulls it "
                                      "in, so the extra split is wrong")
                proc = self.run([self.bin / "liverec", *cmd], env=self.env(**extra_env), check=False, timeout=300)
                text = " ".join((proc.stdout + proc.stderr).split())
                hint = f"pip install 'liverec[{extra}]'"
                if proc.returncode != 2 or hint not in text or "Traceback" in text:
                    raise CheckFailed(f"`liverec {' '.join(cmd)}` without {module}: exit {proc.returncode}, "
                                      f"expected 2 and {hint!r} without a traceback:\n{proc.stderr[-3000:]}")
                self.ok(f"without {module}: `liverec {cmd[0]} ...` exits 2 naming {hint}")

    # ------------------------------------------------------------------ report
    def summary(self, failed: str | None) -> None:
        print("\n== summary")
        for name, dt in self.timings:
            print(f"   {name:<62} {dt:7.1f} s")
        total = sum(dt for name, dt in self.timings if not name.startswith("  "))
        print(f"   {'total':<62} {total:7.1f} s")
        print(f"   {len(self.passed)} checks passed")
        for s in self.skipped:
            print(f"   SKIPPED: {s}")
        print(f"   work folder: {self.work}" + ("" if self.args.keep or failed else " (removed)"))
        print("FAIL: " + failed if failed else ("PASS with skips" if self.skipped else "PASS"))


class Server:
    """A `liverec serve` process from the fresh venv, stopped (SIGINT, then SIGKILL) on exit."""

    def __init__(self, checker: Checker, args: list[str], port: int) -> None:
        self.checker, self.args, self.port = checker, args, port
        self.log = checker.run_dir / f"serve-{port}.log"

    def __enter__(self) -> "Server":
        print("   $ liverec " + " ".join(self.args), flush=True)
        self.out = self.log.open("w")
        self.proc = subprocess.Popen([str(self.checker.bin / "liverec"), *self.args], cwd=self.checker.run_dir,
                                     env=self.checker.env(), stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.out.close()

    def get(self, path: str) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
                return r.read().decode()
        except (urllib.error.URLError, OSError) as e:
            raise CheckFailed(f"GET {path}: {e}") from e

    def wait_ready(self, path: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CheckFailed(f"liverec {' '.join(self.args)} exited {self.proc.returncode}:\n{self._tail()}")
            try:
                self.get(path)
                return
            except CheckFailed:
                time.sleep(0.5)
        raise CheckFailed(f"liverec {' '.join(self.args)} did not answer {path} within {timeout:.0f} s:\n{self._tail()}")

    def _tail(self) -> str:
        self.out.flush()
        return self.log.read_text()[-4000:]


# ---------------------------------------------------------------------- helpers
def _one(paths, what: str) -> Path:
    found = list(paths)
    if len(found) != 1:
        raise CheckFailed(f"expected one {what}, found {[p.name for p in found]}")
    return found[0]


def _source_version() -> str:
    tree = ast.parse((ROOT / "src" / "liverec" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise CheckFailed("no __version__ in src/liverec/__init__.py")


def _tracked_package_files() -> set[str]:
    """Files under src/liverec that git tracks (untracked scratch files are not expected)."""
    out = subprocess.run(["git", "ls-files", "src/liverec"], cwd=ROOT, capture_output=True, text=True, check=True)
    files = {line[len("src/liverec/"):] for line in out.stdout.splitlines() if line}
    # new files not committed yet still have to ship
    files |= {str(p.relative_to(ROOT / "src" / "liverec")) for p in (ROOT / "src" / "liverec").rglob("*.py")
              if "__pycache__" not in p.parts}
    return {f for f in files if (ROOT / "src" / "liverec" / f).exists()}


def _satisfies(version: str, spec: str) -> bool:
    from packaging.specifiers import SpecifierSet

    return version in SpecifierSet(spec.strip().strip("()").split(";")[0].strip())


def _constraints(requirements: Path) -> str:
    """requirements.txt as a pip constraints file (constraints may not name extras)."""
    lines = []
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(re.sub(r"\[[^\]]*\]", "", line))
    return "\n".join(lines) + "\n"


def _readme_block(readme: Path) -> str:
    m = re.search(r"^```python\n(.*?)^```", readme.read_text(), re.S | re.M)
    if not m:
        raise CheckFailed("README.md has no ```python block")
    return m.group(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", help="Folder for dist/, venv/ and run/ (default: a new temp folder, removed on success)")
    p.add_argument("--keep", action="store_true", help="Keep the work folder after a successful run")
    p.add_argument("--no-pins", action="store_true", help="Let pip pick the newest allowed dependency versions "
                                                         "instead of requirements.txt's")
    p.add_argument("--skip-redis", action="store_true", help="Skip (and report) the Redis step when Redis is down")
    args = p.parse_args(argv)
    failed = None
    try:
        checker = Checker(args)
    except CheckFailed as e:
        print(f"FAIL: {e}")
        return 1
    print(f"liverec {checker.version}: checking the wheel in {checker.work}")
    try:
        checker.build()
        checker.contents()
        checker.install()
        checker.use()
    except CheckFailed as e:
        failed = str(e)
    except subprocess.TimeoutExpired as e:
        failed = f"timed out after {e.timeout:.0f} s: {' '.join(map(str, e.cmd))}"
    checker.summary(failed)
    if not failed and not args.keep and not args.workdir:
        shutil.rmtree(checker.work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
