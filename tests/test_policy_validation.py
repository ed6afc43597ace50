"""The validator that serves apply, the admin and the API: errors and warnings."""

from __future__ import annotations

import pytest

from policies.config import current_catalog, save_policy_version
from policies.durations import DurationError, format_duration, iso_duration, parse_duration
from policies.spec import Catalog, rule_document, validate_documents, validate_rule

CATALOG = Catalog(
    roles={"finance-manager": 2, "cfo": 1, "empty-role": 0},
    classes={"internal"},
    users={"maria"},
)


def policy(**rule_overrides) -> dict:
    rule = {
        "name": "invoice-discrepancy",
        "actions": ["invoice.discrepancy"],
        "class": "internal",
        "levels": [
            {"role": "finance-manager", "deadline": "30m"},
            {"role": "cfo", "deadline": "2h"},
        ],
        **rule_overrides,
    }
    return {"kind": "Policy", "name": "finance-invoices", "rules": [rule]}


def errors_of(*docs) -> list[str]:
    return validate_documents(list(docs), CATALOG).errors


def warnings_of(*docs) -> list[str]:
    report = validate_documents(list(docs), CATALOG)
    assert report.ok, report.errors
    return report.warnings


def test_a_valid_policy_is_normalized():
    report = validate_documents([policy(remind="10m")], CATALOG)
    assert report.ok
    [doc] = report.policies
    assert doc["spec"]["priority"] == 100
    assert doc["spec"]["rules"][0]["levels"] == [
        {"role": "finance-manager", "deadline": 1800},
        {"role": "cfo", "deadline": 7200},
    ]
    assert doc["spec"]["rules"][0]["remind"] == 600
    assert doc["spec"]["rules"][0]["on_timeout"] == "expire"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"levels": []}, "needs at least one level"),
        ({"levels": [{"role": "finance-manager"}]}, "level 1: needs a deadline"),
        ({"levels": [{"role": "finance-manager", "deadline": "0s"}]}, "longer than zero"),
        ({"levels": [{"role": "finance-manager", "deadline": "soon"}]}, "is not a duration"),
        ({"levels": [{"role": "finance-manager", "deadline": 30}]}, "is not a duration"),
        (
            {
                "levels": [
                    {"role": "finance-manager", "deadline": "30m"},
                    {"role": "finance-manager", "deadline": "2h"},
                ]
            },
            "level 2: role 'finance-manager' also owns level 1",
        ),
        ({"levels": [{"role": "ghost", "deadline": "1h"}]}, "unknown role 'ghost'"),
        ({"class": "urgent"}, "unknown action class 'urgent'"),
        ({"on_timeout": "approve"}, "set fail_open: true"),
        ({"on_timeout": "shrug"}, "must be expire, deny or approve"),
        ({"when": "context.amount >= "}, "does not compile at line 1, column"),
        ({"when": "secrets.key == 1"}, "unknown name(s) secrets"),
        ({"when": "x" * 1001}, "the limit is 1000"),
        ({"approvals": 0}, "approvals must be a whole number of at least 1"),
        ({"actions": []}, "'actions' needs a non-empty list"),
        ({"actions": ["Invoice.*"]}, "may use only"),
        ({"remind": "later"}, "remind: 'later' is not a duration"),
        ({"escalate": True}, "unknown field(s) escalate"),
    ],
)
def test_errors_name_the_policy_rule_and_what_to_change(overrides, message):
    errors = errors_of(policy(**overrides))
    assert any(message in error for error in errors), errors
    assert all(error.startswith("policy 'finance-invoices'") for error in errors)


def test_on_timeout_approve_is_allowed_when_failing_open_deliberately():
    assert not errors_of(policy(on_timeout="approve", fail_open=True))


def test_references_may_point_within_the_same_change():
    docs = [
        {"kind": "Role", "name": "auditor", "members": ["maria"]},
        {"kind": "ActionClass", "name": "audit", "sla": "1h"},
        policy(**{"class": "audit", "levels": [{"role": "auditor", "deadline": "1h"}]}),
    ]
    assert not errors_of(*docs)


