"""Requests for approval, the votes toward them, and their audit trail."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from approvals.rates import validate_rate
from policies.business_hours import Calendar
from policies.models import AnyUser, PolicyVersion, Role
from policies.spec import OnTimeout, RuleSpec


class Agent(models.Model):
    """An AI agent (or the system hosting it) that asks for approvals."""

    name = models.CharField(max_length=100, unique=True)
    key_prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    signing_secret = models.CharField(max_length=100, editable=False)
    # During a rotation, callbacks carry a signature with the old secret too.
    previous_signing_secret = models.CharField(max_length=100, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    callback_url = models.URLField(max_length=2000, blank=True)
    action_globs = models.JSONField(
        default=list, blank=True, help_text="Actions it may request; empty means all."
    )
    subscribe_escalations = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Limits (empty: the defaults in settings, APPROVALS_AGENT_*).
    rate_limit = models.CharField(
        max_length=20,
        blank=True,
        validators=[validate_rate],
        help_text="API calls allowed, e.g. '120/min' (per s, min, h or day); empty: the default.",
    )
    max_waits = models.PositiveIntegerField(
        null=True, blank=True, help_text="Concurrent ?wait=N calls allowed; empty: the default."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def may_request(self, action: str) -> bool:
        return not self.action_globs or any(fnmatchcase(action, g) for g in self.action_globs)

    def signing_secrets(self, now: datetime | None = None) -> list[str]:
        """The secrets to sign with now: the current one, and the previous one
        while its grace period lasts."""
        secrets = [self.signing_secret]
        now = now or timezone.now()
        expires = self.previous_secret_expires_at
        if self.previous_signing_secret and expires and expires > now:
            secrets.append(self.previous_signing_secret)
        return secrets


@lru_cache(maxsize=256)
def _calendar(spec: str) -> Calendar:
    # Pinned calendars are few and immutable: parse each once per process.
    return Calendar.from_spec(json.loads(spec))


# A request's id as callers hold it: a UUID, or its text from a URL or a task.
RequestId = uuid.UUID | str


class Status(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


TERMINAL = (Status.APPROVED, Status.DENIED, Status.EXPIRED, Status.CANCELLED)


class ApprovalRequestQuerySet(models.QuerySet["ApprovalRequest"]):
    def due(self, now: datetime | None = None) -> ApprovalRequestQuerySet:
        """Pending requests whose level deadline has passed (uses the partial index)."""
        return self.filter(status=Status.PENDING, due_at__lte=now or timezone.now())

    def reminder_due(self, now: datetime | None = None) -> ApprovalRequestQuerySet:
        return self.filter(status=Status.PENDING, remind_at__lte=now or timezone.now())

    def visible_to(self, roles: models.QuerySet[Role]) -> ApprovalRequestQuerySet:
        """Requests one of these roles owns now or owned at an earlier level."""
        owned = Ownership.objects.filter(request=models.OuterRef("pk"), role__in=roles)
        return self.filter(models.Exists(owned))

    def owned_by(self, roles: models.QuerySet[Role]) -> ApprovalRequestQuerySet:
        """The queue: pending requests one of these roles owns now."""
        return self.filter(status=Status.PENDING, owner_role__in=roles)

    def queue_page(self, role_ids: list[int], offset: int, limit: int) -> ApprovalRequestQuerySet:
        """``limit`` rows from ``offset`` of the queue of these roles (with this
        queryset's filters), most urgent first.

        Each role's queue is read in order from the partial index
        ``request_pending_queue``, only as far as ``offset + limit`` rows, and
        the few rows read are merged: so a page costs the same whether the
        queue holds a hundred requests or a hundred thousand. With
        ``owner_role IN (...)`` PostgreSQL reads and sorts the whole queue for
        every page.
        """
        if not role_ids:
            return self.none()
        leaves: list[str] = []
        params: list = []
        order = ("due_at", "created_at", "id")
        for role_id in role_ids:
            leaf = self.filter(status=Status.PENDING, owner_role_id=role_id).order_by(*order)
            sql, leaf_params = leaf.values(*order)[: offset + limit].query.sql_with_params()
            leaves.append(f"SELECT * FROM ({sql}) r{len(leaves)}")
            params.extend(leaf_params)
        merged = (
            f"SELECT q.id FROM ({' UNION ALL '.join(leaves)}) q "
            "ORDER BY q.due_at, q.created_at, q.id LIMIT %s OFFSET %s"
        )
        ids = models.expressions.RawSQL(merged, (*params, limit, offset))
        return self.filter(id__in=ids).order_by(*order)

    def capped_count(self, cap: int) -> int:
        """How many rows, counting no further than ``cap + 1``: the inbox says
        "1,000+" rather than scan a deep queue to count it exactly."""
        return self.order_by().values("pk")[: cap + 1].count()

    def escalated_away_from(self, roles: models.QuerySet[Role]) -> ApprovalRequestQuerySet:
        """Requests these roles owned at an earlier level but no longer own."""
        earlier = Ownership.objects.filter(
            request=models.OuterRef("pk"), role__in=roles, level__lt=models.OuterRef("level")
        )
        return self.filter(models.Exists(earlier)).exclude(owner_role__in=roles)


class ApprovalRequest(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="requests")
    # NULL, not "", when absent: the unique constraint below ignores NULLs.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    body_sha256 = models.CharField(max_length=64)

    # What the agent asked, as it asked it.
    action = models.CharField(max_length=100)
    summary = models.CharField(max_length=500)
    context = models.JSONField(default=dict, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    requester = models.JSONField(default=dict, blank=True)
    # requester.on_behalf_of resolved to a user when the request was created
    # (case-insensitive): that person may neither claim nor approve it.
    on_behalf_of_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    callback_url = models.URLField(max_length=2000, blank=True)

    # The rule that routed it, copied so that policy edits never touch it.
    policy_version = models.ForeignKey(PolicyVersion, on_delete=models.PROTECT, related_name="+")
    rule_name = models.CharField(max_length=63)
    action_class = models.CharField(max_length=63)
    levels = models.JSONField()  # [{"role": name, "deadline": seconds}, ...]
    on_timeout = models.CharField(
        max_length=10, choices=OnTimeout.choices, default=OnTimeout.EXPIRE
    )
    fail_open = models.BooleanField(default=False)
    ticket_on_timeout = models.BooleanField(default=False)
    approvals_required = models.PositiveSmallIntegerField(default=1)
    editable = models.BooleanField(default=False)
    remind_seconds = models.PositiveIntegerField(null=True, blank=True)
    # The business-hours calendar its deadlines and SLA count under, copied
    # (see policies.Calendar.as_spec) so that editing the calendar never
    # moves a deadline in flight; NULL counts wall-clock time.
    calendar = models.JSONField(null=True, blank=True)
    sla_seconds = models.PositiveIntegerField(null=True, blank=True)  # the class's, pinned
    sla_due_at = models.DateTimeField(null=True, blank=True)  # when the SLA target passes

    # Where it stands.
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    level = models.PositiveSmallIntegerField(default=1)
    owner_role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="+")
    level_started_at = models.DateTimeField()
    due_at = models.DateTimeField(null=True, blank=True)
    remind_at = models.DateTimeField(null=True, blank=True)  # cleared once the reminder is out
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)

    # The decision, once terminal.
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.JSONField(null=True, blank=True)  # {"user","role"}|{"system"}|{"agent"}
    decision_reason = models.TextField(blank=True)
    decision_payload = models.JSONField(null=True, blank=True)
    decision_payload_sha256 = models.CharField(max_length=64, blank=True)
    decision_edited = models.BooleanField(default=False)
    # Time to decision under the calendar, and whether it met the class SLA
    # (NULL: cancelled, or the class has no SLA).
    decision_seconds = models.FloatField(null=True, blank=True)
    sla_met = models.BooleanField(null=True, blank=True)

    # Head of this request's audit hash chain (see approvals.audit).
    audit_seq = models.PositiveIntegerField(default=0)
    audit_head = models.CharField(max_length=64, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = ApprovalRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="request_idempotency_key_unique",
            ),
            models.CheckConstraint(
                condition=Q(on_timeout__in=OnTimeout.values), name="request_on_timeout"
            ),
        ]
        indexes = [
            # Exactly the escalation sweep's query: due pending requests.
            models.Index(
                fields=["due_at"], condition=Q(status="pending"), name="request_pending_due"
            ),
            models.Index(
                fields=["remind_at"], condition=Q(status="pending"), name="request_pending_remind"
            ),
            models.Index(fields=["agent", "-created_at"], name="request_agent_recent"),
            models.Index(fields=["owner_role", "status"], name="request_owner_status"),
            # The inbox's queue: each role's pending requests in the order shown
            # (ApprovalRequestQuerySet.queue_page), and its capped counts.
            models.Index(
                fields=["owner_role", "due_at", "created_at", "id"],
                condition=Q(status="pending"),
                name="request_pending_queue",
            ),
            # The inbox's "Recent decisions": read newest first, each checked
            # against the reviewer's roles, instead of joining every request
            # those roles ever owned and sorting them all.
            models.Index(
                fields=["-decided_at"],
                condition=~Q(status="pending"),
                name="request_decided_recent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def ended_by_timeout(self) -> bool:
        """Terminal because the last deadline passed (expire, deny or fail-open approve)."""
        return self.is_terminal and (self.decided_by or {}).get("system") == "timeout"

    def is_overdue(self, now: datetime) -> bool:
        return self.status == Status.PENDING and self.due_at is not None and self.due_at <= now

    @property
    def on_behalf_of(self) -> str | None:
        value = (self.requester or {}).get("on_behalf_of")
        return value if isinstance(value, str) else None

    @staticmethod
    def fields_from_rule(rule: RuleSpec) -> dict[str, Any]:
        """What a new request copies from the rule that routed it, so that
        editing the policy never changes a request in flight."""
        return {
            "rule_name": rule["name"],
            "action_class": rule["class"],
            "levels": rule["levels"],
            "on_timeout": rule["on_timeout"],
            "fail_open": rule["fail_open"],
            "ticket_on_timeout": rule["ticket"],
            "approvals_required": rule["approvals"],
            "editable": rule["editable"],
            "remind_seconds": rule["remind"],
        }

    def is_for(self, user: AnyUser) -> bool:
        """Whether ``user`` is the person this request was made on behalf of
        (the resolved user, or the name as given, in any case)."""
        if self.on_behalf_of_user_id is not None and self.on_behalf_of_user_id == user.pk:
            return True
        name = (self.on_behalf_of or "").strip().casefold()
        return bool(name) and name == user.get_username().casefold()

    def level_deadline(self, level: int | None = None) -> int:
        return self.levels[(level or self.level) - 1]["deadline"]

    @property
    def deadline(self) -> datetime:
        """The current level's deadline; only a pending request has one."""
        if self.due_at is None:
            raise ValueError(f"request {self.pk} is {self.status}: it has no deadline")
        return self.due_at

    @property
    def claimant(self) -> str:
        return self.claimed_by.get_username() if self.claimed_by else ""

    @property
    def previous_role(self) -> str | None:
        """The role it escalated from, at level 2 and beyond."""
        return self.levels[self.level - 2]["role"] if self.level > 1 else None

    def business_calendar(self) -> Calendar | None:
        if not self.calendar:
            return None
        return _calendar(json.dumps(self.calendar, sort_keys=True))

    def add_time(self, start: datetime, seconds: float) -> datetime:
        """``seconds`` after ``start``: open time under its calendar, else wall-clock."""
        calendar = self.business_calendar()
        if calendar is None:
            return start + timedelta(seconds=seconds)
        return calendar.add(start, seconds)

    def elapsed(self, start: datetime, end: datetime) -> float:
        """Seconds from ``start`` to ``end`` that count: open time under its calendar."""
        calendar = self.business_calendar()
        if calendar is None:
            return (end - start).total_seconds()
        return calendar.between(start, end)

    def resumes_at(self, now: datetime | None = None) -> datetime | None:
        """When its paused deadline clock starts again; None while it runs."""
        calendar = self.business_calendar()
        if calendar is None or self.due_at is None:
            return None
        now = now or timezone.now()
        opens = calendar.next_open(now)
        return opens if opens > now else None

    def pause_note(self, now: datetime | None = None) -> str:
        """The inbox's "paused, resumes Monday 09:00 CET" while its calendar is closed."""
        resumes = self.resumes_at(now)
        calendar = self.business_calendar()
        if resumes is None or calendar is None:
            return ""
        local = resumes.astimezone(calendar.zone)
        when = f"{local:%A %H:%M %Z}"
        if resumes - (now or timezone.now()) > timedelta(days=6):
            when = f"{local:%A %-d %B %H:%M %Z}"
        return f"paused, resumes {when}"

    def reminder_before(self, started: datetime, deadline: int) -> datetime | None:
        """When to remind the owning role of a level that started at ``started``
        with ``deadline`` seconds, ``remind`` before it falls due, if at all."""
        if self.remind_seconds and self.remind_seconds < deadline:
            return self.add_time(started, deadline - self.remind_seconds)
        return None

    @property
    def is_last_level(self) -> bool:
        return self.level >= len(self.levels)


class Ownership(models.Model):
    """Which role owned a request at which level: reviewers keep read access to
    what escalated away from them, derived from roles, not per-user rows."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="+")
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="+")
    level = models.PositiveSmallIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["request", "level"], name="ownership_one_per_level")
        ]
        indexes = [models.Index(fields=["role", "request"], name="ownership_role_request")]

    def __str__(self) -> str:
        return f"level {self.level}: {self.role_id}"


class Vote(models.Model):
    """One reviewer's approval toward a quorum (``approvals: N``)."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="votes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=63)
    level = models.PositiveSmallIntegerField()
    payload_sha256 = models.CharField(max_length=64)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["request", "user"], name="vote_one_per_user")
        ]

    def __str__(self) -> str:
        return f"vote by {self.user_id} at level {self.level}"


