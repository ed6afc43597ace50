"""The request's page in the browser (the full inbox arrives with its own issue)."""

from __future__ import annotations

from django.test import Client


def logged_in(username: str) -> Client:
    client = Client()
    client.login(username=username, password="pw")
    return client


def test_the_page_shows_the_policy_version_and_rule_that_routed_it(invoice):
    page = logged_in("maria").get(f"/requests/{invoice['id']}").content.decode()
    assert "finance-invoices v1" in page
    assert "invoice-discrepancy" in page
    assert "INV-1042 is $1,240 over PO-77" in page


def test_an_outsider_gets_404(invoice):
    assert logged_in("olivia").get(f"/requests/{invoice['id']}").status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(invoice):
    response = Client().get(f"/requests/{invoice['id']}")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_a_reviewer_approves_in_the_browser(invoice, bot):
    client = logged_in("maria")
    response = client.post(f"/requests/{invoice['id']}", {"outcome": "approve", "reason": ""})
    assert response.status_code == 302
    assert bot.get(f"/api/v1/requests/{invoice['id']}").json()["status"] == "approved"


def test_a_deny_without_reason_shows_the_error(invoice):
    response = logged_in("maria").post(f"/requests/{invoice['id']}", {"outcome": "deny"})
    assert response.status_code == 400
    assert "A reason is required to deny." in response.content.decode()


def test_the_inbox_lists_the_owned_queue_only(invoice):
    assert "INV-1042" in logged_in("maria").get("/").content.decode()
    assert "INV-1042" not in logged_in("olivia").get("/").content.decode()
