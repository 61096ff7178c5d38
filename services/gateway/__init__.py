"""The gateway: Taskroute's only public service.

It owns identities (tenants, members, hashed API keys), checks every public request's key and
role, and turns the public REST API into calls to the router (jobs, teams) and the vault
(confidential data), so that neither of those is ever exposed to the internet.
"""
