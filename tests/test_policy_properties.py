"""Property tests: any valid configuration survives export -> apply -> export
unchanged; any invalid one is refused and writes nothing."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.config import ConfigError, apply_documents, dump_yaml, export_documents, load_yaml
from policies.durations import format_duration, iso_duration
from policies.models import PolicyVersion

ROLES = ["alpha", "bravo", "charlie", "delta"]
CLASSES = ["internal", "urgent"]
CONDITIONS = [
    "context.amount >= 1000.0",
    'context.currency == "USD" && context.amount < 10.0',
    'action.startsWith("invoice.")',
    "size(payload) > 0",
    'has(requester.on_behalf_of) && requester.on_behalf_of != "sam"',
]
BASE = [{"kind": "Role", "name": r, "members": ["pat"]} for r in ROLES] + [
    {"kind": "ActionClass", "name": c, "sla": "1h"} for c in CLASSES
]

slugs = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
globs = st.sampled_from(["invoice.*", "refund.issue", "payment.*", "*.urgent", "compliance.*"])
seconds = st.integers(min_value=1, max_value=3 * 86400)


@st.composite
def durations(draw) -> str:
    value = draw(seconds)
    return iso_duration(value) if draw(st.booleans()) else format_duration(value)


@st.composite
def level_chains(draw) -> list[dict]:
    count = draw(st.integers(min_value=1, max_value=3))
    chain: list[dict] = []
    for _ in range(count):
        choices = [r for r in ROLES if not chain or r != chain[-1]["role"]]
        chain.append({"role": draw(st.sampled_from(choices)), "deadline": draw(durations())})
    return chain


@st.composite
def rules(draw, name: str) -> dict:
    rule = {
        "name": name,
        "actions": draw(st.lists(globs, min_size=1, max_size=3, unique=True)),
        "class": draw(st.sampled_from(CLASSES)),
        "levels": draw(level_chains()),
        "approvals": draw(st.integers(min_value=1, max_value=3)),
        "editable": draw(st.booleans()),
        "ticket": draw(st.booleans()),
    }
    if draw(st.booleans()):
        rule["when"] = draw(st.sampled_from(CONDITIONS))
    outcome = draw(st.sampled_from(["expire", "deny", "approve"]))
    rule["on_timeout"] = outcome
    if outcome == "approve":
        rule["fail_open"] = True
    if draw(st.booleans()):
        rule["remind"] = draw(durations())
    return rule


@st.composite
def policies(draw) -> list[dict]:
    names = draw(st.lists(slugs, min_size=1, max_size=3, unique=True))
    docs = []
    for name in names:
        rule_names = draw(st.lists(slugs, min_size=1, max_size=4, unique=True))
        docs.append(
            {
                "kind": "Policy",
                "name": name,
                "priority": draw(st.integers(min_value=-1000, max_value=1000)),
                "rules": [draw(rules(rule_name)) for rule_name in rule_names],
            }
        )
    return docs


def break_one(doc: dict, how: str) -> dict:
    rule = doc["rules"][0]
    if how == "no levels":
        rule["levels"] = []
    elif how == "zero deadline":
        rule["levels"][0]["deadline"] = "0s"
    elif how == "no deadline":
        del rule["levels"][0]["deadline"]
    elif how == "same role twice":
        rule["levels"] = [{"role": "alpha", "deadline": "1h"}, {"role": "alpha", "deadline": "1h"}]
    elif how == "unknown role":
        rule["levels"][0]["role"] = "nobody"
    elif how == "unknown class":
        rule["class"] = "mystery"
    elif how == "malformed duration":
        rule["levels"][0]["deadline"] = "half an hour"
    elif how == "approve without fail_open":
        rule["on_timeout"], rule["fail_open"] = "approve", False
    elif how == "bad condition":
        rule["when"] = "context.amount >="
    return doc


HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def organisation(db):
    get_user_model().objects.create_user("pat")


@HYPOTHESIS
@given(docs=policies())
def test_valid_policies_survive_export_apply_export(organisation, docs):
    with transaction.atomic():
        apply_documents(BASE + docs, author="hypothesis")
        exported = dump_yaml(export_documents())

        again = apply_documents(load_yaml(exported), author="hypothesis")

        assert again.changes == []
        assert dump_yaml(export_documents()) == exported
        transaction.set_rollback(True)


BREAKAGES = [
    "no levels", "zero deadline", "no deadline", "same role twice", "unknown role",
    "unknown class", "malformed duration", "approve without fail_open", "bad condition",
]  # fmt: skip


@HYPOTHESIS
@given(docs=policies(), how=st.sampled_from(BREAKAGES))
def test_invalid_policies_are_refused_and_nothing_is_written(organisation, docs, how):
    with transaction.atomic():
        apply_documents(BASE + docs, author="hypothesis")
        before = dump_yaml(export_documents()), PolicyVersion.objects.count()
        changed = [*docs[1:], break_one({**docs[0], "priority": docs[0]["priority"] + 1}, how)]

        with pytest.raises(ConfigError) as refused:
            apply_documents(changed, author="hypothesis")

        assert refused.value.errors
        assert (dump_yaml(export_documents()), PolicyVersion.objects.count()) == before
        transaction.set_rollback(True)