class AuditKind(models.TextChoices):
    """What an audit event records: the vocabulary of ``AuditEvent.kind``."""

    # What happens to a request (actions, escalation, transitions).
    CREATED = "created"
    APPROVAL_RECORDED = "approval_recorded", "approval recorded"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    CLAIMED = "claimed"
    UNCLAIMED = "unclaimed"
    ESCALATED = "escalated"
    REMINDED = "reminded"
    LATE_DECISION = "late_decision", "late decision"
    TICKET_OPENED = "ticket_opened", "ticket opened"
    TICKET_NOTE = "ticket_note", "ticket note"
    TICKET_CLOSED = "ticket_closed", "ticket closed"
    # Configuration changes (no request): policies.config, the admins, approvals.agents.
    POLICY_CHANGED = "policy_changed", "policy changed"
    POLICY_SCOPE_CHANGED = "policy_scope_changed", "policy scope changed"
    POLICY_DELETED = "policy_deleted", "policy deleted"
    ROLE_CREATED = "role_created", "role created"
    ROLE_UPDATED = "role_updated", "role updated"  # by apply
    ROLE_CHANGED = "role_changed", "role changed"  # in the admin
    ROLE_DELETED = "role_deleted", "role deleted"
    ROLE_MEMBER_ADDED = "role_member_added", "role member added"
    ROLE_MEMBER_REMOVED = "role_member_removed", "role member removed"
    ROLE_PERM_GRANTED = "role_perm_granted", "role permission granted"
    ROLE_PERM_REVOKED = "role_perm_revoked", "role permission revoked"
    CALENDAR_CREATED = "calendar_created", "calendar created"
    CALENDAR_CHANGED = "calendar_changed", "calendar changed"
    CALENDAR_DELETED = "calendar_deleted", "calendar deleted"
    ACTION_CLASS_CREATED = "action_class_created", "action class created"  # by apply
    ACTION_CLASS_CHANGED = "action_class_changed", "action class changed"  # by apply
    # The admin has always spelt these after the model's name.
    ACTIONCLASS_CREATED = "actionclass_created", "action class created (admin)"
    ACTIONCLASS_CHANGED = "actionclass_changed", "action class changed (admin)"
    ACTIONCLASS_DELETED = "actionclass_deleted", "action class deleted"
    AGENT_CREATED = "agent_created", "agent created"
    AGENT_CHANGED = "agent_changed", "agent changed"
    AGENT_CREDENTIALS_ISSUED = "agent_credentials_issued", "agent credentials issued"
    AGENT_KEY_ROTATED = "agent_key_rotated", "agent key rotated"
    AGENT_SECRET_ROTATED = "agent_secret_rotated", "agent secret rotated"
    USER_CREATED = "user_created", "user created"
    USER_CHANGED = "user_changed", "user changed"
    GROUP_CREATED = "group_created", "group created"
    GROUP_CHANGED = "group_changed", "group changed"


