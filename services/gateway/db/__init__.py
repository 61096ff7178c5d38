"""The gateway's database: tenants, API key digests, members."""
