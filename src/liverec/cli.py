"""The ``liverec`` command line: import, fit, recommend, explain, demo.

The store comes from ``--store`` or ``LIVEREC_STORE`` (default ``sqlite:///liverec.db``);
every other setting from ``LIVEREC_*`` environment variables (see ``liverec.settings``).

Examples
--------
$ liverec import-items goodbooks
$ liverec import-events ratings.csv
$ liverec recommend u1 --k 5
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from ._extras import MissingExtraError, require
from .errors import LiverecError
from .jobs import RAY_START

console = Console()
err = Console(stderr=True)


class _Group(TyperGroup):
    """Every command: a missing optional package is a one-line error and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MissingExtraError as exc:
            _fail(exc)


app = typer.Typer(
    name="liverec",
    cls=_Group,
    help="A recommender that learns from every piece of feedback the moment it arrives.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("liverec")
        except PackageNotFoundError:  # running from a source tree that was never installed
            from . import __version__ as v
        console.print(f"liverec {v}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the installed version and exit.")
    ] = False,
) -> None:
    """A recommender that learns from every piece of feedback the moment it arrives."""


DEFAULT_STORE = "sqlite:///liverec.db"
StoreOpt = Annotated[
    Optional[str],
    typer.Option("--store", "-s", help="Store URL (sqlite:///file.db or postgresql://...). Env: LIVEREC_STORE."),
]


class ItemFormat(str, Enum):
    auto = "auto"
    csv = "csv"
    jsonl = "jsonl"
    goodbooks = "goodbooks"
    movielens = "movielens"


class EventFormat(str, Enum):
    auto = "auto"
    csv = "csv"
    jsonl = "jsonl"
    movielens = "movielens"


def _open(store: str | None, **overrides):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .engine import Engine
    from .settings import Settings

    url = store or os.environ.get("LIVEREC_STORE") or DEFAULT_STORE
    settings = Settings(**{**overrides, "store": url})
    return Engine.open(url, settings=settings)


def _fail(exc: LiverecError) -> None:
    # escape: messages carry brackets that are not markup (pip install 'liverec[redis]')
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    err.print(f"[bold]fix:[/] {escape(_cli_fix(exc))}", highlight=False)
    raise typer.Exit(code=2)


def _cli_fix(exc: LiverecError) -> str:
    """The error's fix in this CLI's terms (its commands and environment variables)."""
    from .errors import UnknownItemError

    if isinstance(exc, UnknownItemError):
        return ("import the item first (liverec import-items FILE), or set LIVEREC_AUTO_CREATE_ITEMS=true to create "
                "items named by events on the fly.")
    if exc.field == "ray":
        return (f"start a Ray head ({RAY_START}) and pass the HOST:PORT it prints as --ray (or LIVEREC_RAY), "
                "or leave --ray out to run locally.")
    return exc.fix


_ROW = re.compile(r"^(?P<list>events|items)\[(?P<i>\d+)\]\.?(?P<rest>\S*)\s*")


def _at_line(exc: LiverecError, name: str, where: Sequence[str], offset: int = 0) -> LiverecError:
    """``exc`` about ``events[i].item`` of a batch, said as the file's line: ``events.csv
    line 12, item: 'b7' is not in the catalog.`` (the error itself when it names no row)."""
    m = _ROW.match(str(exc))
    i = offset + int(m["i"]) if m else -1
    if m is None or not 0 <= i < len(where):
        return exc
    rest = m["rest"]
    message = f"{name} {where[i]}{', ' + rest if rest else ''}: {str(exc)[m.end():]}"
    try:
        return type(exc)(message, field=exc.field, fix=exc.fix)
    except TypeError:  # an error type with its own signature: keep it as it is
        return exc


def _is_movielens(path: Path) -> bool:
    return path.is_dir() and ((path / "ratings.csv").exists() or (path / "u.data").exists())


@app.command("import-items")
def import_items(
    path: Annotated[str, typer.Argument(help="A CSV/JSONL file, a MovieLens folder, or 'goodbooks' for the shipped catalog")],
    format: Annotated[ItemFormat, typer.Option("--format", "-f")] = ItemFormat.auto,
    limit: Annotated[Optional[int], typer.Option(help="Import only the first N items")] = None,
    store: StoreOpt = None,
) -> None:
    """Add or update catalog items; only new or changed text is encoded."""
    from .data import load_goodbooks, load_movielens, read_items

    try:
        p = Path(path)
        where: list[str] = []
        if format == ItemFormat.goodbooks or (format == ItemFormat.auto and path == "goodbooks"):
            items = load_goodbooks(None if path == "goodbooks" else p)
        elif format == ItemFormat.movielens or (format == ItemFormat.auto and _is_movielens(p)):
            items = load_movielens(p)[0]
        else:
            items, where = read_items(p, format=None if format == ItemFormat.auto else format.value)
        items = items[:limit] if limit else items
        if not items:
            err.print(f"[bold red]error:[/] {escape(path)} holds no items; nothing was imported. A CSV needs a header "
                      "row (id,text[,title,authors,...]) and one row per item.")
            raise typer.Exit(code=2)
        with _open(store) as eng:
            try:
                changed = eng.add_items(items)
            except LiverecError as exc:
                raise _at_line(exc, p.name, where) from None
            console.print(f"{len(items)} items read, {changed} new or changed, catalog now {eng.n_items} items "
                          f"({eng.encoder.calls} texts encoded, the rest from the vector caches).")
    except LiverecError as exc:
        _fail(exc)


