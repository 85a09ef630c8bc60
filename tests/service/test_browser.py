"""The live web page in a real browser: a like re-ranks the list at once.

A real uvicorn server (in a thread, on a free loopback port) serves
``create_app`` around an Engine with the real MiniLM and the shipped books;
headless Chromium (Debian's ``chromium`` + ``chromium-driver``) drives the page
like a reader: pick a user, search "harry potter", press Like, see the list
change, the round-trip time and the live charts. A screenshot is written to
``$LIVEREC_SCREENSHOT_DIR`` (default ``tests/service/artifacts/``, git-ignored).
"""

from __future__ import annotations

import base64
import os
import re
import socket
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from liverec import Engine, Settings
from liverec.service import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).parent / "artifacts"
WAIT = 30.0  # seconds: generous, the machine may be busy


def _unavailable(reason: str) -> None:
    if os.environ.get("LIVEREC_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}. LIVEREC_REQUIRE_SERVICES=1 requires it: apt-get install chromium "
                    "chromium-driver, or unset LIVEREC_REQUIRE_SERVICES.", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator["object"]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        _unavailable(f"headless Chromium is not installed ({', '.join(missing)} missing)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # pragma: no cover - selenium is a dev dependency
        _unavailable(f"selenium is not importable ({exc})")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--window-size=1366,900"):
        options.add_argument(arg)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def eng(encoder, books) -> Iterator[Engine]:
    settings = Settings(encoder_progress=False, popularity_prior="ratings_count")
    e = Engine.open(settings=settings, encoder=encoder)
    e.add_items(books)
    yield e
    e.close()


@pytest.fixture
def live_url(eng: Engine) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the app, in a background thread."""
    import uvicorn

    settings = Settings(open_access=True, encoder_progress=False, popularity_prior="ratings_count")
    app = create_app(settings, engine=eng)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the server takes this very socket: no race for the port
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn",
                              daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + WAIT
    while True:
        try:
            with urllib.request.urlopen(url + "/ready", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail(f"the server on {url} did not answer GET /ready within {WAIT:.0f} s",
                        pytrace=False)
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _wait(driver, what: str, cond, timeout: float = WAIT):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: cond(d))
    except TimeoutException:
        status = driver.execute_script("return document.getElementById('status').textContent")
        raise AssertionError(f"timed out waiting for {what}; status area says {status!r}") from None


def _shown(driver) -> list[str]:
    """Item ids of the recommendation cards, in order."""
    return driver.execute_script(
        "return [...document.querySelectorAll('[data-testid=rec-card]')].map(c => c.dataset.item)"
    )


def _rowling(eng: Engine, ids: list[str]) -> int:
    return sum("Rowling" in str(eng.get_item(i).attributes.get("authors", "")) for i in ids)


def _screenshot_dir() -> Path:
    env = os.environ.get("LIVEREC_SCREENSHOT_DIR")
    d = Path(env) if env else ARTIFACTS
    d.mkdir(parents=True, exist_ok=True)
    if not env and not (d / ".gitignore").exists():
        (d / ".gitignore").write_text("*\n")
    return d


@pytest.mark.browser
@pytest.mark.slow
def test_like_on_the_live_page_reranks_the_list(browser, live_url: str, eng: Engine) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser

    def el(css: str):
        return d.find_element(By.CSS_SELECTOR, css)

    def text(css: str) -> str:
        return el(css).text

    d.get(live_url + "/")
    assert "liverec" in d.title
    # Open mode: no key field; a random new reader gets the cold-start list at once.
    _wait(d, "the first list", lambda d: len(_shown(d)) == 10)
    assert not el("#key-form").is_displayed()

    # 1. Create a reader by typing a new name.
    user = f"hp-fan-{uuid.uuid4().hex[:6]}"
    el("[data-testid=user-input]").clear()
    el("[data-testid=user-input]").send_keys(user)
    el("[data-testid=user-use]").click()
    _wait(d, f"the list of {user}",
          lambda d: el("#recs").get_attribute("data-user") == user and len(_shown(d)) == 10)
    assert d.execute_script("return localStorage.getItem('liverec.user')") == user
    before = _shown(d)
    assert text("[data-testid=meta-variant]") == "default"
    assert text("[data-testid=meta-policy]") == "greedy"
    assert text("[data-testid=meta-model]").startswith("v")

    # 2. Find a Harry Potter book with the search box and Like it.
    el("[data-testid=search-input]").send_keys("harry potter")
    el("[data-testid=search-go]").click()
    _wait(d, "search results",
          lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=search-result]"))
    hit = d.find_elements(By.CSS_SELECTOR, "[data-testid=search-result]")[0]
    liked = hit.get_attribute("data-item")
    assert "Harry Potter" in eng.get_item(liked).attributes["title"]
    hit.find_element(By.CSS_SELECTOR, "[data-testid=search-like]").click()

    rt = re.compile(r"round trip: (\d+(?:\.\d+)?) ms \(event → new list\)")
    _wait(d, "the round-trip time", lambda d: rt.search(text("[data-testid=round-trip]")))
    after = _shown(d)
    ms = float(rt.search(text("[data-testid=round-trip]")).group(1))
    assert 0 < ms < 30_000

    # The list follows the like: different items, more Rowling than before.
    assert after != before and set(after) - set(before)
    assert _rowling(eng, after) >= 3 and _rowling(eng, after) > _rowling(eng, before)
    assert liked not in after  # seen items are not recommended again
    # The server really stored the event.
    assert [(e.item, e.kind) for e in eng.history(user)] == [(liked, "like")]

    # 3. Keyboard: Enter on a card's Click button sends the event; focus stays in the list.
    first = d.find_elements(By.CSS_SELECTOR, "[data-testid=rec-card]")[0]
    clicked = first.get_attribute("data-item")
    first.find_element(By.CSS_SELECTOR, "[data-testid=act-click]").send_keys(Keys.ENTER)
    _wait(d, "the second round trip",
          lambda d: el("#round-trip").get_attribute("data-count") == "2")
    assert clicked not in _shown(d)
    assert [(e.item, e.kind) for e in eng.history(user)] == [(liked, "like"), (clicked, "click")]
    assert d.execute_script(
        "const a = document.activeElement;"
        "return a.tagName === 'BUTTON' && !!a.closest('[data-testid=rec-card]')"
    )
    _wait(d, "the reader summary", lambda d: text("[data-testid=user-events]") == "2")

    # 4. The live panel (every 2 s from /stats) shows the events, the variant and the charts.
    _wait(d, "the live counters", lambda d: int(text("#kpi-events").replace(",", "") or 0) >= 2)
    row = el("[data-testid=variant-row][data-variant=default]")
    assert int(row.find_element(By.CSS_SELECTOR, "[data-testid=variant-clicked]").text) >= 1
    assert row.find_element(By.CSS_SELECTOR, "[data-testid=variant-ctr]").text.endswith("%")
    for chart in ("chart-events", "chart-ctr", "chart-latency"):
        drawn = d.find_elements(By.CSS_SELECTOR, f"#{chart} path, #{chart} circle")
        assert drawn, f"{chart} is empty"
    assert el("#status").get_attribute("data-kind") != "error", text("#status")

    # Covers cannot load offline: each card then shows the placeholder box instead.
    _wait(d, "cover fallbacks", lambda d: d.execute_script(
        "return [...document.querySelectorAll('[data-testid=rec-card] .cover')].every("
        "c => !c.querySelector('img') || c.classList.contains('has-img'))"))

    # No JavaScript error and no failed API call (cover downloads may fail: offline machine).
    def expected(msg: str) -> bool:
        return "Failed to load resource" in msg and not msg.startswith(live_url)

    problems = [e["message"] for e in d.get_log("browser")
                if e["level"] == "SEVERE" and not expected(e["message"])]
    assert not problems, problems

    # 5. Screenshots: the viewport as a person sees it, and the whole page.
    out = _screenshot_dir()
    d.execute_script("window.scrollTo(0, 0); document.activeElement.blur()")
    time.sleep(0.3)
    assert d.save_screenshot(str(out / "live-page.png"))
    try:  # the whole page too (Chromium DevTools protocol); a nicety, not part of the check
        size = d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        full = d.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        })
        (out / "live-page-full.png").write_bytes(base64.b64decode(full["data"]))
    except Exception:  # noqa: BLE001 - an older Chromium without these fields
        pass
    assert (out / "live-page.png").stat().st_size > 10_000
