"""`serve --demo`: the page and the API answer while the catalog is still being encoded."""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np
from fastapi.testclient import TestClient

from liverec import Engine
from liverec.importer import CatalogImport
from liverec.service import create_app
from liverec.settings import Settings
from liverec.store import Store


class GatedEncoder:
    """The real encoder behind a gate: encoding waits until the test opens it."""

    def __init__(self, inner) -> None:
        self.inner, self.model_id = inner, inner.model_id
        self.gate = threading.Event()
        self.waiting = threading.Event()

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        self.waiting.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return self.inner.encode(texts)


def test_the_page_serves_before_the_catalog_is_encoded(tmp_path, encoder, books):
    items = books[:150]
    settings = Settings(store=f"sqlite:///{tmp_path / 'demo.db'}", open_access=True, encoder_progress=False,
                        popularity_prior="ratings_count")
    gated = GatedEncoder(encoder)
    eng = Engine(Store.open(settings.store), settings, gated)
    imp = CatalogImport(eng, items, first=64, chunk=50).start()
    try:
        with TestClient(create_app(settings, engine=eng)) as client:
            assert gated.waiting.wait(30)  # the import is inside the model, stuck at the gate
            page = client.get("/")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            stats = client.get("/stats").json()
            assert stats["importing"] == [0, 150] and stats["items"] == 0
            assert client.get("/recommendations/ana", params={"k": 5}).json()["items"] == []

            gated.gate.set()
            imp.join(120)
            assert not imp.running and imp.error is None
            stats = client.get("/stats").json()
            assert stats["importing"] is None and stats["items"] == 150
            recs = client.get("/recommendations/ana", params={"k": 5}).json()["items"]
            assert len(recs) == 5 and all(r["reasons"] for r in recs)
            # The most-rated books came first, and a new reader is shown them.
            assert {r["item"] for r in recs} <= {it.id for it in items[:64]}
    finally:
        gated.gate.set()
        imp.stop()
        imp.join(60)
        eng.close()


def test_an_import_stopped_early_keeps_what_it_added(tmp_path, encoder, books):
    settings = Settings(store=f"sqlite:///{tmp_path / 'demo.db'}", encoder_progress=False)
    with Engine(Store.open(settings.store), settings, encoder) as eng:
        imp = CatalogImport(eng, books[:30], first=10, chunk=10)
        eng.import_progress = (0, 30)
        imp.stop()  # before it starts: nothing is added, the progress is cleared
        imp.run()
        assert eng.n_items == 0 and eng.import_progress is None
        CatalogImport(eng, books[:30], first=10, chunk=10).run()
        assert eng.n_items == 30 and eng.import_progress is None