class AuditEvent(models.Model):
    """Append-only: what happened to a request, with its business context.

    Each event carries the action, summary and context so a compliance reader
    needs no joins, and is chained by HMAC to the previous event of the same
    request so that ``verify_audit`` detects edits and deletions. The
    database refuses UPDATE and DELETE on this table (a trigger).

    Events with no request are configuration changes (policies, roles,
    agents), chained among themselves in ``seq`` order.
    """

    Kind = AuditKind

    request = models.ForeignKey(
        ApprovalRequest, on_delete=models.PROTECT, related_name="events", null=True, blank=True
    )
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=40, choices=Kind.choices)
    at = models.DateTimeField()
    actor = models.JSONField()  # {"user": …} | {"agent": …} | {"system": …}
    role = models.CharField(max_length=63, blank=True)
    level = models.PositiveSmallIntegerField()
    policy = models.CharField(max_length=63)
    policy_version = models.PositiveIntegerField()
    rule = models.CharField(max_length=63)
    action = models.CharField(max_length=100)
    summary = models.CharField(max_length=500)
    context = models.JSONField(default=dict)
    data = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["request", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["request", "seq"], name="audit_event_seq_unique"),
            models.UniqueConstraint(
                fields=["seq"], condition=Q(request__isnull=True), name="audit_config_seq_unique"
            ),
            models.CheckConstraint(condition=Q(kind__in=AuditKind.values), name="audit_event_kind"),
        ]
        indexes = [models.Index(fields=["-at"], name="audit_event_recent")]

    def __str__(self) -> str:
        return f"{self.kind} #{self.seq}"


