"""The reviewer inbox in a real headless Chromium (Debian's), against a live
server on real PostgreSQL. Set SCREENSHOTS=1 to refresh docs/*.png."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.helpers import INVOICE

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parent.parent / "docs"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed"),
]


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API runs an event loop; Django's async-safety check
    # would otherwise refuse the ORM calls the tests make in between.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        yield chromium
        chromium.close()


@pytest.fixture
def open_as(browser: Browser, live_server, users):
    contexts = []

    def login(username: str, *, width: int = 1280, height: int = 800) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto(f"{live_server.url}/accounts/login/?next=/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill("pw")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
        return page

    yield login
    for context in contexts:
        context.close()


@pytest.fixture
def queue(bot):
    """Three invoices for the finance managers, one refund for support."""
    made = []
    for n, (vendor, amount) in enumerate([("Acme", 1240.0), ("Globex", 310.5), ("Initech", 88.0)]):
        body = {**INVOICE, "summary": f"INV-10{42 + n} from {vendor} is ${amount:,.2f} over its PO",
                "context": {"amount": amount, "currency": "USD", "vendor": vendor,
                            "invoice": f"INV-10{42 + n}"}}  # fmt: skip
        made.append(bot.post("/api/v1/requests", body, format="json").json())
    bot.post("/api/v1/requests", {"action": "refund.issue", "summary": "Refund $40"}, format="json")
    return made


def row(page: Page, text: str):
    return page.locator(".queue .row", has_text=text)


def test_a_reviewer_sees_only_the_queue_their_roles_own(open_as, queue):
    page = open_as("maria")
    expect(row(page, "INV-1042")).to_be_visible()
    expect(page.locator(".queue .row")).to_have_count(3)
    expect(page.get_by_text("Refund $40")).to_have_count(0)
    expect(page.get_by_text("vendor: Acme")).to_be_visible()


def test_the_countdown_ticks_without_a_round_trip(open_as, queue):
    page = open_as("maria")
    countdown = row(page, "INV-1042").locator("time.countdown")
    first = countdown.inner_text()
    expect(countdown).not_to_have_text(first, timeout=5_000)
    assert re.match(r"^\d+m \d\ds left$", countdown.inner_text())


def test_a_claim_blocks_the_other_reviewer(open_as, queue):
    maria, tom = open_as("maria"), open_as("tom")

    row(maria, "INV-1042").get_by_role("button", name="Claim").click()

    expect(row(maria, "INV-1042")).to_contain_text("claimed by you")
    expect(row(tom, "INV-1042")).to_contain_text("claimed by maria")  # within a poll
    row(tom, "INV-1042").get_by_role("link").click()
    expect(tom.get_by_text("only they may decide")).to_be_visible()
    expect(tom.get_by_role("button", name="Approve")).to_have_count(0)


def test_deny_without_a_reason_shows_the_error_inline(open_as, queue):
    page = open_as("maria")
    row(page, "INV-1043").get_by_role("link").click()

    page.get_by_role("button", name="Deny").click()

    expect(page.get_by_role("alert")).to_have_text("A reason is required to deny.")
    page.get_by_label("Reason").fill("Globex already credited us")
    page.get_by_role("button", name="Deny").click()
    expect(page.locator("#panel")).to_contain_text("decided by maria")
    expect(page.get_by_role("button", name="Deny")).to_have_count(0)


def test_an_approval_leaves_the_other_reviewers_open_inbox_without_a_reload(open_as, queue):
    tom = open_as("tom")
    expect(row(tom, "INV-1044")).to_be_visible()
    maria = open_as("maria")
    row(maria, "INV-1044").get_by_role("link").click()
    tom.evaluate("window.__sameDocument = true")

    maria.get_by_role("button", name="Approve").click()

    expect(maria.locator("#panel")).to_contain_text("approved")
    expect(row(tom, "INV-1044")).to_have_count(0, timeout=10_000)
    assert tom.evaluate("window.__sameDocument") is True  # swapped in place, not reloaded


def test_the_request_page_updates_when_decided_elsewhere(open_as, queue, tom):
    from tests.helpers import decide

    page = open_as("maria")
    row(page, "INV-1042").get_by_role("link").click()
    expect(page.get_by_role("button", name="Approve")).to_be_visible()

    decide(tom, queue[0]["id"], "approve")

    expect(page.locator("#panel")).to_contain_text("decided by tom", timeout=10_000)
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)


def test_the_keyboard_moves_and_approves(open_as, queue):
    page = open_as("maria")
    page.keyboard.press("j")
    expect(page.locator(".row.selected")).to_contain_text("INV-1042")
    page.keyboard.press("j")
    expect(page.locator(".row.selected")).to_contain_text("INV-1043")
    page.keyboard.press("k")
    page.keyboard.press("a")
    expect(row(page, "INV-1042")).to_have_count(0)
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/requests/"))


def test_an_outsider_gets_404(open_as, queue, live_server):
    page = open_as("olivia")
    response = page.goto(f"{live_server.url}/requests/{queue[0]['id']}")
    assert response.status == 404


def test_it_works_on_a_phone(open_as, queue):
    page = open_as("maria", width=375, height=740)
    expect(row(page, "INV-1042")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    row(page, "INV-1042").get_by_role("link").click()
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_screenshots(open_as, queue, tmp_path):
    target = DOCS if os.environ.get("SCREENSHOTS") else tmp_path
    page = open_as("maria")
    row(page, "INV-1042").get_by_role("button", name="Claim").click()
    expect(row(page, "INV-1042")).to_contain_text("claimed by you")
    page.keyboard.press("j")
    page.screenshot(path=str(target / "inbox.png"), full_page=True)
    row(page, "INV-1042").get_by_role("link").click()
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    page.screenshot(path=str(target / "request.png"), full_page=True)
    assert (target / "inbox.png").stat().st_size > 10_000
