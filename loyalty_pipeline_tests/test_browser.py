"""Issue 16 in a real browser: Playwright drives Debian's chromium (never a downloaded browser) through the page,
served by uvicorn on loopback from the demo's serving copy. The screenshot is kept in test-artifacts/."""

import shutil
from pathlib import Path

import pytest

from loyalty_pipeline_tests.scenarios import serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


# Chromium's own traffic (updates, sync, QUIC probes) has nowhere to go here and only slows it down.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="no chromium: install Debian's package (apt-get install -y chromium)"
    ),
]


@pytest.fixture(scope="module")
def served(demo):
    with serve(demo.warehouse) as url:
        yield url


def test_search_kris_open_the_card_and_read_tier_points_and_ledger(served):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.goto(served + "/")
        page.fill("input[name=q]", "kris")
        page.press("input[name=q]", "Enter")
        page.click("text=u2001")
        card = page.locator("section.card")
        expect(card.locator(".tier")).to_have_text("CLIMBING")
        expect(card).to_contain_text("BRONZE above 200.00: 125.72 to go")
        expect(card.locator(".points")).to_have_text("37")
        expect(card).to_contain_text("16 expire 2025-06-03 00:00:00")
        ledger = card.locator("table.ledger tr")
        expect(ledger).to_have_count(16)  # the header and 15 rows
        expect(ledger.nth(1)).to_contain_text("2024-06-04 22:00:00")
        expect(card.locator("table.ledger")).to_contain_text("-30")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "kris-card.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "kris-card.png").stat().st_size > 10_000


# The widest right edge of any element and the smallest font of any element that shows text.
LAYOUT = """() => {
  const shown = [...document.querySelectorAll('body *')].filter(e => e.getClientRects().length);
  const texts = shown.filter(e => [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()));
  return {
    scroll: document.scrollingElement.scrollWidth, width: window.innerWidth,
    right: Math.max(...shown.map(e => e.getBoundingClientRect().right)),
    font: Math.min(...texts.map(e => parseFloat(getComputedStyle(e).fontSize))),
  };
}"""


def test_on_a_390_px_phone_nothing_scrolls_sideways_and_text_stays_readable(served):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=3, is_mobile=True)
        for path in ("/", "/?q=u", "/?id=u2001", "/?q=kris%40example.com"):
            phone.goto(served + path)
            layout = phone.evaluate(LAYOUT)
            assert layout["width"] == 390, path  # the viewport meta tag: laid out at the phone's width, not 980 px
            assert layout["scroll"] <= 390 and layout["right"] <= 390, (path, layout)
            assert layout["font"] >= 12, (path, layout)
        ARTIFACTS.mkdir(exist_ok=True)
        phone.screenshot(path=str(ARTIFACTS / "kris-card-phone.png"), full_page=True)
        browser.close()
