"""The live page on a phone (390 px wide) in headless Chromium: nothing wider than the
screen, every button reachable, reasons in plain words, and the full reason on tap.

Screenshots go where the desktop browser test writes its own (``$LIVEREC_SCREENSHOT_DIR``,
default ``tests/service/artifacts/``, git-ignored).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Iterator

import pytest
from apihelp import LiveServer
from test_browser import CHROMEDRIVER, CHROMIUM, _screenshot_dir, _unavailable

from liverec import Engine, Event, Item, Settings
from liverec.service import create_app
from liverec.store import Store

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDTH = 390  # CSS px: a common phone
SOURCE_NAMES = re.compile(r"\b(content|ease|als|bpr|itemknn|userknn|transition|tfidf|neural|sequence|pop)\b")


@pytest.fixture
def phone() -> Iterator[object]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        _unavailable(f"headless Chromium is not installed ({', '.join(missing)} missing)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--hide-scrollbars"):
        options.add_argument(arg)
    options.add_experimental_option("mobileEmulation", {
        "deviceMetrics": {"width": WIDTH, "height": 844, "pixelRatio": 2, "touch": True}})
    options.binary_location = str(CHROMIUM)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page_url(encoder, books) -> Iterator[str]:
    settings = Settings(open_access=True, encoder_progress=False, popularity_prior="ratings_count")
    eng = Engine(Store.open("sqlite://"), settings, encoder)
    # Items with a description (the shipped books have none): the full reason shows it too.
    eng.add_items([Item(b.id, f"A book by {b.attributes.get('authors', 'an unknown author')}, {b.attributes.get('title', '')}.",
                        b.attributes) for b in books[:300]])
    eng.record_many([Event(user="reader", item="2", kind="like"), Event(user="reader", item="3", kind="click")])
    with LiveServer(create_app(settings, engine=eng)) as url:
        yield url
    eng.close()


def _wait(driver, what: str, cond, timeout: float = 60.0):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: cond(d))
    except Exception:  # noqa: BLE001 - say what was awaited
        raise AssertionError(f"timed out waiting for {what}") from None


def _shot(driver, name: str) -> Path:
    path = _screenshot_dir() / name
    driver.save_screenshot(str(path))
    return path


def test_the_page_fits_a_phone_and_opens_the_full_reason_on_tap(phone, page_url: str) -> None:
    from selenium.webdriver.common.by import By

    d = phone
    d.get(page_url + "/")
    d.execute_script("localStorage.setItem('liverec.user', 'reader')")
    d.get(page_url + "/")
    _wait(d, "the reader's list", lambda d: d.execute_script(
        "const l = document.getElementById('recs'); return l && l.dataset.user === 'reader' && "
        "l.querySelectorAll('[data-testid=rec-card]').length === 10"))
    assert d.execute_script("return window.innerWidth") == WIDTH

    # Nothing is wider than the screen: no sideways scrolling, every card and button inside it.
    assert d.execute_script("return document.documentElement.scrollWidth") <= WIDTH
    outside = d.execute_script(
        "return [...document.querySelectorAll('[data-testid=rec-card], [data-testid=rec-card] button, header, "
        "main section')].filter(e => { const r = e.getBoundingClientRect();"
        " return r.width > 0 && (r.left < -0.5 || r.right > innerWidth + 0.5); }).map(e => e.className || e.tagName)")
    assert not outside, outside
    small = d.execute_script(
        "return [...document.querySelectorAll('[data-testid=rec-card] button')].filter(b => {"
        " const r = b.getBoundingClientRect(); return r.height < 28 || r.width < 28; }).length")
    assert small == 0  # big enough to tap

    # Reasons in plain words: no internal source name in anything a reader sees.
    cards = d.find_elements(By.CSS_SELECTOR, "[data-testid=rec-card]")
    for c in cards:
        assert not SOURCE_NAMES.search(c.text), c.text
    d.execute_script("document.getElementById('recs').scrollIntoView()")
    shot = _shot(d, "live-page-390.png")
    assert shot.stat().st_size > 10_000

    # Tap the reason of a card whose reason is clamped: the whole sentence shows, tap again folds it.
    why = next((c.find_element(By.CSS_SELECTOR, "[data-testid=rec-explanation]") for c in cards
                if d.execute_script("const w = arguments[0].querySelector('[data-testid=rec-explanation]');"
                                    "return !!w && w.scrollHeight > w.clientHeight + 1", c)), None)
    assert why is not None, "no card's reason is clamped: make the test catalog's reasons longer"
    assert why.get_attribute("aria-expanded") == "false"
    why.click()
    _wait(d, "the full reason", lambda d: why.get_attribute("aria-expanded") == "true")
    time.sleep(0.2)
    assert d.execute_script("return arguments[0].scrollHeight <= arguments[0].clientHeight + 1", why)
    card = why.find_element(By.XPATH, "./ancestor::*[@data-testid='rec-card']")
    desc = card.find_element(By.CSS_SELECTOR, "[data-testid=rec-description]")  # the item's own text, too
    assert desc.is_displayed() and desc.text.startswith("A book by "), desc.text
    assert d.execute_script("return document.documentElement.scrollWidth") <= WIDTH
    d.execute_script("arguments[0].scrollIntoView()", card)
    _shot(d, "live-page-390-reason-open.png")
    why.click()
    _wait(d, "the folded reason", lambda d: why.get_attribute("aria-expanded") == "false")
