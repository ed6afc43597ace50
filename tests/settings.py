"""Test settings: the real settings, with the suite's defaults for services.

The suite runs on PostgreSQL (concurrency and locking must be real); point
DATABASE_URL elsewhere to override.
"""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/countersign")
os.environ.setdefault("APPROVALS_ALLOW_PRIVATE_CALLBACKS", "true")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")

from approvals_site.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
