"""Login lockout (django-axes) for the site's and the admin's login pages."""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend


class LockoutBackend(AxesStandaloneBackend):
    """Refuses logins for a username and address locked out after repeated failures.

    Every login over HTTP passes its request; an authentication without one
    happens in-process (a shell, a management command, the test client's
    ``login``), where there is no one to lock out, so it is left to the next
    backend instead of failing as django-axes' own backend does.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