class AuditHead(models.Model):
    """The head of a chain that spans requests (see approvals.audit): the
    configuration chain and the chain of seals."""

    name = models.CharField(max_length=20, primary_key=True)
    seq = models.PositiveBigIntegerField(default=0)
    head = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"{self.name} #{self.seq}"


class AuditSeal(models.Model):
    """Which requests were created in a window of time, sealed (approvals.audit).

    Beat seals each window once it is older than any create transaction;
    a request deleted afterwards, with all its events, no longer adds up to
    its seal. Seals are chained by HMAC and append-only like audit events.
    """

    seq = models.PositiveBigIntegerField(unique=True)
    at = models.DateTimeField()
    since = models.DateTimeField(null=True, blank=True)  # exclusive; None: from the start
    upto = models.DateTimeField()  # inclusive
    requests = models.PositiveIntegerField()
    digest = models.CharField(max_length=64)  # SHA-256 of the sorted request ids
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"seal #{self.seq} ({self.requests} requests up to {self.upto:%Y-%m-%d %H:%M:%S})"


class Ticket(models.Model):
    """A manual-review ticket, opened when a request ends unanswered."""

    class State(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    request = models.OneToOneField(ApprovalRequest, on_delete=models.PROTECT, related_name="ticket")
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="tickets")
    status = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    opened_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolution = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["role", "status"], name="ticket_role_status")]

    def __str__(self) -> str:
        return f"ticket for {self.request_id} ({self.status})"


