"""Production settings: TLS behind a proxy, Django's deploy check, login lockout,
password rules."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client


def production(tmp_path, script: list[str], **env) -> subprocess.CompletedProcess:
    environ = {
        key: value
        for key, value in os.environ.items()
        # (Playwright sets DJANGO_ALLOW_ASYNC_UNSAFE in this process for the browser tests.)
        if key not in ("DJANGO_SETTINGS_MODULE", "DEBUG", "HTTPS", "DJANGO_ALLOW_ASYNC_UNSAFE")
    }
    environ.update(
        DJANGO_SETTINGS_MODULE="approvals_site.settings",
        APPROVALS_VAR_DIR=str(tmp_path),
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="approvals.example.com",
        **env,
    )
    return subprocess.run(
        [sys.executable, *script], env=environ, capture_output=True, text=True, timeout=120
    )


def test_the_deploy_check_reports_nothing_behind_https(tmp_path):
    checked = production(
        tmp_path, ["manage.py", "check", "--deploy", "--fail-level", "DEBUG"],
        DEBUG="false", HTTPS="true",
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "System check identified no issues" in checked.stdout


def test_without_https_the_deploy_check_warns(tmp_path):
    checked = production(tmp_path, ["manage.py", "check", "--deploy"], DEBUG="false")
    assert "SECURE_HSTS_SECONDS" in checked.stdout + checked.stderr


HTTPS_SCRIPT = """
import json, django
django.setup()
from django.test import Client
plain = Client(HTTP_HOST="approvals.example.com").get("/accounts/login/")
proxied = Client(HTTP_HOST="approvals.example.com", HTTP_X_FORWARDED_PROTO="https")
page = proxied.get("/accounts/login/")
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location", "")],
    "hsts": page.get("Strict-Transport-Security", ""),
    "csrf_cookie_secure": bool(page.cookies["csrftoken"]["secure"]),
}))
"""


def test_https_redirects_sets_hsts_and_secure_cookies(tmp_path):
    ran = production(tmp_path, ["-c", HTTPS_SCRIPT], DEBUG="false", HTTPS="true")
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout.strip().splitlines()[-1])
    assert seen["plain"] == [301, "https://approvals.example.com/accounts/login/"]
    assert "max-age=31536000" in seen["hsts"]
    assert "includeSubDomains" in seen["hsts"]
    assert seen["csrf_cookie_secure"] is True


@pytest.mark.parametrize(
    ("login_url", "staff"), [("/accounts/login/", False), ("/admin/login/", True)]
)
def test_repeated_failed_logins_lock_the_account_out(db, login_url, staff):
    get_user_model().objects.create_user("maria", password="a long passphrase", is_staff=staff)
    client = Client()
    for _ in range(4):
        failed = client.post(login_url, {"username": "maria", "password": "guess"})
        assert failed.status_code == 200  # the form again, with its error
    assert client.post(login_url, {"username": "maria", "password": "guess"}).status_code == 429
    locked = client.post(login_url, {"username": "maria", "password": "a long passphrase"})
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    # Someone else, from the same address, still logs in.
    get_user_model().objects.create_user("tom", password="another passphrase", is_staff=staff)
    other = Client().post(login_url, {"username": "tom", "password": "another passphrase"})
    assert other.status_code == 302


def test_a_good_login_after_a_few_failures_still_works(db):
    get_user_model().objects.create_user("maria", password="a long passphrase")
    client = Client()
    for _ in range(3):
        client.post("/accounts/login/", {"username": "maria", "password": "guess"})
    ok = client.post("/accounts/login/", {"username": "maria", "password": "a long passphrase"})
    assert ok.status_code == 302


@pytest.mark.parametrize("password", ["password123", "12345678901", "maria.rossi"])
def test_the_standard_password_rules_apply(db, password):
    user = get_user_model()(username="maria.rossi", email="maria.rossi@example.com")
    with pytest.raises(ValidationError):
        validate_password(password, user)
