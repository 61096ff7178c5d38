"""The router's tables, queries and migrations."""
