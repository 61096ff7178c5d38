"""Taskroute's three services (gateway, router, vault) and the ``taskroute`` command."""
