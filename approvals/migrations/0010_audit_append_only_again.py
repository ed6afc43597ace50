# SQLite rebuilds a table to add a CHECK constraint, and drops the table's
# triggers with it: 0010_audit_kind_on_timeout_choices left the audit events
# without their append-only triggers (0004_audit_protected) on SQLite. Create
# them again. PostgreSQL keeps its trigger; nothing to do there.

from django.db import migrations

SQLITE_TRIGGERS = [
    "DROP TRIGGER IF EXISTS approvals_auditevent_no_update",
    "DROP TRIGGER IF EXISTS approvals_auditevent_no_delete",
    """CREATE TRIGGER approvals_auditevent_no_update BEFORE UPDATE ON approvals_auditevent
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only: UPDATE refused'); END""",
    """CREATE TRIGGER approvals_auditevent_no_delete BEFORE DELETE ON approvals_auditevent
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only: DELETE refused'); END""",
]


def protect_again(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_TRIGGERS:
            schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("approvals", "0010_audit_kind_on_timeout_choices"),
    ]

    operations = [
        migrations.RunPython(protect_again, migrations.RunPython.noop),
    ]
