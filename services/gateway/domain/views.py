"""What each audience may see of a router job.

The router's job carries ``tenant_id`` and the vault's opaque ``confidential_ref``. A client is
never shown the reference (it is an internal handle, useless outside and a hint for an
attacker); a member is shown neither the reference nor which tenant the work is for. The
response models repeat these rules by not declaring the fields; dropping them here as well keeps
a future schema change from leaking them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from services.gateway.domain.errors import JobNotFound
from shared.errors import NotFound

_HIDDEN_FROM_CLIENTS = frozenset({"confidential_ref"})
_HIDDEN_FROM_MEMBERS = frozenset({"confidential_ref", "tenant_id"})
_HIDDEN_FROM_OPERATORS = frozenset({"confidential_ref"})


def client_view(job: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k not in _HIDDEN_FROM_CLIENTS}


def member_view(job: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k not in _HIDDEN_FROM_MEMBERS}


def operator_view(job: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k not in _HIDDEN_FROM_OPERATORS}


def uuid_or(value: str, not_found: Callable[[], NotFound]) -> str:
    """An id in canonical UUID form; a malformed one is simply unknown (404)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise not_found() from None


def job_id_or_404(value: str) -> str:
    return uuid_or(value, JobNotFound)
