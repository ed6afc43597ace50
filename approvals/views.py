"""The reviewer's browser pages: the inbox and the request page.

Server-rendered, with htmx swapping fragments (django-template-partials) so
the queue and the decision panel update in place. Every change goes through
the same domain functions as the API (approvals.actions).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import IntegerField, OuterRef, QuerySet, Subquery
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.functional import SimpleLazyObject
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from approvals import actions
from approvals.api.parsers import json_problem, loads_strict
from approvals.errors import ApprovalError, Conflict, Invalid, NotVisible
from approvals.models import ApprovalRequest, AuditEvent, Ticket
from policies.models import ActionClass, AnyUser, Role

PAGE_SIZE = 50


class HtmxHttpRequest(HttpRequest):
    """What django-htmx's middleware makes of a request (for type checkers)."""

    htmx: HtmxDetails


TABS = ("queue", "escalated", "decided", "tickets")


def _visible_request(user: AnyUser, pk: UUID) -> ApprovalRequest:
    """The request if one of the user's roles owns or owned it, else 404."""
    requests = ApprovalRequest.objects.visible_to(Role.objects.for_user(user))
    try:
        return requests.select_related(
            "owner_role", "policy_version__policy", "agent", "claimed_by"
        ).get(pk=pk)
    except ApprovalRequest.DoesNotExist:
        raise Http404("No such request.") from None


@login_required
@require_GET
def inbox(request: HtmxHttpRequest) -> HttpResponse:
    tab = request.GET.get("tab", "queue")
    if tab not in TABS:
        tab = "queue"
    filters = {
        "role": request.GET.get("role", ""),
        "class": request.GET.get("class", ""),
        "action": request.GET.get("action", "").strip(),
    }
    # One query for the roles, and for the full page their capped counts too;
    # the polling fragment (htmx) swaps only the list, so it skips them.
    roles = Role.objects.for_user(request.user).order_by("name")
    if request.htmx:
        mine = [(pk, name, 0) for pk, name in roles.values_list("pk", "name")]
    else:
        mine = list(
            roles.annotate(pending=_capped_pending_count()).values_list("pk", "name", "pending")
        )
    page = _tab_page(tab, mine, filters, request.GET.get("page"))
    pager = request.GET.copy()
    pager.pop("page", None)
    context = {
        "tab": tab,
        "page": page,
        "filters": filters,
        "role_names": [name for _, name, _ in mine],
        "counts": [(name, _capped(n)) for _, name, n in mine],
        "query": request.GET.urlencode(),
        "pager_query": pager.urlencode(),
    }
    if request.htmx:
        return render(request, "approvals/inbox.html#rows", context)
    context["classes"] = list(ActionClass.objects.values_list("name", flat=True))
    return render(request, "approvals/inbox.html", context)


# Counts stop here: "1,000+" is as useful to a reviewer as 10,000, and never
# scans a deep queue (see ApprovalRequestQuerySet.capped_count).
COUNT_CAP = 1000


class _CappedCount(Subquery):
    template = "(SELECT COUNT(*) FROM (%(subquery)s) capped)"
    output_field = IntegerField()


def _capped_pending_count() -> _CappedCount:
    """A role's pending requests, counted up to COUNT_CAP + 1 from the queue's index."""
    pending = ApprovalRequest.objects.filter(status="pending", owner_role=OuterRef("pk"))
    return _CappedCount(pending.order_by().values("pk")[: COUNT_CAP + 1])


def _capped(n: int) -> str:
    return f"{COUNT_CAP:,}+" if n > COUNT_CAP else str(n)


