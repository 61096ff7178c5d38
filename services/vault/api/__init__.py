"""The vault's HTTP surface: internal routes for the gateway, and health."""
