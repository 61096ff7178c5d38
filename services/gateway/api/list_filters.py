"""Query parameters shared by the filtered lists (each documented in the OpenAPI).

Every list accepts filters next to ``limit`` and ``cursor``. Filters are applied in the
database query of the service that owns the list (never by sieving a page here), all filters
given must hold, and a repeated parameter (``?status=queued&status=triage``) matches any of its
values. A list's ``next_cursor`` is bound to the filters it was issued under: sending it with
other filters answers 400 ``invalid-cursor`` instead of skipping or repeating rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator

from services.gateway.db.repository import CreatedRange
from services.gateway.domain.jobs import check_printable
from shared.list_filters import as_utc

CreatedAfterQuery = Annotated[
    datetime | None,
    Query(
        description="Only items created at or after this time (RFC 3339; without an offset, UTC).",
        examples=["2026-01-31T00:00:00Z"],
    ),
]
CreatedBeforeQuery = Annotated[
    datetime | None,
    Query(
        description="Only items created before this time (RFC 3339; without an offset, UTC).",
        examples=["2026-02-01T00:00:00Z"],
    ),
]
NameQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        description="Only items whose name contains this text (case-insensitive).",
    ),
    AfterValidator(lambda value: None if value is None else check_printable(value)),
]


def time_range(
    after: datetime | None,
    before: datetime | None,
    *,
    after_name: str = "created_after",
    before_name: str = "created_before",
) -> tuple[datetime | None, datetime | None]:
    """Both bounds in UTC; 422 naming the second field when the range is empty."""
    after, before = as_utc(after, name=after_name), as_utc(before, name=before_name)
    if after is not None and before is not None and after >= before:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", before_name),
                    "msg": f"must be later than {after_name}",
                    "type": "value_error",
                }
            ]
        )
    return after, before


def created_range(after: datetime | None, before: datetime | None) -> CreatedRange:
    """The ``created_after``/``created_before`` pair as a repository range (422 if empty)."""
    start, end = time_range(after, before)
    return CreatedRange(after=start, before=end)
