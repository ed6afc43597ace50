"""The reviewer's browser pages: the inbox and the request page.

Server-rendered, with htmx swapping fragments (django-template-partials) so
the queue and the decision panel update in place. Every change goes through
the same domain functions as the API (approvals.actions).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from approvals import actions
from approvals.api.parsers import json_problem
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
    roles = Role.objects.for_user(request.user)
    role_names = list(roles.values_list("name", flat=True))
    filters = {
        "role": request.GET.get("role", ""),
        "class": request.GET.get("class", ""),
        "action": request.GET.get("action", "").strip(),
    }
    rows = _tab_rows(tab, roles, filters)
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    counts = dict(
        ApprovalRequest.objects.owned_by(roles)
        .values_list("owner_role__name")
        .annotate(n=Count("id"))
        .values_list("owner_role__name", "n")
    )
    context = {
        "tab": tab,
        "page": page,
        "filters": filters,
        "role_names": role_names,
        "counts": [(name, counts.get(name, 0)) for name in role_names],
        "classes": list(ActionClass.objects.values_list("name", flat=True)),
        "query": request.GET.urlencode(),
    }
    template = "approvals/inbox.html#rows" if request.htmx else "approvals/inbox.html"
    return render(request, template, context)


def _tab_rows(tab: str, roles: QuerySet[Role], filters: dict) -> QuerySet[Any]:
    if tab == "tickets":
        tickets = Ticket.objects.filter(role__in=roles).select_related("request", "role")
        return tickets.order_by("status", "-opened_at")
    if tab == "escalated":
        rows = ApprovalRequest.objects.escalated_away_from(roles).order_by("-updated_at")
    elif tab == "decided":
        rows = (
            ApprovalRequest.objects.visible_to(roles)
            .exclude(status="pending")
            .order_by("-decided_at")
        )
    else:
        rows = ApprovalRequest.objects.owned_by(roles).order_by("due_at", "created_at")
    if filters["role"]:
        rows = rows.filter(owner_role__name=filters["role"])
    if filters["class"]:
        rows = rows.filter(action_class=filters["class"])
    if filters["action"]:
        rows = rows.filter(action__startswith=filters["action"])
    return rows.select_related("owner_role", "claimed_by")


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
    context = {
        "approval": approval,
        "events": approval.events.order_by("seq"),
        "Kind": AuditEvent.Kind,
        "deliveries": approval.deliveries.prefetch_related("attempt_log").order_by("created_at"),
        "chain": _chain(approval),
        "may_decide": blocker is None,
        "blocker": blocker,
        "approve_blocker": approve_blocker,
        "is_member": approval.owner_role.name in my_roles,
        "is_requester": approval.is_for(request.user),
        "ticket": Ticket.objects.filter(request=approval).prefetch_related("notes__author").first(),
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
    """Parse JSON as strictly as the API does (approvals.api.parsers): what
    PostgreSQL would refuse, or what is nested too deep, is a ValueError."""
    if len(text.encode()) > settings.APPROVALS_MAX_BODY_BYTES:
        raise ValueError(f"it is larger than {settings.APPROVALS_MAX_BODY_BYTES // 1024} KiB")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    problem = json_problem(value, settings.APPROVALS_MAX_JSON_DEPTH)
    if problem:
        raise ValueError(problem)
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


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
