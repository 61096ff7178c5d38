"""The vault's rules: envelope encryption, grants and the audit chain. Pure: no I/O, no FastAPI."""
