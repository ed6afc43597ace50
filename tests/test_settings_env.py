"""Operators configure by environment; a typo stops start-up with a clear error."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from approvals_site.env import env_bool, env_list


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("TRUE", True), ("Yes", True), ("0", False), ("false", False), ("NO", False)],
)
def test_booleans_accept_the_documented_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("DEBUG", raw)
    assert env_bool("DEBUG", not expected) is expected


def test_an_unset_boolean_takes_its_default(monkeypatch):
    monkeypatch.delenv("DEBUG", raising=False)
    assert env_bool("DEBUG", True) is True


def test_any_other_boolean_value_is_refused(monkeypatch):
    monkeypatch.setenv("DEBUG", "ture")
    with pytest.raises(ImproperlyConfigured, match="DEBUG='ture' is not a boolean"):
        env_bool("DEBUG", False)


def test_lists_are_comma_separated(monkeypatch):
    monkeypatch.setenv("ALLOWED_HOSTS", "a.example.com, b.example.com,")
    assert env_list("ALLOWED_HOSTS", []) == ["a.example.com", "b.example.com"]


def test_the_service_refuses_to_start_with_a_bad_boolean(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={"DEBUG": "maybe", "APPROVALS_VAR_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in result.stderr


def test_processes_started_together_on_a_fresh_checkout_share_one_secret_key(tmp_path):
    # The web, the workers and beat of a first start: none may read a key file
    # half written, and all must agree (the audit chain's key derives from it).
    env = {
        "PATH": "/usr/bin:/bin",
        "APPROVALS_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "approvals_site.settings",
    }
    # What settings import first is imported up front; then each says so and
    # waits for the word to go, so that they reach the key file together.
    script = (
        "import sys, dj_database_url, kombu, approvals.lanes, approvals_site.db_pool; "
        "print('ready', flush=True); sys.stdin.read(1); "
        "import approvals_site.settings as s; print(s.SECRET_KEY)"
    )
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(12)
    ]
    assert all(process.stdout.readline() == "ready\n" for process in starts)
    for process in starts:
        process.stdin.write("g")
        process.stdin.flush()
    keys = {process.communicate(timeout=60)[0].strip() for process in starts}

    assert len(keys) == 1
    assert len(keys.pop()) > 40
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".secret_key.*"))  # nothing left aside
