"""The vault's Prometheus metrics: operations and refusals, audit write latency, sealed state.

Every seal and open, and every refusal of one, passes through the audit append (no audit, no
data), so measuring around that one call counts each operation exactly once:

* ``taskroute_vault_operations_total{action,outcome,reason}``: appended audit records, e.g.
  ``open/ok``, ``open/refused/invalid_grant``, ``seal/refused/wrong_action`` (reasons are the
  vault's fixed refusal codes, so the label stays bounded).
* ``taskroute_vault_audit_failures_total{action,kind}``: appends that failed (the operation was
  refused with 503 and nothing was done); ``kind`` is the error class.
* ``taskroute_vault_audit_write_seconds``: time to lock the chain head and append one record.
* ``taskroute_vault_sealed``: 1 while this process has no root key (every crypto call is 503).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

# Audit appends take a row lock on the chain head: a few ms normally, up to the lock timeout
# (5 s by default) under contention; the buckets resolve both ends.
AUDIT_WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

OPERATIONS = Counter(
    "taskroute_vault_operations_total",
    "Vault operations recorded in the audit log, by action, outcome and refusal reason.",
    ["action", "outcome", "reason"],
)
AUDIT_FAILURES = Counter(
    "taskroute_vault_audit_failures_total",
    "Audit appends that failed (the operation was refused and nothing was done).",
    ["action", "kind"],
)
AUDIT_WRITE_SECONDS = Histogram(
    "taskroute_vault_audit_write_seconds",
    "Time to append one record to the audit hash chain, lock included.",
    buckets=AUDIT_WRITE_BUCKETS,
)
SEALED = Gauge("taskroute_vault_sealed", "1 while the vault has no root key (sealed), else 0.")


@contextmanager
def measure_audit_append(*, action: str, outcome: str, reason: str | None) -> Iterator[None]:
    """Time one audit append; count it as an operation, or as an audit failure if it raises."""
    started = time.perf_counter()
    try:
        yield
    except Exception as exc:
        AUDIT_FAILURES.labels(action=action, kind=type(exc).__name__).inc()
        raise
    finally:
        AUDIT_WRITE_SECONDS.observe(time.perf_counter() - started)
    OPERATIONS.labels(action=action, outcome=outcome, reason=reason or "").inc()


def set_sealed(sealed: bool) -> None:
    SEALED.set(1 if sealed else 0)
