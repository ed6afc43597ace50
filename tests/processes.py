"""Real processes for end-to-end tests: Celery workers, beat, a Redis of our own.

Every wait is bounded and polls a condition; nothing sleeps and hopes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], object], *, timeout: float, what: str, every=0.05):
    """Poll until ``condition()`` is truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Starts processes with their output in files under ``logs``; stops them all."""

    def __init__(self, logs: Path, env: dict[str, str]):
        self.logs, self.env = logs, env
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.running[name] = process
        return process

    def worker(self, name: str = "worker", *options: str) -> subprocess.Popen:
        """A worker on every lane; ``options`` such as ``-Q engine`` or
        ``--pool=threads --concurrency=4`` replace the one-process solo pool."""
        return self.start(
            name, sys.executable, "-m", "celery", "-A", "approvals_site", "worker",
            *(options or ("--pool=solo",)), "--loglevel=INFO", "-n", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        )  # fmt: skip

    def beat(self, name: str = "beat") -> subprocess.Popen:
        return self.start(
            name, sys.executable, "-m", "celery", "-A", "approvals_site", "beat",
            "--loglevel=INFO", "-s", str(self.logs / f"{name}-schedule"),
        )  # fmt: skip

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.running.pop(name)
        os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for name in list(self.running):
            process = self.running[name]
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
            self.running.pop(name)


class RedisServer:
    """A throwaway redis-server on its own port, so a test may stop it."""

    def __init__(self, logs: Path):
        self.port = free_port()
        self.logs = logs
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.logs)],
            stdout=open(self.logs / "redis.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )  # fmt: skip
        wait_for(self._answers, timeout=10, what="redis-server to answer")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
