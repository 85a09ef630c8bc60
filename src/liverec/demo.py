"""``liverec demo``: the shipped book catalog, a few users, lists that change at once.

Two scripted readers and one simulated reader (a hidden taste, clicking what
matches it and skipping what does not) show the list before and after each piece
of feedback, with reasons and the record -> recommend round-trip time.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from .data import load_goodbooks
from .engine import Engine
from .settings import Settings
from .types import Event, Item, Recommendation

DEMO_USERS = ("ana", "ben", "cleo")


def _find(items: Sequence[Item], title: str, author: str | None = None) -> str:
    for it in items:
        if title.lower() in str(it.attributes.get("title", "")).lower() and (
            author is None or author.lower() in str(it.attributes.get("authors", "")).lower()
        ):
            return it.id
    raise LookupError(f"no book titled like {title!r} in the demo catalog; run the demo without --limit")


class _Show:
    def __init__(self, eng: Engine, console: Console, k: int) -> None:
        self.eng, self.console, self.k = eng, console, k

    def title(self, item_id: str) -> str:
        i = self.eng.catalog.index[item_id]
        a = self.eng.catalog.attributes[i]
        return f"{a.get('title', item_id)} — {str(a.get('authors', '')).split(',')[0]}"

    def recs(self, user: str) -> list[Recommendation]:
        return self.eng.recommend(user, k=self.k, log=False)

    def table(self, caption: str, before: list[Recommendation] | None, after: list[Recommendation]) -> None:
        old = {r.item for r in before or []}
        t = Table(title=caption, title_justify="left", show_lines=False, expand=False)
        t.add_column("#", justify="right")
        t.add_column("recommended now")
        t.add_column("why", style="dim")
        for r in after:
            mark = "[green]★[/] " if before is not None and r.item not in old else "  "
            t.add_row(str(r.position + 1), mark + self.title(r.item), r.reasons[0].text if r.reasons else "")
        self.console.print(t)

    def act(self, user: str, item: str, kind: str, t: float) -> list[Recommendation]:
        before = self.recs(user)
        start = time.perf_counter()
        self.eng.record(Event(user=user, item=item, kind=kind, timestamp=t))
        after = self.recs(user)
        ms = (time.perf_counter() - start) * 1000
        new = len({r.item for r in after} - {r.item for r in before})
        self.table(
            f"[bold]{user}[/] {kind}s “{self.title(item)}” → {new} new in the top {self.k} "
            f"[dim](record + recommend {ms:.1f} ms)[/]",
            before,
            after,
        )
        return after


def run_demo(store: str, *, limit: int | None = None, k: int = 5, console: Console | None = None) -> None:
    console = console or Console()
    settings = Settings(store=store, popularity_prior="ratings_count", log_impressions=False)
    t0 = time.perf_counter()
    with Engine.open(store, settings=settings) as eng:
        books = load_goodbooks(limit=limit)
        console.print(f"[bold]liverec demo[/] — {len(books)} books from goodbooks-10k (CC BY-SA 4.0), store {store}")
        console.print("encoding the catalog with all-MiniLM-L6-v2 (cached on this machine: only the first run encodes)…")
        eng.add_items(books)
        for u in DEMO_USERS:  # start every run from fresh users
            eng.delete_user(u)
        console.print(f"catalog ready: {eng.n_items} items in {time.perf_counter() - t0:.1f} s\n")
        show = _Show(eng, console, k)
        t = time.time() - 3600

        console.rule("ana: a new reader, scripted clicks")
        show.table("[bold]ana[/] has no history: popular books", None, show.recs("ana"))
        for title, author, kind in [
            ("Harry Potter and the Sorcerer's Stone", "Rowling", "click"),
            ("Harry Potter and the Prisoner of Azkaban", "Rowling", "click"),
            ("The Hobbit", "Tolkien", "like"),
            ("It", "Stephen King", "purchase"),
        ]:
            t += 60
            show.act("ana", _find(books, title, author), kind, t)

        console.rule("ben: declares interests, then clicks and dislikes")
        eng.set_interests("ben", "detective mysteries and crime investigations")
        first = show.recs("ben")
        show.table("[bold]ben[/] says he likes “detective mysteries and crime investigations”", None, first)
        t += 60
        shown = show.act("ben", _find(books, "The Hound of the Baskervilles"), "click", t)
        t += 60
        show.act("ben", shown[0].item, "dislike", t)

        console.rule("cleo: a simulated reader with a hidden taste")
        taste_text = "epic fantasy with dragons, wizards and magic kingdoms"
        taste = eng.encoder.encode([taste_text])[0]
        console.print(f"cleo's hidden taste: “{taste_text}”. She clicks a shown book that matches it, else skips the top one.")
        for step in range(8):
            recs = show.recs("cleo")
            sims = eng.catalog.vectors[[eng.catalog.index[r.item] for r in recs]] @ taste
            best = int(np.argmax(sims))
            kind, item = ("click", recs[best].item) if sims[best] > 0.35 else ("skip", recs[0].item)
            t += 30
            eng.record(Event(user="cleo", item=item, kind=kind, timestamp=t))
            console.print(
                f"  step {step + 1}: list matches her taste {float(sims.mean()):.2f} on average; "
                f"she {kind}s “{show.title(item)}”"
            )
        final = show.recs("cleo")
        sims = eng.catalog.vectors[[eng.catalog.index[r.item] for r in final]] @ taste
        show.table(f"[bold]cleo[/] after 8 steps (taste match {float(sims.mean()):.2f})", None, final)
        console.print("\nTry it yourself: [bold]liverec recommend ana --store " + store + "[/]")
