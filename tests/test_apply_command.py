"""Admins load configuration from YAML: one transaction, idempotent, clear errors."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from policies.models import ActionClass, Policy, PolicyVersion, Role
from tests.helpers import CONFIG, INVOICE


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def config_file(tmp_path: Path, users) -> Path:
    path = tmp_path / "org.yaml"
    path.write_text(CONFIG)
    return path


def test_apply_loads_roles_with_members_classes_and_policies(config_file):
    out, _ = run("apply", "-f", str(config_file))

    assert "create role finance-manager" in out
    assert "create policy finance-invoices (version 1)" in out
    finance = Role.objects.get(name="finance-manager")
    assert [u.username for u in finance.members()] == ["maria", "tom"]
    assert ActionClass.objects.get(name="internal").sla_seconds == 7200
    assert Policy.objects.get(name="finance-invoices").current_version.number == 1


def test_applying_the_same_file_twice_changes_nothing(config_file):
    run("apply", "-f", str(config_file))
    out, _ = run("apply", "-f", str(config_file))

    assert out.strip() == "no changes"
    assert PolicyVersion.objects.count() == 2  # one per policy, no new versions


def test_dry_run_shows_the_changes_and_writes_nothing(config_file):
    out, _ = run("apply", "-f", str(config_file), "--dry-run")

    assert "would create policy finance-invoices (version 1)" in out
    assert "nothing was written" in out
    assert not Role.objects.exists() and not Policy.objects.exists()


def test_a_changed_policy_gets_a_new_version_with_a_diff(config_file, tmp_path):
    run("apply", "-f", str(config_file))
    changed = tmp_path / "changed.yaml"
    changed.write_text(CONFIG.replace("deadline: 2h}", "deadline: 3h}", 1))

    out, _ = run("apply", "-f", str(changed), "--author", "maria")

    assert "update policy finance-invoices (version 2)" in out
    version = Policy.objects.get(name="finance-invoices").current_version
    assert (version.number, version.author) == (2, "maria")
    assert "-    deadline: 2h" in version.diff and "+    deadline: 3h" in version.diff


def test_requests_in_flight_keep_the_version_that_routed_them(config_file, tmp_path, agent):
    from tests.helpers import agent_client

    run("apply", "-f", str(config_file))
    bot = agent_client(agent)
    before = bot.post("/api/v1/requests", INVOICE, format="json").json()
    changed = tmp_path / "changed.yaml"
    changed.write_text(CONFIG.replace("deadline: 2h}", "deadline: 3h}", 1))
    run("apply", "-f", str(changed))

    after = bot.post("/api/v1/requests", INVOICE, format="json").json()
    still = bot.get(f"/api/v1/requests/{before['id']}").json()

    assert still["policy"]["version"] == 1 and still["levels"][1]["deadline"] == "PT2H"
    assert after["policy"]["version"] == 2 and after["levels"][1]["deadline"] == "PT3H"


def test_errors_exit_non_zero_name_the_problem_and_write_nothing(tmp_path, users):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        CONFIG
        + """
---
kind: Policy
name: broken
rules:
  - name: same-inbox
    actions: ["x.*"]
    class: internal
    levels:
      - {role: cfo, deadline: 1h}
      - {role: cfo, deadline: 1h}
"""
    )
    err = StringIO()
    with pytest.raises(CommandError, match="nothing was written"):
        call_command("apply", "-f", str(bad), stdout=StringIO(), stderr=err)

    assert "policy 'broken', rule 'same-inbox', level 2: role 'cfo' also owns level 1" in (
        err.getvalue()
    )
    assert not Role.objects.exists() and not Policy.objects.exists()


def test_malformed_yaml_is_an_error_with_its_line(tmp_path, db):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Role\nname: [unclosed\n")
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("apply", "-f", str(bad), stdout=StringIO(), stderr=err)
    assert "not valid YAML at line" in err.getvalue()


def test_a_missing_file_is_an_error(db):
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("apply", "-f", "/nonexistent.yaml", stdout=StringIO(), stderr=err)
    assert "cannot read" in err.getvalue()


def test_warnings_are_shown_and_the_change_is_written(tmp_path, users):
    path = tmp_path / "slow.yaml"
    path.write_text(CONFIG.replace("deadline: 2h}", "deadline: 30h}", 1))
    _, err = run("apply", "-f", str(path))
    assert "warning: policy 'finance-invoices', rule 'invoice-discrepancy'" in err
    assert Policy.objects.filter(name="finance-invoices").exists()


def test_membership_follows_the_file(config_file, tmp_path):
    run("apply", "-f", str(config_file))
    fewer = tmp_path / "fewer.yaml"
    fewer.write_text(CONFIG.replace("members: [maria, tom]", "members: [maria]"))

    out, _ = run("apply", "-f", str(fewer))

    assert "remove tom from role finance-manager" in out
    assert [u.username for u in Role.objects.get(name="finance-manager").members()] == ["maria"]


def test_export_then_apply_changes_nothing(config_file, tmp_path):
    run("apply", "-f", str(config_file))
    exported, _ = run("export")
    path = tmp_path / "exported.yaml"
    path.write_text(exported)

    out, _ = run("apply", "-f", str(path))

    assert out.strip() == "no changes"
    assert "kind: Policy" in exported and "members: [maria, tom]" in exported