@app.command("import-events")
def import_events(
    path: Annotated[str, typer.Argument(help="A CSV/JSONL events file or a MovieLens folder")],
    format: Annotated[EventFormat, typer.Option("--format", "-f")] = EventFormat.auto,
    batch: Annotated[int, typer.Option(help="Events per transaction")] = 10_000,
    refit: Annotated[bool, typer.Option(help="Store all, then re-fit once (faster for big files) instead of learning per event")] = True,
    store: StoreOpt = None,
) -> None:
    """Append events to the log (idempotent by event id) and learn from them."""
    from tqdm import tqdm

    from .data import load_movielens, read_events

    try:
        p = Path(path)
        where: list[str] = []
        if format == EventFormat.movielens or (format == EventFormat.auto and _is_movielens(p)):
            events = load_movielens(p)[1]
        else:
            events, where = read_events(p, format=None if format == EventFormat.auto else format.value)
        if not events:
            err.print(f"[bold red]error:[/] {escape(path)} holds no events; nothing was imported. A CSV needs a header "
                      "row (user,item[,kind,value,timestamp,id,context]) and one row per event.")
            raise typer.Exit(code=2)
        new = 0
        with _open(store) as eng:
            for i in tqdm(range(0, len(events), batch), desc="events", unit="batch", disable=len(events) <= batch):
                try:
                    new += eng.record_many(events[i : i + batch], learn=not refit)
                except LiverecError as exc:
                    if new:
                        err.print(f"{new} new events from the lines before this batch of {batch} are stored; "
                                  "importing the file again after the fix skips them (events are stored once by id).")
                    raise _at_line(exc, p.name, where, offset=i) from None
            if refit and new:
                eng.fit()
        console.print(f"{len(events)} events read, {new} new ({len(events) - new} already in the log).")
    except LiverecError as exc:
        _fail(exc)


StateOpt = Annotated[
    Optional[str],
    typer.Option(help="Redis URL: run as one of several replicas over a shared store, with per-user state in "
                 "Redis (fleet mode). Env: LIVEREC_STATE"),
]
RayOpt = Annotated[
    Optional[str],
    typer.Option("--ray", envvar="LIVEREC_RAY", show_envvar=False,
                 help="HOST:PORT of a Ray cluster's head: run the fits as Ray tasks across the cluster "
                 "(unset: here). Env: LIVEREC_RAY"),
]


@app.command()
def fit(store: StoreOpt = None, state: StateOpt = None, ray: RayOpt = None) -> None:
    """Re-fit every learner from the whole durable log.

    In fleet mode (--state) the snapshot it writes is one the fleet's replicas load.
    With --ray the per-source fits run as tasks on that Ray cluster.
    """
    import time

    try:
        with _open(store, **({"state": state} if state else {})) as eng:
            t = time.perf_counter()
            eng.fit(ray=ray)
            console.print(
                f"fitted {', '.join(eng.learners)} on {eng.store.count_events()} events, "
                f"{eng.n_items} items in {time.perf_counter() - t:.2f} s{_on_ray(ray)}."
            )
    except LiverecError as exc:
        _fail(exc)


def _on_ray(address: str | None) -> str:
    """' on the Ray cluster at ADDRESS' (where the fits ran), or '' when they ran here."""
    return f" on the Ray cluster at {address}" if address else ""


def _parse_budget(raw: str) -> float:
    """'90', '90s', '5m', '1h' -> seconds."""
    text = raw.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(text[-1:], None)
    try:
        value = float(text[:-1] if scale else text) * (scale or 1.0)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise typer.BadParameter(f"--budget {raw!r} is not a duration; write seconds or e.g. 90s, 5m, 1h.")
    return value


def _show_tuned(tuned) -> None:
    t = tuned.summary()
    console.print(
        f"validation score {t['score']:.4f} (starting configuration {t['default_score']:.4f}; {t['objective']}) "
        f"on {t['n_validation_users']} users, {t['n_trials']} trials ({t['failed_trials']} failed) in "
        f"{t['seconds']:.0f} s{' (stopped by the budget)' if t['stopped_by_budget'] else ''}, seed {t['seed']}"
    )
    table = Table("source", "weight", "hyperparameters")
    for name, w in sorted(t["weights"].items(), key=lambda kv: -kv[1]):
        params = ", ".join(f"{k}={v}" for k, v in sorted(t["sources"].get(name, {}).items())) or "defaults"
        table.add_row(name, f"{w:.3f}", params)
    console.print(table)
    console.print("feedback: " + ", ".join(f"{k}={v}" for k, v in t["feedback"].items()))


