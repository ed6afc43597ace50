from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.utils.html import format_html

from approvals import callbacks, outbox
from approvals.agents import issue_credentials, rotate_signing_secret
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


class ReadOnlyAdminMixin:
    """The audit trail and request history are append-only: no edits, no deletes."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "key_prefix", "callback_url", "subscribe_escalations", "is_active"]
    search_fields = ["name", "key_prefix"]
    readonly_fields = ["key_prefix", "created_at"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fields = [
        "name", "callback_url", "action_globs", "subscribe_escalations", "is_active",
        "key_prefix", "created_at",
    ]  # fmt: skip

    actions = ["rotate_secret"]

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)

        class CheckedCallbackForm(form):
            def clean_callback_url(self):
                url = self.cleaned_data.get("callback_url")
                if url:
                    try:
                        callbacks.check_callback_url(url)
                    except UnsafeURL as exc:
                        raise ValidationError(str(exc)) from None
                return url

        return CheckedCallbackForm

    @admin.action(description="Rotate the callback signing secret (old one valid 24 h)")
    def rotate_secret(self, request, queryset) -> None:
        for agent in queryset:
            secret, until = rotate_signing_secret(agent)
            messages.warning(
                request,
                format_html(
                    "{}: new signing secret <code>{}</code> (the old one also signs until {} UTC)",
                    agent.name, secret, f"{until:%Y-%m-%d %H:%M}",
                ),
            )  # fmt: skip

    def save_model(self, request, obj: Agent, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        credentials = issue_credentials(obj)
        messages.warning(
            request,
            format_html(
                "Copy these now, they are shown only once. API key: <code>{}</code> "
                "Signing secret: <code>{}</code>",
                credentials.api_key,
                credentials.signing_secret,
            ),
        )


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

    def get_search_results(self, request, queryset, search_term):
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

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="late decisions")
    def late_decisions(self, ticket: Ticket) -> str:
        events = ticket.request.events.filter(kind="late_decision").order_by("seq")
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

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Redeliver (same webhook-id, fresh timestamp)")
    def redeliver(self, request, queryset) -> None:
        queued = callbacks.redeliver(queryset)
        for delivery_id, lease in queued:
            outbox.enqueue_delivery(delivery_id, lease)
        self.message_user(request, f"{len(queued)} callback(s) queued for delivery again.")
