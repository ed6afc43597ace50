"""The SLA dashboard in a real headless Chromium (Debian's) against a live
server. Set SCREENSHOTS=1 to refresh docs/reports.png."""

from __future__ import annotations

import os
import random
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import expect

from approvals.models import DecisionStat
from tests.test_browser import DOCS, browser, open_as, pytestmark  # noqa: F401 (fixtures)


def thirty_days_of_decisions() -> None:
    """Rollup rows as the engine keeps them: a month of two classes and three roles."""
    rng = random.Random(14)
    today = timezone.now().date()
    rows = []
    for back in range(30):
        day = today - timedelta(days=back)
        for action_class, role, fast in (
            ("customer-urgent", "support-lead", 2),
            ("internal", "finance-manager", 5),
            ("internal", "cfo", 8),
        ):
            for bucket in range(fast - 2, fast + 4):
                met = "met" if bucket <= fast + 1 else "missed"
                rows.append(
                    DecisionStat(
                        day=day, action_class=action_class, role=role, outcome="approved",
                        timed_out=False, escalated=role == "cfo", sla=met, bucket=bucket,
                        count=rng.randint(1, 12), seconds=0,
                    )
                )  # fmt: skip
            rows.append(
                DecisionStat(
                    day=day, action_class=action_class, role=role, outcome="expired",
                    timed_out=True, escalated=True, sla="missed", bucket=fast + 5,
                    count=rng.randint(0, 2), seconds=0,
                )
            )  # fmt: skip
    DecisionStat.objects.bulk_create(rows)


def test_a_manager_reads_the_sla_dashboard(open_as, bot, tmp_path):  # noqa: F811
    from tests.helpers import INVOICE

    get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    thirty_days_of_decisions()
    bot.post("/api/v1/requests", INVOICE, format="json")
    page = open_as("boss", width=1280, height=1000)
    page.goto(page.url.split("/", 3)[0] + "//" + page.url.split("/", 3)[2] + "/reports/")
    expect(page.get_by_role("heading", name="SLA dashboard")).to_be_visible()
    classes = page.get_by_role("table").first
    expect(classes.get_by_role("rowheader", name="customer-urgent")).to_be_visible()
    expect(page.locator("svg.chart rect")).to_have_count(30)
    roles = page.get_by_role("table").nth(1)
    expect(roles.get_by_role("row", name="finance-manager")).to_contain_text("1")
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").first.click()
    assert download.value.suggested_filename.startswith("sla-classes-")
    target = DOCS if os.environ.get("SCREENSHOTS") else tmp_path
    page.screenshot(path=str(target / "reports.png"), full_page=True)
