"""The console: a web workspace for team members and operators, served by the gateway.

Server-rendered Jinja2 pages under ``/console`` with a little plain JavaScript (no build step, no
CDN; everything comes from this package). The console is a client of the gateway's own domain:
its pages call the REST API's route functions in-process, so every rule (roles, leases, grants,
audit, ETags, webhook events) is the API's. Signing in exchanges an API key for a server-side
session (see :mod:`services.gateway.console.sessions`); client keys have no console.
"""

from services.gateway.console.app import install_console

__all__ = ["install_console"]
