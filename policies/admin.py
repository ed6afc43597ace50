from __future__ import annotations

from django.contrib import admin
from guardian.admin import GuardedModelAdmin
from guardian.shortcuts import get_objects_for_user

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
    """Staff who are not superusers see and edit only the policies they hold a
    django-guardian permission on (a finance admin: the finance policies)."""

    list_display = ["name", "priority", "current_version"]
    readonly_fields = ["name", "priority", "current_version"]
    inlines = [PolicyVersionInline]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        perms = ["policies.view_policy", "policies.change_policy"]
        return get_objects_for_user(request.user, perms, queryset, any_perm=True)

    def has_module_permission(self, request) -> bool:
        return (
            request.user.is_active and request.user.is_staff and self.get_queryset(request).exists()
        )

    def has_view_permission(self, request, obj=None) -> bool:
        if obj is None:
            return self.has_module_permission(request)
        return request.user.has_perm("policies.view_policy", obj) or self.has_change_permission(
            request, obj
        )

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is None:
            return self.has_module_permission(request)
        return request.user.has_perm("policies.change_policy", obj)
