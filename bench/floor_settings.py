"""Settings for bench/api.py's floor: the service's own settings (middleware,
database, everything), with a URLconf that holds only the bare endpoint."""

from approvals_site.settings import *  # noqa: F403

ROOT_URLCONF = "bench.floor_urls"
