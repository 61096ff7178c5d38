"""Taskroute's common code: settings, errors, logging, database and HTTP helpers, service auth.

Kept small on purpose: nothing here knows about jobs, teams or keys of tenants.
"""
