"""Settings for Countersign: one file, driven by the environment.

Safe local defaults (SQLite under ``var/``, an embedded broker, a generated
secret key kept under ``var/``) so that a fresh checkout runs with nothing
installed; ``DATABASE_URL`` and ``REDIS_URL`` switch to PostgreSQL and Redis.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from approvals import lanes
from approvals_site import db_pool
from approvals_site.env import env_bool, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("APPROVALS_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _local_secret_key() -> str:
    # Generated once per checkout so sessions survive restarts without anyone
    # having to invent a key for a local run; production sets SECRET_KEY.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        # The web and the workers of a first start all get here at once: each
        # writes a key aside and the first to link its file in place wins, so
        # nobody reads a file half written, and all agree on one key (the
        # audit chain's key is derived from it).
        fd, aside = tempfile.mkstemp(dir=VAR_DIR, prefix=".secret_key.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(50))
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
        finally:
            os.unlink(aside)
    return path.read_text().strip()


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "") or _local_secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "django_htmx",
    "template_partials",
    "policies",
    "approvals",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "approvals.api.middleware.StaticFilesMiddleware",
    "approvals.api.middleware.ApiBodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lockout into its 429 page
]

ROOT_URLCONF = "approvals_site.urls"
WSGI_APPLICATION = "approvals_site.wsgi.application"
ASGI_APPLICATION = "approvals_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'countersign.sqlite3'}"),
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A pool of connections per process (psycopg_pool, through Django): without
    # it every request and every task opened a connection of its own, which
    # PostgreSQL pays for by forking a backend; that was about a fifth of the
    # web's CPU under load. A pool is opened lazily, so a forking parent
    # (Celery's prefork, gunicorn) never shares one with its children.
    # DATABASE_POOL_MAX_SIZE bounds one process's connections; a request that
    # finds them all busy waits up to DATABASE_POOL_TIMEOUT seconds for one.
    _pool_size = int(env_str("DATABASE_POOL_MAX_SIZE", "10"))
    if _pool_size > 0:
        DATABASES["default"]["OPTIONS"] = {
            "pool": {
                "min_size": 1,
                "max_size": _pool_size,
                "timeout": float(env_str("DATABASE_POOL_TIMEOUT", "10")),
                # Idle connections beyond min_size are closed after this long.
                "max_idle": 300.0,
                "reset": db_pool.reset,
            }
        }
        # A connection handed out is checked first: after PostgreSQL restarts,
        # the pool replaces dead connections instead of failing a request.
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE makes every atomic() take SQLite's write lock up front, so two
    # writers queue instead of failing with "database is locked" mid-transaction.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "approvals_site.auth.LockoutBackend",  # first: a locked-out login goes no further
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
# guardian: no implicit "anonymous user" row; anonymous visitors have no permissions.
ANONYMOUS_USER_NAME = None
GUARDIAN_RAISE_403 = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Security: TLS and login lockout (README, Security) ----------------------------

# Behind TLS (a proxy that terminates it and sets X-Forwarded-Proto): cookies
# only over https, HSTS, plain http redirected. The proxy must overwrite any
# X-Forwarded-Proto a client sends, or a client could claim https.
HTTPS = env_bool("HTTPS", False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(env_str("HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# django-axes: after LOGIN_FAILURE_LIMIT failed logins for one username from
# one address, that pair is refused for LOGIN_LOCKOUT_MINUTES (site and admin).
AXES_FAILURE_LIMIT = int(env_str("LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = float(env_str("LOGIN_LOCKOUT_MINUTES", "15")) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every start without it
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# The agent API accepts bodies up to 256 KiB (README, Guarantees).
APPROVALS_MAX_BODY_BYTES = 256 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = APPROVALS_MAX_BODY_BYTES
APPROVALS_MAX_JSON_DEPTH = 32
APPROVALS_MAX_WAIT_SECONDS = 60
# Limits (README, Configuration); an agent's own rate_limit / max_waits override them.
APPROVALS_AGENT_RATE_LIMIT = env_str("APPROVALS_AGENT_RATE_LIMIT", "600/min")
APPROVALS_AGENT_MAX_WAITS = int(env_str("APPROVALS_AGENT_MAX_WAITS", "100"))
APPROVALS_REVIEWER_RATE_LIMIT = env_str("APPROVALS_REVIEWER_RATE_LIMIT", "300/min")
for _name in ("APPROVALS_AGENT_RATE_LIMIT", "APPROVALS_REVIEWER_RATE_LIMIT"):
    if not re.fullmatch(r"[1-9]\d{0,8}/(s|sec|second|m|min|minute|h|hour|d|day)", globals()[_name]):
        raise ImproperlyConfigured(f"{_name} must be a rate like 120/min (per s, min, h or day).")
# Threads per web process for the database work of waits (the waiting holds none).
APPROVALS_WAIT_THREADS = int(env_str("APPROVALS_WAIT_THREADS", "4"))
APPROVALS_ALLOW_PRIVATE_CALLBACKS = env_bool("APPROVALS_ALLOW_PRIVATE_CALLBACKS", False)

# The audit chain's HMAC key (approvals.audit). Keep it apart from the database
# and its backups: whoever holds both could rewrite history undetected. Unset,
# a key derived from SECRET_KEY is used, so changing SECRET_KEY then makes
# verify_audit report every event: production sets AUDIT_KEY (README, Security).
AUDIT_KEY = env_str("AUDIT_KEY", "")
# Beat seals the requests created up to AUDIT_SEAL_LAG_SECONDS ago (longer than
# any create transaction) every AUDIT_SEAL_SECONDS; see approvals.audit.seal.
AUDIT_SEAL_SECONDS = float(env_str("AUDIT_SEAL_SECONDS", "60"))
AUDIT_SEAL_LAG_SECONDS = float(env_str("AUDIT_SEAL_LAG_SECONDS", "300"))

# Reviewers' API tokens (approvals.tokens) expire after this many days.
APPROVALS_TOKEN_DAYS = float(env_str("APPROVALS_TOKEN_DAYS", "90"))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["approvals.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "approvals.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Countersign API",
    "DESCRIPTION": "Human approvals for AI agents: requests, decisions, escalation, callbacks.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {"RequestStatus": "approvals.models.Status"},
}

# The bearer token /metrics requires; unset, /metrics answers 404.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")

# --- Celery: the escalation engine and the outboxes -------------------------------

REDIS_URL = env_str("REDIS_URL", "")
APPROVALS_SWEEP_SECONDS = float(env_str("APPROVALS_SWEEP_SECONDS", "1"))
# Precise timers for deadlines this close (seconds); 0 leaves it all to the sweep.
APPROVALS_TIMER_LOOKAHEAD_SECONDS = float(env_str("APPROVALS_TIMER_LOOKAHEAD_SECONDS", "60"))
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object]
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
else:
    # Embedded broker: queues are folders under var/broker, shared by the web
    # process, the worker and beat on this machine.
    _broker = VAR_DIR / "broker"
    for _folder in ("out", "control"):
        (_broker / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker / "out"),
        "data_folder_out": str(_broker / "out"),
        "control_folder": str(_broker / "control"),
        "store_processed": False,
    }
# Three lanes (approvals/lanes.py): a worker consumes all of them unless told
# otherwise (-Q engine, -Q notifications, -Q callbacks).
CELERY_TASK_QUEUES = [Queue(name, routing_key=name) for name in lanes.QUEUES]
CELERY_TASK_DEFAULT_QUEUE = lanes.ENGINE
CELERY_TASK_ROUTES = lanes.ROUTES
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # a task whose worker dies is delivered again
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None  # a worker waits for the broker, however long
# Every task is bounded (prefork and threads pools; the solo pool cannot
# interrupt a task, which is why each outbound attempt bounds itself too).
# Engine work is committed in small batches, so a sweep cut short loses nothing.
CELERY_TASK_SOFT_TIME_LIMIT = 60
CELERY_TASK_TIME_LIMIT = 90
# Publishing from a web request must not hang while the broker is down: the
# outbox row is already committed and the sweep will pick it up.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    # The one place the schedule is declared. A sweep nobody picked up within
    # a few seconds is dropped: the next one does the same work.
    "sweep-deadlines": {
        "task": lanes.SWEEP,
        "schedule": APPROVALS_SWEEP_SECONDS,
        "options": {"expires": max(5.0, APPROVALS_SWEEP_SECONDS * 5)},
    },
    "set-deadline-timers": {
        "task": lanes.SET_DEADLINE_TIMERS,
        "schedule": max(APPROVALS_TIMER_LOOKAHEAD_SECONDS / 2, 1.0),
        "options": {"expires": 10.0},
    },
    "sweep-callbacks": {
        "task": lanes.SWEEP_CALLBACKS,
        "schedule": 1.0,
        "options": {"expires": 5.0},
    },
    "seal-audit": {
        "task": lanes.SEAL_AUDIT,
        "schedule": AUDIT_SEAL_SECONDS,
        "options": {"expires": 30.0},
    },
    "sweep-outboxes": {
        "task": lanes.SWEEP_OUTBOXES,
        "schedule": 10.0,
        "options": {"expires": 30.0},
    },
}

# --- Callbacks (Standard Webhooks) ---------------------------------------------------

# Seconds before each attempt: at once, then the Standard Webhooks schedule
# (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: about 27.6 hours in all).
APPROVALS_CALLBACK_SCHEDULE = [
    float(seconds)
    for seconds in env_list(
        "APPROVALS_CALLBACK_SCHEDULE", ["0", "5", "300", "1800", "7200", "18000", "36000", "36000"]
    )
]
# Wall-clock bound on a whole attempt (connect, send, answer), whatever the receiver does.
APPROVALS_CALLBACK_TIMEOUT = float(env_str("APPROVALS_CALLBACK_TIMEOUT", "10"))
# A sender's lease on a delivery; after it, a delivery whose sender died is sent again.
# The lease used is never shorter than the delivery task's hard time limit (see
# approvals.callbacks.lease_seconds), so a slow attempt is never sent twice at once.
APPROVALS_CALLBACK_LEASE_SECONDS = float(env_str("APPROVALS_CALLBACK_LEASE_SECONDS", "30"))
# How many attempts one agent may have in flight at once, over all workers; its
# other deliveries wait (APPROVALS_CALLBACK_DEFER_SECONDS) and are not dropped.
APPROVALS_CALLBACK_MAX_IN_FLIGHT_PER_AGENT = int(
    env_str("APPROVALS_CALLBACK_MAX_IN_FLIGHT_PER_AGENT", "2")
)
APPROVALS_CALLBACK_DEFER_SECONDS = float(env_str("APPROVALS_CALLBACK_DEFER_SECONDS", "1"))
APPROVALS_SECRET_GRACE_HOURS = float(env_str("APPROVALS_SECRET_GRACE_HOURS", "24"))

# --- Notifications -------------------------------------------------------------

APPROVALS_NOTIFICATION_CHANNELS = env_list(
    "APPROVALS_NOTIFICATION_CHANNELS", ["approvals.notify.email.EmailChannel"]
)
APPROVALS_SLACK_WEBHOOK_URL = env_str("APPROVALS_SLACK_WEBHOOK_URL", "")
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = int(env_str("EMAIL_PORT", "25"))
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = 10
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "countersign@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
