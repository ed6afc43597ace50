from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from approvals import audit, callbacks, outbox
from approvals.agents import issue_credentials, new_api_key, rotate_signing_secret
from approvals.audit_export import context_filter
from approvals.models import (
    Agent,
    ApprovalRequest,
    AuditEvent,
    Delivery,
    DeliveryAttempt,
    Notification,
    Ticket,
)
from approvals.outbound import UnsafeURL

# Re-registered below with their changes audited.
admin.site.unregister(User)
admin.site.unregister(Group)


class ReadOnlyAdminMixin:
    """The audit trail and request history are append-only: no edits, no deletes."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "key_prefix", "callback_url", "subscribe_escalations", "is_active"]
    search_fields = ["name", "key_prefix"]
    readonly_fields = ["key_prefix", "created_at"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fields = [
        "name", "callback_url", "action_globs", "subscribe_escalations", "is_active",
        "rate_limit", "max_waits", "key_prefix", "created_at",
    ]  # fmt: skip

    actions = ["rotate_secret", "rotate_key"]

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)

        class CheckedCallbackForm(form):  # type: ignore[valid-type, misc]
            def clean_callback_url(self) -> str:
                url = self.cleaned_data.get("callback_url")
                if url:
                    try:
                        callbacks.check_callback_url(url)
                    except UnsafeURL as exc:
                        raise ValidationError(str(exc)) from None
                return url

        return CheckedCallbackForm

    # Rotating a credential changes the agent: it needs change_agent, not just
    # the view permission that lets staff see the list the actions sit on.
    def has_rotate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("approvals.change_agent")

    @admin.action(
        description="Rotate the callback signing secret (old one valid 24 h)",
        permissions=["rotate"],
    )
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse:
        rows = []
        for agent in queryset:
            secret, until = rotate_signing_secret(agent, actor=_actor(request))
            note = f"the old one also signs until {until:%Y-%m-%d %H:%M} UTC"
            rows.append(
                {"agent": agent.name, "what": "signing secret", "value": secret, "note": note}
            )
        return credentials_page(request, "New signing secrets", rows)

    @admin.action(
        description="Rotate the API key (the old one stops working)", permissions=["rotate"]
    )
    def rotate_key(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse:
        rows = [
            {
                "agent": agent.name,
                "what": "API key",
                "value": new_api_key(agent, actor=_actor(request)),
                "note": "the old key no longer works",
            }
            for agent in queryset
        ]
        return credentials_page(request, "New API keys", rows)

    def save_model(self, request: HttpRequest, obj: Agent, form: Any, change: bool) -> None:
        if change:
            with transaction.atomic():
                super().save_model(request, obj, form, change)
                audit.record_config(
                    AuditEvent.Kind.AGENT_CHANGED,
                    actor=_actor(request),
                    summary=f"agent changed: {obj.name}",
                    data={"agent": obj.name, "changed": sorted(form.changed_data)},
                )
            return
        credentials = issue_credentials(obj, actor=_actor(request), created=True)
        # Shown by response_add on the page it renders, never in a message:
        # messages travel in a cookie, signed but readable.
        request._issued_credentials = credentials  # type: ignore[attr-defined]

    def response_add(
        self, request: HttpRequest, obj: Agent, post_url_continue: str | None = None
    ) -> HttpResponse:
        credentials = getattr(request, "_issued_credentials", None)
        if credentials is None:
            return super().response_add(request, obj, post_url_continue)
        rows = [
            {"agent": obj.name, "what": "API key", "value": credentials.api_key, "note": ""},
            {
                "agent": obj.name,
                "what": "signing secret",
                "value": credentials.signing_secret,
                "note": "verifies the callbacks",
            },
        ]
        return credentials_page(request, f"Agent {obj.name} created", rows)


def credentials_page(request: HttpRequest, title: str, rows: list[dict]) -> TemplateResponse:
    """Fresh credentials, shown once on a page no cache keeps."""
    context = {
        **admin.site.each_context(request),
        "title": title,
        "credentials": rows,
        "opts": Agent._meta,
    }
    response = TemplateResponse(request, "admin/approvals/agent/credentials.html", context)
    add_never_cache_headers(response)  # no-cache, no-store, private
    return response


class AuditEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = AuditEvent
    readonly_fields = ("seq", "at", "kind", "actor", "role", "level", "data")
    fields = readonly_fields
    extra = 0
    ordering = ["seq"]


class DeliveryInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Delivery
    readonly_fields = (
        "event_type",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "webhook_id",
    )
    fields = readonly_fields
    extra = 0
    show_change_link = True


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["action", "summary", "status", "owner_role", "level", "due_at", "created_at"]
    list_filter = ["status", "action_class", "owner_role"]
    search_fields = ["action", "summary", "id"]
    list_select_related = ["owner_role"]
    date_hierarchy = "created_at"
    inlines = [AuditEventInline, DeliveryInline]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["at", "kind", "action", "summary", "actor", "role", "level", "policy"]
    list_filter = ["kind", "role"]
    search_fields = ["action", "summary", "request__id"]
    search_help_text = (
        "context.KEY = VALUE searches the business context: context.invoice = INV-1042"
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        lookup = context_filter(search_term)
        if lookup is None:
            return super().get_search_results(request, queryset, search_term)
        if connection.vendor != "postgresql":  # no jsonb containment there: a key lookup
            [(key, value)] = lookup["context__contains"].items()
            return queryset.filter(**{f"context__{key}": value}), False
        return queryset.filter(**lookup), False  # served by the GIN index on context


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    """Manual-review tickets, with the request's story and any late decisions."""

    list_display = ["request", "role", "status", "opened_at", "closed_at"]
    list_filter = ["status", "role"]
    list_select_related = ["request", "role"]
    # Closing a ticket is a domain action (audited), done from the reviewer's queue.
    readonly_fields = [
        "request", "role", "status", "opened_at", "closed_at", "closed_by", "resolution",
        "late_decisions",
    ]  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="late decisions")
    def late_decisions(self, ticket: Ticket) -> str:
        events = ticket.request.events.filter(kind=AuditEvent.Kind.LATE_DECISION).order_by("seq")
        return (
            "; ".join(
                f"{e.at:%Y-%m-%d %H:%M} {e.actor.get('user')} wanted to {e.data.get('outcome')}"
                f" ({e.data.get('reason') or 'no reason'})"
                for e in events
            )
            or "none"
        )


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "kind", "role", "request", "sent_at", "attempts", "last_error"]
    list_filter = ["kind", "role"]


class DeliveryAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = DeliveryAttempt
    readonly_fields = (
        "number",
        "at",
        "status_code",
        "latency_ms",
        "error",
        "response_excerpt",
    )
    fields = readonly_fields
    extra = 0


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    """The callback log: every event for every agent, each attempt below it.
    Filter by status "dead" to see what never arrived, and redeliver it."""

    list_display = [
        "created_at", "event_type", "agent", "request", "status", "attempts",
        "next_attempt_at", "last_error",
    ]  # fmt: skip
    list_filter = ["status", "event_type", "agent"]
    search_fields = ["webhook_id", "request__id", "agent__name"]
    list_select_related = ["agent", "request"]
    readonly_fields = [
        "webhook_id", "request", "agent", "event_type", "url", "status", "attempts",
        "next_attempt_at", "created_at", "delivered_at", "last_error", "body",
    ]  # fmt: skip
    inlines = [DeliveryAttemptInline]
    actions = ["redeliver"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(
        description="Redeliver (same webhook-id, fresh timestamp)", permissions=["change"]
    )
    def redeliver(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        queued = callbacks.redeliver(queryset)
        for delivery_id, lease in queued:
            outbox.enqueue_delivery(delivery_id, lease)
        self.message_user(request, f"{len(queued)} callback(s) queued for delivery again.")


def _actor(request: HttpRequest) -> dict:
    return {"user": request.user.get_username()}


# --- users and groups: who may do what is configuration, so it is audited -------

_FLAGS = ("is_active", "is_staff", "is_superuser")


@admin.register(User)
class AuditedUserAdmin(UserAdmin):
    """Django's user admin; changes to a user's groups, flags and permissions
    are audit events (a group may hold a role's ``act_for_role``)."""

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        user = form.instance
        before = _privileges(user) if change else None
        flags_before = getattr(form, "_flags_before", None)
        super().save_related(request, form, formsets, change)
        after = _privileges(user)
        if before == after and flags_before == _flags(user):
            return
        audit.record_config(
            AuditEvent.Kind.USER_CHANGED if change else AuditEvent.Kind.USER_CREATED,
            actor=_actor(request),
            summary=f"user {'changed' if change else 'created'}: {user.get_username()}",
            data={
                "user": user.get_username(),
                "groups": after["groups"],
                "groups_before": before["groups"] if before else [],
                "permissions": after["permissions"],
                "flags": _flags(user),
                "flags_before": flags_before or {},
            },
        )

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is None:
            return form
        flags = _flags(User.objects.get(pk=obj.pk))

        class RememberingForm(form):  # type: ignore[valid-type,misc]
            _flags_before = flags

        return RememberingForm


@admin.register(Group)
class AuditedGroupAdmin(GroupAdmin):
    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        audit.record_config(
            AuditEvent.Kind.GROUP_CHANGED if change else AuditEvent.Kind.GROUP_CREATED,
            actor=_actor(request),
            summary=f"group {'changed' if change else 'created'}: {form.instance.name}",
            data={
                "group": form.instance.name,
                "permissions": sorted(form.instance.permissions.values_list("codename", flat=True)),
            },
        )


def _privileges(user: Any) -> dict:
    return {
        "groups": sorted(user.groups.values_list("name", flat=True)),
        "permissions": sorted(user.user_permissions.values_list("codename", flat=True)),
    }


def _flags(user: Any) -> dict:
    return {flag: getattr(user, flag) for flag in _FLAGS}
