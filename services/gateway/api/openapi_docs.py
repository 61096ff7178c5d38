"""What FastAPI cannot infer for the OpenAPI document: request examples, and the error answers
that come from outside a route's signature.

Those answers are real (Schemathesis found each one undocumented against a running gateway):

* 400: a body that is not JSON at all, and a ``cursor`` this API never returned;
* 409: a job in the wrong state for the call (not queued, not completed, no live lease), or a
  team name taken already;
* 410: the tenant's vault keys were destroyed (crypto-shredding), so its confidential data is gone;
* 412: an ``If-Match`` that does not name the resource's current version;
* 413: a body over the configured size limit;
* ``/readyz``'s 503 when the gateway's database is down.

Kept apart from the routes so that each route stays a plain typed function; keyed by operation
id (the route function's name, see ``routing.py``), so a renamed route fails the fuzz test
rather than silently losing its documentation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

_PROBLEM = {
    "application/problem+json": {
        "schema": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "request_id": {"type": "string"},
            },
        }
    }
}

_NOT_JSON = "The body is not JSON."
_BAD_CURSOR = "The cursor is not one this list returned; start again without it."
_TOO_LARGE = "The body is larger than the gateway accepts."
_STALE = "If-Match does not name the current version: read it again, then retry."
_SHREDDED = "The tenant's vault keys were destroyed: its confidential data is gone for good."
_NO_LEASE = "You do not hold the job's live lease."

# 409 answers of the routes themselves (the Idempotency-Key's 409 is documented by edge.py).
CONFLICTS: dict[str, str] = {
    "submit_job": "The sealed envelope's `job_ref` was used for another job already.",
    "cancel_job": "The job is completed or cancelled already.",
    "job_result": "The job is not completed (yet).",
    "job_feedback": "The job is not completed, or was rated already.",
    "claim": "The job is not queued (another member may have claimed it), or your team no "
    "longer meets its data policy or is paused (`team-not-eligible`: it goes to another team).",
    "heartbeat": _NO_LEASE,
    "release": _NO_LEASE,
    "reject": _NO_LEASE,
    "complete": _NO_LEASE,
    "read_confidential": _NO_LEASE + " Or your team no longer meets the job's data policy "
    "(`team-not-eligible`).",
    "tenant_key_for_result": _NO_LEASE,
    "route_job": "The job cannot be routed in its current status.",
    "create_team": "A team with this name exists already.",
    "update_team": "A team with this name exists already.",
    "retire_vault_key_versions": "A rewrap has not finished yet.",
    "put_member_key": "You registered another public key already: an operator forgets it "
    "first (`taskroute router forget-member-key`), then you register the new one.",
}
# Routes that read or write the tenant's vault keys or sealed data.
GONE = frozenset(
    {
        "submit_job",
        "job_result",
        "read_confidential",
        "complete",
        "tenant_key_for_result",
        "vault_public_keys",
        "rotate_vault_key",
        "rewrap_vault_key",
        "retire_vault_key_versions",
        "shred_vault_key",
    }
)

_CLINICAL = {
    "title": "Code adverse events from a phase III trial",
    "description": "Code the adverse event narratives from the case report forms to MedDRA "
    "terms and flag serious adverse events.",
}
_POLICY = {"allowed_countries": ["IN", "IE"], "required_certifications": ["HIPAA"]}

# One realistic request body per operation that takes one.
EXAMPLES: dict[str, Any] = {
    "submit_job": {
        **_CLINICAL,
        "priority": "high",
        "metadata": {"study": "AX-301"},
        "confidential": {"patient": "J. Doe", "mrn": 4711},
    },
    "cancel_job": {"reason": "Submitted twice by mistake."},
    "job_feedback": {"rating": 5, "comment": "Thorough, and a day early."},
    "classify": {
        "items": [
            _CLINICAL,
            {"description": "Key 2,000 scanned supplier invoices into our ERP system."},
        ]
    },
    "create_endpoint": {
        "url": "https://hooks.acme.example/taskroute",
        "description": "Order system",
    },
    "release": {"reason": "Out of office this afternoon."},
    "reject": {"reason": "Needs a German-speaking reviewer."},
    "complete": {"result": {"coded_events": 37}, "confidential_result": {"serious": ["J. Doe"]}},
    "put_member_key": {"public_key": "rrAmegzuicJxWbtt76Xw0_quZDumZ_tNtY2EhDyZiB4"},
    "create_tenant": {"name": "Acme Pharma", "policy": _POLICY},
    "set_policy": {**_POLICY, "require_e2e": False},
    "create_team": {
        "name": "Bengaluru Clinical Insights",
        "country": "IN",
        "timezone": "Asia/Kolkata",
        "working_hours": {"start": "09:00", "end": "18:00", "days": [0, 1, 2, 3, 4]},
        "tier": "KPO",
        "skills": ["clinical", "pharmaceutical"],
        "certifications": ["HIPAA", "ISO27001"],
        "languages": ["en", "hi"],
        "capacity": 5,
        "hourly_rate": 30,
        "quality": 0.9,
    },
    "update_team": {"capacity": 8, "active": True},
    "create_member": {"name": "Asha"},
    "route_job": {"team_id": "5b0c8a8e-2f4d-4c1e-9a57-3d2b1c0e9f41", "domain": "clinical"},
    "rewrap_vault_key": {"batch_size": 100},
    "rotate_secret": {"overlap_seconds": 86400},
    "approve": {},
    "create_key": {},
    "send_back": {"comment": "Please recheck the MedDRA codes for events 12-15."},
}


def install(app: FastAPI) -> None:
    """Complete the app's OpenAPI document each time it is generated (idempotently)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                if isinstance(operation, dict) and "responses" in operation:
                    complete_operation(path, operation)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _answer(responses: dict[str, Any], status: str, description: str) -> None:
    """Document ``status`` as problem+json, adding ``description`` to one already there."""
    entry = responses.setdefault(status, {"description": "", "content": _PROBLEM})
    known = entry.get("description", "")
    if description not in known:
        entry["description"] = f"{known} {description}".strip()
    entry.setdefault("content", _PROBLEM)


def complete_operation(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    operation_id = operation.get("operationId", "")
    parameters = operation.get("parameters", [])
    body = operation.get("requestBody")
    if body is not None:
        _answer(responses, "400", _NOT_JSON)
        _answer(responses, "413", _TOO_LARGE)
        media = body.get("content", {}).get("application/json")
        if media is not None and operation_id in EXAMPLES:
            media.setdefault("example", EXAMPLES[operation_id])
    if any(p.get("in") == "query" and p.get("name") == "cursor" for p in parameters):
        _answer(responses, "400", _BAD_CURSOR)
    if any(p.get("in") == "header" and p.get("name", "").lower() == "if-match" for p in parameters):
        _answer(responses, "412", _STALE)
    if operation_id in CONFLICTS:
        _answer(responses, "409", CONFLICTS[operation_id])
    if operation_id in GONE:
        _answer(responses, "410", _SHREDDED)
    if path == "/readyz":
        _answer(responses, "503", "Not ready: the gateway's database is down.")