class Notification(models.Model):
    """Outbox of messages to people (a role's address or its members).

    Written in the transaction of the change it announces; sent after commit
    by a task, or by the sweep if that task was lost.
    """

    class Kind(models.TextChoices):
        NEW = "new", "new request"
        ESCALATED = "escalated"
        REMINDER = "reminder"
        TICKET = "ticket", "ticket opened"
        OUTCOME = "outcome", "outcome for the requester"

    request = models.ForeignKey(
        ApprovalRequest, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=12, choices=Kind.choices)
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="+")
    # Set for a message to one person (the requester) rather than to the role.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    level = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)  # a sender's lease
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # Each channel's outcome ("sent" or "unreachable"), so that a retry after
    # one channel failed never sends the others again.
    channel_results = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["created_at"], condition=Q(sent_at__isnull=True), name="notification_unsent"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} to {self.role_id}"


class Delivery(models.Model):
    """Outbox of callbacks to the agent: one row per event (Standard Webhooks).

    The body is serialized once, when the event happens; every attempt sends
    those exact bytes under the same ``webhook_id``.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        DEAD = "dead"

    webhook_id = models.CharField(max_length=64, unique=True)
    request = models.ForeignKey(
        ApprovalRequest, on_delete=models.PROTECT, related_name="deliveries"
    )
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="deliveries")
    event_type = models.CharField(max_length=40)
    url = models.URLField(max_length=2000)
    body = models.TextField()
    status = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)  # a sender's lease
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="delivery_pending_next",
            ),
            # A sender takes each agent's next few (approvals.callbacks.Sender):
            # found here without reading past another agent's backlog.
            models.Index(
                fields=["agent", "next_attempt_at", "id"],
                condition=Q(status="pending"),
                name="delivery_pending_agent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.webhook_id}"


class DeliveryAttempt(models.Model):
    """One try at delivering a callback: what was sent when, and what came back."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    at = models.DateTimeField()
    webhook_timestamp = models.PositiveBigIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    response_excerpt = models.TextField(blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery", "at"]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error[:40]}"


class DecisionStat(models.Model):
    """A rollup of ended requests, kept by the engine as each one ends (see
    approvals.sla), so the SLA dashboard and /metrics sum a few thousand rows
    instead of scanning millions of requests.

    One row per day (UTC), class, role owning it at the end, outcome, ended by
    the timeout or not, escalated or not, SLA met/missed, and time-to-decision
    bucket (``approvals.sla.BUCKETS``).
    """

    day = models.DateField()
    action_class = models.CharField(max_length=63)
    role = models.CharField(max_length=63)
    outcome = models.CharField(max_length=10)  # the terminal status
    timed_out = models.BooleanField()  # nobody decided: the rule's on_timeout did
    escalated = models.BooleanField()
    sla = models.CharField(max_length=6)  # met | missed | "" (no SLA, or cancelled)
    bucket = models.PositiveSmallIntegerField()
    count = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(default=0)  # sum of the times to decision
    escalations = models.PositiveIntegerField(default=0)  # sum of the levels climbed

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "day",
                    "action_class",
                    "role",
                    "outcome",
                    "timed_out",
                    "escalated",
                    "sla",
                    "bucket",
                ],
                name="decision_stat_unique",
            )
        ]
        indexes = [models.Index(fields=["day"], name="decision_stat_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.action_class} {self.outcome}: {self.count}"


class TicketNote(models.Model):
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["ticket", "created_at"]

    def __str__(self) -> str:
        return f"note by {self.author_id}"


class ReviewerToken(models.Model):
    """A reviewer's API token, stored as its prefix and SHA-256 (see approvals.tokens).

    The token itself is shown once when issued; it expires, and revoking it
    (or deactivating its user) ends it at once.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviewer_tokens"
    )
    prefix = models.CharField(max_length=12, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"token {self.prefix}… of {self.user_id}"
