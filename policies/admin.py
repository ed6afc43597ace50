from __future__ import annotations

from django.contrib import admin
from guardian.admin import GuardedModelAdmin

from policies.durations import format_duration
from policies.models import ActionClass, Policy, PolicyVersion, Role


@admin.register(Role)
class RoleAdmin(GuardedModelAdmin):
    """Members are users or groups holding ``act_for_role`` on the role:
    manage them with "Object permissions" on the role's page."""

    list_display = ["name", "title", "email", "member_list"]
    search_fields = ["name", "title"]
    readonly_fields = ["member_list"]

    @admin.display(description="members")
    def member_list(self, role: Role) -> str:
        return ", ".join(u.get_username() for u in role.members()) or "(none)"


@admin.register(ActionClass)
class ActionClassAdmin(admin.ModelAdmin):
    list_display = ["name", "title", "sla"]

    @admin.display(description="SLA")
    def sla(self, action_class: ActionClass) -> str:
        return format_duration(action_class.sla_seconds) if action_class.sla_seconds else "-"


class PolicyVersionInline(admin.TabularInline):
    model = PolicyVersion
    fields = ["number", "author", "created_at", "diff"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Policy)
class PolicyAdmin(GuardedModelAdmin):
    list_display = ["name", "priority", "current_version"]
    readonly_fields = ["name", "priority", "current_version"]
    inlines = [PolicyVersionInline]
