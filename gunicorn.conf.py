"""The web server: ``gunicorn`` run in the repository root reads this file.

``gunicorn -b HOST:PORT -w N`` overrides the address and the number of worker
processes. Each worker is one asyncio event loop (uvicorn's gunicorn worker)
serving Django over ASGI: a ``?wait=N`` long-poll holds neither a thread nor a
database connection while it waits, and the other views are Django's ordinary
sync views, each run on a thread of its own for its duration (Django gives
every request its own thread-sensitive context), so sync views do run
concurrently; one process still uses about one core (the GIL). See the
README's "Processes" for measured sizing.
"""

import os

wsgi_app = "approvals_site.asgi:application"
worker_class = "uvicorn_worker.UvicornWorker"
bind = ["127.0.0.1:8000"]
# One per core: a process uses about one core (the GIL); more processes than
# cores measured no faster on 2 cores (README, "Processes"). Waits need none.
workers = int(os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 1)))
# With an event loop the heartbeat is never late because of a long wait:
# a worker silent for this long is stuck for real and is restarted.
timeout = 30
# On a restart, in-flight requests get this long; waits longer than it are
# cut and the agent asks again (the SDK does, and gets the same answer).
graceful_timeout = 10
keepalive = 5
# Behind a proxy on this machine, trust its X-Forwarded-* (as Django's HTTPS setting does).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
control_socket_disable = True  # gunicorn 25+: no shared control socket in $HOME
