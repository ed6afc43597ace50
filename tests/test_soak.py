"""The short soak: everything that misbehaves at once, on real processes
(bench/soak.py --quick, in a database of its own), and the promise still holds:
no 5xx, nothing left pending past its deadline, every outcome called back
exactly once, every wait answered, the audit trail intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings

from tests.processes import ROOT

pytestmark = pytest.mark.slow


def test_nobody_stalls_anyone_else(tmp_path):
    figures_file = tmp_path / "soak.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS"))}
    # A database of its own, named after the suite's, so that parallel suites
    # (other checkouts on the same server) never drop each other's.
    database = settings.DATABASES["default"]
    env["DATABASE_URL"] = (
        f"postgres://{database['USER']}@{database['HOST']}:{database['PORT'] or 5432}/"
        f"{database['NAME']}_soak"
    )
    run = subprocess.run(
        [sys.executable, "bench/soak.py", "--quick", "--json", str(figures_file)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert figures_file.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(figures_file.read_text())

    # Behaviour, not speed: the lateness figures are the bench's to print.
    assert figures["server_errors"] == 0, figures["server_error_samples"]
    assert figures["pending_past_deadline"] == 0
    assert figures["callbacks_lost"] == 0 and figures["callbacks_doubled"] == 0
    assert set(figures["terminal_webhook_ids_per_request"]) == {"1"}
    assert figures["waits"]["answered"] == figures["waits"]["held"] > 0
    assert figures["verify_audit"]["ok"], figures["verify_audit"]["output"]
