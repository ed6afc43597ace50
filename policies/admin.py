from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, path
from guardian.admin import GuardedModelAdmin
from guardian.shortcuts import assign_perm, get_group_perms, get_objects_for_user, get_user_perms

from approvals.models import AuditKind as Kind
from policies.business_hours import compact_hours, normalize
from policies.config import record_membership, save_policy_version, set_scope
from policies.durations import format_duration
from policies.models import ACT_FOR_ROLE, ActionClass, Calendar, Policy, PolicyVersion, Role, Rule
from policies.rule_rows import raw_rule
from policies.simulate import simulate
from policies.spec import PolicySpec, RuleSpec, validate_rule


class SuperuserObjectPermissions:
    """django-guardian's "Object permissions" pages only for superusers.

    Guardian lets anyone who may change (or here: view) an object grant any
    permission on it, to anyone, themselves included: one view permission
    would become every permission.
    """

    def obj_perms_manage_view(self, request: HttpRequest, object_pk: str) -> HttpResponse:
        _superuser_only(request)
        return super().obj_perms_manage_view(request, object_pk)  # type: ignore[misc]

    def obj_perms_manage_user_view(
        self, request: HttpRequest, object_pk: str, user_id: str
    ) -> HttpResponse:
        _superuser_only(request)
        return super().obj_perms_manage_user_view(request, object_pk, user_id)  # type: ignore[misc]

    def obj_perms_manage_group_view(
        self, request: HttpRequest, object_pk: str, group_id: str
    ) -> HttpResponse:
        _superuser_only(request)
        return super().obj_perms_manage_group_view(request, object_pk, group_id)  # type: ignore[misc]


# Created, changed, deleted: by model (the admin names them after the model).
AUDIT_KINDS = {
    "role": (Kind.ROLE_CREATED, Kind.ROLE_CHANGED, Kind.ROLE_DELETED),
    "calendar": (Kind.CALENDAR_CREATED, Kind.CALENDAR_CHANGED, Kind.CALENDAR_DELETED),
    "actionclass": (
        Kind.ACTIONCLASS_CREATED, Kind.ACTIONCLASS_CHANGED, Kind.ACTIONCLASS_DELETED,
    ),
}  # fmt: skip


