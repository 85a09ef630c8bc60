"""The live page while `serve --demo` is still encoding the catalog, in a real browser."""

from __future__ import annotations

from typing import Iterator

import pytest

from liverec import Engine, Settings
from liverec.importer import CatalogImport
import test_browser
from test_browser import _shown, _wait
from test_demo_import import GatedEncoder

#: The real browser and the real server of the page test, around this module's engine.
browser = test_browser.browser
live_url = test_browser.live_url

N = 150


@pytest.fixture
def gated(encoder) -> GatedEncoder:
    return GatedEncoder(encoder)


@pytest.fixture
def eng(gated, books) -> Iterator[Engine]:
    """An engine whose catalog import is stuck inside the model until the test opens the gate."""
    e = Engine.open(settings=Settings(encoder_progress=False, popularity_prior="ratings_count"), encoder=gated)
    imp = CatalogImport(e, books[:N], first=64, chunk=50).start()
    yield e
    gated.gate.set()
    imp.stop()
    imp.join(60)
    e.close()


@pytest.mark.browser
@pytest.mark.slow
def test_the_page_shows_the_import_and_fills_the_list_when_books_arrive(browser, live_url, eng, gated) -> None:
    d = browser
    d.get(live_url + "/")

    def conn(d) -> str:
        return d.execute_script("return document.getElementById('conn-text').textContent")

    _wait(d, "the import progress", lambda d: f"learning the catalog… 0/{N}" in conn(d))
    assert _shown(d) == []
    gated.gate.set()
    _wait(d, "the list, without a reload", lambda d: len(_shown(d)) == 10, timeout=90)
    _wait(d, "the end of the import", lambda d: conn(d) == f"connected · {N} items", timeout=90)
