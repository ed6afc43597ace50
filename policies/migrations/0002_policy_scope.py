from django.db import migrations, models


def scope_from_rules(apps, schema_editor):
    # Existing policies keep what they route today: their scope starts as the
    # union of their current rules' action globs.
    Policy = apps.get_model("policies", "Policy")
    for policy in Policy.objects.select_related("current_version"):
        if policy.current_version is None:
            continue
        globs = sorted({g for rule in policy.current_version.spec["rules"] for g in rule["actions"]})
        policy.scope = ", ".join(globs)[:500]
        policy.save(update_fields=["scope"])


class Migration(migrations.Migration):
    dependencies = [("policies", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="policy",
            name="scope",
            field=models.CharField(
                blank=True,
                help_text="Action globs, comma-separated, that this policy may route (refund.*). "
                "Set by superusers; staff edits keep every rule inside it. Empty: only "
                "superusers edit the rules.",
                max_length=500,
            ),
        ),
        migrations.RunPython(scope_from_rules, migrations.RunPython.noop),
    ]