@app.command()
def tune(
    store: StoreOpt = None,
    budget: Annotated[str, typer.Option(help="Time budget, e.g. 300, 90s, 5m (default: the tune_budget_seconds setting)")] = "",
    show: Annotated[bool, typer.Option("--show", help="Only show the stored configuration")] = False,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the split and the search order")] = None,
    ray: RayOpt = None,
) -> None:
    """Search every source's hyperparameters, the feedback reading and the fusion weights on
    a time split of the stored log; store the result (reused by every fit and restart).
    The objective weighs each user's next item by LIVEREC_TUNE_NEXT_SHARE (0.5) and their
    later items by the rest: lower it for lists shown once for a while (an e-mail).
    With --ray the trials' fits run as tasks on that Ray cluster (same result, same seed)."""
    try:
        with _open(store) as eng:
            if not show:
                eng.fit(tune=True, budget=_parse_budget(budget) if budget else None, progress=True, seed=seed, ray=ray)
                console.print(f"tuned and fitted{_on_ray(ray) or ' here'}.")
            if eng.tuned is None:
                console.print("no tuned configuration stored yet: run `liverec tune`.")
                raise typer.Exit(1)
            _show_tuned(eng.tuned)
    except LiverecError as exc:
        _fail(exc)


def _parse_filters(raw: list[str]) -> dict:
    out: dict = {}
    for f in raw:
        if "=" not in f:
            raise typer.BadParameter(f"filter {f!r} must look like key=value or key=JSON (e.g. year={{\"gte\":1990}})")
        k, v = f.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _title(eng, item_id: str) -> str:
    it = eng.get_item(item_id)
    return str(it.attributes.get("title") or it.text.split("\n")[0] or item_id)