def test_a_role_member_must_be_an_existing_user():
    errors = errors_of({"kind": "Role", "name": "auditor", "members": ["nobody"]})
    assert errors == ["role 'auditor': no user named nobody; create the user(s) first"]


def test_unknown_kinds_and_bad_names_are_errors():
    assert "unknown kind 'Team'" in errors_of({"kind": "Team", "name": "x"})[0]
    assert "must be a slug" in errors_of({"kind": "Role", "name": "Finance Team"})[0]


def test_a_document_defined_twice_is_an_error():
    role = {"kind": "Role", "name": "auditor"}
    assert "defined twice" in errors_of(role, role)[0]


class TestWarnings:
    def test_a_chain_over_24_hours(self):
        levels = [{"role": "finance-manager", "deadline": "20h"}, {"role": "cfo", "deadline": "5h"}]
        assert any("longer than 24h" in w for w in warnings_of(policy(levels=levels)))

    def test_more_than_two_levels(self):
        levels = [
            {"role": "finance-manager", "deadline": "1h"},
            {"role": "cfo", "deadline": "1h"},
            {"role": "finance-manager", "deadline": "1h"},
        ]
        assert any("3 levels" in w for w in warnings_of(policy(levels=levels)))

    def test_a_deadline_under_a_minute(self):
        levels = [{"role": "finance-manager", "deadline": "30s"}]
        assert any("under a minute" in w for w in warnings_of(policy(levels=levels)))

    def test_a_role_with_no_members(self):
        levels = [{"role": "empty-role", "deadline": "1h"}]
        assert any("'empty-role' has no members" in w for w in warnings_of(policy(levels=levels)))

    def test_a_rule_shadowed_by_one_that_always_matches(self):
        doc = policy()
        doc["rules"].append({**doc["rules"][0], "name": "never-reached"})
        [warning] = warnings_of(doc)
        assert "rule 'never-reached' can never match" in warning

    def test_a_rule_behind_a_conditional_one_is_not_shadowed(self):
        doc = policy(when="context.amount > 1000.0")
        doc["rules"].append({**doc["rules"][0], "name": "fallback", "when": None})
        assert warnings_of(doc) == []

    def test_a_sound_policy_has_none(self):
        assert warnings_of(policy()) == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("PT30M", 1800), ("P1D", 86400)],
)
def test_durations_parse_in_both_notations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "m", "PT", "1x", "-5m", "P", "1.5h"])
def test_malformed_durations_are_refused(text):
    with pytest.raises(DurationError):
        parse_duration(text)


def test_durations_format_back_compactly_and_in_iso():
    assert [format_duration(s) for s in (90, 1800, 5400, 86400)] == ["1m30s", "30m", "1h30m", "24h"]
    assert [iso_duration(s) for s in (1800, 7200, 90, 86400)] == ["PT30M", "PT2H", "PT1M30S", "P1D"]


@pytest.mark.parametrize(
    "overrides",
    [{}, {"when": "context.amount > 10", "remind": "10m"}, {"on_timeout": "deny", "ticket": True}],
)
def test_a_spec_turned_back_into_its_document_validates_to_the_same_spec(overrides):
    """One conversion each way: document -> spec (validate_rule), spec -> document."""
    [doc] = validate_documents([policy(**overrides)], CATALOG).policies
    [rule] = doc["spec"]["rules"]
    again, problems = validate_rule(rule_document(rule), set(CATALOG.roles), CATALOG.classes)
    assert problems == {} and again == rule


def test_save_policy_version_returns_the_new_versions_warnings(config):
    [doc] = validate_documents(
        [policy(levels=[{"role": "cfo", "deadline": "30s"}])],
        current_catalog([policy()]),
    ).policies
    saved = save_policy_version("finance-invoices", doc["spec"], author="tests")
    assert saved.version is not None
    assert any("deadline under a minute" in w for w in saved.warnings)
    assert any("a single level" in w for w in saved.warnings)
    unchanged = save_policy_version("finance-invoices", doc["spec"], author="tests")
    assert unchanged == (None, [])
