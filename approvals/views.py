"""The reviewer's browser pages. They call the same domain functions as the API."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from approvals import actions
from approvals.errors import ApprovalError, Conflict, Invalid, NotVisible
from approvals.models import ApprovalRequest
from policies.models import Role


def _visible_request(user, pk) -> ApprovalRequest:
    """The request if one of the user's roles owns or owned it, else 404."""
    requests = ApprovalRequest.objects.visible_to(Role.objects.for_user(user))
    try:
        return requests.select_related("owner_role", "policy_version__policy", "agent").get(pk=pk)
    except ApprovalRequest.DoesNotExist:
        raise Http404("No such request.") from None


@login_required
def inbox(request: HttpRequest) -> HttpResponse:
    roles = Role.objects.for_user(request.user)
    pending = (
        ApprovalRequest.objects.pending()
        .filter(owner_role__in=roles)
        .select_related("owner_role", "claimed_by")
        .order_by("due_at")[:200]
    )
    return render(request, "approvals/inbox.html", {"requests": pending, "roles": roles})


@login_required
@require_http_methods(["GET", "POST"])
def request_page(request: HttpRequest, pk) -> HttpResponse:
    approval = _visible_request(request.user, pk)
    error = None
    if request.method == "POST":
        try:
            actions.decide(
                approval.pk,
                reviewer=request.user,
                outcome=request.POST.get("outcome", ""),
                reason=request.POST.get("reason", ""),
            )
            return redirect("request", pk=approval.pk)
        except NotVisible:
            raise Http404("No such request.") from None
        except Conflict as exc:
            messages.info(request, exc.detail)
            return redirect("request", pk=approval.pk)
        except Invalid as exc:
            error = exc.detail
        except ApprovalError as exc:
            error = exc.detail
    events = approval.events.order_by("seq")
    return render(
        request,
        "approvals/request.html",
        {"approval": approval, "events": events, "error": error},
        status=400 if error else 200,
    )
