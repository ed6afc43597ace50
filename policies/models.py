"""The organisation's rules: roles, action classes and versioned policies.

Role membership is a django-guardian object permission (``act_for_role`` on a
Role), granted to users or to groups, so access to a request is derived from
its roles and never needs a permission row per request.
"""

from __future__ import annotations

import fnmatch

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, User
from django.db import models
from django.db.models import Q
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from policies.spec import OnTimeout, RuleSpec

ACT_FOR_ROLE = "act_for_role"

# request.user (perhaps anonymous) or a user row.
AnyUser = User | AnonymousUser


class RoleQuerySet(models.QuerySet["Role"]):
    def for_user(self, user: AnyUser) -> RoleQuerySet:
        """The roles this user may act for, directly or through a group."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        direct = Q(
            roleuserobjectpermission__user=user,
            roleuserobjectpermission__permission__codename=ACT_FOR_ROLE,
        )
        via_group = Q(
            rolegroupobjectpermission__group__user=user,
            rolegroupobjectpermission__permission__codename=ACT_FOR_ROLE,
        )
        return self.filter(pk__in=self.model.objects.filter(direct | via_group).values("pk"))


class Role(models.Model):
    name = models.SlugField(max_length=63, unique=True)
    title = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True, help_text="Notifications go here; else to each member.")
    # A credential (whoever has it posts to the channel), so it is set in the
    # admin and kept out of the YAML that lives in git.
    slack_webhook = models.URLField(
        blank=True,
        help_text="A Slack incoming webhook for this role's channel; "
        "else the one of APPROVALS_SLACK_WEBHOOK_URL.",
    )

    objects = RoleQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        permissions = [(ACT_FOR_ROLE, "Can act for this role (decide its requests)")]

    def __str__(self) -> str:
        return self.name

    def members(self) -> models.QuerySet:
        """Active users who may act for this role, directly or through a group."""
        direct = Q(
            roleuserobjectpermission__content_object=self,
            roleuserobjectpermission__permission__codename=ACT_FOR_ROLE,
        )
        via_group = Q(
            groups__rolegroupobjectpermission__content_object=self,
            groups__rolegroupobjectpermission__permission__codename=ACT_FOR_ROLE,
        )
        user_model = get_user_model()
        ids = user_model.objects.filter(direct | via_group).values("pk")
        return user_model.objects.filter(pk__in=ids, is_active=True).order_by("username")

    def direct_member_usernames(self) -> list[str]:
        """Members granted one by one (what YAML ``members:`` lists and exports)."""
        return sorted(
            self.roleuserobjectpermission_set.filter(permission__codename=ACT_FOR_ROLE).values_list(
                "user__username", flat=True
            )
        )


class RoleUserObjectPermission(UserObjectPermissionBase):
    content_object = models.ForeignKey(Role, on_delete=models.CASCADE)


class RoleGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(Role, on_delete=models.CASCADE)


class Calendar(models.Model):
    """Business hours: deadlines and SLAs under a calendar count open time only.

    ``hours`` and ``holidays`` are in the normalized form of
    ``policies.business_hours.normalize``; requests copy the whole calendar
    when they are created, so editing it never moves a deadline in flight.
    """

    name = models.SlugField(max_length=63, unique=True)
    title = models.CharField(max_length=200, blank=True)
    timezone = models.CharField(max_length=64, help_text="IANA time zone, e.g. Europe/Berlin")
    hours = models.JSONField(default=dict)  # {"mon": ["09:00-17:30"], …}
    holidays = models.JSONField(default=list, blank=True)  # ["2026-12-24", …]

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def as_spec(self) -> dict:
        """What a request pins: everything deadline arithmetic needs."""
        return {
            "name": self.name,
            "timezone": self.timezone,
            "hours": self.hours,
            "holidays": self.holidays,
        }


class ActionClass(models.Model):
    """An urgency tier: the SLA target (time to decision) used for reporting,
    counted under the class's calendar when it has one."""

    name = models.SlugField(max_length=63, unique=True)
    title = models.CharField(max_length=200, blank=True)
    sla_seconds = models.PositiveIntegerField(null=True, blank=True)
    calendar = models.ForeignKey(
        Calendar,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="action_classes",
        help_text="Deadlines and the SLA count this calendar's open hours (a rule's wins).",
    )

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "action classes"

    def __str__(self) -> str:
        return self.name


