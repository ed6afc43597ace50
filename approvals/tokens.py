"""Reviewers' API tokens: shown once, stored as prefix + SHA-256, with an
expiry and revocation (the same scheme as agents' keys, see approvals.keys)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from approvals.keys import TOKEN_PREFIX, issue_api_key, key_matches, split_prefix
from approvals.models import ReviewerToken


def issue_token(user: User, *, days: float | None = None, replace: bool = False) -> str:
    """A new token for ``user``; with ``replace`` their other tokens stop working."""
    lifetime = settings.APPROVALS_TOKEN_DAYS if days is None else days
    issued = issue_api_key(TOKEN_PREFIX)
    now = timezone.now()
    with transaction.atomic():
        if replace:
            revoke_tokens(user)
        ReviewerToken.objects.create(
            user=user,
            prefix=issued.prefix,
            key_hash=issued.hashed,
            created_at=now,
            expires_at=now + timedelta(days=lifetime),
        )
    return issued.key


def revoke_tokens(user: User) -> int:
    """End every live token of ``user``; returns how many."""
    return ReviewerToken.objects.filter(user=user, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )


def user_for_token(key: str) -> User | None:
    """The active user a live token belongs to, or None."""
    prefix = split_prefix(key, TOKEN_PREFIX)
    if prefix is None:
        return None
    token = (
        ReviewerToken.objects.select_related("user")
        .filter(prefix=prefix, revoked_at__isnull=True, expires_at__gt=timezone.now())
        .first()
    )
    # Compare even when nothing was found, so timing says nothing about prefixes.
    if not key_matches(key, token.key_hash if token else "0" * 64) or token is None:
        return None
    return token.user if token.user.is_active else None
