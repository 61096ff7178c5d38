"""The public REST API: one router module per resource, schemas and dependencies."""