@app.command()
def recommend(
    user: Annotated[str, typer.Argument(help="User id (unknown users get a cold-start answer)")],
    k: Annotated[int, typer.Option("--k", "-k")] = 10,
    filter: Annotated[list[str], typer.Option("--filter", help="key=value or key=JSON; repeatable")] = [],
    include_seen: Annotated[bool, typer.Option(help="Also show items the user already interacted with")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    store: StoreOpt = None,
) -> None:
    """Print the top-k items for USER with their reasons."""
    import warnings

    from .errors import NoMatchWarning

    try:
        with _open(store, log_impressions=False) as eng:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", NoMatchWarning)
                recs = eng.recommend(user, k=k, filters=_parse_filters(filter) or None, exclude_seen=not include_seen)
            unmatched = [w.message for w in caught if isinstance(w.message, NoMatchWarning)]
            for warn in unmatched:  # on stderr: --json output stays parseable
                err.print(f"[yellow]warning: {escape(warn.message)}[/]", highlight=False)
                err.print(f"[bold]fix:[/] {escape(warn.fix)}", highlight=False)
            if as_json:
                out = [
                    {"item": r.item, "title": _title(eng, r.item), "score": r.score,
                     "reasons": [{"source": x.source, "contribution": x.contribution, "text": x.text,
                                  "because": list(x.because)} for x in r.reasons]}
                    for r in recs
                ]
                sys.stdout.write(json.dumps(out, ensure_ascii=False, indent=2) + "\n")
                return
            table = Table(title=f"recommendations for {user}")
            for col in ("#", "item", "title", "score", "why"):
                table.add_column(col)
            for r in recs:
                table.add_row(str(r.position + 1), r.item, _title(eng, r.item), f"{r.score:.3f}", r.explanation)
            console.print(table)
            if not recs:
                why = ("see the warning above about --filter" if unmatched else
                       "the catalog is empty" if eng.n_items == 0 else
                       f"{user!r} has already seen every item{' the filters allow' if filter else ''} "
                       "(--include-seen shows them)")
                err.print(f"[yellow]nothing to recommend: {escape(why)}.[/]")
    except LiverecError as exc:
        _fail(exc)


@app.command()
def explain(
    user: Annotated[str, typer.Argument()],
    item: Annotated[str, typer.Argument()],
    store: StoreOpt = None,
) -> None:
    """Why ITEM would (or would not) be recommended to USER now."""
    try:
        with _open(store, log_impressions=False) as eng:
            r = eng.explain(user, item)
            console.print(f"[bold]{_title(eng, item)}[/] for {user}: score {r.score:.3f}, rank {r.position + 1}")
            for x in r.reasons:  # the words only: source names are internal
                console.print(f"  {x.contribution:+.3f}  {escape(x.text)}", highlight=False)
    except LiverecError as exc:
        _fail(exc)


@app.command()
def interests(
    user: Annotated[str, typer.Argument()],
    text: Annotated[str, typer.Argument(help="What the user says they like, in words")],
    store: StoreOpt = None,
) -> None:
    """Declare a user's interests as free text (encoded into their profile)."""
    try:
        with _open(store) as eng:
            eng.set_interests(user, text)
            console.print(f"interests of {user} set.")
    except LiverecError as exc:
        _fail(exc)


@app.command()
def demo(
    store: Annotated[str, typer.Option("--store", "-s", help="Where the demo keeps its catalog")] = "sqlite:///liverec-demo.db",
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N books (faster first run)")] = None,
    k: Annotated[int, typer.Option("--k", "-k")] = 5,
) -> None:
    """Import the book catalog, then show lists changing with each piece of feedback."""
    from .demo import run_demo

    try:
        run_demo(store, limit=limit, k=k, console=console)
    except LiverecError as exc:
        _fail(exc)


@app.command()
def serve(
    store: StoreOpt = None,
    host: Annotated[
        str, typer.Option(envvar="LIVEREC_HOST", help="Interface to bind (0.0.0.0 for every interface)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="LIVEREC_PORT", min=1, max=65535, help="TCP port")] = 8000,
    open_access: Annotated[
        bool, typer.Option("--open", help="No API keys: anyone who reaches the port can write. Demo on localhost only.")
    ] = False,
    demo: Annotated[bool, typer.Option("--demo", help="Import the shipped book catalog if the store has no items")] = False,
    simulate: Annotated[
        float, typer.Option(help="Simulated readers sending this many events per second through the API (0 = off)")
    ] = 0.0,
    state: StateOpt = None,
    workers: Annotated[int, typer.Option(min=1, help="Server processes on this node, over the same store")] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run the HTTP service (API, OpenAPI docs at /docs, live page at /)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging

    import uvicorn

    from .service import create_app
    from .settings import Settings

    url = store or os.environ.get("LIVEREC_STORE") or DEFAULT_STORE
    overrides: dict = {"store": url}
    if open_access:
        overrides["open_access"] = True
    if state:
        overrides["state"] = state
    if workers > 1:
        overrides["workers"] = workers
    if demo and "LIVEREC_POPULARITY_PRIOR" not in os.environ:
        overrides["popularity_prior"] = "ratings_count"  # a new reader first sees the most-rated books
    if "LIVEREC_IMPRESSION_FLUSH_SECONDS" not in os.environ:
        overrides["impression_flush_seconds"] = 0.25  # batch impression writes off the request path
    try:
        settings = Settings(**overrides)
    except Exception as exc:  # pydantic: name the bad variable
        err.print(f"[bold red]error:[/] invalid settings: {exc}")
        raise typer.Exit(code=2)
    _require_extras(settings)
    _check_port_free(host, port)  # before a long catalog import, not after it
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if simulate > 0:
        # One access-log line per simulated request would bury the URL; the page shows the traffic.
        logging.getLogger("liverec.http").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry full URLs (user ids)
    engine, demo_import = None, None
    if demo:
        engine, demo_import = _start_demo(url, settings)
    if not settings.open_access and not settings.api_keys:
        from .store import Store

        st = Store.open(url)
        try:
            if not st.list_api_keys():
                err.print("[yellow]no API keys exist: every call except /health, /ready, /metrics and the page "
                          "will get 401. Create one with `liverec keys create NAME --role admin`, or use --open "
                          "on localhost.[/]")
        finally:
            st.close()
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    console.print(f"liverec serving at [bold]http://{shown}:{port}/[/] (API docs: /docs) - Ctrl-C stops it")
    if simulate > 0:
        from .service.traffic import start_traffic

        start_traffic(f"http://127.0.0.1:{port}", rate=simulate, key=os.environ.get("LIVEREC_API_KEY"))
    # access_log off: uvicorn's access log prints raw paths, which carry user ids.
    if settings.workers > 1:
        if settings.store in ("sqlite://", "sqlite:///:memory:"):
            err.print("[bold red]error:[/] --workers needs a store every process can open: a SQLite file or PostgreSQL.")
            raise typer.Exit(code=2)
        # Each worker process builds its app from the environment.
        for name, value in overrides.items():
            os.environ[f"LIVEREC_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        uvicorn.run("liverec.service.app:app_from_env", factory=True, workers=settings.workers, host=host,
                    port=port, log_level=log_level, access_log=False)
        return
    try:
        uvicorn.run(create_app(settings, engine=engine), host=host, port=port, log_level=log_level, access_log=False)
    finally:
        if demo_import is not None:
            demo_import.stop()
            demo_import.join(timeout=30)
        if engine is not None:
            engine.close()


def _start_demo(url: str, settings):
    """Open the engine and add the shipped books while the page serves (``serve --demo``).

    A store holding other items is left as it is. With several workers (each its own
    engine) the books are added before serving instead.
    """
    from .data import load_goodbooks
    from .engine import Engine
    from .importer import CatalogImport

    books = load_goodbooks()
    eng = Engine.open(url, settings=settings)
    if not set(eng.catalog.ids) <= {b.id for b in books} or eng.n_items == len(books):
        if settings.workers == 1:
            return eng, None
        eng.close()
        return None, None
    if settings.workers > 1:
        console.print("adding the shipped book catalog (10,000 books: minutes on 2 cores unless this machine's "
                      "vector cache holds them) ...")
        with eng:
            CatalogImport(eng, books).run()
        return None, None
    console.print("learning the shipped book catalog in the background: the page serves meanwhile, most-rated "
                  "books first (all 10,000 take minutes on 2 cores unless this machine's vector cache holds them)")
    return eng, CatalogImport(eng, books).start()


def _check_port_free(host: str, port: int) -> None:
    """Exit with the fix when ``host:port`` cannot be bound (another server holds it)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            err.print(
                f"[bold red]error:[/] cannot listen on {escape(host)}:{port} ({escape(exc.strerror or str(exc))}): "
                "another program holds the port. Pick another with --port N or LIVEREC_PORT=N "
                "(make demo PORT=N)."
            )
            raise typer.Exit(code=2) from None


def _require_extras(settings) -> None:
    """Import now what the settings name, so a missing optional package is a one-line error.

    Inside the server's start-up the same failure would be a logged traceback.
    """
    from .store.sql import require_driver

    require_driver(settings.store)
    if settings.state:
        from .state_redis import check_state_url

        try:
            check_state_url(settings.state)
        except LiverecError as exc:
            _fail(exc)
        # Asked directly, not through importing the replication module: an earlier import
        # of it would hide a package removed since.
        require("redis", "redis", "replicas sharing state through Redis (--state / LIVEREC_STATE)")
    if settings.encoder_backend == "onnx":
        from .encode.onnx import require_runtime

        require_runtime()


keys_app = typer.Typer(help="API keys with roles read < write < admin (stored hashed).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A label for the key, e.g. the calling service")],
    role: Annotated[str, typer.Option(help="read, write or admin")] = "read",
    store: StoreOpt = None,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from .service.auth import ROLES, hash_key, new_key
    from .store import Store

    if role not in ROLES:
        err.print(f"[bold red]error:[/] role must be one of {', '.join(ROLES)}, got {role!r}.")
        raise typer.Exit(code=2)
    st = Store.open(store or os.environ.get("LIVEREC_STORE") or DEFAULT_STORE)
    try:
        key = new_key()
        st.add_api_key(name, role, hash_key(key))
    except LiverecError as exc:
        _fail(exc)
    finally:
        st.close()
    console.print(key, soft_wrap=True, highlight=False)
    err.print(f"key {name!r} ({role}) created; it is shown only now. Send it in the X-API-Key header.")


@keys_app.command("list")
def keys_list(store: StoreOpt = None) -> None:
    """Names, roles and creation times of the keys (never the keys)."""
    import datetime as dt

    from .store import Store

    st = Store.open(store or os.environ.get("LIVEREC_STORE") or DEFAULT_STORE)
    try:
        t = Table("name", "role", "created (UTC)")
        for name, role, created in st.list_api_keys():
            t.add_row(name, role, dt.datetime.fromtimestamp(created, dt.timezone.utc).strftime("%Y-%m-%d %H:%M"))
        console.print(t)
    finally:
        st.close()


@keys_app.command("revoke")
def keys_revoke(name: str, store: StoreOpt = None) -> None:
    """Delete a key; servers stop accepting it within 5 seconds."""
    from .store import Store

    st = Store.open(store or os.environ.get("LIVEREC_STORE") or DEFAULT_STORE)
    try:
        if not st.delete_api_key(name):
            err.print(f"[bold red]error:[/] no API key named {name!r}; see `liverec keys list`.")
            raise typer.Exit(code=2)
    finally:
        st.close()
    console.print(f"revoked {name!r}")


class Protocol(str, Enum):
    static = "static"
    stream = "stream"
    cold = "cold"


class DatasetName(str, Enum):
    movielens = "movielens"
    goodbooks = "goodbooks"
    generic = "generic"


@app.command("eval")
def eval_(
    target: Annotated[
        Optional[str], typer.Argument(help="Leave empty for recommendation protocols; 'ope' for off-policy evaluation")
    ] = None,
    protocol: Annotated[Protocol, typer.Option("--protocol", "-p", help="static | stream | cold")] = Protocol.static,
    dataset: Annotated[DatasetName, typer.Option("--dataset", "-d")] = DatasetName.movielens,
    data: Annotated[Optional[str], typer.Option("--data", help="Path to the dataset (folder or file)")] = None,
    models: Annotated[
        Optional[str], typer.Option("--models", "-m", help="Comma-separated: liverec, liverec:src=w,..., pop, itemknn, ease, als, bpr, tfidf, sknn, bow, ... (@frozen = never sees revealed events); default: liverec and the protocol's baselines (static: pop, itemknn, ease, als, bpr, tfidf; stream: the same and sknn; cold: pop, als, bpr, tfidf, bow)")
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k")] = 10,
    seed: Annotated[int, typer.Option()] = 0,
    max_events: Annotated[Optional[int], typer.Option(help="Keep only the earliest N events (quick runs)")] = None,
    stream_events: Annotated[
        int, typer.Option("--stream-events", min=0, help="Stream protocol: predict the first N events after the warm-up (0: all)")
    ] = 20_000,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write every figure and the settings here")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write an HTML report with plots here")] = None,
    cache: Annotated[Optional[str], typer.Option(help="Vector cache store URL (default ~/.cache/liverec/vectors.db)")] = None,
    jobs: Annotated[
        Optional[int], typer.Option("--jobs", "-j", min=1, help="Models run at once, each in its own process (default: one per CPU, at most one per model)")
    ] = None,
    tune_baselines: Annotated[
        bool, typer.Option("--tune-baselines/--no-tune-baselines", help="Pick baseline hyperparameters on a validation split of the training part")
    ] = True,
    tune_liverec: Annotated[
        bool, typer.Option("--tune-liverec/--no-tune-liverec", help="Fit liverec with fit(tune=True) where the engine supports it")
    ] = True,
) -> None:
    """Measure quality and speed of liverec against baselines on one protocol.

    ``liverec eval ope --data OBD_ROOT`` instead estimates the Bernoulli-TS policy's CTR
    from the uniform-random log of the Open Bandit Dataset (IPS, SNIPS, DM, DR,
    replay, with 95% bootstrap CIs) and compares it with its on-policy CTR.
    """
    if target is not None:
        if target != "ope":
            err.print(f"[bold red]error:[/] unknown eval target {target!r}: use 'liverec eval ope --data PATH'.")
            raise typer.Exit(code=2)
        _eval_ope(data, json_path)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if report:  # before the run, not after it
        require("matplotlib", "eval", "the HTML report (--report)")
    from rich.progress import track

    from .evaluation.adapters import split_models
    from .evaluation.datasets import load_dataset
    from .evaluation.report import results_table, tuning_lines, write_html, write_json
    from .evaluation.run import default_models, evaluate

    try:
        ds = load_dataset(dataset.value, data, max_events=max_events)
        console.print(
            f"{ds.name}: {len({e.user for e in ds.events})} users, {len(ds.items)} items, {len(ds.events)} events"
        )
        out = evaluate(
            ds,
            split_models(models) if models else list(default_models(protocol.value)),
            protocol=protocol.value,
            k=k,
            seed=seed,
            cache_url=cache,
            jobs=jobs,
            progress=lambda it, desc, total: track(it, description=desc, total=total, console=err, transient=True),
            tune_baselines=tune_baselines,
            tune_liverec=tune_liverec,
            stream_events=stream_events or None,
        )
    except LiverecError as exc:
        _fail(exc)
    console.print(results_table(out))
    for line in tuning_lines(out):
        console.print(f"tuned {line}")
    console.print(f"run time {out['settings']['run_seconds']} s with {out['settings']['jobs']} job(s) (encoding {out['settings']['encode_seconds']} s)")
    if json_path:
        write_json(out, json_path)
        console.print(f"JSON written to {json_path}")
    if report:
        write_html(out, report)
        console.print(f"HTML report written to {report}")


@app.command("tune-encoder")
def tune_encoder_(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the tuned sentence-transformers model to")],
    dataset: Annotated[DatasetName, typer.Option("--dataset", "-d")] = DatasetName.movielens,
    data: Annotated[Optional[str], typer.Option("--data", help="Path to the dataset (folder or file)")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Pairs per step (in-batch negatives)")] = 32,
    max_pairs: Annotated[int, typer.Option("--max-pairs", min=2, help="Sample at most this many pairs")] = 20_000,
    lr: Annotated[float, typer.Option(help="AdamW peak learning rate")] = 2e-5,
    seed: Annotated[int, typer.Option(help="Seed of the cold split, the pair sample and training")] = 0,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the before/after figures here")] = None,
    cache: Annotated[Optional[str], typer.Option(help="Vector cache store URL (default ~/.cache/liverec/vectors.db)")] = None,
    threads: Annotated[
        Optional[int], typer.Option(min=1, help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)")
    ] = None,
) -> None:
    """Fine-tune the language model on behaviour; show cold-start quality before and after.

    Pairs (item text, next item text) come from consecutive positive interactions of
    each user in the TRAIN part of the cold-item split (10% of the items with >= 5
    interactions held out), so the held-out figures are honest.
    """
    import time

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from .evaluation.tune_encoder import cold_split_pairs, cold_start_report, torch_threads, tune_encoder
    from .evaluation.datasets import load_dataset
    from .evaluation.run import default_cache_url
    from .settings import Settings

    try:
        settings = Settings()
        ds = load_dataset(dataset.value, data)
        console.print(
            f"{ds.name}: {len({e.user for e in ds.events})} users, {len(ds.items)} items, {len(ds.events)} events"
        )
        pairs, split = cold_split_pairs(
            ds.items, ds.events, template=settings.text_template, max_pairs=max_pairs, seed=seed
        )
        console.print(
            f"{len(split.cold_items)} cold items held out; {len(pairs)} behaviour pairs from {len(split.train)} "
            "train events (no cold item text among them)"
        )
        with torch_threads(threads):
            t = time.perf_counter()
            model_dir = tune_encoder(
                pairs, out, base_model=settings.encoder_model, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed
            )
            seconds = time.perf_counter() - t
            console.print(f"fine-tuned in {seconds:.1f} s, saved to {model_dir}")
            report = cold_start_report(
                ds.items, ds.events, base_model=settings.encoder_model, tuned_model=model_dir,
                template=settings.text_template, seed=seed, pairs=pairs, cache_url=cache or default_cache_url(),
                progress=True,
            )
    except LiverecError as exc:
        _fail(exc)
    table = Table(title=f"cold items ({report['cold_items']} held out, {report['cold_users']} users): content profile")
    for col in ("encoder", "NDCG@10", "Recall@10", "HR@10"):
        table.add_column(col)
    for label in ("before", "after"):
        row = report[label]
        table.add_row(
            f"{label} ({'tuned' if label == 'after' else settings.encoder_model or 'all-MiniLM-L6-v2'})",
            *(f"{row[m]:.4f}" if row.get(m) is not None else "-" for m in ("ndcg@10", "recall@10", "hr@10")),
        )
    console.print(table)
    result = {
        "before": report["before"],
        "after": report["after"],
        "pairs": len(pairs),
        "seconds": round(seconds, 2),
        "model_dir": str(Path(model_dir).resolve()),
        "cold_items": report["cold_items"],
        "cold_users": report["cold_users"],
        "settings": {"dataset": ds.name, "epochs": epochs, "batch_size": batch_size, "max_pairs": max_pairs,
                     "lr": lr, "seed": seed, "base_model": settings.encoder_model or "all-MiniLM-L6-v2"},
    }
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"JSON written to {json_path}")
    console.print(
        f"Use it: LIVEREC_ENCODER_MODEL={result['model_dir']} liverec ... — the engine then re-encodes the "
        "catalog into the vector cache under the new model id (keyed by the folder's absolute path and a "
        "fingerprint of its files).",
        soft_wrap=True,
        markup=False,
    )


@app.command()
def simulate(
    seeds: Annotated[int, typer.Option(min=1, help="Independent simulated worlds; CIs are over seeds")] = 20,
    steps: Annotated[int, typer.Option(min=1, help="Slates each agent serves per seed (after the warm-up)")] = 20_000,
    warmup: Annotated[int, typer.Option(min=0, help="Random-slate steps whose log every agent starts from")] = 2_000,
    drift: Annotated[bool, typer.Option("--drift/--no-drift", help="Shift every user's taste once")] = True,
    drift_at: Annotated[Optional[int], typer.Option("--drift-at", min=0, help="Agent step of the shift (default: steps/2)")] = None,
    drift_mode: Annotated[str, typer.Option("--drift-mode", help="replace (new interests) | rotate (turn toward one)")] = "replace",
    users: Annotated[int, typer.Option(min=1, help="Simulated users")] = 200,
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="Slate size")] = 5,
    catalog_size: Annotated[int, typer.Option("--catalog-size", min=1, help="First N goodbooks books (10000 = all)")] = 10_000,
    agents: Annotated[
        str, typer.Option(help="Comma-separated: static, retrain-N, realtime, realtime+retrain-N, MODE@POLICY (e.g. realtime@lints), vw, random, pop")
    ] = "static,retrain-1000,realtime,vw",
    skips: Annotated[bool, typer.Option("--skips/--no-skips", help="Also send a skip for the top unclicked item")] = True,
    jobs: Annotated[int, typer.Option(min=1, help="Worker processes; seeds run in parallel (same figures)")] = 1,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write every figure and the settings here")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write an HTML report with CTR curves here")] = None,
    cache: Annotated[Optional[str], typer.Option(help="Vector cache store URL (default ~/.cache/liverec/vectors.db)")] = None,
) -> None:
    """Simulated users on the real book catalog: does learning from every event pay off?

    Every agent meets the same simulated users (same tastes, arrivals, click draws and
    warm-up log) per seed; CTR is clicks / impressions, with 95% t-intervals over
    seeds; ratios are paired by seed. Recovery = a user's slates after the taste shift
    until their rolling CTR is back to 90% of its pre-shift level.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import contextlib
    import math
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .errors import ValidationError
    from .evaluation.agents import agent_factories
    from .evaluation.simulator import compare_agents, load_book_vectors

    names = [a.strip() for a in agents.split(",") if a.strip()]
    if drift_mode not in ("replace", "rotate"):
        _fail(ValidationError(f"--drift-mode must be replace or rotate, got {drift_mode!r}.", field="drift_mode"))
    try:
        if not names:
            raise ValidationError("no agents given; e.g. --agents static,retrain-1000,realtime,vw", field="agents")
        if "vw" in names:
            require("vowpalwabbit", "eval", "the simulator agent 'vw' (Vowpal Wabbit)")
        if report:  # before the run, not after it
            require("matplotlib", "eval", "the HTML report (--report)")
        t = time.perf_counter()
        vectors, ids, _ = load_book_vectors(catalog_size, cache_url=cache)
        console.print(f"{len(ids)} books, {vectors.shape[1]}-d LM vectors ({time.perf_counter() - t:.1f} s)")
        factories = agent_factories(names, vectors, ids)
        at = (drift_at if drift_at is not None else steps // 2) if drift else None
        try:  # one BLAS thread: many small products, on a machine others share
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(1)
        except ImportError:  # pragma: no cover
            limits = contextlib.nullcontext()
        with limits, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err, transient=True,
        ) as bar:
            task = bar.add_task("simulating", total=seeds * len(names) * steps)

            def advance(name: str, seed: int, n: int) -> None:
                bar.update(task, advance=n, description=f"seed {seed} · {name}")

            t = time.perf_counter()
            out = compare_agents(
                vectors, ids, factories, seeds=list(range(seeds)), steps=steps, warmup=warmup, n_users=users, k=k,
                drift_at=at, drift_mode=drift_mode, skips=skips, progress=advance, jobs=jobs,
                ratios=[("realtime", "static"), ("realtime", "retrain-1000"),
                        *((n, "vw") for n in names if n.startswith("realtime") and "vw" in names)],
            )
        run_s = time.perf_counter() - t
    except LiverecError as exc:
        _fail(exc)
    out["settings"].update({"catalog_size": len(ids), "users": users, "k": k, "drift": drift, "drift_at": at, "jobs": jobs,
                            "run_seconds": round(run_s, 1)})

    def num(x, fmt: str = ".4f") -> str:
        return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)

    table = Table(title=f"simulated CTR · {len(ids)} books · {users} users · {seeds} seeds × {steps} steps · k={k}")
    table.add_column("agent", no_wrap=True)
    for col in ("CTR ± 95% CI", "pre", "post", "recovery", "back", "clicks", "1st click", "ms/step"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, p in out["policies"].items():
        lo, hi = p["ctr_ci95"]
        half = None if lo is None or hi is None else (hi - lo) / 2
        table.add_row(
            name, f"{num(p['ctr'])} ± {num(half)}", num(p["ctr_before_drift"]), num(p["ctr_after_drift"]),
            num(p["recovery_events"], ".1f"),
            "—" if p["recovered_frac"] is None else f"{100 * p['recovered_frac']:.0f}%",
            num(p.get("recovery_clicks"), ".1f"), num(p.get("first_click_slates"), ".1f"),
            num(p["agent_ms_per_step"], ".2f"),
        )
    table.caption = (
        "CTR = clicks / impressions, mean over seeds (t-interval); pre/post = CTR before/after the taste "
        "shift. recovery = a user's slates after the shift until their rolling CTR is back to 90% of their "
        "pre-shift level (users who never get back count all their slates; back = share who did); clicks = "
        "the user's post-shift clicks before that slate (the evidence the learner needed); 1st click = slates "
        "to the first post-shift click (finding the new taste)."
    )
    console.print(table)
    for label, r in out["ratios"].items():
        lo, hi = r["ci95"]
        console.print(f"{label}: {num(r['ratio'], '.3f')} (95% CI [{num(lo, '.3f')}, {num(hi, '.3f')}], paired over seeds)")
    console.print(
        f"simulator alone: {num(out['simulator_steps_per_second'], ',.0f')} steps/s · total {run_s:.0f} s"
    )
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(out, indent=2) + "\n")
        console.print(f"JSON written to {json_path}")
    if report:
        from .evaluation.report import write_simulation_html

        report.parent.mkdir(parents=True, exist_ok=True)
        write_simulation_html(out, report)
        console.print(f"HTML report written to {report}")


def _eval_ope(data: str | None, json_path: Path | None) -> None:
    from .evaluation.ope import format_obd_table, learned_policies, load_open_bandit, validate_on_obd

    if data is None:
        err.print("[bold red]error:[/] --data PATH is required: the Open Bandit Dataset folder (with random/ and bts/).")
        raise typer.Exit(code=2)
    try:
        res = validate_on_obd(Path(data))
    except LiverecError as exc:
        _fail(exc)
    console.print(format_obd_table(res))
    try:
        mine = learned_policies(load_open_bandit(Path(data) / "random" / "all"))
    except LiverecError as exc:
        _fail(exc)
    t = Table(title=f"liverec policies learned on the first {mine['n_rounds']['train']} random-log rounds, "
                    f"estimated on the last {mine['n_rounds']['test']}")
    for col in ("policy", "DR", "DR 95% CI", "IPS", "SNIPS", "beats random (DR lower bound)"):
        t.add_column(col, justify="right" if col != "policy" else "left")
    lo, hi = mine["random"]["ci95"]
    t.add_row("random (on-policy)", f"{mine['random']['ctr']:.5f}", f"[{lo:.5f}, {hi:.5f}]", "", "", "")
    for name, r in mine["policies"].items():
        t.add_row(name, f"{r['dr']['estimate']:.5f}", f"[{r['dr']['ci95'][0]:.5f}, {r['dr']['ci95'][1]:.5f}]",
                  f"{r['ips']['estimate']:.5f}", f"{r['snips']['estimate']:.5f}",
                  "yes" if mine["beats_random"][name] else "no")
    console.print(t)
    if mine.get("detectable_ctr"):
        console.print(f"a deterministic policy would need a click rate of about {mine['detectable_ctr']:.4f} "
                      f"({mine['detectable_ctr'] / mine['random']['ctr']:.0f}x random) for its lower 95% bound to "
                      f"clear random on these {mine['n_rounds']['test']} rounds")
    main_variant = res["variants"].get("empirical") or next(iter(res["variants"].values()))
    out = {
        "estimators": main_variant,
        "variants": res["variants"],
        "on_policy_ctr": res["on_policy_ctr"],
        "reference": res["reference"],
        "liverec_policies": mine,
        "settings": {"data": str(data), "n_rounds": res["n_rounds"], "runtime_s": res.get("runtime_s")},
    }
    if json_path:
        json_path.write_text(json.dumps(out, indent=2, default=float))
        console.print(f"JSON written to {json_path}")


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
