"""The gateway's rules: API keys, data policies, job views. No FastAPI, no I/O."""
