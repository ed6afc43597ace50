"""The audit trail: append-only events, chained by HMAC.

Each request's events form a chain: each event's hash is an HMAC, keyed with
``AUDIT_KEY`` (kept outside the database), over its content and the previous
event's hash; the request row keeps the head of its chain. Configuration
changes (policies, role membership, agents and their credentials) form one
more chain of events that belong to no request.

What protects what:

- the database refuses UPDATE and DELETE on audit events (a trigger, see the
  migration), so changing history needs the database owner's rights;
- whoever has those rights still cannot rewrite an event without the key: the
  HMAC no longer matches;
- deleting a whole request with its events no longer adds up to its seal:
  every minute beat seals the requests created in a window old enough that
  no create can still be open in it (their count and a digest of their ids,
  chained by HMAC), without any lock that creates would wait on;
- each request row is compared with its chain (status, decision, payloads).

What the database alone cannot show: requests deleted before their window is
sealed, and history truncated at its newest end together with the heads.
``verify_audit`` prints the heads; an operator who records them elsewhere from
time to time anchors the trail up to then.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals.canonical import canonical_json, sha256_hex
from approvals.models import (
    TERMINAL,
    ApprovalRequest,
    AuditEvent,
    AuditHead,
    AuditKind,
    AuditSeal,
)
from policies.models import AnyUser

CONFIG_CHAIN = "config"
SEAL_CHAIN = "seals"


def created(request: ApprovalRequest, *, actor: dict) -> AuditEvent:
    """The first event of a new request's chain, hashed but not saved, and
    the request's head set to it: the request row is INSERTed with its head
    already in place, so nothing has to lock, read back or UPDATE it (no one
    else can see the row before the transaction that inserts both commits)."""
    if request.audit_seq or request.audit_head:
        raise ValueError(f"request {request.pk} already has a chain")
    event = prepare(
        request, AuditKind.CREATED, actor=actor, data=_created_data(request), after=(0, "")
    )
    request.audit_seq, request.audit_head = event.seq, event.hash
    return event


def _created_data(request: ApprovalRequest) -> dict:
    """What the ``created`` event pins: the body as received, so the row can
    be checked against it."""
    return {
        "body_sha256": request.body_sha256,
        "payload_sha256": sha256_hex(request.payload),
        "requester_sha256": sha256_hex(request.requester),
        "on_behalf_of_user": request.on_behalf_of_user_id,
    }


def _advance(name: str) -> tuple[int, str]:
    """Take the next number of chain ``name``: returns (seq, previous head).

    The row lock is held until the caller's transaction commits: only
    configuration changes and the seals take it, never a request's events.
    """
    row = AuditHead.objects.select_for_update().filter(name=name).first()
    if row is None:  # the first event ever (or a flushed test database)
        AuditHead.objects.bulk_create([AuditHead(name=name)], ignore_conflicts=True)
        row = AuditHead.objects.select_for_update().get(name=name)
    row.seq += 1
    AuditHead.objects.filter(name=name).update(seq=row.seq)
    return row.seq, row.head


def prepare(
    request: ApprovalRequest,
    kind: str,
    *,
    actor: dict,
    data: dict | None = None,
    after: tuple[int, str] | None = None,
    at: datetime | None = None,
    role: str | None = None,
    level: int | None = None,
) -> AuditEvent:
    """The next event of the chain, hashed but not saved.

    ``after`` is the chain head (seq, hash) it follows, by default the one on
    ``request``. A caller that writes the new head in its own conditional
    UPDATE, guarded by ``audit_seq`` (approvals.transitions), saves a locking
    read and a write. ``role`` and ``level`` default to the request's owner
    and level; a caller passes the ones it is about to write, leaving
    ``request`` as it is until its UPDATE has won.
    """
    seq, prev_hash = after if after is not None else (request.audit_seq, request.audit_head)
    event = AuditEvent(
        request_id=request.pk,
        seq=seq + 1,
        kind=kind,
        at=at or timezone.now(),
        actor=actor,
        role=request.owner_role.name if role is None else role,
        level=request.level if level is None else level,
        data=data or {},
        prev_hash=prev_hash,
        **_business_context(request),
    )
    event.hash = event_hash(event)
    return event


def _business_context(request: ApprovalRequest) -> dict:
    """What every event of a request carries of it (and its hash covers)."""
    version = request.policy_version
    return {
        "policy": version.policy.name,
        "policy_version": version.number,
        "rule": request.rule_name,
        "action": request.action,
        "summary": request.summary,
        "context": request.context,
    }


def record_config(
    kind: AuditKind,
    *,
    actor: dict,
    summary: str,
    data: dict | None = None,
    policy: str = "",
    policy_version: int = 0,
    role: str = "",
) -> AuditEvent:
    """Append a configuration change (who changed what) to the config chain."""
    with transaction.atomic():
        seq, prev_hash = _advance(CONFIG_CHAIN)
        event = AuditEvent(
            request_id=None,
            seq=seq,
            kind=kind,
            at=timezone.now(),
            actor=actor,
            role=role,
            level=0,
            policy=policy,
            policy_version=policy_version,
            rule="",
            action="",
            summary=summary[:500],
            context={},
            data=data or {},
            prev_hash=prev_hash,
        )
        event.hash = event_hash(event)
        event.save(force_insert=True)
        AuditHead.objects.filter(name=CONFIG_CHAIN).update(head=event.hash)
    return event


def seal(now: datetime | None = None) -> AuditSeal | None:
    """Seal the requests created since the last seal, up to ``AUDIT_SEAL_LAG_SECONDS``
    ago (older than any create still open); None when there is nothing new."""
    now = now or timezone.now()
    upto = now - timedelta(seconds=settings.AUDIT_SEAL_LAG_SECONDS)
    with transaction.atomic():
        seq, prev_hash = _advance(SEAL_CHAIN)  # one sealer at a time
        last = AuditSeal.objects.order_by("-seq").first()
        since = last.upto if last else None
        if since is not None and upto <= since:
            transaction.set_rollback(True)
            return None
        count, digest = window_digest(since, upto)
        if count == 0:  # nothing to seal: the next seal's window starts where this one did
            transaction.set_rollback(True)
            return None
        sealed = AuditSeal(
            seq=seq, at=now, since=since, upto=upto, requests=count, digest=digest,
            prev_hash=prev_hash,
        )  # fmt: skip
        sealed.hash = seal_hash(sealed)
        sealed.save(force_insert=True)
        AuditHead.objects.filter(name=SEAL_CHAIN).update(head=sealed.hash)
    return sealed


def window_digest(since: datetime | None, upto: datetime) -> tuple[int, str]:
    """How many requests have a ``created`` event in (since, upto], and a
    digest of their ids (read through the events' time index)."""
    created = AuditEvent.objects.filter(
        kind=AuditEvent.Kind.CREATED, request__isnull=False, at__lte=upto
    )
    if since is not None:
        created = created.filter(at__gt=since)
    digest, count = hashlib.sha256(), 0
    for request_id in created.order_by("request_id").values_list("request_id", flat=True):
        digest.update(f"{request_id}\n".encode())
        count += 1
    return count, digest.hexdigest()


def seal_hash(sealed: AuditSeal, key: bytes | None = None) -> str:
    content = {
        "seq": sealed.seq,
        "at": sealed.at.astimezone(UTC).isoformat(),
        "since": sealed.since.astimezone(UTC).isoformat() if sealed.since else None,
        "upto": sealed.upto.astimezone(UTC).isoformat(),
        "requests": sealed.requests,
        "digest": sealed.digest,
        "prev_hash": sealed.prev_hash,
    }
    return hmac.new(key or audit_key(), canonical_json(content), hashlib.sha256).hexdigest()


def user_actor(user: AnyUser) -> dict:
    return {"user": user.get_username()}


def cli_actor(command: str) -> dict:
    """Who ran a management command: the command and the operating-system user."""
    import getpass

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return {"system": f"manage.py {command}", "os_user": who}


def audit_key() -> bytes:
    """The chain's HMAC key: ``AUDIT_KEY``, else one derived from SECRET_KEY
    (both live outside the database; see the README's security section)."""
    key = settings.AUDIT_KEY
    if key:
        return key.encode()
    return hmac.new(settings.SECRET_KEY.encode(), b"countersign audit chain", "sha256").digest()


def event_hash(event: AuditEvent, key: bytes | None = None) -> str:
    return _digest(
        key or audit_key(),
        request=str(event.request_id) if event.request_id else "",
        seq=event.seq,
        kind=event.kind,
        at=event.at,
        actor=event.actor,
        role=event.role,
        level=event.level,
        policy=event.policy,
        policy_version=event.policy_version,
        rule=event.rule,
        action=event.action,
        summary=event.summary,
        context=event.context,
        data=event.data,
        prev_hash=event.prev_hash,
    )


def _digest(key: bytes, *, at: datetime, **content: object) -> str:
    """The HMAC of one event's content: the one definition of what an event's
    hash covers (``event_hash``, ``link``)."""
    content["at"] = at.astimezone(UTC).isoformat()
    return hmac.new(key, canonical_json(content), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Link:
    """The next event's place in a request's chain: for a caller that writes
    the events itself, many in one statement (escalation.escalate_many)."""

    seq: int
    prev_hash: str
    hash: str


def link(
    request: ApprovalRequest,
    kind: str,
    *,
    actor: dict,
    at: datetime,
    data: dict,
    role: str,
    level: int,
    key: bytes,
) -> Link:
    """What ``prepare`` computes, without building the event: the same hash,
    about a third cheaper, which counts in a burst of ten thousand."""
    seq, prev_hash = request.audit_seq + 1, request.audit_head
    digest = _digest(
        key,
        request=str(request.pk),
        seq=seq,
        kind=kind,
        at=at,
        actor=actor,
        role=role,
        level=level,
        data=data,
        prev_hash=prev_hash,
        **_business_context(request),
    )
    return Link(seq, prev_hash, digest)


@dataclass(frozen=True)
class Breach:
    request_id: str
    seq: int | None
    problem: str


@dataclass
class Summary:
    events: int = 0
    requests: int = 0
    config_events: int = 0
    config_head: str = ""
    seals: int = 0
    sealed_upto: datetime | None = None
    seal_head: str = ""


def verify(summary: Summary | None = None) -> Iterator[Breach]:
    """Yield every place where the audit trail does not hold: a chain broken,
    a request row that disagrees with its chain, a request missing."""
    summary = summary if summary is not None else Summary()
    key = audit_key()
    for request, events in _requests_with_events():
        summary.requests += 1
        summary.events += len(events)
        breach = _check_chain(str(request.pk), events, key, (request.audit_seq, request.audit_head))
        breach = breach or _check_row(request, events)
        if breach is not None:
            yield breach
    breach = _check_seals(key, summary)
    if breach is not None:
        yield breach
    config = list(AuditEvent.objects.filter(request__isnull=True).order_by("seq"))
    summary.events += len(config)
    summary.config_events = len(config)
    head = AuditHead.objects.filter(name=CONFIG_CHAIN).first()
    summary.config_head = head.head if head else ""
    breach = _check_chain(
        "(configuration)", config, key, (head.seq, head.head) if head else (0, "")
    )
    if breach is not None:
        yield breach


def _requests_with_events(batch: int = 500) -> Iterator[tuple[ApprovalRequest, list[AuditEvent]]]:
    """Every request with its events, a batch of requests per query (memory
    stays bounded by the batch, not the trail)."""
    requests = ApprovalRequest.objects.select_related("owner_role").order_by("created_at", "id")
    chunk: list[ApprovalRequest] = []
    for request in requests.iterator(chunk_size=batch):
        chunk.append(request)
        if len(chunk) == batch:
            yield from _with_events(chunk)
            chunk = []
    yield from _with_events(chunk)


def _with_events(
    chunk: list[ApprovalRequest],
) -> Iterator[tuple[ApprovalRequest, list[AuditEvent]]]:
    events: dict = {request.pk: [] for request in chunk}
    rows = AuditEvent.objects.filter(request_id__in=list(events)).order_by("request_id", "seq")
    for event in rows:
        events[event.request_id].append(event)
    for request in chunk:
        yield request, events[request.pk]


def _check_seals(key: bytes, summary: Summary) -> Breach | None:
    """Each seal's window must still hold the requests it sealed, and only them."""
    previous, expected_seq, last = "", 1, None
    for sealed in AuditSeal.objects.order_by("seq").iterator(chunk_size=500):
        name = "(seals)"
        if sealed.seq != expected_seq:
            return Breach(name, expected_seq, "seal missing from the chain")
        if sealed.prev_hash != previous:
            return Breach(name, sealed.seq, "seal does not follow the previous one")
        if not hmac.compare_digest(seal_hash(sealed, key), sealed.hash):
            return Breach(name, sealed.seq, "seal altered after it was written")
        count, digest = window_digest(sealed.since, sealed.upto)
        ids = AuditEvent.objects.filter(
            kind=AuditEvent.Kind.CREATED, request__isnull=False, at__lte=sealed.upto
        )
        if sealed.since is not None:
            ids = ids.filter(at__gt=sealed.since)
        rows = ApprovalRequest.objects.filter(pk__in=ids.values("request_id")).count()
        if (count, digest) != (sealed.requests, sealed.digest) or rows != count:
            return Breach(
                name,
                sealed.seq,
                f"the requests created up to {sealed.upto.isoformat()} do not match their seal "
                f"({sealed.requests} sealed, {rows} there now): deleted or added",
            )
        previous, expected_seq, last = sealed.hash, expected_seq + 1, sealed
    head = AuditHead.objects.filter(name=SEAL_CHAIN).first()
    if (expected_seq - 1, previous) != ((head.seq, head.head) if head else (0, "")):
        return Breach("(seals)", expected_seq - 1 or None, "latest seal(s) missing")
    summary.seals = expected_seq - 1
    summary.sealed_upto = last.upto if last else None
    summary.seal_head = previous
    return None


def _check_chain(
    name: str, events: list[AuditEvent], key: bytes, head: tuple[int, str]
) -> Breach | None:
    previous, expected_seq = "", 1
    for event in events:
        if event.seq != expected_seq:
            return Breach(name, expected_seq, "event missing from the chain")
        if event.prev_hash != previous:
            return Breach(name, event.seq, "does not follow the previous event")
        if not hmac.compare_digest(event_hash(event, key), event.hash):
            return Breach(name, event.seq, "content altered after it was written")
        previous, expected_seq = event.hash, expected_seq + 1
    if (expected_seq - 1, previous) != head:
        return Breach(name, head[0] or None, "latest event(s) missing from the chain")
    return None


def _check_row(request: ApprovalRequest, events: list[AuditEvent]) -> Breach | None:
    """The request row must say what its chain says."""
    name = str(request.pk)
    if not events or events[0].kind != AuditEvent.Kind.CREATED:
        return Breach(name, 1, "the chain does not start with its created event")
    created = events[0]
    if (created.action, created.summary, created.context) != (
        request.action,
        request.summary,
        request.context,
    ):
        return Breach(name, 1, "the request's action, summary or context differ from its chain")
    expected = {
        "body_sha256": request.body_sha256,
        "payload_sha256": sha256_hex(request.payload),
        "requester_sha256": sha256_hex(request.requester),
        "on_behalf_of_user": request.on_behalf_of_user_id,
    }
    if any(created.data.get(field) != value for field, value in expected.items()):
        return Breach(name, 1, "the request's body or payload differ from its created event")
    last = events[-1]
    if (last.role, last.level) != (request.owner_role.name, request.level):
        return Breach(name, last.seq, "the request's owner or level differ from its chain")
    ends = [event for event in events if event.kind in TERMINAL]
    if not ends:
        if request.status not in TERMINAL:
            return None
        return Breach(name, None, f"the request is {request.status} but its chain never ended")
    end = ends[-1]
    payload_ok = request.decision_payload is None or (
        sha256_hex(request.decision_payload) == request.decision_payload_sha256
    )
    if (
        len(ends) > 1
        or end.kind != request.status
        or end.data.get("by") != request.decided_by
        or end.data.get("reason") != request.decision_reason
        or end.data.get("payload_sha256", "") != request.decision_payload_sha256
        or not payload_ok
    ):
        return Breach(name, end.seq, "the request's status or decision differ from its chain")
    return None
