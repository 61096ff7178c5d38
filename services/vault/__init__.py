"""The vault: root and tenant keys, sealed confidential records and the tamper-evident audit log.

Only the gateway calls it (``/internal/v1``, service credentials); opening a record or sealing a
result also needs a grant signed by the router. It never sees routing decisions.
"""