@dataclass
class InboxPage:
    """One page of a tab: its rows, and a total counted only up to COUNT_CAP."""

    rows: list
    number: int
    total: int  # capped at COUNT_CAP + 1

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number * PAGE_SIZE < self.total

    @property
    def has_other_pages(self) -> bool:
        return self.has_previous or self.has_next

    @property
    def previous_page_number(self) -> int:
        return self.number - 1

    @property
    def next_page_number(self) -> int:
        return self.number + 1

    @property
    def num_pages(self) -> str:
        """The number of pages, with "+" when the total is past the cap ("20+")."""
        pages = max(1, -(-min(self.total, COUNT_CAP) // PAGE_SIZE))
        return f"{pages}+" if self.total > COUNT_CAP else str(pages)


def _tab_page(tab: str, mine: list[tuple[int, str, int]], filters: dict, number: Any) -> InboxPage:
    try:
        number = max(1, int(number))
    except (TypeError, ValueError):
        number = 1
    if tab == "tickets":
        tickets = Ticket.objects.filter(role_id__in=[pk for pk, _, _ in mine])
        total = tickets.order_by().values("pk")[: COUNT_CAP + 1].count()
        number = _last_page_at_most(number, total)
        offset = (number - 1) * PAGE_SIZE
        ordered = tickets.select_related("request", "role").order_by("status", "-opened_at")
        ordered = ordered.defer(*(f"request__{name}" for name in ROW_UNUSED))
        shown: list = list(ordered[offset : offset + PAGE_SIZE])
        for ticket in shown:
            ticket.link = reverse("request", kwargs={"pk": ticket.request_id})
        return InboxPage(shown, number, total)
    requests = ApprovalRequest.objects.select_related("owner_role", "claimed_by")
    if filters["class"]:
        requests = requests.filter(action_class=filters["class"])
    if filters["action"]:
        requests = requests.filter(action__startswith=filters["action"])
    if tab == "queue":
        # The role filter picks which of the reviewer's queues to merge.
        role_ids = [pk for pk, name, _ in mine if not filters["role"] or name == filters["role"]]
        listed = requests.filter(status="pending", owner_role_id__in=role_ids)
    else:
        roles = Role.objects.filter(pk__in=[pk for pk, _, _ in mine])
        if tab == "escalated":
            listed = requests.escalated_away_from(roles).order_by("-updated_at")
        else:
            listed = requests.visible_to(roles).exclude(status="pending").order_by("-decided_at")
        if filters["role"]:
            listed = listed.filter(owner_role__name=filters["role"])
    total = listed.capped_count(COUNT_CAP)
    number = _last_page_at_most(number, total)
    offset = (number - 1) * PAGE_SIZE
    if tab == "queue":
        rows = requests.queue_page(role_ids, offset, PAGE_SIZE)
    else:
        rows = listed[offset : offset + PAGE_SIZE]
    return InboxPage(_for_display(rows.defer(*ROW_UNUSED)), number, total)


# What a queue row never shows: the payload can be 256 KiB.
ROW_UNUSED = ("payload", "decision_payload", "requester", "decision_reason")


def _for_display(rows: QuerySet[Any]) -> list[Any]:
    """The rows, each with its link and its deadline's forms, made here once
    per page: four reverse() calls and three date filters per row were most
    of the time it took to render fifty rows."""
    blank = str(uuid.UUID(int=0))
    link = reverse("request", kwargs={"pk": blank})
    shown: list[Any] = list(rows)
    for row in shown:
        row.link = link.replace(blank, str(row.pk))
        due = row.due_at.astimezone(UTC) if row.due_at else None
        row.due_iso = due.isoformat() if due else ""
        row.due_epoch = int(due.timestamp()) if due else ""
        row.due_title = f"{due:%Y-%m-%d %H:%M:%S}" if due else ""
    return shown


def _last_page_at_most(number: int, total: int) -> int:
    """A page past the end shows the last one (as Django's Paginator.get_page
    does), as far as the capped total tells where the end is."""
    if total > COUNT_CAP:
        return number
    return min(number, max(1, -(-total // PAGE_SIZE)))


@login_required
@require_GET
def request_page(request: HtmxHttpRequest, pk: UUID) -> HttpResponse:
    approval = _visible_request(request.user, pk)
    return _render_request(request, approval)


def _render_request(
    request: HtmxHttpRequest,
    approval: ApprovalRequest,
    *,
    error: str = "",
    status: int = 200,
    **extra: Any,
) -> HttpResponse:
    my_roles = set(Role.objects.for_user(request.user).values_list("name", flat=True))
    # Why this user may not deny (then no form), or not approve (then no
    # Approve button): the same rule decide applies, so no button fails.
    blocker = actions.decision_blocker(approval, request.user, outcome=actions.DENY, roles=my_roles)
    approve_blocker = blocker or actions.decision_blocker(approval, request.user, roles=my_roles)
    ticket = SimpleLazyObject(  # the panel's polling fragment never reads it
        lambda: Ticket.objects.filter(request=approval).prefetch_related("notes__author").first()
    )
    context = {
        "approval": approval,
        "timeline": SimpleLazyObject(lambda: _timeline(approval, request.GET.get("before"))),
        "late_decisions": approval.events.filter(kind=AuditEvent.Kind.LATE_DECISION).order_by(
            "seq"
        ),
        "Kind": AuditEvent.Kind,
        "deliveries": approval.deliveries.prefetch_related("attempt_log").order_by("created_at"),
        "chain": _chain(approval),
        "may_decide": blocker is None,
        "blocker": blocker,
        "approve_blocker": approve_blocker,
        "is_member": approval.owner_role.name in my_roles,
        "is_requester": approval.is_for(request.user),
        "ticket": ticket,
        "error": error,
        "payload_json": json.dumps(approval.payload, indent=2, ensure_ascii=False),
        **extra,
    }
    partial = request.GET.get("partial") or (extra.get("partial") if request.htmx else None)
    template = (
        f"approvals/request.html#{partial}"
        if request.htmx and partial in ("panel", "ticket")
        else "approvals/request.html"
    )
    return render(request, template, context, status=status)


# The timeline shows this many events at a time, the newest first reached:
# a request with a long history (claims, reminders, notes) pages through it.
TIMELINE_PAGE = 50


@dataclass
class Timeline:
    events: list
    earlier: int  # how many events come before the first one shown
    newer: str | None  # the query of the next newer page; None: these are the newest

    def __iter__(self) -> Iterator[AuditEvent]:
        return iter(self.events)


def _timeline(approval: ApprovalRequest, before: str | None) -> Timeline:
    """TIMELINE_PAGE events before ``before`` (a seq), or the newest ones,
    read backwards from the (request, seq) index; seqs run 1, 2, 3… per
    request (approvals.audit), so no count is needed to say how many remain."""
    events = approval.events.order_by("-seq")
    if before and before.isdigit():  # else the newest events
        events = events.filter(seq__lt=int(before))
    shown = list(events[:TIMELINE_PAGE])[::-1]
    if not shown:
        return Timeline([], 0, None)
    newest = shown[-1].seq
    if newest >= approval.audit_seq:
        newer = None
    elif newest + TIMELINE_PAGE >= approval.audit_seq:
        newer = ""  # the default page: the newest events
    else:
        newer = f"before={newest + TIMELINE_PAGE + 1}"
    return Timeline(shown, shown[0].seq - 1, newer)


def _chain(approval: ApprovalRequest) -> list[dict]:
    steps = []
    for number, level in enumerate(approval.levels, start=1):
        if approval.status != "pending" and number <= approval.level:
            state = "done" if number < approval.level else approval.status
        elif number < approval.level:
            state = "escalated"
        elif number == approval.level:
            state = "current"
        else:
            state = "next"
        steps.append({"number": number, "role": level["role"], "deadline": level["deadline"],
                      "state": state})  # fmt: skip
    return steps


@login_required
@require_POST
def decide(request: HtmxHttpRequest, pk: UUID) -> HttpResponse:
    approval = _visible_request(request.user, pk)
    outcome = request.POST.get("outcome", "")
    payload = None
    edited = request.POST.get("payload", "").strip()
    reason_problem = json_problem(request.POST.get("reason", ""), 1)
    if reason_problem:
        return _panel_error(request, approval, f"The reason: {reason_problem}")
    if edited and outcome == "approve":
        try:
            payload = strict_json(edited)
        except ValueError as exc:
            return _panel_error(request, approval, f"The payload is not valid JSON: {exc}")
        if not isinstance(payload, dict):
            return _panel_error(request, approval, "The payload must be a JSON object.")
    try:
        actions.decide(
            approval.pk,
            reviewer=request.user,
            outcome=outcome,
            reason=request.POST.get("reason", ""),
            payload=payload,
        )
    except NotVisible:
        raise Http404("No such request.") from None
    except Conflict:
        pass  # decided elsewhere: the refreshed page says by whom
    except (Invalid, ApprovalError) as exc:
        return _panel_error(request, approval, exc.detail)
    if request.htmx and request.POST.get("from") == "inbox":
        return HttpResponse(status=204)
    approval = _visible_request(request.user, pk)
    if request.htmx:
        return _render_request(request, approval, partial="panel")
    return redirect("request", pk=pk)


def _panel_error(request: HtmxHttpRequest, approval: ApprovalRequest, message: str) -> HttpResponse:
    return _render_request(request, approval, error=message, status=400, partial="panel",
                           reason=request.POST.get("reason", ""),
                           edited_payload=request.POST.get("payload", ""))  # fmt: skip


@login_required
@require_POST
def claim(request: HtmxHttpRequest, pk: UUID) -> HttpResponse:
    return _claim_or_unclaim(request, pk, actions.claim)


@login_required
@require_POST
def unclaim(request: HtmxHttpRequest, pk: UUID) -> HttpResponse:
    return _claim_or_unclaim(request, pk, actions.unclaim)


def _claim_or_unclaim(
    request: HtmxHttpRequest, pk: UUID, action: Callable[..., actions.Result]
) -> HttpResponse:
    approval = _visible_request(request.user, pk)
    error = ""
    try:
        action(approval.pk, reviewer=request.user)
    except NotVisible:
        raise Http404("No such request.") from None
    except ApprovalError as exc:
        error = exc.detail
    if request.POST.get("from") == "inbox":
        back = _safe_next(request)
        return HttpResponseClientRedirect(back) if request.htmx else redirect(back)
    approval = _visible_request(request.user, pk)
    if request.htmx:
        return _render_request(request, approval, error=error, partial="panel")
    return redirect("request", pk=pk)


def _safe_next(request: HtmxHttpRequest) -> str:
    """Back to the inbox page the reviewer came from, never to another site."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return "/"


def strict_json(text: str) -> Any:
    """An edited payload, parsed by the API's strict parser, within its size limit."""
    if len(text.encode()) > settings.APPROVALS_MAX_BODY_BYTES:
        raise ValueError(f"it is larger than {settings.APPROVALS_MAX_BODY_BYTES // 1024} KiB")
    return loads_strict(text)


@login_required
@require_POST
def payload_preview(request: HtmxHttpRequest, pk: UUID) -> HttpResponse:
    """The diff an edited payload would make, before approving it: only for
    someone who may decide now, on a pending request whose rule allows edits."""
    approval = _visible_request(request.user, pk)
    # Edits are approved, so only someone who may approve now sees the diff.
    if not approval.editable or actions.decision_blocker(approval, request.user):
        return _preview_error("This payload cannot be edited by you now.", status=403)
    try:
        edited = strict_json(request.POST.get("payload", ""))
    except ValueError as exc:
        return _preview_error(f"Not valid JSON: {exc}", status=200)  # shown while typing
    return render(request, "approvals/request.html#diff", {"approval": approval, "edited": edited})


def _preview_error(message: str, status: int = 400) -> HttpResponse:
    # htmx swaps only 2xx answers by default; the preview area shows this text
    # either way, and the status tells scripts what happened.
    return HttpResponse(format_html('<p class="error" role="alert">{}</p>', message), status=status)


@login_required
@require_POST
def ticket_note(request: HtmxHttpRequest, pk: UUID) -> HttpResponse:
    text = request.POST.get("text", "").replace("\x00", "")
    return _ticket_action(
        request,
        pk,
        lambda ticket: actions.add_ticket_note(ticket.pk, reviewer=request.user, text=text),
    )


@login_required
@require_POST
def ticket_close(request: HtmxHttpRequest, pk: UUID) -> HttpResponse:
    resolution = request.POST.get("resolution", "").replace("\x00", "")
    return _ticket_action(
        request,
        pk,
        lambda ticket: actions.close_ticket(
            ticket.pk, reviewer=request.user, resolution=resolution
        ),
    )


def _ticket_action(
    request: HtmxHttpRequest, pk: UUID, action: Callable[[Ticket], object]
) -> HttpResponse:
    approval = _visible_request(request.user, pk)
    ticket = Ticket.objects.filter(request=approval).first()
    if ticket is None:
        raise Http404("No ticket for this request.")
    try:
        action(ticket)
    except NotVisible:
        raise Http404("No such ticket.") from None
    except ApprovalError as exc:
        return _render_request(request, approval, ticket_error=exc.detail, status=400,
                               partial="ticket")  # fmt: skip
    if request.htmx:
        return _render_request(request, approval, partial="ticket")
    return redirect("request", pk=pk)
