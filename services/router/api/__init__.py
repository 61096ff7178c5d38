"""The router's internal HTTP API (``/internal/v1``), callable by the gateway only."""