class AuditedAdmin(admin.ModelAdmin):
    """Every add, change and delete made here is a configuration audit event."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        created, changed_kind, _ = AUDIT_KINDS[obj._meta.model_name]
        changed = sorted(form.changed_data) if change else []
        _audit(request, changed_kind if change else created, obj, changed=changed)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        _audit(request, AUDIT_KINDS[obj._meta.model_name][2], obj)
        super().delete_model(request, obj)


def _audit(request: HttpRequest, kind: Kind, obj: Any, **data: Any) -> None:
    from approvals import audit

    audit.record_config(
        kind,
        actor={"user": request.user.get_username()},
        summary=f"{kind.replace('_', ' ')}: {obj}",
        data={"object": str(obj), **data},
    )


def _superuser_only(request: HttpRequest) -> None:
    if not (request.user.is_active and request.user.is_superuser):
        raise PermissionDenied("Only superusers manage object permissions.")


@admin.register(Role)
class RoleAdmin(SuperuserObjectPermissions, AuditedAdmin, GuardedModelAdmin):  # type: ignore[misc]
    """Members are users or groups holding ``act_for_role`` on the role:
    manage them (superusers) with "Object permissions" on the role's page.
    Every grant and revocation made there is audited."""

    list_display = ["name", "title", "email", "member_list"]
    fields = ["name", "title", "email", "slack_webhook", "member_list"]
    search_fields = ["name", "title"]
    readonly_fields = ["member_list"]

    def obj_perms_manage_user_view(
        self, request: HttpRequest, object_pk: str, user_id: str
    ) -> HttpResponse:
        return self._audited(request, object_pk, "user", user_id)

    def obj_perms_manage_group_view(
        self, request: HttpRequest, object_pk: str, group_id: str
    ) -> HttpResponse:
        return self._audited(request, object_pk, "group", group_id)

    def _audited(
        self, request: HttpRequest, object_pk: str, kind: str, holder_id: str
    ) -> HttpResponse:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        _superuser_only(request)
        role = Role.objects.filter(pk=object_pk).first()
        model = get_user_model() if kind == "user" else Group
        holder = model.objects.filter(pk=holder_id).first()
        view = (
            super().obj_perms_manage_user_view
            if kind == "user"
            else super().obj_perms_manage_group_view
        )
        if role is None or holder is None or request.method != "POST":
            return view(request, object_pk, holder_id)
        perms_of = get_user_perms if kind == "user" else get_group_perms
        before = set(perms_of(holder, role))
        response = view(request, object_pk, holder_id)
        after = set(perms_of(holder, role))
        who = str(holder) if kind == "user" else f"group {holder}"
        actor = {"user": request.user.get_username()}
        for perm in sorted(after ^ before):
            shown = "" if perm == ACT_FOR_ROLE else perm
            record_membership(role, who, granted=perm in after, actor=actor, perm=shown)
        return response

    @admin.display(description="members")
    def member_list(self, role: Role) -> str:
        return ", ".join(u.get_username() for u in role.members()) or "(none)"


class CalendarForm(forms.ModelForm):
    """Open hours and holidays as people write them, one per line; validated
    by the same code as ``apply``."""

    hours_text = forms.CharField(
        label="Open hours",
        widget=forms.Textarea(attrs={"rows": 4, "cols": 40}),
        help_text="One line per day or day range: mon-fri: 09:00-12:00, 13:00-17:30",
    )
    holidays_text = forms.CharField(
        label="Holidays",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 40}),
        help_text="One date per line: 2026-12-24",
    )

    class Meta:
        model = Calendar
        fields = ["name", "title", "timezone"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            hours = compact_hours(self.instance.hours)
            self.initial["hours_text"] = "\n".join(f"{k}: {v}" for k, v in hours.items())
            self.initial["holidays_text"] = "\n".join(self.instance.holidays)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        hours: dict[str, str] = {}
        for line in (data.get("hours_text") or "").splitlines():
            if line.strip():
                days, _, ranges = line.partition(":")
                hours[days.strip()] = ranges.strip()
        holidays = (data.get("holidays_text") or "").split()
        spec, errors = normalize(data.get("name") or "", data.get("timezone"), hours, holidays)
        if errors:
            raise ValidationError(errors)
        self.instance.hours, self.instance.holidays = spec["hours"], spec["holidays"]
        return data


@admin.register(Calendar)
class CalendarAdmin(AuditedAdmin):
    """Editing a calendar changes deadlines of requests created afterwards;
    requests in flight keep the copy they pinned."""

    form = CalendarForm
    list_display = ["name", "title", "timezone", "open_hours"]
    fields = ["name", "title", "timezone", "hours_text", "holidays_text"]

    @admin.display(description="open hours")
    def open_hours(self, calendar: Calendar) -> str:
        return "; ".join(f"{k} {v}" for k, v in compact_hours(calendar.hours).items())


@admin.register(ActionClass)
class ActionClassAdmin(AuditedAdmin):
    list_display = ["name", "title", "sla", "calendar"]

    @admin.display(description="SLA")
    def sla(self, action_class: ActionClass) -> str:
        return format_duration(action_class.sla_seconds) if action_class.sla_seconds else "-"


class PolicyVersionInline(admin.TabularInline):
    model = PolicyVersion
    readonly_fields = ("number", "author", "created_at", "diff")
    fields = readonly_fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RuleFormSet(BaseInlineFormSet):
    """Validates the rules together, with the same code as ``apply``, and
    shows each problem at the field it is about."""

    # Set by RuleInline.get_formset: whether the editor is held to the scope.
    scoped = True

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        policy: Policy = self.instance
        roles = set(Role.objects.values_list("name", flat=True))
        classes = set(ActionClass.objects.values_list("name", flat=True))
        calendars = set(Calendar.objects.values_list("name", flat=True))
        ordered: list[tuple[int, int, RuleSpec]] = []
        names: set[str] = set()
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE"):
                continue
            rule, problems = validate_rule(raw_rule(data), roles, classes, calendars)
            if self.scoped:
                for glob in raw_rule(data)["actions"]:
                    if isinstance(glob, str) and not policy.in_scope(glob):
                        fence = policy.scope or "empty"
                        form.add_error(
                            "actions",
                            f"'{glob}' is outside this policy's scope ({fence}); "
                            "a superuser sets the scope.",
                        )
            for field_name, field_messages in problems.items():
                target = {"class": "action_class"}.get(field_name, field_name)
                for message in field_messages:
                    form.add_error(target if target in form.fields else None, message)
            if rule is not None:
                if rule["name"] in names:
                    form.add_error("name", "Another rule of this policy has this name.")
                names.add(rule["name"])
                ordered.append((data.get("position") or 0, len(ordered), rule))
        if not ordered and not any(self.errors):
            raise ValidationError("A policy needs at least one rule.")
        self.rules = [rule for _, _, rule in sorted(ordered, key=lambda item: item[:2])]


class RuleInline(admin.StackedInline):
    model = Rule
    formset = RuleFormSet
    extra = 0
    fields = [
        ("position", "name"), "actions", "when", "action_class", "levels",
        ("on_timeout", "fail_open"), ("approvals", "editable", "ticket"), "remind", "calendar",
    ]  # fmt: skip

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset: Any = super().get_formset(request, obj, **kwargs)  # a RuleFormSet
        formset.scoped = not request.user.is_superuser
        return formset

    # Rules are part of the policy: whoever may edit the policy edits its rules.
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _may_edit(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _may_edit(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _may_edit(request, obj)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True


def _may_edit(request: HttpRequest, policy: Policy | None) -> bool:
    if policy is None:
        return request.user.has_perm("policies.add_policy")
    return request.user.has_perm("policies.change_policy", policy)


class SimulateForm(forms.Form):
    body = forms.CharField(
        label="Request (JSON, as an agent would send it)",
        widget=forms.Textarea(attrs={"rows": 12, "cols": 80}),
        initial=json.dumps(
            {
                "action": "invoice.discrepancy",
                "summary": "INV-1042 is $1,240 over PO-77",
                "context": {"amount": 1240.0, "currency": "USD"},
                "payload": {"invoice": "INV-1042", "pay": 1240.0},
            },
            indent=2,
        ),
    )
    agent = forms.CharField(required=False, help_text="Agent name, as CEL sees agent.name")

    def clean_body(self) -> dict:
        try:
            body = json.loads(self.cleaned_data["body"])
        except ValueError as exc:
            raise ValidationError(f"Not valid JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("action"), str):
            raise ValidationError('Give a JSON object with at least an "action".')
        return body


@admin.register(Policy)
class PolicyAdmin(SuperuserObjectPermissions, GuardedModelAdmin):  # type: ignore[misc]
    """Every save validates the whole policy and makes a new immutable version.

    Staff who are not superusers see and edit only the policies they hold a
    django-guardian permission on (a finance admin: the finance policies).
    """

    list_display = ["name", "priority", "scope", "current_version"]
    fields = ["name", "priority", "scope", "current_version"]
    inlines = [RuleInline, PolicyVersionInline]
    change_list_template = "admin/policies/policy/change_list.html"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = ["name", "current_version"] if obj else ["current_version"]
        if not request.user.is_superuser:
            # Priority decides which policy sees a request first: a low one
            # would capture other teams' requests. Superusers set both.
            fields += ["priority", "scope"]
        return fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Policy]:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        perms = ["policies.view_policy", "policies.change_policy"]
        return get_objects_for_user(request.user, perms, queryset, any_perm=True)

    def has_module_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return (
            user.is_active
            and user.is_staff
            and (user.has_perm("policies.add_policy") or self.get_queryset(request).exists())
        )

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return self.has_module_permission(request)
        return request.user.has_perm("policies.view_policy", obj) or self.has_change_permission(
            request, obj
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return self.has_module_permission(request)
        return request.user.has_perm("policies.change_policy", obj)

    def save_model(self, request: HttpRequest, obj: Policy, form: Any, change: bool) -> None:
        # The policy row and its version are written in save_related, from the
        # validated rules; nothing is saved here on its own.
        pass

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        policy: Policy = form.instance
        for formset in formsets:
            # The rows are rewritten from the new version, not saved as edited;
            # the admin's change message still expects these lists.
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        rules_formset = next(fs for fs in formsets if isinstance(fs, RuleFormSet))
        spec: PolicySpec = {"priority": policy.priority, "rules": rules_formset.rules}
        version, warnings = save_policy_version(
            policy.name, spec, author=request.user.get_username()
        )
        saved = Policy.objects.get(name=policy.name)
        if request.user.is_superuser:
            set_scope(saved, policy.scope, request.user.get_username())
        form.instance.pk, form.instance.current_version = saved.pk, saved.current_version
        if not change and not request.user.is_superuser:
            assign_perm("policies.change_policy", request.user, saved)
        if version is None:
            messages.info(request, "No change: the policy is as it was.")
            return
        for warning in warnings:
            messages.warning(request, warning)
        messages.success(request, f"Saved as version {version.number}.")

    def delete_model(self, request: HttpRequest, obj: Policy) -> None:
        _audit(request, Kind.POLICY_DELETED, obj)
        super().delete_model(request, obj)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "simulate/",
                self.admin_site.admin_view(self.simulate_view),
                name="policies_policy_simulate",
            ),
            *super().get_urls(),
        ]

    def simulate_view(self, request: HttpRequest) -> HttpResponse:
        form = SimulateForm(request.POST or None)
        result = None
        if request.method == "POST" and form.is_valid():
            result = simulate(
                form.cleaned_data["body"], agent=form.cleaned_data["agent"], viewer=request.user
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Test a request",
            "form": form,
            "result": result,
            "result_json": json.dumps(result, indent=2) if result else "",
            "opts": self.model._meta,
        }
        return render(request, "admin/policies/policy/simulate.html", context)
