"""Agent credentials: API keys (shown once, stored as prefix + hash) and
callback signing secrets in the Standard Webhooks format (``whsec_…``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "cs"  # agents' API keys
TOKEN_PREFIX = "csr"  # reviewers' API tokens (approvals.tokens)
PREFIX_LENGTH = 12


@dataclass(frozen=True)
class IssuedKey:
    key: str  # the whole key: given to the agent once, never stored
    prefix: str  # stored in clear, to find the agent
    hashed: str  # stored: SHA-256 of the key


def issue_api_key(kind: str = KEY_PREFIX) -> IssuedKey:
    """A key like ``cs_3kq9x0c1pz2a_…``: visible prefix for lookup, 256 random bits."""
    prefix = secrets.token_hex(PREFIX_LENGTH // 2)
    key = f"{kind}_{prefix}_{secrets.token_urlsafe(32)}"
    return IssuedKey(key=key, prefix=prefix, hashed=hash_key(key))


def hash_key(key: str) -> str:
    # A fast hash is right here: the key has 256 bits of entropy, so there is
    # nothing for a slow password hash to protect against.
    return hashlib.sha256(key.encode()).hexdigest()


def split_prefix(key: str, kind: str = KEY_PREFIX) -> str | None:
    parts = key.split("_", 2)  # the random part may itself contain "_"
    if len(parts) != 3 or parts[0] != kind or len(parts[1]) != PREFIX_LENGTH:
        return None
    return parts[1]


def key_matches(key: str, hashed: str) -> bool:
    return hmac.compare_digest(hash_key(key), hashed)


def issue_signing_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
