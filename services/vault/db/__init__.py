"""The vault's tables, their queries and its migrations."""