class Policy(models.Model):
    """A named, ordered list of rules. Its content lives in immutable versions."""

    name = models.SlugField(max_length=63, unique=True)
    priority = models.IntegerField(default=100, help_text="Lower is consulted first.")
    # Staff who may edit a policy could otherwise widen it to capture other
    # teams' requests ("actions: ['*']"); the scope is the fence a superuser
    # sets around it, and every rule a non-superuser saves must stay inside.
    scope = models.CharField(
        max_length=500,
        blank=True,
        help_text="Action globs, comma-separated, that this policy may route (refund.*). "
        "Set by superusers; staff edits keep every rule inside it. Empty: only "
        "superusers edit the rules.",
    )
    current_version = models.OneToOneField(
        "PolicyVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["priority", "name"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.name

    def scope_globs(self) -> list[str]:
        return [glob.strip() for glob in self.scope.split(",") if glob.strip()]

    def in_scope(self, glob: str) -> bool:
        """Whether every action ``glob`` matches is one the scope allows."""
        return any(glob_within(glob, fence) for fence in self.scope_globs())


def glob_within(inner: str, outer: str) -> bool:
    """Whether every name matching ``inner`` also matches ``outer``.

    Matching ``inner``'s text against ``outer`` is sound when ``outer`` has no
    wildcard but ``*``: then ``inner``'s own wildcards (``*``, ``?``, ``[..]``)
    can only fall inside a ``*`` of ``outer``. Any other ``outer`` must equal it.
    """
    if inner == outer:
        return True
    if "?" in outer or "[" in outer:
        return False
    return fnmatch.fnmatchcase(inner, outer)


class PolicyVersion(models.Model):
    """One immutable state of a policy; requests pin the version that routed them.

    ``spec`` is the normalized policy (see ``policies.spec``): priority and rules,
    durations in seconds. It is never edited; a change makes a new version.
    """

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    spec = models.JSONField()
    author = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)
    diff = models.TextField(blank=True, help_text="What changed from the previous version.")

    class Meta:
        ordering = ["policy", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "number"], name="policy_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.policy.name} v{self.number}"


class Rule(models.Model):
    """A rule of a policy's current version, in a form the admin can edit inline.

    Routing never reads these rows; it reads the immutable version's ``spec``.
    Saving the admin form validates the rows as a policy document, makes a new
    version from them, and rewrites these rows from that version.
    """

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveSmallIntegerField(default=0)
    name = models.SlugField(max_length=63)
    actions = models.CharField(max_length=500, help_text="Globs, comma-separated: refund.*")
    when = models.TextField(blank=True, help_text="Optional CEL condition.")
    action_class = models.CharField("class", max_length=63)
    levels = models.TextField(
        help_text="One level per line, role then deadline: finance-manager 30m"
    )
    on_timeout = models.CharField(
        max_length=10, default=OnTimeout.EXPIRE, choices=OnTimeout.choices
    )
    fail_open = models.BooleanField(default=False)
    ticket = models.BooleanField(default=False)
    approvals = models.PositiveSmallIntegerField(default=1)
    editable = models.BooleanField(default=False)
    remind = models.CharField(max_length=20, blank=True, help_text="e.g. 10m")
    calendar = models.CharField(
        max_length=63, blank=True, help_text="Business hours (a calendar's name); else the class's."
    )

    class Meta:
        ordering = ["policy", "position"]
        constraints = [
            models.CheckConstraint(
                condition=Q(on_timeout__in=OnTimeout.values), name="rule_on_timeout"
            )
        ]

    def __str__(self) -> str:
        return self.name


def rule_clock(rule: RuleSpec) -> tuple[Calendar | None, int | None]:
    """The calendar a rule's deadlines and SLA count under (its own, else its
    class's) and its class's SLA in seconds, in one or two small queries."""
    action_class = ActionClass.objects.select_related("calendar").filter(name=rule["class"]).first()
    calendar = action_class.calendar if action_class else None
    if rule.get("calendar"):
        calendar = Calendar.objects.filter(name=rule["calendar"]).first()
    return calendar, action_class.sla_seconds if action_class else None
