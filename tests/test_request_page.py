"""The request page and the inbox, server side (tests/test_browser.py drives them in Chromium)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import escalation
from approvals.models import ApprovalRequest, Ticket
from tests.helpers import INVOICE, decide


def logged_in(username: str) -> Client:
    client = Client()
    client.login(username=username, password="pw")
    return client


class TestRequestPage:
    def test_it_shows_the_story(self, invoice):
        page = logged_in("maria").get(f"/requests/{invoice['id']}").content.decode()
        assert "finance-invoices v1" in page and "invoice-discrepancy" in page
        assert "INV-1042 is $1,240 over PO-77" in page
        assert "<dt>vendor</dt><dd>Acme</dd>" in page  # readable fields, not JSON
        assert "finance-manager" in page and "cfo" in page  # the chain
        assert "created" in page  # the timeline

    def test_nested_context_and_long_values_are_readable(self, bot):
        body = {
            **INVOICE,
            "context": {"customer": {"name": "Ada", "tier": "gold"}, "lines": ["a", "b"],
                        "note": "x" * 500},
        }  # fmt: skip
        created = bot.post("/api/v1/requests", body, format="json").json()
        page = logged_in("maria").get(f"/requests/{created['id']}").content.decode()
        assert "<dt>customer</dt><dd><dl" in page
        assert "<li>a</li><li>b</li>" in page
        assert "<details><summary>" + "x" * 160 in page

    def test_an_outsider_gets_404(self, invoice):
        assert logged_in("olivia").get(f"/requests/{invoice['id']}").status_code == 404

    def test_anonymous_visitors_are_sent_to_log_in(self, invoice):
        response = Client().get(f"/requests/{invoice['id']}")
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")

    def test_a_get_never_decides(self, invoice):
        logged_in("maria").get(f"/requests/{invoice['id']}?outcome=approve")
        assert ApprovalRequest.objects.get(pk=invoice["id"]).status == "pending"

    def test_a_reviewer_approves_in_the_browser(self, invoice, bot):
        client = logged_in("maria")
        response = client.post(f"/requests/{invoice['id']}/decide", {"outcome": "approve"})
        assert response.status_code == 302
        assert bot.get(f"/api/v1/requests/{invoice['id']}").json()["status"] == "approved"
        assert (
            "decided by <strong>maria</strong>" in client.get(response["Location"]).content.decode()
        )

    def test_a_deny_without_reason_shows_the_error(self, invoice):
        response = logged_in("maria").post(f"/requests/{invoice['id']}/decide", {"outcome": "deny"})
        assert response.status_code == 400
        assert "A reason is required to deny." in response.content.decode()

    def test_the_panel_fragment_is_served_to_htmx(self, invoice):
        response = logged_in("maria").get(
            f"/requests/{invoice['id']}?partial=panel", HTTP_HX_REQUEST="true"
        )
        body = response.content.decode()
        assert body.lstrip().startswith('<section id="panel"')
        assert "<html" not in body

    def test_approve_with_changes_shows_the_diff(self, bot, users):
        created = bot.post(
            "/api/v1/requests",
            {"action": "payment.release", "summary": "Pay Acme", "payload": {"amount": 90000}},
            format="json",
        ).json()
        client = logged_in("maria")
        preview = client.post(
            f"/requests/{created['id']}/preview", {"payload": '{"amount": 85000}'},
            HTTP_HX_REQUEST="true",
        ).content.decode()  # fmt: skip
        assert (
            "-  &quot;amount&quot;: 90000" in preview and "+  &quot;amount&quot;: 85000" in preview
        )
        client.post(f"/requests/{created['id']}/decide",
                    {"outcome": "approve", "payload": '{"amount": 85000}'})  # fmt: skip
        logged_in("tom").post(f"/requests/{created['id']}/decide",
                              {"outcome": "approve", "payload": '{"amount": 85000}'})  # fmt: skip
        page = client.get(f"/requests/{created['id']}").content.decode()
        assert "Approved with changes" in page and "+  &quot;amount&quot;: 85000" in page


class TestInbox:
    def test_each_reviewer_sees_the_queue_their_roles_own(self, invoice):
        assert "INV-1042" in logged_in("maria").get("/").content.decode()
        assert "INV-1042" not in logged_in("olivia").get("/").content.decode()
        assert "INV-1042" not in logged_in("carol").get("/").content.decode()  # not escalated yet

    def test_rows_carry_the_key_facts_and_a_countdown(self, invoice):
        page = logged_in("maria").get("/").content.decode()
        assert "amount: <strong>1240.0</strong>" in page
        assert 'class="countdown"' in page and 'data-total="1800"' in page

    def test_counts_per_role(self, bot):
        for _ in range(3):
            bot.post("/api/v1/requests", INVOICE, format="json")
        page = logged_in("maria").get("/").content.decode()
        assert "finance-manager <strong>3</strong>" in page

    def test_filters_by_action(self, bot):
        bot.post("/api/v1/requests", INVOICE, format="json")
        bot.post("/api/v1/requests", {"action": "payment.release", "summary": "Pay"}, format="json")
        page = logged_in("maria").get("/?action=payment").content.decode()
        assert "Pay" in page and "INV-1042" not in page

    def test_the_list_fragment_is_served_to_htmx(self, invoice):
        body = logged_in("maria").get("/", HTTP_HX_REQUEST="true").content.decode()
        assert "INV-1042" in body and "<html" not in body

    def test_escalated_requests_move_to_the_cfo_and_show_where_they_came_from(self, invoice):
        with time_machine.travel(timezone.now() + timedelta(minutes=31)):
            escalation.sweep()
        carol = logged_in("carol").get("/").content.decode()
        assert "INV-1042" in carol and "escalated from finance-manager" in carol
        maria = logged_in("maria")
        assert "INV-1042" not in maria.get("/").content.decode()
        assert "INV-1042" in maria.get("/?tab=escalated").content.decode()

    def test_recent_decisions(self, invoice, maria):
        decide(maria, invoice["id"], "deny", reason="duplicate")
        page = logged_in("tom").get("/?tab=decided").content.decode()
        assert "INV-1042" in page and "by maria" in page

    def test_claiming_in_the_inbox(self, invoice):
        maria = logged_in("maria")
        maria.post(f"/requests/{invoice['id']}/claim", {"from": "inbox"})
        assert "claimed by maria" in logged_in("tom").get("/").content.decode()
        response = logged_in("tom").post(
            f"/requests/{invoice['id']}/decide", {"outcome": "approve"}
        )
        assert response.status_code == 400
        assert "Claimed by maria" in response.content.decode()

    def test_the_query_count_does_not_grow_with_the_queue(self, invoice):
        original = ApprovalRequest.objects.get(pk=invoice["id"])
        client = logged_in("maria")
        client.get("/")  # warm the session and the content types

        def queries_for_the_inbox() -> int:
            with CaptureQueriesContext(connection) as queries:
                assert client.get("/").status_code == 200
            return len(queries)

        ApprovalRequest.objects.bulk_create([_copy(original) for _ in range(9)])
        with_10 = queries_for_the_inbox()
        ApprovalRequest.objects.bulk_create([_copy(original) for _ in range(990)], batch_size=500)
        with_1000 = queries_for_the_inbox()

        assert ApprovalRequest.objects.filter(status="pending").count() == 1000
        assert with_10 == with_1000

    def test_the_polling_fragment_costs_no_more_queries_than_the_page(self, invoice):
        original = ApprovalRequest.objects.get(pk=invoice["id"])
        client = logged_in("maria")
        client.get("/")

        def queries(**headers) -> int:
            with CaptureQueriesContext(connection) as captured:
                assert client.get("/", **headers).status_code == 200
            return len(captured)

        fragment_with_1 = queries(HTTP_HX_REQUEST="true")
        ApprovalRequest.objects.bulk_create([_copy(original) for _ in range(120)])
        fragment_with_121 = queries(HTTP_HX_REQUEST="true")
        assert fragment_with_1 == fragment_with_121 < queries()

    def test_the_pager_keeps_the_role_class_and_action_filters(self, invoice):
        original = ApprovalRequest.objects.get(pk=invoice["id"])
        copies = [_copy(original) for _ in range(119)]
        for copy in copies[:60]:
            copy.action, copy.summary = "payment.release", "Pay Acme"
        ApprovalRequest.objects.bulk_create(copies)  # 60 invoices, 60 payments
        client = logged_in("maria")

        first = client.get("/?role=finance-manager&class=internal&action=invoice.").content.decode()
        assert "page 1 of 2" in first
        assert 'href="?role=finance-manager&amp;class=internal&amp;action=invoice.&amp;page=2"' in (
            first
        )
        second = client.get("/?role=finance-manager&class=internal&action=invoice.&page=2")
        body = second.content.decode()
        assert "page 2 of 2" in body
        assert body.count('class="row"') == 10 and "Pay Acme" not in body
        assert 'href="?role=finance-manager&amp;class=internal&amp;action=invoice.&amp;page=1"' in (
            body
        )

    def test_the_queue_merges_several_roles_most_urgent_first(self, invoice, users):
        from guardian.shortcuts import assign_perm

        from policies.models import Role

        cfo = Role.objects.get(name="cfo")
        assign_perm("policies.act_for_role", users["maria"], cfo)
        original = ApprovalRequest.objects.get(pk=invoice["id"])
        copies = [_copy(original) for _ in range(70)]
        for n, copy in enumerate(copies):
            copy.due_at = original.due_at + timedelta(minutes=(n * 37) % 70 - 35)
            if n % 2:
                copy.owner_role, copy.level = cfo, 2
        ApprovalRequest.objects.bulk_create(copies)
        expected = [
            str(pk)
            for pk in ApprovalRequest.objects.filter(status="pending")
            .order_by("due_at", "created_at", "id")
            .values_list("pk", flat=True)
        ]
        client = logged_in("maria")
        shown = []
        for page in (1, 2):
            body = client.get(f"/?page={page}").content.decode()
            shown += re.findall(r'<li class="row" data-id="([0-9a-f-]+)"', body)
        assert shown == expected and len(shown) == 71
        counts = client.get("/").content.decode()
        assert "cfo <strong>35</strong>" in counts
        assert "finance-manager <strong>36</strong>" in counts

    def test_counts_stop_at_a_thousand(self, invoice):
        original = ApprovalRequest.objects.get(pk=invoice["id"])
        ApprovalRequest.objects.bulk_create([_copy(original) for _ in range(1000)], batch_size=500)
        page = logged_in("maria").get("/").content.decode()
        assert "finance-manager <strong>1,000+</strong>" in page
        assert "page 1 of 20+" in page
        page_30 = logged_in("maria").get("/?page=21").content.decode()
        assert page_30.count('class="row"') == 1  # the 1,001st request is still there


def _copy(original: ApprovalRequest) -> ApprovalRequest:
    import uuid

    copy = ApprovalRequest.objects.get(pk=original.pk)
    copy.pk = uuid.uuid4()
    copy.idempotency_key = None
    return copy


class TestTimeline:
    def test_a_long_history_shows_its_newest_events_and_pages_back(self, invoice, users):
        from approvals import actions

        for _ in range(60):  # 120 events after "created"
            actions.claim(invoice["id"], reviewer=users["maria"])
            actions.unclaim(invoice["id"], reviewer=users["maria"])
        client = logged_in("maria")
        page = client.get(f"/requests/{invoice['id']}").content.decode()
        timeline = page[page.index('id="timeline"') :]
        assert timeline.count("<li><time") == 50
        assert '<ol class="timeline" start="72">' in timeline
        assert '<a href="?before=72#timeline">71 earlier events</a>' in timeline
        assert "Newer events" not in timeline

        earlier = client.get(f"/requests/{invoice['id']}?before=72").content.decode()
        timeline = earlier[earlier.index('id="timeline"') :]
        assert timeline.count("<li><time") == 50
        assert '<a href="?before=22#timeline">21 earlier events</a>' in timeline
        assert '<a href="?#timeline">Newer events</a>' in timeline

        first = client.get(f"/requests/{invoice['id']}?before=22").content.decode()
        timeline = first[first.index('id="timeline"') :]
        assert timeline.count("<li><time") == 21 and "earlier event" not in timeline
        assert "<strong>created</strong>" in timeline
        assert '<a href="?before=72#timeline">Newer events</a>' in timeline

    def test_the_query_count_does_not_grow_with_the_history(self, invoice, users):
        from approvals import actions

        client = logged_in("maria")
        client.get(f"/requests/{invoice['id']}")

        def queries() -> int:
            with CaptureQueriesContext(connection) as captured:
                assert client.get(f"/requests/{invoice['id']}").status_code == 200
            return len(captured)

        with_1 = queries()
        for _ in range(40):
            actions.claim(invoice["id"], reviewer=users["maria"])
            actions.unclaim(invoice["id"], reviewer=users["maria"])
        assert queries() == with_1


class TestTickets:
    @pytest.fixture
    def expired(self, invoice):
        with time_machine.travel(timezone.now() + timedelta(minutes=31)):
            escalation.sweep()
        with time_machine.travel(timezone.now() + timedelta(hours=3)):
            escalation.sweep()
        return invoice

    def test_the_ticket_queue_belongs_to_the_last_role(self, expired):
        assert "INV-1042" in logged_in("carol").get("/?tab=tickets").content.decode()
        assert "INV-1042" not in logged_in("maria").get("/?tab=tickets").content.decode()

    def test_a_note_then_closing_with_a_resolution(self, expired):
        carol = logged_in("carol")
        carol.post(f"/requests/{expired['id']}/ticket/note", {"text": "Called Acme"})
        carol.post(f"/requests/{expired['id']}/ticket/close", {"resolution": "Paid by hand"})
        ticket = Ticket.objects.get(request_id=expired["id"])
        assert (ticket.status, ticket.resolution) == ("closed", "Paid by hand")
        page = carol.get(f"/requests/{expired['id']}").content.decode()
        assert "Called Acme" in page and "Paid by hand" in page
        kinds = list(ticket.request.events.values_list("kind", flat=True))
        assert kinds[-2:] == ["ticket_note", "ticket_closed"]

    def test_closing_needs_a_resolution(self, expired):
        response = logged_in("carol").post(f"/requests/{expired['id']}/ticket/close", {})
        assert response.status_code == 400
        assert "Say how it was resolved." in response.content.decode()


def test_claiming_from_the_inbox_never_redirects_off_site(invoice):
    response = logged_in("maria").post(
        f"/requests/{invoice['id']}/claim", {"from": "inbox", "next": "https://evil.example/"}
    )
    assert response["Location"] == "/"
