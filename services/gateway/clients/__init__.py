"""Typed clients for the router's and the vault's internal APIs."""
