"""Time to route a request through 100 rules, most with CEL conditions.

    .venv/bin/python bench/policy_match.py [--requests 5000]

Ten policies of ten rules; nine rules in ten carry a condition. Requests are
spread so that some match early, some late, and some fall through to the last
rule: the worst case walks all 100 rules. Prints p50/p99 in milliseconds
(goal: p99 under 1 ms), with and without the database round trip.
"""

from __future__ import annotations

import argparse
import random
import time

from _django import percentiles, setup


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    setup()

    from django.contrib.auth import get_user_model

    from policies.conditions import Activation
    from policies.config import apply_documents
    from policies.matching import current_versions, matches, route

    get_user_model().objects.create_user("reviewer")
    docs = [
        {"kind": "Role", "name": "first", "members": ["reviewer"]},
        {"kind": "Role", "name": "second", "members": ["reviewer"]},
        {"kind": "ActionClass", "name": "internal", "sla": "2h"},
    ]
    for p in range(10):
        rules = []
        for r in range(10):
            rule = {
                "name": f"rule-{r}",
                "actions": [f"domain{p}.*", "shared.*"],
                "class": "internal",
                "levels": [
                    {"role": "first", "deadline": "30m"},
                    {"role": "second", "deadline": "1h"},
                ],
            }
            if p == 9 and r == 9:
                rule["actions"] = ["*"]  # the catch-all: the worst case walks every rule
            else:
                rule["when"] = (
                    f'context.amount >= {1000.0 * (p * 10 + r)} && context.currency == "USD" '
                    f'&& context.region == "r{r}"'
                )
            rules.append(rule)
        docs.append({"kind": "Policy", "name": f"policy-{p}", "priority": p, "rules": rules})
    apply_documents(docs, author="bench")

    rng = random.Random(7)
    requests = [
        {
            "action": rng.choice(["shared.pay", f"domain{rng.randrange(10)}.pay"]),
            "context": {
                "amount": rng.uniform(0, 100_000),
                "currency": rng.choice(["USD", "EUR"]),
                "region": f"r{rng.randrange(12)}",
            },
        }
        for _ in range(args.requests)
    ]
    route(action="shared.pay", context={}, payload={}, agent="b", requester={})  # warm caches

    with_db, rules_only = [], []
    versions = current_versions()
    for req in requests:
        start = time.perf_counter()
        found = route(
            action=req["action"], context=req["context"], payload={}, agent="b", requester={}
        )
        with_db.append((time.perf_counter() - start) * 1000)
        assert found is not None
        activation = Activation({**req, "payload": {}, "agent": {"name": "b"}, "requester": {}})
        start = time.perf_counter()
        next(
            rule
            for version in versions
            for rule in version.spec["rules"]
            if matches(rule, activation, where="bench")
        )
        rules_only.append((time.perf_counter() - start) * 1000)

    for label, samples in (("route() incl. DB query", with_db), ("rule walk only", rules_only)):
        stats = percentiles(samples)
        print(
            f"{label:24s} requests={len(samples)} p50={stats['p50']:.3f} ms "
            f"p99={stats['p99']:.3f} ms max={stats['max']:.3f} ms"
        )


if __name__ == "__main__":
    main()
